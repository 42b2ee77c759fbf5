// SiLU (a.k.a. swish), the U-Net's activation, elementwise.
//
//   forward:  y = silu(x) = x · σ(x),           σ(x) = 1 / (1 + e^(−x))
//   backward: dx += dy · σ(x) · (1 + x · (1 − σ(x)))      (d/dx of x·σ(x))
//
// Layout: x, y, dy, dx are flat arrays of `n` f32 (any shape).
// Mapping: one invocation per element; workgroups of 256 spread over x and y of the dispatch
// grid (see `grid_1d` in src/gpu/plan.rs), linear index = gid.x + gid.y · (num_workgroups.x · 256).

struct Params {
    n: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;         // (n)
@group(0) @binding(2) var<storage, read_write> y: array<f32>;   // (n)   forward output
@group(0) @binding(3) var<storage, read> dy: array<f32>;        // (n)
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;  // (n)   accumulated

const WG: u32 = 256u;

fn sigmoid(v: f32) -> f32 {
    return 1.0 / (1.0 + exp(-v));
}

@compute @workgroup_size(WG)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.n) {
        return;
    }
    let v = x[i];
    y[i] = v * sigmoid(v);
}

@compute @workgroup_size(WG)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.n) {
        return;
    }
    let v = x[i];
    let s = sigmoid(v);
    dx[i] += dy[i] * s * (1.0 + v * (1.0 - s));
}
