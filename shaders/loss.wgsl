// The DDPM training loss L_simple (Ho et al. 2020, eq. 14) and its gradient, fused:
//
//   loss  = (1/N) Σ_i (pred_i − target_i)²          pred = ε_θ(x_t, t), target = ε, N = numel
//   dpred_i = ∂loss/∂pred_i = 2 (pred_i − target_i) / N      (written: it starts the backward pass)
//
// This kernel is the first level of the hierarchical reduction of shaders/reduce.wgsl: besides
// writing dpred it writes the partial sums
//
//   partial[j] = scale · Σ_{k ≥ 0, j + k·m < n} (pred − target)²[j + k·m],   j = 0 .. m−1
//
// which src/ops/loss.rs reduces further with reduce.wgsl (scale 1/N on the last level; when m = 1
// this kernel writes loss[0] itself with scale = 1/N). Same 4-accumulator scheme as reduce.wgsl.
//
// Layout: pred, target, dpred flat arrays of n f32 (any shape, e.g. (B, C, H, W)); partial m f32.
// Mapping: one invocation per partial j, workgroups of 256 over x and y (grid_1d),
// j = gid.x + gid.y · (num_workgroups.x · 256); invocation j visits j, j+m, j+2m, … (coalesced).

struct Params {
    n: u32,           // elements
    m: u32,           // partials (stride between the elements one invocation visits)
    grad_scale: f32,  // 2 / N
    scale: f32,       // multiplies each partial: 1, or 1/N when m = 1
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> pred: array<f32>;            // (n)
@group(0) @binding(2) var<storage, read> tgt: array<f32>;             // (n)   target ("target" is reserved)
@group(0) @binding(3) var<storage, read_write> dpred: array<f32>;     // (n)   written
@group(0) @binding(4) var<storage, read_write> partial: array<f32>;   // (m)   written

const WG: u32 = 256u;

// (pred − target)² at i (0 past the end), writing dpred[i] on the way.
fn square_and_grad(i: u32) -> f32 {
    if (i >= params.n) {
        return 0.0;
    }
    let d = pred[i] - tgt[i];
    dpred[i] = params.grad_scale * d;
    return d * d;
}

@compute @workgroup_size(WG)
fn forward_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = gid.x + gid.y * nwg.x * WG;
    let m = params.m;
    if (j >= m) {
        return;
    }
    var a0 = 0.0;
    var a1 = 0.0;
    var a2 = 0.0;
    var a3 = 0.0;
    for (var i = j; i < params.n; i += 4u * m) {
        a0 += square_and_grad(i);
        a1 += square_and_grad(i + m);
        a2 += square_and_grad(i + 2u * m);
        a3 += square_and_grad(i + 3u * m);
    }
    partial[j] = params.scale * ((a0 + a1) + (a2 + a3));
}
