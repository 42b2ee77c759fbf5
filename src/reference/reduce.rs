//! CPU reference for the large reductions (see `shaders/reduce.wgsl`): plain f64 running sums.

/// Σ x
pub fn sum(x: &[f64]) -> f64 {
    let mut s = 0.0;
    for &v in x {
        s += v;
    }
    s
}

/// Σ x²
pub fn sum_squares(x: &[f64]) -> f64 {
    let mut s = 0.0;
    for &v in x {
        s += v * v;
    }
    s
}
