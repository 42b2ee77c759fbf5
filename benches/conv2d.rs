//! Benchmark of conv2d (not yet written).
fn main() {}
