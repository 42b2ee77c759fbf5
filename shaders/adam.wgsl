// Adam / AdamW update of one flat parameter buffer, with global-norm gradient clipping.
// Follows PyTorch exactly (torch.nn.utils.clip_grad_norm_, then torch.optim.Adam or AdamW,
// amsgrad = False, maximize = False), t = step ≥ 1:
//
//   clip = min(1, max_norm / (sqrt(sumsq[0]) + 1e-6))   if max_norm > 0, else 1
//          (sumsq[0] = Σ grads², recorded just before by ops::reduce::sum_squares: a GLOBAL norm,
//           the same clip for every element)
//   g    = clip · grads_i                               (grads itself is not modified)
//   Adam  (decoupled = 0):  g ← g + weight_decay · p    (L2 penalty folded into the gradient)
//   AdamW (decoupled = 1):  p ← p · (1 − lr · weight_decay)
//   m    = β1 · m + (1 − β1) · g
//   v    = β2 · v + (1 − β2) · g²
//   p    ← p − lr · (m / bc1) / (sqrt(v) / sqrt(bc2) + eps),   bc1 = 1 − β1^t, bc2 = 1 − β2^t
//          (= p − lr · m̂ / (sqrt(v̂) + eps): eps is added to sqrt(v̂), as PyTorch does)
//
// bc1 and bc2 come precomputed in the params (f64 on the CPU, rounded to f32: GPU pow() near 1 is
// too inaccurate, e.g. Vulkan allows 2⁻²¹ absolute error in log2 there).
//
// Layout: param, grads, m, v: flat arrays of n f32; sumsq: 1 f32.
// Mapping: one invocation per element, workgroups of 256 over x and y of the dispatch grid
// (grid_1d), i = gid.x + gid.y · (num_workgroups.x · 256).

struct Params {
    n: u32,
    step: u32,           // t (bc1, bc2 must be 1 − β^t for this t; see AdamParams::at_step)
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    max_norm: f32,       // ≤ 0: no clipping
    bc1: f32,            // 1 − β1^t
    bc2: f32,            // 1 − β2^t
    decoupled: u32,      // 1: AdamW, 0: Adam
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;  // (n)   updated in place
@group(0) @binding(2) var<storage, read> grads: array<f32>;        // (n)
@group(0) @binding(3) var<storage, read_write> m: array<f32>;      // (n)   first moment
@group(0) @binding(4) var<storage, read_write> v: array<f32>;      // (n)   second moment
@group(0) @binding(5) var<storage, read> sumsq: array<f32>;        // (1)   Σ grads²

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn adam_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.n) {
        return;
    }
    var clip = 1.0;
    if (params.max_norm > 0.0) {
        clip = min(1.0, params.max_norm / (sqrt(sumsq[0]) + 1e-6));
    }
    var g = clip * grads[i];
    var w = param[i];
    if (params.decoupled == 1u) {
        w = w * (1.0 - params.lr * params.weight_decay);
    } else {
        g = g + params.weight_decay * w;
    }
    let mi = params.beta1 * m[i] + (1.0 - params.beta1) * g;
    let vi = params.beta2 * v[i] + (1.0 - params.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    let denom = sqrt(vi) / sqrt(params.bc2) + params.eps;
    param[i] = w - (params.lr / params.bc1) * mi / denom;
}
