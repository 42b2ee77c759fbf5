// Large reductions: the sum (or the sum of squares) of a whole tensor, in levels.
//
//   one level:  dst[j] = scale · Σ_{k ≥ 0, j + k·m < n} f(src[j + k·m]),   j = 0 .. m−1
//               f(v) = v² on the first level of `sum_squares` (square = 1), else f(v) = v.
//
// The host (src/ops/reduce.rs) chains levels with m = ⌈n / 64⌉ until m = 1; the last level writes
// out[0] (scale = 1, or 1/numel for a mean). Every element reaches exactly one partial and every
// partial sums ≤ 64 values, so a 35.7M-element sum takes 5 levels. Within an invocation the ≤ 64
// terms go into 4 independent accumulators (terms k ≡ 0,1,2,3 mod 4) of ≤ 16 terms each, combined
// pairwise at the end: shorter dependency chains, and each value passes through at most 15 + 2
// roundings per level. Worst-case error ≈ levels · 17 · 2⁻²⁴ · Σ|f(x)| (≈ 5e-6 · Σ|f(x)| for 35.7M
// elements) instead of n · 2⁻²⁴ for one running sum; for random data the errors mostly cancel.
// Deterministic: no atomics, a fixed summation order, so the same input gives the same bits.
//
// Layout: src is a flat array of n f32, dst a flat array of m f32.
// Mapping: one invocation per partial j, workgroups of 256 over x and y of the dispatch grid
// (grid_1d), j = gid.x + gid.y · (num_workgroups.x · 256). Invocation j reads j, j+m, j+2m, …:
// neighbouring invocations read neighbouring addresses at every step (coalesced).
//
// Subgroup variant (`partial_sums_subgroup`, only where the adapter has subgroup operations; see
// the header of group_norm.wgsl for what a subgroup is and why it needs no barrier inside): one
// workgroup of WG = 256 invocations per partial, dst[w] = scale · Σ f(src[w · BLOCK + t]) over the
// block t < BLOCK = 16 · WG = 4096 (m = ⌈n / 4096⌉, so 35.7M elements take 3 levels, not 5).
// Invocation i reads t = i, i + WG, …, i + 15 · WG (coalesced: the workgroup reads 256
// neighbouring values at each step) into 4 accumulators of 4 terms; `subgroupAdd` sums those
// within each subgroup; the subgroups' totals meet in `partials` (WG slots, enough for any subgroup
// size: 256 · 4 = 1024 bytes of workgroup memory) after one barrier, and invocation 0 adds them up
// in order and writes dst[w]. Each value passes through ≤ 5 roundings in its invocation, those of
// subgroupAdd (log₂ of the subgroup size on a tree, up to size − 1 if the driver adds in sequence)
// and ≤ num_subgroups − 1 in the last sum: typical errors as the levels above, a looser worst case.
// The order inside subgroupAdd is the driver's: the same input gives the same bits on one adapter
// (and the tests check it there), but the bits can differ between adapters and from `partial_sums`.
// This section is cut off the module made for adapters without subgroups (src/ops/reduce.rs).

struct Params {
    n: u32,       // elements of src
    m: u32,       // partials written to dst (stride between the terms of one partial)
    square: u32,  // 1: sum v², 0: sum v
    scale: f32,   // multiplies each partial (1, or 1/numel on the last level of a mean)
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;        // (n)
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;  // (m)   written

const WG: u32 = 256u;

fn term(i: u32) -> f32 {
    if (i >= params.n) {
        return 0.0;
    }
    let v = src[i];
    return select(v, v * v, params.square == 1u);
}

@compute @workgroup_size(WG)
fn partial_sums(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
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
        a0 += term(i);
        a1 += term(i + m);
        a2 += term(i + 2u * m);
        a3 += term(i + 3u * m);
    }
    dst[j] = params.scale * ((a0 + a1) + (a2 + a3));
}

// ==== subgroup variant: only in the `reduce_subgroup` module (src/ops/reduce.rs) ====

const BLOCK: u32 = 16u * WG;  // values per workgroup of `partial_sums_subgroup`

var<workgroup> partials: array<f32, WG>;  // one slot per subgroup (≤ WG subgroups)

@compute @workgroup_size(WG)
fn partial_sums_subgroup(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sid: u32,
    @builtin(num_subgroups) nsg: u32,
) {
    let w = wid.x + wid.y * nwg.x;  // partial, uniform over the workgroup
    if (w >= params.m) {
        return;
    }
    let base = w * BLOCK + lid;
    var a0 = 0.0;
    var a1 = 0.0;
    var a2 = 0.0;
    var a3 = 0.0;
    for (var k = 0u; k < BLOCK; k += 4u * WG) {
        a0 += term(base + k);
        a1 += term(base + k + WG);
        a2 += term(base + k + 2u * WG);
        a3 += term(base + k + 3u * WG);
    }
    let mine = subgroupAdd((a0 + a1) + (a2 + a3));  // no barrier within a subgroup
    if (subgroupBroadcastFirst(lid) == lid) {  // one writer per subgroup: its first active lane
        partials[sid] = mine;
    }
    workgroupBarrier();  // every subgroup's total is written before invocation 0 reads them
    if (lid == 0u) {
        var total = 0.0;
        for (var k = 0u; k < nsg; k++) {
            total += partials[k];
        }
        dst[w] = params.scale * total;
    }
}
