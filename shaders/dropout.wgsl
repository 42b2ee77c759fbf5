// Dropout (training only), elementwise, with the mask regenerated from (seed, element) in the
// backward so that no mask is stored:
//
//   keep_i   = rng_uniform(seed, i) > p          (u in (0, 1], so P(keep) = 1 − p up to 2^-24)
//   forward:  y  = x · keep / (1 − p)
//   backward: dx += dy · keep / (1 − p)
//   fill_uniform: y = rng_uniform(seed, i)          (the numbers the mask is drawn from, for tests)
//
// `scale` = 1/(1 − p) is computed on the CPU. Forward and backward must get the same seed.
// Layout: x, y, dy, dx are flat arrays of `n` f32 (any shape).
// Mapping: one invocation per element; workgroups of 256 spread over x and y of the dispatch
// grid (grid_1d), linear index i = gid.x + gid.y · (num_workgroups.x · 256).

#import rng

struct Params {
    n: u32,
    seed: u32,
    prob: f32,   // p, the probability of dropping
    scale: f32,  // 1 / (1 − p)
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;         // (n)
@group(0) @binding(2) var<storage, read_write> y: array<f32>;   // (n)  written
@group(0) @binding(3) var<storage, read> dy: array<f32>;        // (n)
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;  // (n)  accumulated

const WG: u32 = 256u;

fn keep_scale(i: u32) -> f32 {
    return select(0.0, params.scale, rng_uniform(params.seed, i) > params.prob);
}

@compute @workgroup_size(WG)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.n) {
        return;
    }
    y[i] = x[i] * keep_scale(i);
}

@compute @workgroup_size(WG)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.n) {
        return;
    }
    dx[i] += dy[i] * keep_scale(i);
}

@compute @workgroup_size(WG)
fn fill_uniform(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.n) {
        return;
    }
    y[i] = rng_uniform(params.seed, i);
}
