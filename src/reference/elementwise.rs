//! CPU reference for the elementwise plumbing (see `shaders/elementwise.wgsl`). `fill` and `copy`
//! need none.

/// y = a + b
pub fn add(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// y = alpha·x
pub fn scale(alpha: f64, x: &[f64]) -> Vec<f64> {
    x.iter().map(|v| alpha * v).collect()
}

/// y + alpha·x (the new value of y)
pub fn axpy(alpha: f64, x: &[f64], y: &[f64]) -> Vec<f64> {
    x.iter().zip(y).map(|(a, b)| b + alpha * a).collect()
}

/// y[n,c,i] = x[n,c,i] + v[n,c]; x (n, c, hw), v (n, c).
pub fn add_channel_bias(n: usize, c: usize, hw: usize, x: &[f64], v: &[f64]) -> Vec<f64> {
    assert_eq!(x.len(), n * c * hw);
    x.iter().enumerate().map(|(i, a)| a + v[i / hw]).collect()
}

/// dv[n,c] = Σ_i dy[n,c,i]
pub fn add_channel_bias_backward(n: usize, c: usize, hw: usize, dy: &[f64]) -> Vec<f64> {
    let mut dv = vec![0.0; n * c];
    for (i, g) in dy.iter().enumerate() {
        dv[i / hw] += g;
    }
    dv
}
