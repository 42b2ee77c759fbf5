//! Softmax cross-entropy of classifier logits against integer labels, forward and gradient fused,
//! and the row softmax alone for inference: `shaders/cross_entropy.wgsl`, reference in
//! `src/reference/cross_entropy.rs`. The per-row losses are summed by `ops::reduce`.

use crate::gpu::{grid_1d, Plan, Tensor};
use crate::ops::reduce;
use crate::shader;

/// Mirrors `Params` in the shader.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    classes: u32,
    inv_rows: f32,
}

const WG: u32 = 64;

fn params(what: &str, rows: usize, classes: usize, logits: &Tensor, probs: &Tensor) -> Params {
    assert!(rows > 0, "{what}: no rows");
    assert!(classes > 0, "{what}: rows of zero classes");
    for (name, t) in [("logits", logits), ("probs", probs)] {
        assert_eq!(
            t.len(),
            rows * classes,
            "{what}: {name} of {} values is not ({rows} rows, {classes} classes)",
            t.len()
        );
    }
    Params {
        rows: rows as u32,
        classes: classes as u32,
        inv_rows: (1.0 / rows as f64) as f32,
    }
}

/// What [`forward_backward`] writes.
#[derive(Clone, Copy)]
pub struct Outputs<'a> {
    /// The row softmax of the logits (rows, classes).
    pub probs: &'a Tensor,
    /// loss[0] = mean over rows of −log p[row, label] (only loss[0] is written; `loss` may be a
    /// view into a larger buffer).
    pub loss: &'a Tensor,
    /// (probs − onehot(labels)) / rows, the gradient of loss[0] (written, not accumulated: it
    /// starts a backward pass).
    pub dlogits: &'a Tensor,
}

/// Cross-entropy of `logits` (rows, classes) = `shape` against `labels` (rows; f32 integers in
/// [0, classes), validated by the caller as for the class embedding), every output written.
/// Records the loss kernel and the levels of a reduction (scratch allocated here).
pub fn forward_backward(p: &mut Plan, shape: [usize; 2], logits: &Tensor, labels: &Tensor, out: Outputs) {
    let [rows, classes] = shape;
    let Outputs { probs, loss, dlogits } = out;
    let what = "cross_entropy";
    let q = params(what, rows, classes, logits, probs);
    assert_eq!(
        dlogits.len(),
        rows * classes,
        "{what}: dlogits of {} values is not ({rows} rows, {classes} classes)",
        dlogits.len()
    );
    assert_eq!(labels.len(), rows, "{what}: {} labels for {rows} rows", labels.len());
    assert!(!loss.is_empty(), "{what}: loss must hold at least one element");
    reduce::check_bindable(p, what, rows * classes);
    let row_loss = p.gpu.zeros(&[rows]);
    p.kernel(
        &shader!("cross_entropy"),
        "forward_backward",
        &q,
        &[(1, logits), (2, labels), (3, probs), (4, dlogits), (5, &row_loss)],
        grid_1d(rows, WG),
    );
    reduce::finish(p, &row_loss, loss, q.inv_rows);
}

/// probs = row softmax of `logits` (rows, classes) = `shape`, written: the classifier's inference
/// output.
pub fn predict(p: &mut Plan, shape: [usize; 2], logits: &Tensor, probs: &Tensor) {
    let [rows, classes] = shape;
    let q = params("cross_entropy predict", rows, classes, logits, probs);
    p.kernel(
        &shader!("cross_entropy"),
        "predict",
        &q,
        &[(1, logits), (3, probs)],
        grid_1d(rows, WG),
    );
}
