//! Row softmax of scale·x: `shaders/softmax.wgsl`, reference in `src/reference/softmax.rs`.

use crate::gpu::{grid_1d, Plan, Tensor};
use crate::shader;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    scale: f32,
    ld: u32,
}

const WG: u32 = 64;

fn check(rows: usize, cols: usize, ld: usize, ts: &[&Tensor]) {
    assert!(cols > 0, "softmax: rows of zero columns");
    assert!(ld >= cols, "softmax: row stride {ld} < {cols} columns");
    for t in ts {
        assert_eq!(
            t.len(),
            rows * ld,
            "softmax: tensor of {} values for ({rows}, {cols}) with row stride {ld}",
            t.len()
        );
    }
}

/// y = softmax(scale · x) along each of `rows` rows of `cols` values (row maximum subtracted).
/// Rows are `ld` ≥ `cols` elements apart; the padding is untouched.
#[allow(clippy::too_many_arguments)]
pub fn forward(p: &mut Plan, rows: usize, cols: usize, ld: usize, scale: f32, x: &Tensor, y: &Tensor) {
    check(rows, cols, ld, &[x, y]);
    let params = Params {
        rows: rows as u32,
        cols: cols as u32,
        scale,
        ld: ld as u32,
    };
    p.kernel(
        &shader!("softmax"),
        "forward",
        &params,
        &[(1, x), (2, y)],
        grid_1d(rows, WG),
    );
}

/// dx += scale · y ⊙ (dy − Σ_j dy·y), given the forward output y; rows `ld` apart as in [`forward`].
#[allow(clippy::too_many_arguments)]
pub fn backward(p: &mut Plan, rows: usize, cols: usize, ld: usize, scale: f32, y: &Tensor, dy: &Tensor, dx: &Tensor) {
    check(rows, cols, ld, &[y, dy, dx]);
    let params = Params {
        rows: rows as u32,
        cols: cols as u32,
        scale,
        ld: ld as u32,
    };
    p.kernel(
        &shader!("softmax"),
        "backward",
        &params,
        &[(5, y), (3, dy), (4, dx)],
        grid_1d(rows, WG),
    );
}
