// Channel concatenation torch.cat([a, b], dim=1) (the U-Net's skip connections):
//
//   forward:  y[n, c, i] = a[n, c, i] for c < C1,  b[n, c − C1, i] otherwise
//   backward: da[n, c, i] += dy[n, c, i],  db[n, c, i] += dy[n, C1 + c, i]
//
// Layout: a, da (N, C1, HW); b, db (N, C2, HW); y, dy (N, C1 + C2, HW); row-major.
// Mapping: one invocation per element of y (forward) or dy (backward), each source/destination
// element touched by exactly one invocation; workgroups of WG over x and y of the dispatch grid
// (linear index = gid.x + gid.y · num_workgroups.x · WG).

struct Params {
    n: u32,
    c1: u32,
    c2: u32,
    hw: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;         // (N, C1, HW)
@group(0) @binding(2) var<storage, read> b: array<f32>;         // (N, C2, HW)
@group(0) @binding(3) var<storage, read_write> y: array<f32>;   // (N, C1 + C2, HW)  forward output
@group(0) @binding(4) var<storage, read> dy: array<f32>;        // (N, C1 + C2, HW)
@group(0) @binding(5) var<storage, read_write> da: array<f32>;  // (N, C1, HW)       accumulated
@group(0) @binding(6) var<storage, read_write> db: array<f32>;  // (N, C2, HW)       accumulated

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = gid.x + gid.y * nwg.x * WG;
    let c = params.c1 + params.c2;
    if (o >= params.n * c * params.hw) {
        return;
    }
    let s = o / (c * params.hw);
    let ch = (o / params.hw) % c;
    let i = o % params.hw;
    if (ch < params.c1) {
        y[o] = a[(s * params.c1 + ch) * params.hw + i];
    } else {
        y[o] = b[(s * params.c2 + ch - params.c1) * params.hw + i];
    }
}

@compute @workgroup_size(WG)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = gid.x + gid.y * nwg.x * WG;
    let c = params.c1 + params.c2;
    if (o >= params.n * c * params.hw) {
        return;
    }
    let s = o / (c * params.hw);
    let ch = (o / params.hw) % c;
    let i = o % params.hw;
    if (ch < params.c1) {
        da[(s * params.c1 + ch) * params.hw + i] += dy[o];
    } else {
        db[(s * params.c2 + ch - params.c1) * params.hw + i] += dy[o];
    }
}
