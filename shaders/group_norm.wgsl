// Group normalization (Wu & He 2018), as PyTorch nn.GroupNorm(groups, C, eps, affine=True),
// optionally fused with the SiLU that follows it everywhere in the U-Net's res blocks.
//
// The C channels of each sample are split into `groups` groups of cg = C / groups channels; the
// statistics of one (sample, group) cover its cg · HW values, L = cg · HW:
//   forward:  μ = (1/L) Σ x,   σ² = (1/L) Σ (x − μ)²  (biased, as PyTorch),   rstd = 1 / √(σ² + eps)
//             x̂ = (x − μ) · rstd,   n = x̂ · γ[c] + β[c],
//             y = n                        (params.silu = 0, plain group norm)
//             y = silu(n) = n · σ(n)       (params.silu = 1, fused; n is never stored)
//   backward: dn = dy                      (params.silu = 0)
//             dn = dy · σ(n) · (1 + n · (1 − σ(n)))  (params.silu = 1, n recomputed from x, μ,
//                                                      rstd, γ, β)
//             then with g = dn · γ[c] and means over the group:
//             dx += rstd · (g − mean(g) − x̂ · mean(g · x̂))
//             dγ[c] += Σ_{n,hw} dn · x̂,   dβ[c] += Σ_{n,hw} dn
// Numerics: two passes in f32 — the mean of the values shifted by the group's first value (so the
// running sum stays of the size of the spread, not of the offset), then the variance about the
// mean. Never E[x²] − E[x]², which cancels catastrophically for data with a large mean.
//
// Layout: x, y, dy, dx are (N, C, HW) row-major with HW = H·W flattened, so one (sample, group) is
// the contiguous run of L values starting at (n · groups + g) · L. mean, rstd are (N, groups).
//
// Three mappings of the same math (all tested; src/ops/group_norm.rs picks one per adapter):
// - `forward`, `backward_dx`, `backward_params`: one workgroup of WG invocations per (sample, group)
//   (per channel for the parameter gradients); each invocation sums a strided slice, then a
//   shared-memory tree reduction (512 bytes of workgroup memory). The natural GPU mapping.
// - `*_subgroup`: the same workgroups and slices, the sums added up with subgroup operations
//   (below). Only in a second module, made where the adapter has subgroups.
// - `*_serial`: one invocation per (sample, group) walking its values alone, no barriers; the
//   dx kernel also leaves per-(sample, channel) sums from which a tiny kernel (one invocation per
//   channel) adds up dγ and dβ. Workgroup barriers are emulated and slow on CPU drivers
//   (lavapipe); this is faster there, and too little parallelism for a real GPU.
//
// Subgroup reduction. A GPU does not run a workgroup's invocations one by one: it runs them in
// groups of lanes that execute each instruction together, in lockstep, on one SIMD unit — a
// *subgroup* (NVIDIA: warp of 32; AMD: wave of 32 or 64; Intel: SIMD8/16/32; Apple: SIMD group
// of 32; lavapipe: one CPU vector register's worth of f32). Its size is the adapter's, 4 to 128,
// read by the kernels from builtins. The lanes of one subgroup can exchange registers directly:
// `subgroupAdd(v)` returns the sum of v over the subgroup's active lanes to each of them, in a
// few shuffle steps through registers, with no workgroup memory and no barrier — the lanes
// already execute in step (or the operation itself synchronizes them), so none can read a value
// another has not yet produced. Different subgroups of a workgroup, though, run independently,
// so combining their totals still goes through workgroup memory with one barrier:
//   1. each invocation sums its strided slice (as in the workgroup mapping);
//   2. `subgroupAdd` gives each subgroup its total; the subgroup's first active lane writes it to
//      `partials[subgroup_id]`;
//   3. one `workgroupBarrier()`, so all num_subgroups partials are written before any is read;
//   4. every invocation adds up partials[0 .. num_subgroups) itself, in the same order, so all get
//      the same total without a second barrier or a broadcast (num_subgroups is 2 for a wave of
//      32, 16 at most for subgroups of 4: a few reads of the same address, which a GPU serves to
//      all lanes at once).
// The tree reduction takes log2(WG) = 6 barriers plus 2; this takes 1. Any subgroup size works:
// num_subgroups = ⌈WG / size⌉ slots are used (a subgroup of 128 lanes holds the whole workgroup of
// 64, one slot; sizes that do not divide WG leave the last subgroup part-filled, and subgroupAdd
// adds only the active lanes). `partials` has WG slots per round, enough even for a size of 1.
// Reuse: the forward makes two sums. Its second must not overwrite slots that a slow subgroup
// may still be reading for the first (there is no barrier after step 4), so each call of one
// kernel writes its own round, a separate half of `partials`: 2 · 64 · 8 bytes = 1024 bytes of
// workgroup memory. Results may differ from the tree reduction's in the last bits: the same
// values are added in another order (and the order inside subgroupAdd is the driver's).
// Modules: a module that uses subgroup operations fails to create on an adapter without them
// (wgpu validates the whole module), so the subgroup kernels sit in a last section of this file
// and src/ops/group_norm.rs makes two modules: the file cut before that section (every adapter),
// and the whole file (adapters with wgpu::Features::SUBGROUP). naga 30 accepts subgroup builtins
// without the WGSL directive `enable subgroups;` and rejects the directive as not yet
// implemented; once naga requires it, the subgroup module must be given it as its first line.
// Workgroup indices: linear = wid.x + wid.y · num_workgroups.x (see `grid_1d` in src/gpu/plan.rs).

