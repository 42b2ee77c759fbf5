// p_sample: one ancestral sampling step x_t → x_{t−1} (Ho et al. 2020, Algorithm 2 line 4 and
// eq. 11; diffusers' DDPMScheduler.step with prediction_type "epsilon"), elementwise:
//
//   x̂0      = x_t / √ᾱ_t − √(1/ᾱ_t − 1) · ε_θ              (eq. 15 solved for x0)
//   x̂0      ← clamp(x̂0, −r, r)                             when `clip`
//   μ̃       = c0 · x̂0 + c1 · x_t                            (eq. 7)
//             c0 = √ᾱ_{t−1} β_t / (1 − ᾱ_t),  c1 = √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t)
//   x_{t−1} = μ̃ + σ_t · z,  z ~ N(0, I) = rng_normal(seed, i)  (σ_0 = 0: no noise at t = 0)
//   x0_pred = x̂0 (for progressive pictures)
//
// The coefficients are computed in f64 on the CPU (Schedule::p_sample_coefs) and arrive as f32
// uniforms. Entry `noise` writes x = z ~ N(0, I) (the start x_T of Algorithm 2, line 1).
//
// Layout: x_t, eps_pred, x_prev, x0_pred: flat (B·C·H·W) arrays, any shape.
// Mapping: one invocation per element; workgroups of 256 spread over x and y of the dispatch
// grid (grid_1d), linear index i = gid.x + gid.y · (num_workgroups.x · 256).

#import rng

struct Params {
    n: u32,
    seed: u32,
    sqrt_recip_alphas_cumprod: f32,    // 1 / √ᾱ_t
    sqrt_recipm1_alphas_cumprod: f32,  // √(1/ᾱ_t − 1)
    c0: f32,                           // coefficient of x̂0 in μ̃
    c1: f32,                           // coefficient of x_t in μ̃
    sigma: f32,                        // σ_t (0 at t = 0)
    clip: u32,                         // 1: clamp x̂0 to [−clip_range, clip_range]
    clip_range: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x_t: array<f32>;             // (B, C, H, W)
@group(0) @binding(2) var<storage, read> eps_pred: array<f32>;        // (B, C, H, W)
@group(0) @binding(3) var<storage, read_write> x_prev: array<f32>;    // (B, C, H, W)  written
@group(0) @binding(4) var<storage, read_write> x0_pred: array<f32>;   // (B, C, H, W)  written
@group(0) @binding(5) var<storage, read_write> x_noise: array<f32>;   // (n)  written by `noise`

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.n) {
        return;
    }
    let x = x_t[i];
    var x0 = params.sqrt_recip_alphas_cumprod * x - params.sqrt_recipm1_alphas_cumprod * eps_pred[i];
    if (params.clip != 0u) {
        x0 = clamp(x0, -params.clip_range, params.clip_range);
    }
    let mean = params.c0 * x0 + params.c1 * x;
    x_prev[i] = mean + params.sigma * rng_normal(params.seed, i);
    x0_pred[i] = x0;
}

@compute @workgroup_size(WG)
fn noise(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.n) {
        return;
    }
    x_noise[i] = rng_normal(params.seed, i);
}
