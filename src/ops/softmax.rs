//! Row softmax of scale·x: `shaders/softmax.wgsl`, reference in `src/reference/softmax.rs`.

use crate::gpu::{grid_1d, Plan, Tensor};
use crate::shader;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    scale: f32,
}

const WG: u32 = 64;

fn check(rows: usize, cols: usize, ts: &[&Tensor]) {
    assert!(cols > 0, "softmax: rows of zero columns");
    for t in ts {
        assert_eq!(
            t.len(),
            rows * cols,
            "softmax: tensor of {} values for ({rows}, {cols})",
            t.len()
        );
    }
}

/// y = softmax(scale · x) along each of `rows` rows of `cols` values (row maximum subtracted).
pub fn forward(p: &mut Plan, rows: usize, cols: usize, scale: f32, x: &Tensor, y: &Tensor) {
    check(rows, cols, &[x, y]);
    let params = Params {
        rows: rows as u32,
        cols: cols as u32,
        scale,
    };
    p.kernel(
        &shader!("softmax"),
        "forward",
        &params,
        &[(1, x), (2, y)],
        grid_1d(rows, WG),
    );
}

/// dx += scale · y ⊙ (dy − Σ_j dy·y), given the forward output y.
pub fn backward(p: &mut Plan, rows: usize, cols: usize, scale: f32, y: &Tensor, dy: &Tensor, dx: &Tensor) {
    check(rows, cols, &[y, dy, dx]);
    let params = Params {
        rows: rows as u32,
        cols: cols as u32,
        scale,
    };
    p.kernel(
        &shader!("softmax"),
        "backward",
        &params,
        &[(5, y), (3, dy), (4, dx)],
        grid_1d(rows, WG),
    );
}
