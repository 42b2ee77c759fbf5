// Global average pooling: the mean of each channel plane of an NCHW tensor (the classifier's
// head turns (N, C, H, W) features into (N, C) before its last linear layer).
//
//   forward:  y[r] = (1/hw) Σ_{i < hw} x[r·hw + i]          (written)
//   backward: dx[r·hw + i] += dy[r] / hw                    (accumulated; ∂y[r]/∂x[r·hw + i] = 1/hw)
//
// Layout: x, dx are (rows, hw) row-major with rows = N·C and hw = H·W (an NCHW tensor read flat);
// y, dy are (rows). 1/hw comes from the host (exact in f64, rounded once to f32).
// Mapping: forward one invocation per row (a running sum in 4 interleaved accumulators, combined
// pairwise: shorter dependency chains and fewer roundings per term), workgroups of 64; backward one
// invocation per element of dx, workgroups of 256. Both on a 1D grid spread over x and y (grid_1d),
// linear index = gid.x + gid.y · (num_workgroups.x · WG).

struct Params {
    rows: u32,
    hw: u32,       // elements per row (> 0)
    inv_hw: f32,   // 1 / hw
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;         // (rows, hw)
@group(0) @binding(2) var<storage, read_write> y: array<f32>;   // (rows)      written
@group(0) @binding(3) var<storage, read> dy: array<f32>;        // (rows)
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;  // (rows, hw)  accumulated

const WG_ROW: u32 = 64u;
const WG: u32 = 256u;

@compute @workgroup_size(WG_ROW)
fn global_avg_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = gid.x + gid.y * nwg.x * WG_ROW;
    if (r >= params.rows) {
        return;
    }
    let hw = params.hw;
    let base = r * hw;
    var a0 = 0.0;
    var a1 = 0.0;
    var a2 = 0.0;
    var a3 = 0.0;
    var i = 0u;
    for (; i + 4u <= hw; i += 4u) {
        a0 += x[base + i];
        a1 += x[base + i + 1u];
        a2 += x[base + i + 2u];
        a3 += x[base + i + 3u];
    }
    for (; i < hw; i++) {
        a0 += x[base + i];
    }
    y[r] = ((a0 + a1) + (a2 + a3)) * params.inv_hw;
}

@compute @workgroup_size(WG)
fn global_avg_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = gid.x + gid.y * nwg.x * WG;
    if (o >= params.rows * params.hw) {
        return;
    }
    dx[o] += dy[o / params.hw] * params.inv_hw;
}
