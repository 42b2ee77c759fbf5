//! CPU reference for the class embedding (see `shaders/class_embedding.wgsl`): rows of a learned
//! (rows, dim) table picked by label.

/// y (n, dim) = table[labels[i]] for each i.
pub fn forward(labels: &[usize], table: &[f64], dim: usize) -> Vec<f64> {
    let mut y = Vec::with_capacity(labels.len() * dim);
    for &label in labels {
        y.extend_from_slice(&table[label * dim..(label + 1) * dim]);
    }
    y
}

/// dtable (rows, dim): each row the sum of dy's rows whose label it is.
pub fn backward(labels: &[usize], dy: &[f64], rows: usize, dim: usize) -> Vec<f64> {
    let mut dtable = vec![0.0; rows * dim];
    for (n, &label) in labels.iter().enumerate() {
        for j in 0..dim {
            dtable[label * dim + j] += dy[n * dim + j];
        }
    }
    dtable
}
