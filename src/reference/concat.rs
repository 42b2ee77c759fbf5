//! CPU reference for channel concatenation (see `shaders/concat.wgsl`).

/// y (n, c1+c2, hw) = cat([a (n, c1, hw), b (n, c2, hw)], dim=1)
pub fn forward(n: usize, c1: usize, c2: usize, hw: usize, a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut y = Vec::with_capacity(n * (c1 + c2) * hw);
    for s in 0..n {
        y.extend_from_slice(&a[s * c1 * hw..(s + 1) * c1 * hw]);
        y.extend_from_slice(&b[s * c2 * hw..(s + 1) * c2 * hw]);
    }
    y
}

/// (da, db): dy split back along channels.
pub fn backward(n: usize, c1: usize, c2: usize, hw: usize, dy: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let (mut da, mut db) = (Vec::new(), Vec::new());
    for row in dy.chunks((c1 + c2) * hw).take(n) {
        da.extend_from_slice(&row[..c1 * hw]);
        db.extend_from_slice(&row[c1 * hw..]);
    }
    (da, db)
}
