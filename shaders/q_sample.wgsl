// q_sample: the forward (noising) process for one training step, fused with the batch gather
// from a dataset resident on the GPU (Ho et al. 2020, eq. 4 and Algorithm 1 lines 2–5):
//
//   x0   = data[index[b]], mirrored along W when `flip` and the coin of image b says so
//   ε    ~ N(0, I)                              rng_normal(seed, first·C·H·W + i), i = linear element index
//   x_t  = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε           t = t[b], (√ᾱ_t, √(1 − ᾱ_t)) = table[t]
//   eps  = ε                                     the training target of L_simple (eq. 14)
//
// The flip coin of image b is the top bit of word 0 of rng_block(seed, 1, first + b) (stream 1,
// so it is independent of the noise). `first` is the position of this batch's first image in a
// larger batch split into micro-batches: each image draws the same numbers either way. Dataset rows and timesteps arrive as f32 integers; an index past
// the end is clamped to the last row (likewise t to the last table row).
//
// Layout: data (N_data, C, H, W), index (B), t (B), table (T, 2), x_t and eps (B, C, H, W).
// Mapping: one invocation per output element i = ((b·C + c)·H + y)·W + x; workgroups of 256
// spread over x and y of the dispatch grid (grid_1d), i = gid.x + gid.y · (num_workgroups.x · 256).

#import rng

struct Params {
    n: u32,     // B·C·H·W
    chw: u32,   // C·H·W
    w: u32,     // W
    flip: u32,  // 1: random horizontal flips
    seed: u32,
    first: u32, // index of image 0 within the whole batch
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> data: array<f32>;        // (N_data, C, H, W)
@group(0) @binding(2) var<storage, read> index: array<f32>;       // (B)
@group(0) @binding(3) var<storage, read> t: array<f32>;           // (B)
@group(0) @binding(4) var<storage, read> table: array<f32>;       // (T, 2)
@group(0) @binding(5) var<storage, read_write> x_t: array<f32>;   // (B, C, H, W)  written
@group(0) @binding(6) var<storage, read_write> eps: array<f32>;   // (B, C, H, W)  written

const WG: u32 = 256u;
const STREAM_FLIP: u32 = 1u;

@compute @workgroup_size(WG)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.n) {
        return;
    }
    let b = i / params.chw;
    let r = i - b * params.chw;          // (c, y, x) within the image
    let col = r % params.w;
    var src_col = col;
    if (params.flip != 0u && (rng_block(params.seed, STREAM_FLIP, params.first + b).x >> 31u) == 1u) {
        src_col = params.w - 1u - col;
    }
    let n_data = arrayLength(&data) / params.chw;
    let row = min(u32(index[b]), n_data - 1u);
    let x0 = data[row * params.chw + r - col + src_col];
    let tt = min(u32(t[b]), arrayLength(&table) / 2u - 1u);
    let e = rng_normal(params.seed, params.first * params.chw + i);
    x_t[i] = table[2u * tt] * x0 + table[2u * tt + 1u] * e;
    eps[i] = e;
}
