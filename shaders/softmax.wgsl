// Row softmax of a scaled matrix (attention probabilities), numerically stable.
//
//   forward:  y[r, j] = exp(s·x[r, j] − max_j' s·x[r, j']) / Σ_j'' exp(s·x[r, j''] − max)
//             (subtracting the row maximum keeps exp ≤ 1: no overflow for any input magnitude)
//   backward: dx[r, j] += s · y[r, j] · (dy[r, j] − Σ_j' dy[r, j'] · y[r, j'])
//             (the softmax Jacobian diag(y) − y yᵀ, times the scale s)
//
// Layout: x, y, dy, dx are (rows, cols) row-major with a row stride `ld` ≥ cols (attention pads its
// score rows to a multiple of 4 so that the products around the softmax can read them as vec4);
// the ld − cols padding elements of a row are neither read nor written.
// Mapping: one invocation per row (three passes over it: max, sum, write); workgroups of 64 over
// x and y of the dispatch grid (grid_1d), row = gid.x + gid.y · (num_workgroups.x · 64).

struct Params {
    rows: u32,
    cols: u32,
    scale: f32,
    ld: u32,     // row stride
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;         // (rows, ld)
@group(0) @binding(2) var<storage, read_write> y: array<f32>;   // (rows, ld)  forward output
@group(0) @binding(3) var<storage, read> dy: array<f32>;        // (rows, ld)
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;  // (rows, ld)  accumulated
@group(0) @binding(5) var<storage, read> y_saved: array<f32>;   // (rows, ld)  forward output

const WG: u32 = 64u;

@compute @workgroup_size(WG)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = gid.x + gid.y * nwg.x * WG;
    if (r >= params.rows) {
        return;
    }
    let base = r * params.ld;
    let s = params.scale;
    var m = s * x[base];
    for (var j = 1u; j < params.cols; j++) {
        m = max(m, s * x[base + j]);
    }
    var sum = 0.0;
    for (var j = 0u; j < params.cols; j++) {
        sum += exp(s * x[base + j] - m);
    }
    // exp is recomputed rather than stored and rescaled: a memory access costs more here.
    let inv = 1.0 / sum;
    for (var j = 0u; j < params.cols; j++) {
        y[base + j] = exp(s * x[base + j] - m) * inv;
    }
}

@compute @workgroup_size(WG)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = gid.x + gid.y * nwg.x * WG;
    if (r >= params.rows) {
        return;
    }
    let base = r * params.ld;
    var dot = 0.0;
    for (var j = 0u; j < params.cols; j++) {
        dot = fma(dy[base + j], y_saved[base + j], dot);
    }
    for (var j = 0u; j < params.cols; j++) {
        let i = base + j;
        dx[i] += params.scale * y_saved[i] * (dy[i] - dot);
    }
}
