// DDIM sampling step x_t → x_prev (Song et al. 2021, "Denoising Diffusion Implicit Models",
// eq. 12 with σ_t(η) of eq. 16; diffusers' DDIMScheduler.step, prediction_type "epsilon"),
// elementwise:
//
//   x̂0      = x_t / √ᾱ_t − √(1/ᾱ_t − 1) · ε_θ                 ("predicted x0", eq. 12)
//   x̂0      ← clamp(x̂0, −r, r)                                when `clip`
//   ε       ← (x_t − √ᾱ_t · x̂0) / √(1 − ᾱ_t)                  when `clip` and `clipped_eps`
//                                                               (diffusers' use_clipped_model_output)
//   x_prev  = √ᾱ_prev · x̂0 + √(1 − ᾱ_prev − σ²) · ε + σ · z,  z ~ N(0, I) = rng_normal(seed, i)
//   σ       = η · √((1 − ᾱ_prev)/(1 − ᾱ_t)) · √(1 − ᾱ_t/ᾱ_prev)   (eq. 16; 0 for η = 0: DDIM)
//   x0_pred = x̂0
//
// Every coefficient is computed in f64 on the CPU (diffusion::ddim::step_params) and arrives as
// an f32 uniform. The noise is drawn only when σ > 0.
//
// Layout: x_t, eps_pred, x_prev, x0_pred: flat (B·C·H·W) arrays, any shape.
// Mapping: one invocation per element; workgroups of 256 spread over x and y of the dispatch
// grid (grid_1d), linear index i = gid.x + gid.y · (num_workgroups.x · 256).

#import rng

struct Params {
    n: u32,
    seed: u32,
    sqrt_recip_alphas_cumprod: f32,      // 1 / √ᾱ_t
    sqrt_recipm1_alphas_cumprod: f32,    // √(1/ᾱ_t − 1)
    sqrt_alphas_cumprod: f32,            // √ᾱ_t             (ε recomputation only)
    sqrt_recip_one_minus_alphas_cumprod: f32,  // 1 / √(1 − ᾱ_t)  (ε recomputation only)
    sqrt_alpha_prev: f32,                // √ᾱ_prev
    dir: f32,                            // √(1 − ᾱ_prev − σ²), "direction pointing to x_t"
    sigma: f32,                          // σ
    clip: u32,                           // 1: clamp x̂0 to [−clip_range, clip_range]
    clip_range: f32,
    clipped_eps: u32,                    // 1: recompute ε from the clamped x̂0
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x_t: array<f32>;            // (B, C, H, W)
@group(0) @binding(2) var<storage, read> eps_pred: array<f32>;       // (B, C, H, W)
@group(0) @binding(3) var<storage, read_write> x_prev: array<f32>;   // (B, C, H, W)  written
@group(0) @binding(4) var<storage, read_write> x0_pred: array<f32>;  // (B, C, H, W)  written

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.n) {
        return;
    }
    let x = x_t[i];
    var eps = eps_pred[i];
    var x0 = params.sqrt_recip_alphas_cumprod * x - params.sqrt_recipm1_alphas_cumprod * eps;
    if (params.clip != 0u) {
        x0 = clamp(x0, -params.clip_range, params.clip_range);
        if (params.clipped_eps != 0u) {
            eps = (x - params.sqrt_alphas_cumprod * x0) * params.sqrt_recip_one_minus_alphas_cumprod;
        }
    }
    var xp = params.sqrt_alpha_prev * x0 + params.dir * eps;
    if (params.sigma > 0.0) {
        xp += params.sigma * rng_normal(params.seed, i);
    }
    x_prev[i] = xp;
    x0_pred[i] = x0;
}
