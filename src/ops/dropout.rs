//! Dropout (training only): `shaders/dropout.wgsl`, reference in `src/reference/dropout.rs`.
//! The mask is regenerated from (seed, element) in the backward, so nothing is stored; forward
//! and backward of one step must use the same seed (change it per step with [`set_seed`]).

use crate::gpu::{grid_1d, KernelRef, Plan, Tensor};
use crate::shader;

/// Uniforms of the dropout kernels, mirroring the WGSL `Params`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct DropoutParams {
    pub n: u32,
    pub seed: u32,
    /// Probability of dropping an element.
    pub prob: f32,
    /// 1 / (1 − prob).
    pub scale: f32,
}

impl DropoutParams {
    pub fn new(n: usize, prob: f32, seed: u32) -> DropoutParams {
        assert!((0.0..1.0).contains(&prob), "dropout: probability {prob} not in [0, 1)");
        DropoutParams {
            n: n as u32,
            seed,
            prob,
            scale: (1.0 / (1.0 - prob as f64)) as f32,
        }
    }
}

/// y = x · mask / (1 − prob), mask_i = [rng_uniform(seed, i) > prob] ~ Bernoulli(1 − prob).
/// Returns the kernel.
pub fn forward(p: &mut Plan, prob: f32, x: &Tensor, y: &Tensor, seed: u32) -> KernelRef<DropoutParams> {
    assert_eq!(x.len(), y.len(), "dropout: x and y differ in length");
    p.kernel(
        &shader!("dropout"),
        "forward",
        &DropoutParams::new(x.len(), prob, seed),
        &[(1, x), (2, y)],
        grid_1d(x.len(), 256),
    )
}

/// dx += dy · mask / (1 − prob), the mask of [`forward`] with the same seed. Returns the kernel.
pub fn backward(p: &mut Plan, prob: f32, dy: &Tensor, dx: &Tensor, seed: u32) -> KernelRef<DropoutParams> {
    assert_eq!(dy.len(), dx.len(), "dropout backward: dy and dx differ in length");
    p.kernel(
        &shader!("dropout"),
        "backward",
        &DropoutParams::new(dy.len(), prob, seed),
        &[(3, dy), (4, dx)],
        grid_1d(dy.len(), 256),
    )
}

/// Rewrite the seed of a dropout kernel (forward or backward) recorded on `n` elements.
pub fn set_seed(p: &Plan, kernel: KernelRef<DropoutParams>, n: usize, prob: f32, seed: u32) {
    p.set_params(kernel, &DropoutParams::new(n, prob, seed));
}

/// y_i = rng_uniform(seed, i): the uniforms the mask is drawn from (to test the RNG).
pub fn uniforms(p: &mut Plan, y: &Tensor, seed: u32) -> KernelRef<DropoutParams> {
    p.kernel(
        &shader!("dropout"),
        "fill_uniform",
        &DropoutParams::new(y.len(), 0.0, seed),
        &[(2, y)],
        grid_1d(y.len(), 256),
    )
}
