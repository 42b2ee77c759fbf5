//! SiLU activation: `shaders/silu.wgsl`, reference in `src/reference/silu.rs`.

use crate::gpu::{grid_1d, Plan, Tensor};
use crate::shader;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
}

/// y = silu(x). `x`, `y`: same length.
pub fn forward(p: &mut Plan, x: &Tensor, y: &Tensor) {
    assert_eq!(x.len(), y.len(), "silu: x and y differ in length");
    let n = x.len();
    p.kernel(
        &shader!("silu"),
        "forward",
        &Params { n: n as u32 },
        &[(1, x), (2, y)],
        grid_1d(n, 256),
    );
}

/// dx += dy · silu'(x).
pub fn backward(p: &mut Plan, x: &Tensor, dy: &Tensor, dx: &Tensor) {
    assert!(
        x.len() == dy.len() && x.len() == dx.len(),
        "silu backward: lengths differ"
    );
    let n = x.len();
    p.kernel(
        &shader!("silu"),
        "backward",
        &Params { n: n as u32 },
        &[(1, x), (3, dy), (4, dx)],
        grid_1d(n, 256),
    );
}
