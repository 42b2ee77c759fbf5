//! DDIM sampling step (Song et al. 2021, eq. 12 and 16; diffusers' `DDIMScheduler.step`):
//! `shaders/ddim.wgsl`, reference in `src/reference/ddim.rs`, coefficients from
//! `diffusion::ddim::step_params`.
//!
//! Record once per sampling loop with `let k = ops::ddim::forward(p, ..)` and rewrite the step's
//! coefficients and seed before each run with [`set_params`].

use crate::gpu::{grid_1d, KernelRef, Plan, Tensor};
use crate::ops::reduce;
use crate::shader;

const WG: u32 = 256;

/// Uniforms of one DDIM step, mirroring the WGSL `Params`. Build with
/// `diffusion::ddim::step_params` (coefficients computed in f64, stored as f32); `n` is filled in
/// from the tensors by [`forward`] and [`set_params`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct DdimParams {
    /// Elements (set from `x_t`).
    pub n: u32,
    /// Seed of the noise z (draw a fresh one per step; unused when σ = 0).
    pub seed: u32,
    /// 1 / √ᾱ_t
    pub sqrt_recip_alphas_cumprod: f32,
    /// √(1/ᾱ_t − 1)
    pub sqrt_recipm1_alphas_cumprod: f32,
    /// √ᾱ_t (used only to recompute ε from the clipped x̂0)
    pub sqrt_alphas_cumprod: f32,
    /// 1 / √(1 − ᾱ_t) (used only to recompute ε from the clipped x̂0)
    pub sqrt_recip_one_minus_alphas_cumprod: f32,
    /// √ᾱ_prev
    pub sqrt_alpha_prev: f32,
    /// √(1 − ᾱ_prev − σ²), the weight of the "direction pointing to x_t".
    pub dir: f32,
    /// σ = η · √((1 − ᾱ_prev)/(1 − ᾱ_t)) · √(1 − ᾱ_t/ᾱ_prev)
    pub sigma: f32,
    /// 1: clamp x̂0 to [−clip_range, clip_range].
    pub clip: u32,
    pub clip_range: f32,
    /// 1 (with `clip`): recompute ε from the clamped x̂0 (diffusers' `use_clipped_model_output`).
    pub clipped_eps: u32,
}

impl DdimParams {
    /// The same coefficients with another seed.
    pub fn with_seed(self, seed: u32) -> DdimParams {
        DdimParams { seed, ..self }
    }
}

/// One DDIM step: x_prev = √ᾱ_prev x̂0 + √(1 − ᾱ_prev − σ²) ε + σ z and x0_pred = x̂0, with
/// x̂0 = (x_t − √(1−ᾱ_t) ε)/√ᾱ_t (clamped when `hp.clip`) and z ~ N(0, I) drawn in the kernel
/// from (hp.seed, element) when σ > 0. `x_t`, `eps_pred`, `x_prev`, `x0_pred`: (B, C, H, W);
/// `x_prev` must be another buffer than `x_t` (ping-pong between two). Returns the kernel
/// (see [`set_params`]).
pub fn forward(
    p: &mut Plan,
    x_t: &Tensor,
    eps_pred: &Tensor,
    x_prev: &Tensor,
    x0_pred: &Tensor,
    hp: &DdimParams,
) -> KernelRef<DdimParams> {
    let n = x_t.len();
    assert!(
        eps_pred.len() == n && x_prev.len() == n && x0_pred.len() == n,
        "ddim: x_t, eps_pred, x_prev and x0_pred differ in length"
    );
    reduce::check_bindable(p, "ddim", n);
    p.kernel(
        &shader!("ddim"),
        "forward",
        &DdimParams { n: n as u32, ..*hp },
        &[(1, x_t), (2, eps_pred), (3, x_prev), (4, x0_pred)],
        grid_1d(n, WG),
    )
}

/// Rewrite the step of the DDIM kernel `kernel` recorded by [`forward`] on tensors of `n`
/// elements (the next step's coefficients and a new seed).
pub fn set_params(p: &Plan, kernel: KernelRef<DdimParams>, n: usize, hp: &DdimParams) {
    p.set_params(kernel, &DdimParams { n: n as u32, ..*hp });
}
