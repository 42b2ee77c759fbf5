// Class embedding (diffusers UNet2DModel with `num_class_embeds`, class_embed_type null): a learned
// table of one row per class, looked up by label and added to the time embedding, so every res
// block's time projection sees emb = time_embedding(t) + table[label] (Ho & Salimans 2022 train
// one such network for classifier-free guidance, with a "no class" row for the unconditional model).
//
//   forward:  y[n, j]  = table[label[n], j]          (flags bit 0: y[n, j] += table[label[n], j])
//   backward: dtable[r, j] += Σ_{n : label[n] = r} dy[n, j]
//
// Layout: labels (N) as f32 integers (exact below 2^24, like the timesteps), table (R, D) and
// y, dy (N, D) row-major. Labels must be < R: the caller validates them (an out-of-range row would
// read clamped or zero memory, depending on the adapter).
// Mapping: forward one invocation per element of y; backward one invocation per element of
// dtable, looping over the batch (a gather instead of a scatter: no atomics, deterministic sums).
// Both on a 1D grid of WG (linear index = gid.x + gid.y · num_workgroups.x · WG).

struct Params {
    n: u32,      // batch
    rows: u32,   // R, classes in the table
    dim: u32,    // D, embedding width
    flags: u32,  // bit 0: forward accumulates into y
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> labels: array<f32>;        // (N)
@group(0) @binding(2) var<storage, read> table: array<f32>;         // (R, D)
@group(0) @binding(3) var<storage, read_write> y: array<f32>;       // (N, D)
@group(0) @binding(4) var<storage, read> dy: array<f32>;            // (N, D)
@group(0) @binding(5) var<storage, read_write> dtable: array<f32>;  // (R, D) accumulated

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = gid.x + gid.y * nwg.x * WG;
    if (o >= params.n * params.dim) {
        return;
    }
    let n = o / params.dim;
    let j = o % params.dim;
    let row = u32(labels[n]);
    var v = table[row * params.dim + j];
    if ((params.flags & 1u) != 0u) {
        v += y[o];
    }
    y[o] = v;
}

@compute @workgroup_size(WG)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = gid.x + gid.y * nwg.x * WG;
    if (o >= params.rows * params.dim) {
        return;
    }
    let r = f32(o / params.dim);
    let j = o % params.dim;
    var acc = 0.0;
    for (var n = 0u; n < params.n; n++) {
        acc += select(0.0, dy[n * params.dim + j], labels[n] == r);
    }
    dtable[o] += acc;
}
