// Strided batched matrix product (GEMM), the workhorse of linear layers and attention.
//
//   C[z] = alpha · op(A[z]) · op(B[z])        (or C[z] += … when `accumulate`)
//   op(A)[i, k] = a[offset_a + z·stride_a + i·a_si + k·a_sk]     i < m, k < K
//   op(B)[k, j] = b[offset_b + z·stride_b + k·b_sk + j·b_sj]     k < K, j < n
//   C[i, j]     = c[offset_c + z·stride_c + i·ldc + j]
// A transposed operand just swaps its two strides (the Rust side computes them from lda/ldb and
// the transpose flags); a stride_* of 0 broadcasts that operand over the batch. With `sum_batch`
// the batch items are summed into one C (z runs inside the kernel): Σ_z op(A[z])·op(B[z]), the
// weight gradient of a layer applied to every item of a batch.
//
// Optional bias epilogue: bias_mode 1 adds bias[j] (per column: nn.Linear), 2 adds bias[i] (per
// row: a channel bias of an image-layout output), after alpha: C = alpha·AB + bias (or C += …).
//
// Entry points (all write C with alpha, bias and accumulate as above):
// - `naive`: one invocation per C element, a plain dot product. Workgroup 16×4 over (j, i).
// - `blocked`: one invocation per 4×4 block of C, scalar loads, any strides. Workgroup 8×8 over
//   (j-block, i-block), i.e. a 32×32 tile of C per workgroup; no workgroup memory, no barriers
//   (barriers are emulated and slow on CPU Vulkan drivers; several outputs per invocation are not).
// - `tile_nn`, `tile_tn`, `tile_nt`, `tile_tt` (t = that operand is transposed): like `blocked`,
//   but every operand is read as vec4 along its contiguous dimension, 4×4 tiles at a time, and
//   the 4×4 block product is a mat4x4 product, and C rows are stored as vec4 (every load and
//   store on a CPU driver is a loop over the SIMD lanes: a vec4 access costs about what a scalar
//   one does). They need every offset, stride and row stride of A, B and C to be a multiple
//   of 4 (checked on the Rust side). A k-tail (K mod 4 ≠ 0) is read as one more tile whose
//   entries beyond K are zeroed with `select`.
// - `wide`: one invocation per 16 rows × 8 columns of C (128 accumulators), workgroups of 64
//   invocations along j, workgroup y = the 16-row block, so all 64 invocations load the same
//   A values (uniform loads) and only op(B)'s 8 columns differ between them: per k, 8 scalar
//   (or, with `wide_vec4` bit 0, 2 vec4) loads of B and 16 uniform loads of A (bit 1: 4 vec4)
//   feed 128 FMAs, against 64 FMAs per 8 loads in the 4×4 tiles. No workgroup memory.
// - `shared_tile`: the textbook GPU GEMM with workgroup memory, described in its own section below.
//   Workgroup 16×16 over (j, i), a 64×64 tile of C per workgroup, 4×4 outputs per invocation, any
//   strides; out-of-range operand elements are loaded as zeros.
// Rows and columns past m and n are never stored; `naive`/`blocked`/`wide` clamp their scalar
// loads into the matrix, while `tile_*` and `wide`'s vec4 loads read the rest of the last tile
// (inside the row stride, or made safe by WebGPU's robust buffer access) — a row of C depends only
// on the same row of op(A), a column only on the same column of op(B), so such values never reach
// a stored element.
// The batch index z is the dispatch's z (≤ 65535), or 0 with the batch summed inside.
//
// ---- shared_tile: workgroup-memory tiling ------------------------------------------------------
// In `naive`, each of the m·n invocations reads its whole row of op(A) and column of op(B) from
// global memory: every A value is fetched n times and every B value m times. On a GPU global
// memory is far slower than arithmetic, so the product is bound by those fetches. `shared_tile`
// fetches each value once per workgroup instead of once per invocation:
// - Tiles. A workgroup of 16×16 = 256 invocations owns a 64×64 tile of C (rows i0..i0+63,
//   columns j0..j0+63). That tile needs the 64 rows i0.. of op(A) and the 64 columns j0.. of
//   op(B); the workgroup walks along K in steps of BK = 8 and, per step, copies the 64×8 slab
//   op(A)[i0.., k0..k0+7] and the 8×64 slab op(B)[k0..k0+7, j0..] from global memory into two
//   `var<workgroup>` arrays (`tile_a`, `tile_b`: memory shared by the workgroup's invocations, on
//   the chip, about as fast as registers). Each value fetched is then used 64 times from there.
// - Cooperative loads. Each slab is 8 rows (k) of 16 vec4s, 128 vec4s, and half of the 256
//   invocations load one vec4 of it: invocations 0..127 fill `tile_a`, 128..255 `tile_b`. The vec4
//   at (kk, y) of `tile_a` holds op(A)[i0 + y + 16r, k0 + kk] for r = 0..3 (rows 16 apart: see the
//   register block), that of `tile_b` op(B)[k0 + kk, j0 + x + 16q]. Elements past m, n or K are
//   stored as 0, so the arithmetic needs no edge tests (a zero adds nothing).
// - Coalescing. A GPU runs invocations in groups of 32 or 64 (warps/wavefronts) and merges their
//   simultaneous global loads into as few memory transactions as the addresses allow: one when they
//   read consecutive addresses. So consecutive invocations take consecutive elements along the
//   operand's contiguous dimension: for plain A (a_sk = 1) 8 consecutive invocations take k = 0..7
//   of one row (each of the 4 loads of the vec4 reads 32 contiguous bytes across them); for
//   transposed A (a_si = 1) 16 consecutive invocations take y = 0..15, so each of the 4 loads reads
//   16 consecutive i (64 bytes); likewise op(B) along j (plain B) or k (transposed B). Strides that
//   are 1 for neither dimension just give scattered loads.
// - Register block. Invocation (x, y) accumulates the 16 outputs C[i0 + y + 16r, j0 + x + 16q],
//   r, q < 4, in a mat4x4 held in registers: per kk it reads one vec4 of `tile_a` (its 4 rows) and
//   one of `tile_b` (its 4 columns) and does their 16 products (one output per invocation would do
//   1 FMA per 2 reads of workgroup memory; this does 16 per 2). Rows and columns 16 apart rather
//   than 4 neighbours make the 16 invocations along x read 16 consecutive vec4s of `tile_b` (and
//   the same vec4 of `tile_a`), and store 16 consecutive elements of a row of C: coalesced stores.
// - The two barriers. `workgroupBarrier()` waits until every invocation of the workgroup has
//   reached it and makes their workgroup-memory writes visible to each other. The first, after the
//   loads, is needed because an invocation reads values that *other* invocations loaded; the
//   second, after the arithmetic, because the next step's loads overwrite the slabs that slower
//   invocations may still be reading. Every invocation, even one whose outputs all lie past m or
//   n, runs every load and reaches every barrier (the loops' trip counts come from `params` only);
//   such invocations just store nothing at the end.
// - Bank padding. Workgroup memory is split into (on most GPUs) 32 banks of 4-byte words, word w
//   in bank w mod 32, and invocations that touch different words of one bank at once are served one
//   after the other (16-byte accesses go 8 invocations at a time). The slab rows are 17 vec4s, not
//   16: when a load runs along k, 8 consecutive invocations write k = 0..7 of one y; with rows of
//   64 words those 8 vec4s would start in the same bank, with 68 words they cover all 32 banks.
//   (Reasoned, not measured: there is no GPU here.)
// - Workgroup memory: 2 slabs × 8 rows × 17 vec4s × 16 bytes = 4352 bytes (WebGPU's default limit
//   is 16384).
// - Why 8 deep, in vec4s: llvmpipe's GL driver takes a compile time that grows with the number of
//   elements of the workgroup arrays: 16-deep slabs of scalars took it over two minutes, these
//   about 20 s on first use (Mesa caches the result).
// On CPU drivers such as lavapipe a barrier ends a loop over the workgroup's invocations and
// workgroup memory is ordinary memory, so this kernel gains nothing there; it is written for GPUs.

