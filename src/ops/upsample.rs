//! Nearest-neighbour 2× upsampling: `shaders/upsample.wgsl`, reference in
//! `src/reference/upsample.rs`.

use crate::gpu::{grid_1d, Plan, Tensor};
use crate::shader;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    planes: u32,
    h: u32,
    w: u32,
}

const WG: u32 = 256;

fn check(n: usize, c: usize, h: usize, w: usize, small: &Tensor, big: &Tensor) -> Params {
    assert_eq!(
        small.len(),
        n * c * h * w,
        "upsample: input is {:?}, not ({n}, {c}, {h}, {w})",
        small.shape()
    );
    assert_eq!(
        big.len(),
        n * c * 4 * h * w,
        "upsample: output is {:?}, not ({n}, {c}, {}, {})",
        big.shape(),
        2 * h,
        2 * w
    );
    Params {
        planes: (n * c) as u32,
        h: h as u32,
        w: w as u32,
    }
}

/// y (n, c, 2h, 2w) = x (n, c, h, w) repeated 2×2.
pub fn forward(p: &mut Plan, n: usize, c: usize, h: usize, w: usize, x: &Tensor, y: &Tensor) {
    let params = check(n, c, h, w, x, y);
    p.kernel(
        &shader!("upsample"),
        "forward",
        &params,
        &[(1, x), (2, y)],
        grid_1d(x.len(), WG),
    );
}

/// dx (n, c, h, w) += sum of the 2×2 block of dy (n, c, 2h, 2w) each input was copied to.
pub fn backward(p: &mut Plan, n: usize, c: usize, h: usize, w: usize, dy: &Tensor, dx: &Tensor) {
    let params = check(n, c, h, w, dx, dy);
    p.kernel(
        &shader!("upsample"),
        "backward",
        &params,
        &[(3, dy), (4, dx)],
        grid_1d(dx.len(), WG),
    );
}