struct Params {
    n: u32,       // samples
    c: u32,       // channels
    hw: u32,      // H · W
    groups: u32,  // groups (divides c)
    eps: f32,
    silu: u32,    // 1: y = silu(group_norm(x)) (fused), 0: y = group_norm(x)
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;                 // (N, C, HW)
@group(0) @binding(2) var<storage, read> gamma: array<f32>;             // (C)
@group(0) @binding(3) var<storage, read> beta: array<f32>;              // (C)  backward: used only when params.silu = 1
@group(0) @binding(4) var<storage, read_write> y: array<f32>;           // (N, C, HW)   forward output
@group(0) @binding(5) var<storage, read_write> mean_out: array<f32>;    // (N, groups)  forward output
@group(0) @binding(6) var<storage, read_write> rstd_out: array<f32>;    // (N, groups)  forward output
@group(0) @binding(7) var<storage, read> mean: array<f32>;              // (N, groups)  saved by forward
@group(0) @binding(8) var<storage, read> rstd: array<f32>;              // (N, groups)  saved by forward
@group(0) @binding(9) var<storage, read> dy: array<f32>;                // (N, C, HW)
@group(0) @binding(10) var<storage, read_write> dx: array<f32>;         // (N, C, HW)   accumulated
@group(0) @binding(11) var<storage, read_write> dgamma: array<f32>;     // (C)          accumulated
@group(0) @binding(12) var<storage, read_write> dbeta: array<f32>;      // (C)          accumulated
@group(0) @binding(13) var<storage, read_write> partial_out: array<vec2<f32>>;  // (N, C)  serial dx output
@group(0) @binding(14) var<storage, read> partial: array<vec2<f32>>;            // (N, C)  (Σ dy·x̂, Σ dy)

const WG: u32 = 64u;          // workgroup and subgroup mappings: invocations per (sample, group)
const WG_SERIAL: u32 = 64u;   // serial mapping: (sample, group)s per workgroup

fn sigmoid(v: f32) -> f32 {
    return 1.0 / (1.0 + exp(-v));
}

// The forward's output from the normalized, scaled and shifted value n.
fn activate(n: f32) -> f32 {
    if (params.silu != 0u) {
        return n * sigmoid(n);
    }
    return n;
}

// dn = ∂L/∂n from d = ∂L/∂y and the recomputed n = x̂ · γ + β (the forward does not store it):
// d itself for the plain group norm, through the SiLU's derivative when fused.
fn grad_n(d: f32, n: f32) -> f32 {
    if (params.silu == 0u) {
        return d;
    }
    let s = sigmoid(n);
    return d * s * (1.0 + n * (1.0 - s));
}

// ---- per-invocation pieces of the workgroup and subgroup mappings -----------------------------
// Both mappings run WG invocations per (sample, group) (per channel for the parameter gradients),
// each walking the strided slice i = lid, lid + WG, …; they differ only in how the WG partial sums
// are added up. These functions are the per-invocation work either side of those sums.

// The contiguous run of one (sample, group): its first index, length and first channel.
struct Run {
    base: u32,
    len: u32,
    c0: u32,
}

fn run_of(ng: u32) -> Run {
    let cg = params.c / params.groups;
    let len = cg * params.hw;
    return Run(ng * len, len, (ng % params.groups) * cg);
}

// Σ (x − shift) over the invocation's slice (shift = the run's first value, see Numerics).
fn shifted_sum(r: Run, shift: f32, lid: u32) -> f32 {
    var s = 0.0;
    for (var i = lid; i < r.len; i += WG) {
        s += x[r.base + i] - shift;
    }
    return s;
}

// Σ (x − μ)² over the invocation's slice.
fn squares_about(r: Run, mu: f32, lid: u32) -> f32 {
    var q = 0.0;
    for (var i = lid; i < r.len; i += WG) {
        let d = x[r.base + i] - mu;
        q += d * d;
    }
    return q;
}

// y over the invocation's slice, from the group's μ and rstd.
fn normalize(r: Run, mu: f32, rs: f32, lid: u32) {
    for (var i = lid; i < r.len; i += WG) {
        let ch = r.c0 + i / params.hw;
        y[r.base + i] = activate((x[r.base + i] - mu) * rs * gamma[ch] + beta[ch]);
    }
}

// g = dn · γ and x̂ at index i of the run.
fn g_and_xhat(r: Run, mu: f32, rs: f32, i: u32) -> vec2<f32> {
    let ch = r.c0 + i / params.hw;
    let xh = (x[r.base + i] - mu) * rs;
    return vec2(grad_n(dy[r.base + i], xh * gamma[ch] + beta[ch]) * gamma[ch], xh);
}

// (Σ g, Σ g · x̂) over the invocation's slice.
fn dx_sums(r: Run, mu: f32, rs: f32, lid: u32) -> vec2<f32> {
    var sums = vec2(0.0);
    for (var i = lid; i < r.len; i += WG) {
        let gx = g_and_xhat(r, mu, rs, i);
        sums += vec2(gx.x, gx.x * gx.y);
    }
    return sums;
}

// dx += rstd · (g − mean(g) − x̂ · mean(g · x̂)) over the invocation's slice, m = the two means.
fn dx_apply(r: Run, mu: f32, rs: f32, m: vec2<f32>, lid: u32) {
    for (var i = lid; i < r.len; i += WG) {
        let gx = g_and_xhat(r, mu, rs, i);
        dx[r.base + i] += rs * (gx.x - m.x - gx.y * m.y);
    }
}

// (Σ dn · x̂, Σ dn) over the invocation's slice of channel ch's N · HW values.
fn param_sums(ch: u32, lid: u32) -> vec2<f32> {
    let g = ch / (params.c / params.groups);
    let gm = gamma[ch];
    let bt = beta[ch];
    var sums = vec2(0.0);
    for (var k = lid; k < params.n * params.hw; k += WG) {
        let s = k / params.hw;
        let i = (s * params.c + ch) * params.hw + k % params.hw;
        let ng = s * params.groups + g;
        let xh = (x[i] - mean[ng]) * rstd[ng];
        let d = grad_n(dy[i], xh * gm + bt);
        sums += vec2(d * xh, d);
    }
    return sums;
}

// ---- workgroup mapping -------------------------------------------------------------------------

var<workgroup> red: array<vec2<f32>, WG>;  // 64 · 8 = 512 bytes

// Sum of `v` over the workgroup (two sums at once), returned to every invocation.
fn workgroup_sum(v: vec2<f32>, lid: u32) -> vec2<f32> {
    red[lid] = v;
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        workgroupBarrier();
        if (lid < s) {
            red[lid] += red[lid + s];
        }
    }
    workgroupBarrier();
    let total = red[0];
    workgroupBarrier();  // everyone has read red[0] before it is overwritten by the next call
    return total;
}