struct Params {
    m: u32,
    k: u32,
    n: u32,
    batch: u32,       // batch items; all summed into one C when sum_batch != 0
    a_si: u32,        // element strides of op(A) along i and k
    a_sk: u32,
    b_sk: u32,        // element strides of op(B) along k and j
    b_sj: u32,
    stride_a: u32,    // elements between batch items (0 = broadcast)
    stride_b: u32,
    stride_c: u32,
    ldc: u32,         // row stride of C
    offset_a: u32,    // element offsets of the first item inside the bound tensors
    offset_b: u32,
    offset_c: u32,
    accumulate: u32,  // 0: C = alpha·AB, 1: C += alpha·AB
    alpha: f32,
    sum_batch: u32,
    bias_mode: u32,   // 0: none, 1: + bias[j], 2: + bias[i]
    wide_vec4: u32,   // wide only: bit 0 reads op(B) rows as vec4, bit 1 op(A) columns
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;              // (batch, m×k or k×m) at offset_a, strides above
@group(0) @binding(2) var<storage, read> b: array<f32>;              // (batch, k×n or n×k) at offset_b
@group(0) @binding(3) var<storage, read_write> c: array<f32>;        // (batch, m, ldc) at offset_c
@group(0) @binding(4) var<storage, read> a4: array<vec4<f32>>;       // a as vec4 (tile_* only)
@group(0) @binding(5) var<storage, read> b4: array<vec4<f32>>;       // b as vec4 (tile_* only)
@group(0) @binding(6) var<storage, read_write> c4: array<vec4<f32>>; // c as vec4 (tile_* only)
@group(0) @binding(7) var<storage, read> bias: array<f32>;           // (n) or (m); any tensor if unused

const NAIVE_X: u32 = 16u;
const NAIVE_Y: u32 = 4u;
const TILE_X: u32 = 8u;   // invocations per workgroup along j (each 4 columns)
const TILE_Y: u32 = 8u;   // invocations per workgroup along i (each 4 rows)
const WIDE_WG: u32 = 64u; // wide: invocations per workgroup, all along j (each 8 columns)
const WIDE_M: u32 = 16u;  // wide: rows of C per invocation (and per workgroup)

// Batch items summed by one invocation, and the first one.
fn batch_count() -> u32 {
    return select(1u, params.batch, params.sum_batch != 0u);
}

fn batch_first(gz: u32) -> u32 {
    return select(gz, 0u, params.sum_batch != 0u);
}

fn store(z: u32, i: u32, j: u32, acc: f32) {
    if (i < params.m && j < params.n) {
        let ci = params.offset_c + z * params.stride_c + i * params.ldc + j;
        var v = params.alpha * acc;
        if (params.bias_mode == 1u) {
            v += bias[j];
        } else if (params.bias_mode == 2u) {
            v += bias[i];
        }
        if (params.accumulate != 0u) {
            c[ci] += v;
        } else {
            c[ci] = v;
        }
    }
}

// acc[q][r] is C[i0 + r, j0 + q] (a mat4x4 is 4 columns).
fn store_block(z: u32, i0: u32, j0: u32, acc: mat4x4<f32>) {
    for (var q = 0u; q < 4u; q++) {
        for (var r = 0u; r < 4u; r++) {
            store(z, i0 + r, j0 + q, acc[q][r]);
        }
    }
}

@compute @workgroup_size(NAIVE_X, NAIVE_Y)
fn naive(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let i = gid.y;
    if (i >= params.m || j >= params.n) {
        return;
    }
    let z0 = batch_first(gid.z);
    var acc = 0.0;
    for (var bi = 0u; bi < batch_count(); bi++) {
        let pa = params.offset_a + (z0 + bi) * params.stride_a + i * params.a_si;
        let pb = params.offset_b + (z0 + bi) * params.stride_b + j * params.b_sj;
        for (var kk = 0u; kk < params.k; kk++) {
            acc = fma(a[pa + kk * params.a_sk], b[pb + kk * params.b_sk], acc);
        }
    }
    store(z0, i, j, acc);
}

@compute @workgroup_size(TILE_X, TILE_Y)
fn blocked(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i0 = gid.y * 4u;
    let j0 = gid.x * 4u;
    let z0 = batch_first(gid.z);
    let last_i = params.m - 1u;
    let last_j = params.n - 1u;
    var acc: mat4x4<f32>;
    for (var bi = 0u; bi < batch_count(); bi++) {
        let ba = params.offset_a + (z0 + bi) * params.stride_a;
        let bb = params.offset_b + (z0 + bi) * params.stride_b;
        let pa0 = ba + min(i0, last_i) * params.a_si;
        let pa1 = ba + min(i0 + 1u, last_i) * params.a_si;
        let pa2 = ba + min(i0 + 2u, last_i) * params.a_si;
        let pa3 = ba + min(i0 + 3u, last_i) * params.a_si;
        let pb0 = bb + min(j0, last_j) * params.b_sj;
        let pb1 = bb + min(j0 + 1u, last_j) * params.b_sj;
        let pb2 = bb + min(j0 + 2u, last_j) * params.b_sj;
        let pb3 = bb + min(j0 + 3u, last_j) * params.b_sj;
        for (var kk = 0u; kk < params.k; kk++) {
            let oa = kk * params.a_sk;
            let ob = kk * params.b_sk;
            let av = vec4<f32>(a[pa0 + oa], a[pa1 + oa], a[pa2 + oa], a[pa3 + oa]);
            acc[0] = fma(av, vec4<f32>(b[pb0 + ob]), acc[0]);
            acc[1] = fma(av, vec4<f32>(b[pb1 + ob]), acc[1]);
            acc[2] = fma(av, vec4<f32>(b[pb2 + ob]), acc[2]);
            acc[3] = fma(av, vec4<f32>(b[pb3 + ob]), acc[3]);
        }
    }
    store_block(z0, i0, j0, acc);
}

// The 4×4 tile op(A)[i0.., k0..] as a matrix (column q = A's column k0 + q), from vec4 index p:
// transposed A is contiguous along i (columns are vec4s, `s` vec4s apart), plain A along k
// (rows are vec4s). Columns q with k0 + q ≥ K are zeroed.
fn a_tile(p: u32, s: u32, trans: bool, kmask: vec4<bool>) -> mat4x4<f32> {
    let t = mat4x4<f32>(a4[p], a4[p + s], a4[p + 2u * s], a4[p + 3u * s]);
    var m = t;
    if (!trans) {
        m = transpose(t);
    }
    let zero = vec4<f32>(0.0);
    return mat4x4<f32>(
        select(zero, m[0], kmask.x),
        select(zero, m[1], kmask.y),
        select(zero, m[2], kmask.z),
        select(zero, m[3], kmask.w),
    );
}

// The 4×4 tile op(B)[k0.., j0..] as a matrix (column q = B's column j0 + q): transposed B is
// contiguous along k (columns are vec4s), plain B along j (rows are vec4s). Rows k0 + r ≥ K zeroed.
fn b_tile(p: u32, s: u32, trans: bool, kmask: vec4<bool>) -> mat4x4<f32> {
    let t = mat4x4<f32>(b4[p], b4[p + s], b4[p + 2u * s], b4[p + 3u * s]);
    var m = t;
    if (!trans) {
        m = transpose(t);
    }
    let zero = vec4<f32>(0.0);
    return mat4x4<f32>(
        select(zero, m[0], kmask),
        select(zero, m[1], kmask),
        select(zero, m[2], kmask),
        select(zero, m[3], kmask),
    );
}

// acc[q][r] is C[i0 + r, j0 + q], stored a row of 4 at a time (one component at a time past n).
fn store_block4(z: u32, i0: u32, j0: u32, acc: mat4x4<f32>) {
    let rows = transpose(acc);
    var bias_j = vec4<f32>(0.0);
    if (params.bias_mode == 1u) {
        let last = params.n - 1u;
        bias_j = vec4<f32>(bias[min(j0, last)], bias[min(j0 + 1u, last)], bias[min(j0 + 2u, last)], bias[min(j0 + 3u, last)]);
    }
    for (var r = 0u; r < 4u; r++) {
        if (i0 + r < params.m) {
            let p = (params.offset_c + z * params.stride_c + (i0 + r) * params.ldc + j0) / 4u;
            var v = params.alpha * rows[r] + bias_j;
            if (params.bias_mode == 2u) {
                v += vec4<f32>(bias[i0 + r]);
            }
            if (j0 + 3u < params.n) {
                if (params.accumulate != 0u) {
                    c4[p] += v;
                } else {
                    c4[p] = v;
                }
            } else {
                for (var q = 0u; j0 + q < params.n; q++) {
                    if (params.accumulate != 0u) {
                        c4[p][q] += v[q];
                    } else {
                        c4[p][q] = v[q];
                    }
                }
            }
        }
    }
}

// Shared body of the tile_* entry points; `ta`/`tb` are constants after inlining.
fn tile(gid: vec3<u32>, ta: bool, tb: bool) {
    let i0 = gid.y * 4u;
    let j0 = gid.x * 4u;
    let z0 = batch_first(gid.z);
    // Invocations wholly past the edge load the last tile instead (and store nothing).
    let ia = min(i0, (params.m - 1u) & ~3u);
    let jb = min(j0, (params.n - 1u) & ~3u);
    // vec4 strides: between the 4 loaded vec4s (s*) and from one k-tile to the next (step_*).
    var sa = params.a_si / 4u;
    var step_a = 1u;
    if (ta) {
        sa = params.a_sk / 4u;
        step_a = params.a_sk;
    }
    var sb = params.b_sk / 4u;
    var step_b = params.b_sk;
    if (tb) {
        sb = params.b_sj / 4u;
        step_b = 1u;
    }
    let k_full = params.k / 4u;
    let all = vec4<bool>(true);
    let tail = vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(params.k - 4u * k_full);
    var acc: mat4x4<f32>;
    for (var bi = 0u; bi < batch_count(); bi++) {
        var pa = (params.offset_a + (z0 + bi) * params.stride_a + ia * params.a_si) / 4u;
        var pb = (params.offset_b + (z0 + bi) * params.stride_b + jb * params.b_sj) / 4u;
        for (var kt = 0u; kt < k_full; kt++) {
            acc += a_tile(pa, sa, ta, all) * b_tile(pb, sb, tb, all);
            pa += step_a;
            pb += step_b;
        }
        if (any(tail)) {
            acc += a_tile(pa, sa, ta, tail) * b_tile(pb, sb, tb, tail);
        }
    }
    store_block4(z0, i0, j0, acc);
}

@compute @workgroup_size(TILE_X, TILE_Y)
fn tile_nn(@builtin(global_invocation_id) gid: vec3<u32>) {
    tile(gid, false, false);
}

@compute @workgroup_size(TILE_X, TILE_Y)
fn tile_tn(@builtin(global_invocation_id) gid: vec3<u32>) {
    tile(gid, true, false);
}

@compute @workgroup_size(TILE_X, TILE_Y)
fn tile_nt(@builtin(global_invocation_id) gid: vec3<u32>) {
    tile(gid, false, true);
}

@compute @workgroup_size(TILE_X, TILE_Y)
fn tile_tt(@builtin(global_invocation_id) gid: vec3<u32>) {
    tile(gid, true, true);
}

// ---- wide: 16 rows × 8 columns per invocation, A loads uniform across the workgroup ----------

// Accumulators of `wide`: lo[r] = C[i0 + r, j0..j0+3], hi[r] = C[i0 + r, j0+4..j0+7] (named
// arrays indexed by loop constants only, so a CPU driver keeps them in registers).
struct Wide {
    lo: array<vec4<f32>, WIDE_M>,
    hi: array<vec4<f32>, WIDE_M>,
}

@compute @workgroup_size(WIDE_WG)
fn wide(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let i0 = wid.y * WIDE_M;  // the same for the whole workgroup: A's loads are uniform
    let j0 = gid.x * 8u;
    if (j0 >= params.n) {
        return;
    }
    let z0 = batch_first(wid.z);
    let last_i = params.m - 1u;
    let last_j = params.n - 1u;
    var acc: Wide;
    for (var r = 0u; r < WIDE_M; r++) {
        acc.lo[r] = vec4<f32>(0.0);
        acc.hi[r] = vec4<f32>(0.0);
    }
    for (var bi = 0u; bi < batch_count(); bi++) {
        let ba = params.offset_a + (z0 + bi) * params.stride_a;
        let bb = params.offset_b + (z0 + bi) * params.stride_b;
        // Column j0 + q of op(B) (clamped into the matrix: columns past n are never stored).
        var pb: array<u32, 8>;
        for (var q = 0u; q < 8u; q++) {
            pb[q] = bb + min(j0 + q, last_j) * params.b_sj;
        }
        for (var kk = 0u; kk < params.k; kk++) {
            let ob = kk * params.b_sk;
            var b_lo: vec4<f32>;
            var b_hi: vec4<f32>;
            if ((params.wide_vec4 & 1u) != 0u) {
                // Rows of op(B) contiguous and 4-aligned: two vec4 loads instead of eight
                // (columns past n read the rest of the row or 0, and are never stored).
                let v = (bb + j0 + ob) / 4u;
                b_lo = b4[v];
                b_hi = b4[v + 1u];
            } else {
                b_lo = vec4<f32>(b[pb[0] + ob], b[pb[1] + ob], b[pb[2] + ob], b[pb[3] + ob]);
                b_hi = vec4<f32>(b[pb[4] + ob], b[pb[5] + ob], b[pb[6] + ob], b[pb[7] + ob]);
            }
            let oa = ba + kk * params.a_sk;
            if ((params.wide_vec4 & 2u) != 0u) {
                // Columns of op(A) contiguous and 4-aligned: four vec4 loads for 16 rows.
                for (var r4 = 0u; r4 < WIDE_M / 4u; r4++) {
                    let av = a4[(oa + i0) / 4u + r4];
                    for (var e = 0u; e < 4u; e++) {
                        acc.lo[4u * r4 + e] = fma(vec4<f32>(av[e]), b_lo, acc.lo[4u * r4 + e]);
                        acc.hi[4u * r4 + e] = fma(vec4<f32>(av[e]), b_hi, acc.hi[4u * r4 + e]);
                    }
                }
            } else {
                for (var r = 0u; r < WIDE_M; r++) {
                    let av = vec4<f32>(a[oa + min(i0 + r, last_i) * params.a_si]);
                    acc.lo[r] = fma(av, b_lo, acc.lo[r]);
                    acc.hi[r] = fma(av, b_hi, acc.hi[r]);
                }
            }
        }
    }
    for (var r = 0u; r < WIDE_M; r++) {
        for (var q = 0u; q < 4u; q++) {
            store(z0, i0 + r, j0 + q, acc.lo[r][q]);
            store(z0, i0 + r, j0 + 4u + q, acc.hi[r][q]);
        }
    }
}

// ---- shared_tile: 64×64 tiles of C through workgroup memory (see the header) -------------------

const SH_T: u32 = 16u;                  // invocations per workgroup along j and along i
const SH_BM: u32 = 64u;                 // rows and columns of C per workgroup: SH_T × 4
const SH_BK: u32 = 8u;                  // k-values per slab
const SH_ROW4: u32 = 17u;               // vec4s per slab row: SH_T + 1 (bank padding)
const SH_LOADERS: u32 = SH_BK * SH_T;   // vec4s per slab = invocations loading each slab

// tile_a[kk * SH_ROW4 + y] = op(A)[i0 + y + 16r, k0 + kk] for r = 0..3 (rows 16 apart, the rows
// of C that invocation row y computes); tile_b[kk * SH_ROW4 + x] = op(B)[k0 + kk, j0 + x + 16q].
var<workgroup> tile_a: array<vec4<f32>, SH_BK * SH_ROW4>;
var<workgroup> tile_b: array<vec4<f32>, SH_BK * SH_ROW4>;

// op(A)[i, k] of the batch item at ba, 0 past m or K.
fn a_or_zero(ba: u32, i: u32, k: u32) -> f32 {
    if (i < params.m && k < params.k) {
        return a[ba + i * params.a_si + k * params.a_sk];
    }
    return 0.0;
}

// op(B)[k, j] of the batch item at bb, 0 past K or n.
fn b_or_zero(bb: u32, k: u32, j: u32) -> f32 {
    if (k < params.k && j < params.n) {
        return b[bb + k * params.b_sk + j * params.b_sj];
    }
    return 0.0;
}

// This invocation's share of the slabs at k0: invocations 0..127 load one vec4 of tile_a each,
// 128..255 one of tile_b. Consecutive invocations take consecutive k when the operand is
// contiguous along k (plain A: a_sk = 1, transposed B: b_sj ≠ 1), else consecutive rows (columns).
fn load_slabs(flat: u32, ba: u32, bb: u32, i0: u32, j0: u32, k0: u32) {
    let g = flat % SH_LOADERS;
    let is_a = flat < SH_LOADERS;
    let along_k = select(params.b_sj != 1u, params.a_sk == 1u, is_a);
    var kk = g / SH_T;
    var e = g % SH_T;  // y of tile_a, x of tile_b
    if (along_k) {
        kk = g % SH_BK;
        e = g / SH_BK;
    }
    let k = k0 + kk;
    if (is_a) {
        let i = i0 + e;
        tile_a[kk * SH_ROW4 + e] = vec4<f32>(
            a_or_zero(ba, i, k),
            a_or_zero(ba, i + SH_T, k),
            a_or_zero(ba, i + 2u * SH_T, k),
            a_or_zero(ba, i + 3u * SH_T, k),
        );
    } else {
        let j = j0 + e;
        tile_b[kk * SH_ROW4 + e] = vec4<f32>(
            b_or_zero(bb, k, j),
            b_or_zero(bb, k, j + SH_T),
            b_or_zero(bb, k, j + 2u * SH_T),
            b_or_zero(bb, k, j + 3u * SH_T),
        );
    }
}

@compute @workgroup_size(SH_T, SH_T)
fn shared_tile(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let i0 = wid.y * SH_BM;
    let j0 = wid.x * SH_BM;
    let flat = lid.y * SH_T + lid.x;
    let z0 = batch_first(wid.z);
    // acc[q][r] = C[i0 + lid.y + 16r, j0 + lid.x + 16q].
    var acc: mat4x4<f32>;
    for (var bi = 0u; bi < batch_count(); bi++) {
        let ba = params.offset_a + (z0 + bi) * params.stride_a;
        let bb = params.offset_b + (z0 + bi) * params.stride_b;
        for (var k0 = 0u; k0 < params.k; k0 += SH_BK) {
            load_slabs(flat, ba, bb, i0, j0, k0);
            workgroupBarrier(); // the slabs are complete before anyone reads them
            for (var kk = 0u; kk < SH_BK; kk++) {
                let av = tile_a[kk * SH_ROW4 + lid.y];
                let bv = tile_b[kk * SH_ROW4 + lid.x];
                acc[0] = fma(av, vec4<f32>(bv.x), acc[0]);
                acc[1] = fma(av, vec4<f32>(bv.y), acc[1]);
                acc[2] = fma(av, vec4<f32>(bv.z), acc[2]);
                acc[3] = fma(av, vec4<f32>(bv.w), acc[3]);
            }
            workgroupBarrier(); // everyone is done reading before the next loads overwrite them
        }
    }
    for (var q = 0u; q < 4u; q++) {
        for (var r = 0u; r < 4u; r++) {
            store(z0, i0 + lid.y + r * SH_T, j0 + lid.x + q * SH_T, acc[q][r]);
        }
    }
}
