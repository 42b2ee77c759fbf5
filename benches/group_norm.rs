//! Benchmark of group_norm (not yet written).
fn main() {}
