//! Classifier-free guidance: `shaders/guidance.wgsl`, reference in `src/reference/guidance.rs`.

use crate::gpu::{grid_1d, KernelRef, Plan, Tensor};
use crate::shader;

/// Mirrors `Params` in the shader.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GuidanceParams {
    len: u32,
    pub scale: f32,
}

const WG: u32 = 256;

/// y (2, L) = [x, x]: the same images for the conditional and the unconditional half.
pub fn duplicate(p: &mut Plan, x: &Tensor, y: &Tensor) {
    assert_eq!(y.len(), 2 * x.len(), "guidance: y must hold two copies of x");
    let q = GuidanceParams {
        len: x.len() as u32,
        scale: 0.0,
    };
    p.kernel(
        &shader!("guidance"),
        "duplicate",
        &q,
        &[(1, x), (2, y)],
        grid_1d(x.len(), WG),
    );
}

/// eps (L) = u + scale · (c − u) with c = eps2[0..L], u = eps2[L..2L]. Returns the kernel,
/// whose scale [`set_scale`] changes.
pub fn combine(p: &mut Plan, eps2: &Tensor, eps: &Tensor, scale: f32) -> KernelRef<GuidanceParams> {
    assert_eq!(eps2.len(), 2 * eps.len(), "guidance: eps2 must hold two halves of eps");
    let q = GuidanceParams {
        len: eps.len() as u32,
        scale,
    };
    p.kernel(
        &shader!("guidance"),
        "combine",
        &q,
        &[(3, eps2), (4, eps)],
        grid_1d(eps.len(), WG),
    )
}

/// Set the guidance scale of the `combine` kernel `kernel` over `len` elements.
pub fn set_scale(p: &Plan, kernel: KernelRef<GuidanceParams>, len: usize, scale: f32) {
    p.set_params(kernel, &GuidanceParams { len: len as u32, scale });
}
