//! Class embedding (a learned table looked up by label): `shaders/class_embedding.wgsl`,
//! reference in `src/reference/class_embedding.rs`.

use crate::gpu::{grid_1d, Plan, Tensor};
use crate::shader;

/// Mirrors `Params` in the shader.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    rows: u32,
    dim: u32,
    flags: u32,
}

const WG: u32 = 256;
const ACCUMULATE: u32 = 1;

fn params(labels: &Tensor, table: &Tensor, y: &Tensor, flags: u32) -> Params {
    assert_eq!(table.shape().len(), 2, "class_embedding: table must be (rows, dim)");
    let (n, rows, dim) = (labels.len(), table.shape()[0], table.shape()[1]);
    assert_eq!(
        y.len(),
        n * dim,
        "class_embedding: y/dy is {:?}, not ({n}, {dim})",
        y.shape()
    );
    Params {
        n: n as u32,
        rows: rows as u32,
        dim: dim as u32,
        flags,
    }
}

/// y (N, D) = table[labels] (rows of the (R, D) table; labels (N) as f32 integers below R), or
/// y += table[labels] with `accumulate`.
pub fn forward(p: &mut Plan, labels: &Tensor, table: &Tensor, y: &Tensor, accumulate: bool) {
    let q = params(labels, table, y, if accumulate { ACCUMULATE } else { 0 });
    let work = (q.n * q.dim) as usize;
    p.kernel(
        &shader!("class_embedding"),
        "forward",
        &q,
        &[(1, labels), (2, table), (3, y)],
        grid_1d(work, WG),
    );
}

/// dtable (R, D) += Σ over the batch of dy (N, D) rows, each into its label's row.
pub fn backward(p: &mut Plan, labels: &Tensor, dy: &Tensor, dtable: &Tensor) {
    let q = params(labels, dtable, dy, 0);
    let work = (q.rows * q.dim) as usize;
    p.kernel(
        &shader!("class_embedding"),
        "backward",
        &q,
        &[(1, labels), (4, dy), (5, dtable)],
        grid_1d(work, WG),
    );
}
