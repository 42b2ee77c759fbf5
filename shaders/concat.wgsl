// Channel concatenation torch.cat([a, b], dim=1) (the U-Net's skip connections):
//
//   forward:  y[n, c, i] = a[n, c, i] for c < C1,  b[n, c − C1, i] otherwise
//   backward: da[n, c, i] += dy[n, c, i],  db[n, c, i] += dy[n, C1 + c, i]
//
// Layout: a, da (N, C1, HW); b, db (N, C2, HW); y, dy (N, C1 + C2, HW); row-major.
//
// Mapping. Each source/destination element is touched by exactly one invocation.
// - `forward_flat`, `backward_flat` (the readable version): one invocation per element of y (dy);
//   the sample, channel and pixel come from two divisions and a modulo of the linear index, and
//   each invocation branches on its channel. Workgroups of WG over x and y of the dispatch grid
//   (linear index = gid.x + gid.y · num_workgroups.x · WG).
// - `forward`, `backward`: the same copies seen as contiguous runs. For sample n, a[n] (C1·HW
//   values) is the run y[n, ..C1] and b[n] (C2·HW values) the run y[n, C1..]. Workgroup z picks
//   the run (0: a, 1: b), y the sample, x a block of RUN·WG elements of the run; an invocation
//   copies RUN elements WG apart (consecutive invocations touch consecutive addresses). No
//   division, and the a/b branch is uniform across a workgroup: 2–3× faster on lavapipe,
//   where every divergent branch runs both sides and every load is a loop over the SIMD lanes.

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

const WG: u32 = 64u;
const RUN: u32 = 4u;

@compute @workgroup_size(WG)
fn forward_flat(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
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
fn backward_flat(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
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

// The run of (sample, part): its length, its start in the source (a or b) and in y.
struct Run {
    len: u32,
    src: u32,
    cat: u32,
}

fn run_of(sample: u32, part: u32) -> Run {
    let c = select(params.c1, params.c2, part == 1u);
    let len = c * params.hw;
    let cat = (sample * (params.c1 + params.c2) + part * params.c1) * params.hw;
    return Run(len, sample * len, cat);
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = run_of(wg.y, wg.z);
    let first = wg.x * RUN * WG + lid.x;
    for (var j = 0u; j < RUN; j++) {
        let i = first + j * WG;
        if (i < r.len) {
            if (wg.z == 0u) {
                y[r.cat + i] = a[r.src + i];
            } else {
                y[r.cat + i] = b[r.src + i];
            }
        }
    }
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = run_of(wg.y, wg.z);
    let first = wg.x * RUN * WG + lid.x;
    for (var j = 0u; j < RUN; j++) {
        let i = first + j * WG;
        if (i < r.len) {
            if (wg.z == 0u) {
                da[r.src + i] += dy[r.cat + i];
            } else {
                db[r.src + i] += dy[r.cat + i];
            }
        }
    }
}
