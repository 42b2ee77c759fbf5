//! CPU reference for the row softmax (see `shaders/softmax.wgsl`).

/// y[r, :] = softmax(scale · x[r, :]) over `cols` columns, each of `rows` rows.
pub fn forward(rows: usize, cols: usize, scale: f32, x: &[f64]) -> Vec<f64> {
    let scale = scale as f64;
    let mut y = vec![0.0; rows * cols];
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let max = row.iter().map(|v| scale * v).fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = row.iter().map(|v| (scale * v - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        for j in 0..cols {
            y[r * cols + j] = e[j] / sum;
        }
    }
    y
}

/// dx = scale · y ⊙ (dy − Σ_j dy_j y_j), row by row (the gradient of `forward` given its output y).
pub fn backward(rows: usize, cols: usize, scale: f32, y: &[f64], dy: &[f64]) -> Vec<f64> {
    let scale = scale as f64;
    let mut dx = vec![0.0; rows * cols];
    for r in 0..rows {
        let span = r * cols..(r + 1) * cols;
        let dot: f64 = y[span.clone()].iter().zip(&dy[span.clone()]).map(|(a, b)| a * b).sum();
        for i in span {
            dx[i] = scale * y[i] * (dy[i] - dot);
        }
    }
    dx
}