@compute @workgroup_size(WG)
fn forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let ng = wid.x + wid.y * nwg.x;  // (sample, group), uniform over the workgroup
    if (ng >= params.n * params.groups) {
        return;
    }
    let r = run_of(ng);
    let shift = x[r.base];
    let mu = shift + workgroup_sum(vec2(shifted_sum(r, shift, lid), 0.0), lid).x / f32(r.len);
    let rs = inverseSqrt(workgroup_sum(vec2(squares_about(r, mu, lid), 0.0), lid).x / f32(r.len) + params.eps);
    normalize(r, mu, rs, lid);
    if (lid == 0u) {
        mean_out[ng] = mu;
        rstd_out[ng] = rs;
    }
}

@compute @workgroup_size(WG)
fn backward_dx(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let ng = wid.x + wid.y * nwg.x;
    if (ng >= params.n * params.groups) {
        return;
    }
    let r = run_of(ng);
    let mu = mean[ng];
    let rs = rstd[ng];
    let m = workgroup_sum(dx_sums(r, mu, rs, lid), lid) / f32(r.len);  // (mean(g), mean(g · x̂))
    dx_apply(r, mu, rs, m, lid);
}

@compute @workgroup_size(WG)
fn backward_params(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let ch = wid.x + wid.y * nwg.x;  // channel, uniform over the workgroup
    if (ch >= params.c) {
        return;
    }
    let total = workgroup_sum(param_sums(ch, lid), lid);
    if (lid == 0u) {
        dgamma[ch] += total.x;
        dbeta[ch] += total.y;
    }
}

