//! p_sample, one ancestral sampling step x_t → x_{t−1}, and the initial noise x_T:
//! `shaders/p_sample.wgsl`, reference in `src/reference/p_sample.rs`.

use crate::gpu::{grid_1d, KernelRef, Plan, Tensor};
use crate::shader;

/// Uniforms of one p_sample step, mirroring the WGSL `Params`. Build with
/// `Schedule::p_sample_coefs(t, ..)` (coefficients computed in f64, stored as f32), then set the
/// `seed`; `n` is filled in from the tensors by [`forward`] and [`set_params`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PSampleParams {
    /// Elements (set from `x_t`).
    pub n: u32,
    /// Seed of the noise z (draw a fresh one per step).
    pub seed: u32,
    /// 1 / √ᾱ_t
    pub sqrt_recip_alphas_cumprod: f32,
    /// √(1/ᾱ_t − 1)
    pub sqrt_recipm1_alphas_cumprod: f32,
    /// Coefficient of x̂0 in the posterior mean (eq. 7): √ᾱ_{t−1} β_t / (1 − ᾱ_t).
    pub c0: f32,
    /// Coefficient of x_t in the posterior mean (eq. 7): √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t).
    pub c1: f32,
    /// Standard deviation σ_t of the added noise (0 at t = 0).
    pub sigma: f32,
    /// 1: clamp x̂0 to [−clip_range, clip_range].
    pub clip: u32,
    pub clip_range: f32,
}

impl PSampleParams {
    /// The same coefficients with another seed.
    pub fn with_seed(self, seed: u32) -> PSampleParams {
        PSampleParams { seed, ..self }
    }
}

/// x_prev = μ̃(x̂0(x_t, ε_θ), x_t) + σ_t z and x0_pred = x̂0, z ~ N(0, I) drawn from (hp.seed,
/// element). `x_t`, `eps_pred`, `x_prev`, `x0_pred`: (B, C, H, W); `x_prev` must be another buffer
/// than `x_t` (ping-pong between two). Returns the kernel (see [`set_params`]).
pub fn forward(
    p: &mut Plan,
    x_t: &Tensor,
    eps_pred: &Tensor,
    x_prev: &Tensor,
    x0_pred: &Tensor,
    hp: &PSampleParams,
) -> KernelRef<PSampleParams> {
    let n = x_t.len();
    assert!(
        eps_pred.len() == n && x_prev.len() == n && x0_pred.len() == n,
        "p_sample: x_t, eps_pred, x_prev and x0_pred differ in length"
    );
    p.kernel(
        &shader!("p_sample"),
        "forward",
        &PSampleParams { n: n as u32, ..*hp },
        &[(1, x_t), (2, eps_pred), (3, x_prev), (4, x0_pred)],
        grid_1d(n, 256),
    )
}

/// Rewrite the step of the p_sample kernel `kernel` recorded by [`forward`] on tensors of `n`
/// elements (next timestep's coefficients and a new seed).
pub fn set_params(p: &Plan, kernel: KernelRef<PSampleParams>, n: usize, hp: &PSampleParams) {
    p.set_params(kernel, &PSampleParams { n: n as u32, ..*hp });
}

/// x = z ~ N(0, I) from (seed, element): the start x_T of sampling. Returns the kernel
/// (rewrite the seed with [`set_noise_seed`]).
pub fn noise(p: &mut Plan, x: &Tensor, seed: u32) -> KernelRef<PSampleParams> {
    let n = x.len();
    p.kernel(
        &shader!("p_sample"),
        "noise",
        &PSampleParams {
            n: n as u32,
            seed,
            ..Default::default()
        },
        &[(5, x)],
        grid_1d(n, 256),
    )
}

/// Rewrite the seed of the `noise` kernel `kernel` recorded on a tensor of `n` elements.
pub fn set_noise_seed(p: &Plan, kernel: KernelRef<PSampleParams>, n: usize, seed: u32) {
    p.set_params(
        kernel,
        &PSampleParams {
            n: n as u32,
            seed,
            ..Default::default()
        },
    );
}
