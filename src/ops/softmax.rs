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

/// Rows of softmax(scale · x): `rows` rows of `cols` values, `ld` ≥ `cols` elements apart (the
/// padding is untouched).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Softmax {
    pub rows: usize,
    pub cols: usize,
    pub ld: usize,
    pub scale: f32,
}

impl Softmax {
    fn params(&self, ts: &[&Tensor]) -> Params {
        let Softmax { rows, cols, ld, scale } = *self;
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
        Params {
            rows: rows as u32,
            cols: cols as u32,
            scale,
            ld: ld as u32,
        }
    }
}

/// y = softmax(scale · x) along each row (row maximum subtracted).
pub fn forward(p: &mut Plan, s: &Softmax, x: &Tensor, y: &Tensor) {
    let params = s.params(&[x, y]);
    p.kernel(
        &shader!("softmax"),
        "forward",
        &params,
        &[(1, x), (2, y)],
        grid_1d(s.rows, WG),
    );
}

/// dx += scale · y ⊙ (dy − Σ_j dy·y), given the forward output y.
pub fn backward(p: &mut Plan, s: &Softmax, y: &Tensor, dy: &Tensor, dx: &Tensor) {
    let params = s.params(&[y, dy, dx]);
    p.kernel(
        &shader!("softmax"),
        "backward",
        &params,
        &[(5, y), (3, dy), (4, dx)],
        grid_1d(s.rows, WG),
    );
}