// ---- serial mapping ----------------------------------------------------------------------------

@compute @workgroup_size(WG_SERIAL)
fn forward_serial(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let ng = gid.x + gid.y * nwg.x * WG_SERIAL;
    if (ng >= params.n * params.groups) {
        return;
    }
    let cg = params.c / params.groups;
    let len = cg * params.hw;
    let base = ng * len;
    // Per channel row (in cache for its second pass): the row mean (of values shifted by the row's
    // first one), then the sum of squares about it; rows merged with Chan et al.'s pairwise update
    // of (count, mean, M2). x is read from memory twice in all (here and to normalize), not three
    // times, and no sum ever spans more than one row.
    let hwf = f32(params.hw);
    var mu = 0.0;
    var m2 = 0.0;
    for (var k = 0u; k < cg; k++) {
        let row = base + k * params.hw;
        let shift = x[row];
        var rs = 0.0;
        for (var i = row; i < row + params.hw; i++) {
            rs += x[i] - shift;
        }
        let row_mean = shift + rs / hwf;
        var rq = 0.0;
        for (var i = row; i < row + params.hw; i++) {
            let d = x[i] - row_mean;
            rq += d * d;
        }
        let seen = f32(k) * hwf;  // values merged so far
        let delta = row_mean - mu;
        mu += delta * (hwf / (seen + hwf));
        m2 += rq + delta * delta * (seen * hwf / (seen + hwf));
    }
    let r = inverseSqrt(m2 / f32(len) + params.eps);
    let c0 = (ng % params.groups) * cg;
    for (var k = 0u; k < cg; k++) {
        let a = r * gamma[c0 + k];
        let b = beta[c0 + k];
        let row = base + k * params.hw;
        for (var i = 0u; i < params.hw; i++) {
            y[row + i] = activate((x[row + i] - mu) * a + b);
        }
    }
    mean_out[ng] = mu;
    rstd_out[ng] = r;
}

// Also leaves the per-(sample, channel) sums (Σ dn · x̂, Σ dn) in `partial` for the parameter
// gradients, so that those need not read x and dy again.
@compute @workgroup_size(WG_SERIAL)
fn backward_dx_serial(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let ng = gid.x + gid.y * nwg.x * WG_SERIAL;
    if (ng >= params.n * params.groups) {
        return;
    }
    let cg = params.c / params.groups;
    let len = cg * params.hw;
    let base = ng * len;
    let nc0 = ng * cg;  // (sample, first channel of the group)
    let c0 = (ng % params.groups) * cg;
    let mu = mean[ng];
    let r = rstd[ng];
    var sums = vec2(0.0);  // (Σ g · x̂, Σ g) with g = dn · γ: per-row sums times γ, summed over rows
    for (var k = 0u; k < cg; k++) {
        let gm = gamma[c0 + k];
        let bt = beta[c0 + k];
        let row = base + k * params.hw;
        var row_sums = vec2(0.0);  // (Σ dn · x̂, Σ dn) over the row
        for (var i = 0u; i < params.hw; i++) {
            let xh = (x[row + i] - mu) * r;
            let d = grad_n(dy[row + i], xh * gm + bt);
            row_sums += vec2(d * xh, d);
        }
        partial_out[nc0 + k] = row_sums;
        sums += gm * row_sums;
    }
    let m = sums / f32(len);  // (mean(g · x̂), mean(g))
    for (var k = 0u; k < cg; k++) {
        let gm = gamma[c0 + k];
        let bt = beta[c0 + k];
        let row = base + k * params.hw;
        for (var i = 0u; i < params.hw; i++) {
            let xh = (x[row + i] - mu) * r;
            dx[row + i] += r * (grad_n(dy[row + i], xh * gm + bt) * gm - m.y - xh * m.x);
        }
    }
}

