// Classifier-free guidance (Ho & Salimans 2022, eq. 6), as diffusers pipelines apply it: one
// network evaluated on a batch of 2N images, the first N with their class labels and the last N
// with the "no class" label, and the two noise predictions mixed with guidance scale s:
//
//   duplicate: y[k, i] = x[i]                        k ∈ {0, 1}: the same x_t in both halves
//   combine:   ε̃[i]   = ε_u[i] + s · (ε_c[i] − ε_u[i])   ε_c = eps2[0, i], ε_u = eps2[1, i]
//
// s = 1 is the conditional model alone, s = 0 the unconditional one, s > 1 pushes the samples
// towards their class (the paper's w is s − 1).
// Layout: x and ε̃ (N·C·H·W) flat, y and eps2 (2, N·C·H·W): conditional half first.
// Mapping: one invocation per element of x / ε̃ (writing both halves of y), 1D grid of WG
// (linear index = gid.x + gid.y · num_workgroups.x · WG).

struct Params {
    len: u32,    // N·C·H·W, elements of one half
    scale: f32,  // s
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;             // (N·C·H·W)
@group(0) @binding(2) var<storage, read_write> y: array<f32>;       // (2, N·C·H·W)
@group(0) @binding(3) var<storage, read> eps2: array<f32>;          // (2, N·C·H·W)
@group(0) @binding(4) var<storage, read_write> eps: array<f32>;     // (N·C·H·W)

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn duplicate(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.len) {
        return;
    }
    let v = x[i];
    y[i] = v;
    y[i + params.len] = v;
}

@compute @workgroup_size(WG)
fn combine(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.len) {
        return;
    }
    let cond = eps2[i];
    let uncond = eps2[i + params.len];
    eps[i] = uncond + params.scale * (cond - uncond);
}
