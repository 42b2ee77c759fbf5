//! Benchmark of matmul (not yet written).
fn main() {}
