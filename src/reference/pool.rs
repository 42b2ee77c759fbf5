//! CPU reference for global average pooling (see `shaders/pool.wgsl`).

/// y[r] = (1/hw) Σ_i x[r·hw + i] for each of `rows` rows.
pub fn global_avg_forward(x: &[f64], rows: usize, hw: usize) -> Vec<f64> {
    assert_eq!(x.len(), rows * hw);
    (0..rows)
        .map(|r| x[r * hw..(r + 1) * hw].iter().sum::<f64>() / hw as f64)
        .collect()
}

/// dx[r·hw + i] = dy[r] / hw: the gradient of `global_avg_forward` (returned, not accumulated).
pub fn global_avg_backward(dy: &[f64], rows: usize, hw: usize) -> Vec<f64> {
    assert_eq!(dy.len(), rows);
    dy.iter()
        .flat_map(|&g| std::iter::repeat_n(g / hw as f64, hw))
        .collect()
}