// dγ[c] += Σ_n partial[n, c].x, dβ[c] += Σ_n partial[n, c].y.
@compute @workgroup_size(WG_SERIAL)
fn backward_params_serial(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let ch = gid.x + gid.y * nwg.x * WG_SERIAL;
    if (ch >= params.c) {
        return;
    }
    var sums = vec2(0.0);
    for (var s = 0u; s < params.n; s++) {
        sums += partial[s * params.c + ch];
    }
    dgamma[ch] += sums.x;
    dbeta[ch] += sums.y;
}

// ==== subgroup mapping: only in the `group_norm_subgroup` module (src/ops/group_norm.rs) ====
// Everything below uses subgroup operations; the module for adapters without them is this file
// cut at the line above.

// Per-subgroup partial sums, two rounds (see the header): round k of subgroup s at k · WG + s.
// WG slots per round: enough for any subgroup size, even 1. 2 · 64 · 8 = 1024 bytes.
var<workgroup> partials: array<vec2<f32>, 2 * WG>;

// Sum of `v` over the workgroup, returned to every invocation. `round` (0 or 1) picks the half of
// `partials` this call writes: the kernels call this at most twice, each time with another round.
fn subgroup_sum(v: vec2<f32>, round: u32, lid: u32, sid: u32, nsg: u32) -> vec2<f32> {
    let mine = subgroupAdd(v);  // the subgroup's total, in each of its lanes; no barrier
    if (subgroupBroadcastFirst(lid) == lid) {  // one writer per subgroup: its first active lane
        partials[round * WG + sid] = mine;
    }
    workgroupBarrier();  // every subgroup's partial is written before any is read
    var total = vec2(0.0);
    for (var k = 0u; k < nsg; k++) {
        total += partials[round * WG + k];
    }
    return total;
}

@compute @workgroup_size(WG)
fn forward_subgroup(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sid: u32,
    @builtin(num_subgroups) nsg: u32,
) {
    let ng = wid.x + wid.y * nwg.x;  // (sample, group), uniform over the workgroup
    if (ng >= params.n * params.groups) {
        return;
    }
    let r = run_of(ng);
    let shift = x[r.base];
    let mu = shift + subgroup_sum(vec2(shifted_sum(r, shift, lid), 0.0), 0u, lid, sid, nsg).x / f32(r.len);
    let q = subgroup_sum(vec2(squares_about(r, mu, lid), 0.0), 1u, lid, sid, nsg).x;
    let rs = inverseSqrt(q / f32(r.len) + params.eps);
    normalize(r, mu, rs, lid);
    if (lid == 0u) {
        mean_out[ng] = mu;
        rstd_out[ng] = rs;
    }
}

@compute @workgroup_size(WG)
fn backward_dx_subgroup(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sid: u32,
    @builtin(num_subgroups) nsg: u32,
) {
    let ng = wid.x + wid.y * nwg.x;
    if (ng >= params.n * params.groups) {
        return;
    }
    let r = run_of(ng);
    let mu = mean[ng];
    let rs = rstd[ng];
    let m = subgroup_sum(dx_sums(r, mu, rs, lid), 0u, lid, sid, nsg) / f32(r.len);
    dx_apply(r, mu, rs, m, lid);
}

@compute @workgroup_size(WG)
fn backward_params_subgroup(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sid: u32,
    @builtin(num_subgroups) nsg: u32,
) {
    let ch = wid.x + wid.y * nwg.x;  // channel, uniform over the workgroup
    if (ch >= params.c) {
        return;
    }
    let total = subgroup_sum(param_sums(ch, lid), 0u, lid, sid, nsg);
    if (lid == 0u) {
        dgamma[ch] += total.x;
        dbeta[ch] += total.y;
    }
}
