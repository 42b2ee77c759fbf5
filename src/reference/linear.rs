//! CPU reference for the linear layer, PyTorch `nn.Linear` (see `src/ops/linear.rs`).

/// y (rows, out) = x (rows, in) · wᵀ + b, with w (out, in) and b (out).
pub fn forward(rows: usize, in_f: usize, out_f: usize, x: &[f64], w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
    let mut y = vec![0.0; rows * out_f];
    for r in 0..rows {
        for o in 0..out_f {
            let mut sum = b.map_or(0.0, |b| b[o]);
            for i in 0..in_f {
                sum += x[r * in_f + i] * w[o * in_f + i];
            }
            y[r * out_f + o] = sum;
        }
    }
    y
}

/// Gradients (dx, dw, db) of `forward` for the output gradient dy (rows, out):
/// dx = dy · w, dw = dyᵀ · x, db = Σ_rows dy.
pub fn backward(
    rows: usize,
    in_f: usize,
    out_f: usize,
    x: &[f64],
    w: &[f64],
    dy: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut dx = vec![0.0; rows * in_f];
    let mut dw = vec![0.0; out_f * in_f];
    let mut db = vec![0.0; out_f];
    for r in 0..rows {
        for o in 0..out_f {
            let g = dy[r * out_f + o];
            db[o] += g;
            for i in 0..in_f {
                dx[r * in_f + i] += g * w[o * in_f + i];
                dw[o * in_f + i] += g * x[r * in_f + i];
            }
        }
    }
    (dx, dw, db)
}
