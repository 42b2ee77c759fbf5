// 2D convolution (NCHW, square k×k kernel, stride s, zero padding) and its three backward passes.
//
//   forward:  y[n,o,oy,ox] = b[o] + Σ_{c,ky,kx} w[o,c,ky,kx] · x[n, c, oy·s+ky−pad_t, ox·s+kx−pad_l]
//   backward: dx[n,c,iy,ix] += Σ_{o,ky,kx : iy = oy·s+ky−pad_t, ix = ox·s+kx−pad_l} dy[n,o,oy,ox] · w[o,c,ky,kx]
//             dw[o,c,ky,kx] += Σ_{n,oy,ox} dy[n,o,oy,ox] · x[n, c, oy·s+ky−pad_t, ox·s+kx−pad_l]
//             db[o]         += Σ_{n,oy,ox} dy[n,o,oy,ox]   (computed by shaders/linear.wgsl's channel-bias
//                                                       gradient, for which dy is (N, Cout, OH·OW))
//   (taps falling in the padding read zero). Bottom/right padding only enter through OH, OW.
//
// Layout: row-major NCHW images, weights (Cout, Cin, k, k) as in PyTorch. The tiled convolution
// addresses its weights through strides, w_base + o·w_so + c·w_si + ky·w_sy + kx·w_sx, so that the
// same kernel also runs the stride-1 backward-input pass (a convolution of dy with the flipped,
// channel-transposed kernel: negative y/x strides, input/output channel strides swapped).
//
// Mapping (all tiled kernels accumulate in registers, no barriers, no atomics). TILE_C is 16 in
// this file; src/ops/conv2d.rs also compiles it with TILE_C = 8, 4, 2, 1 for convolutions with
// fewer channels (see `Choice` there), so no kernel computes channels it never stores.
//   *_naive             one invocation per output element; 1D grid of WG (linear-index idiom).
//   conv_tiled          implicit GEMM, one invocation per (TILE_C output channels × 8 consecutive
//                       output pixels of a row, two vec4): per tap 8 input loads (stride 1: one, the
//                       window of the previous tap shifted by a pixel) feed 8·TILE_C FMAs.
//                       Pixel groups on the 1D grid (x, y) of TILE_WG, the channel block on workgroup
//                       z, so the weight loads are uniform across the workgroup.
//   pack_weights        one invocation per element of the packed weights (Cin, k, k, Cout rounded
//                       up to 4), output channels innermost; 1D grid of WG.
//   conv_packed         conv_tiled reading the packed weights as vec4: TILE_C/4 loads per tap.
//   backward_input_strided  one invocation per (TILE_C input channels × 8 input pixels spaced by s
//                       in a row); workgroup z = channel block × residue class (iy mod s, ix mod s),
//                       so every invocation of a workgroup meets the same taps. (Stride 1 runs
//                       conv_tiled on dy instead.)
//   backward_weight     one invocation per (TILE_C output channels × 8 input channels at one tap), a
//                       reduction over (N, OH, OW); workgroups of BW_WG over input-channel blocks,
//                       z = output-channel block × tap, so the dy loads are uniform.
//   backward_weight_split   the same blocks, the batch cut into `splits` slices: invocation x =
//                       slice × input-channel blocks, partial sums written to part (slice, ...);
//   backward_weight_reduce  then one invocation per weight element adds Σ_slice part into dw.
//   *_shared            implicit GEMM through workgroup memory, one workgroup of 16×16 per 64×64
//                       tile of the output matrix, 4×4 per invocation (see "Shared-memory tiles").
//                       They do not depend on TILE_C: every specialisation holds the same code.
//   backward_weight_shared_split  backward_weight_shared with its reduction cut into `splits`
//                       slices (split-K), slice on workgroup z, partial tiles to part, then
//                       backward_weight_reduce (see "Split-K" below).
// Padding is handled by clamped loads and selects rather than branches, keeping the loops uniform.
// Portability: no % or / of a negative integer (WGSL defines them, GLSL does not, and the GL
// backend passes them through): backward_input_strided lifts its tap offsets by k·s first.
//
// Shared-memory tiles (forward_shared, backward_input_shared, backward_weight_shared)
// ------------------------------------------------------------------------------------
// Each pass is a matrix product C (M × N) = Σ_k A[k, m] · B[k, n], with one operand gathered on
// the fly from an image ("implicit GEMM": no im2col buffer is ever written):
//   forward          Y[o, (b,oy,ox)]  = Σ_{r=(c,ky,kx)} W[o, r] · X̃[r, (b,oy,ox)]
//                    M = Cout, N = N·OH·OW, K = Cin·k·k; X̃ (im2col) = x at the tap, 0 in the padding.
//   backward_input   dX[c, (b,iy,ix)] += Σ_{(o,ky,kx)} W[o,c,ky,kx] · dY[b, o, oy, ox]
//                    M = Cin, N = N·H·W, K = Cout·k·k; the dY term is 0 unless oy = (iy+pad_t−ky)/s
//                    divides and lies in [0, OH), likewise ox (with stride s, (s²−1)/s² of the
//                    K terms are such zeros: the price of one kernel for every stride).
//   backward_weight  dW[o, r] += Σ_{(b,oy,ox)} dY[o, (b,oy,ox)] · X̃[r, (b,oy,ox)]
//                    M = Cout, N = Cin·k·k, K = N·OH·OW: the reduction runs over batch × pixels.
// The naive kernels read every operand element from global memory once per multiply. Here a
// workgroup of 256 invocations owns a tile of 64 × 64 elements of C and walks the reduction in
// chunks of BK = 16: it first copies the 16 × 64 slices of A and of B that the chunk needs into
// workgroup memory (sh_a, sh_b: fast on-chip memory shared by the workgroup), each invocation
// loading 4 elements of each, then every invocation multiplies out of workgroup memory. Each
// element loaded from global memory is thus used by 64 multiply-adds instead of one.
// - The loads are cooperative and coalesced: consecutive invocations load consecutive global
//   addresses, so a GPU serves a warp's loads with few wide memory transactions. A (weights, or
//   dY in backward_weight) is contiguous along k, so invocation e loads (k = e mod 16, m = e / 16);
//   B is contiguous along the pixels n in forward / backward_input (e mod 64 along n) but along k
//   in backward_weight (whose k are the pixels). Elements outside the matrices (the ragged edge
//   tiles) and taps in the padding are stored as 0, so the multiply loop needs no bounds checks.
// - Two barriers per chunk: the first (after the loads) because an invocation reads elements
//   other invocations loaded, so all loads must have landed; the second (after the multiplies)
//   because the next chunk's loads overwrite the tiles, so everyone must have finished reading.
//   The chunk loop runs ⌈K/16⌉ times for every invocation (a uniform trip count), and invocations
//   outside C take part in loads and barriers and only skip the store.
// - Register block: invocation (tx, ty) = (lid mod 16, lid / 16) accumulates 4 × 4 elements of C,
//   rows ty + 16i and columns tx + 16j, in registers: per k it reads 4 values of sh_a and 4 of
//   sh_b for 16 FMAs. The strided (not contiguous) rows and columns make the 16 tx of a warp read
//   16 consecutive words of sh_b (distinct banks, no conflict) and one word of sh_a (a broadcast),
//   and write 16 consecutive pixels of y or dx (coalesced stores).
// - Bank conflicts: workgroup memory is split into 32 banks of 4-byte words. A k-fastest load writes
//   one column of a tile (16 words a row apart); rows of 64 words would put them all in one bank,
//   so rows are padded to SH_LD = 65 words (a warp's 32 writes then meet at most 2 to a bank).
// - Workgroup memory: 2 tiles × 16 × 65 × 4 bytes = 8320 bytes (of WebGPU's 16384).
// - Grid: tiles of N on workgroups (x, y) (y only past 65535 tiles), tiles of M on z. One tile loop
//   (tile_gemm) serves the three passes; they differ only in the gathers (gemm_a, gemm_b, a switch
//   on a constant `op`) and the stores. Because of the switch every entry point uses x, wt and dy.
//
// Split-K (backward_weight_shared_split)
// --------------------------------------
// backward_weight's matrix is small and its reduction long: for a 3×3 convolution 32 → 32
// channels on a batch of 32 28×28 images, dW is 32 × 288 (M × N), i.e. 1 × 5 = 5 tiles of 64×64,
// while K = 32·28·28 = 25088. backward_weight_shared thus runs 5 workgroups, each walking 1568
// chunks one after the other: a GPU with a hundred-odd compute units, each wanting several
// resident workgroups to hide memory latency, leaves nearly all of them idle.
// Split-K cuts the reduction range [0, K) into `splits` contiguous slices and gives each slice
// its own workgroups: workgroup z = slice · (row tiles) + row tile, so the grid has `splits` times
// as many workgroups (5 · 64 = 320 above) and each walks K/splits of the reduction. A slice is a
// whole number of chunks, ⌈⌈K/BK⌉/splits⌉ · BK indices (only the last slice is ragged, and with
// more slices than chunks the ones past the end are empty), so it is just another range
// [k_begin, k_end) for the same tile_gemm, which zero-fills past k_end exactly as it does past K.
// The slice sums cannot be added into dw by the workgroups themselves without float atomics (which
// WGSL lacks), so each workgroup writes (=) its partial tile to part[slice] (every element of the
// tile, even for an empty slice: zeros), and a second launch, backward_weight_reduce, adds
// Σ_slice part[slice] into dw. The price: one more launch and splits × Cout·Cin·k·k floats of
// scratch (64 slices × 9216 weights = 2.4 MB above), written once and read once, small next to
// the N·OH·OW·(Cout + Cin·k·k) operand elements the tiles gather. Same workgroup memory (8320 bytes).

struct Params {
    n: u32,       // batch
    ci: u32,      // input channels (of the convolution this kernel runs)
    h: u32,       // input height
    w: u32,       // input width
    co: u32,      // output channels
    oh: u32,      // output height
    ow: u32,      // output width
    k: u32,       // kernel size
    stride: u32,
    pad_t: i32,   // top padding (may be negative for the transposed convolution)
    pad_l: i32,   // left padding
    flags: u32,   // bit 0: add bias; bit 1: accumulate into the output (+=) instead of writing
    w_base: i32,  // weight index = w_base + o·w_so + c·w_si + ky·w_sy + kx·w_sx (tiled conv only)
    w_so: i32,
    w_si: i32,
    w_sy: i32,
    w_sx: i32,
    groups: u32,  // tiled kernels: invocations per row (pixel groups)
    splits: u32,  // backward_weight_split / _shared_split: partial sums over slices of the reduction
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // (N, Cin, H, W)    conv input
@group(0) @binding(2) var<storage, read> wt: array<f32>;         // (Cout, Cin, k, k) weights
@group(0) @binding(3) var<storage, read> bias: array<f32>;       // (Cout)            used if flags bit 0
@group(0) @binding(4) var<storage, read_write> y: array<f32>;    // (N, Cout, OH, OW) conv output
@group(0) @binding(5) var<storage, read> dy: array<f32>;         // (N, Cout, OH, OW)
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;   // (N, Cin, H, W)    accumulated
@group(0) @binding(7) var<storage, read_write> dw: array<f32>;   // (Cout, Cin, k, k) accumulated
@group(0) @binding(9) var<storage, read_write> part: array<f32>; // (splits, Cout, Cin, k, k) partial dw
@group(0) @binding(10) var<storage, read> wp: array<vec4<f32>>;  // (Cin, k, k, ⌈Cout/4⌉) packed weights
@group(0) @binding(11) var<storage, read_write> wpack: array<f32>; // the same, written by pack_weights

const WG: u32 = 64u;
const TILE_WG: u32 = 64u;
const BW_WG: u32 = 16u;   // backward_weight: invocations per workgroup
// Channels per invocation of the tiled kernels. src/ops/conv2d.rs compiles this file once per tile
// size it uses (16, and 8/4/2/1 for convolutions with fewer channels) by replacing this line.
const TILE_C: u32 = 16u;
const ADD_BIAS: u32 = 1u;
const ACCUMULATE: u32 = 2u;

// Input coordinate of output coordinate `o` at tap `t`; outside [0, size) means padding.
fn tap(o: u32, t: u32, pad: i32) -> i32 {
    return i32(o * params.stride + t) - pad;
}

// ---- naive: one invocation per output element ------------------------------------------------

@compute @workgroup_size(WG)
fn forward_naive(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    let p = params;
    if (i >= p.n * p.co * p.oh * p.ow) {
        return;
    }
    let ox = i % p.ow;
    let oy = (i / p.ow) % p.oh;
    let o = (i / (p.ow * p.oh)) % p.co;
    let n = i / (p.ow * p.oh * p.co);
    var acc = 0.0;
    if ((p.flags & ADD_BIAS) != 0u) {
        acc = bias[o];
    }
    for (var c = 0u; c < p.ci; c++) {
        for (var ky = 0u; ky < p.k; ky++) {
            let iy = tap(oy, ky, p.pad_t);
            if (iy < 0 || iy >= i32(p.h)) {
                continue;
            }
            for (var kx = 0u; kx < p.k; kx++) {
                let ix = tap(ox, kx, p.pad_l);
                if (ix < 0 || ix >= i32(p.w)) {
                    continue;
                }
                acc += wt[((o * p.ci + c) * p.k + ky) * p.k + kx] * x[((n * p.ci + c) * p.h + u32(iy)) * p.w + u32(ix)];
            }
        }
    }
    y[i] = acc;
}

@compute @workgroup_size(WG)
fn backward_input_naive(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    let p = params;
    if (i >= p.n * p.ci * p.h * p.w) {
        return;
    }
    let ix = i32(i % p.w);
    let iy = i32((i / p.w) % p.h);
    let c = (i / (p.w * p.h)) % p.ci;
    let n = i / (p.w * p.h * p.ci);
    let s = i32(p.stride);
    var acc = 0.0;
    for (var o = 0u; o < p.co; o++) {
        for (var ky = 0u; ky < p.k; ky++) {
            // iy = oy·s + ky − pad_t  ⇔  oy = (iy + pad_t − ky) / s, when divisible and in range.
            let ny = iy + p.pad_t - i32(ky);
            if (ny < 0 || ny % s != 0 || ny / s >= i32(p.oh)) {
                continue;
            }
            for (var kx = 0u; kx < p.k; kx++) {
                let nx = ix + p.pad_l - i32(kx);
                if (nx < 0 || nx % s != 0 || nx / s >= i32(p.ow)) {
                    continue;
                }
                acc += dy[((n * p.co + o) * p.oh + u32(ny / s)) * p.ow + u32(nx / s)] * wt[((o * p.ci + c) * p.k + ky) * p.k + kx];
            }
        }
    }
    dx[i] += acc;
}

@compute @workgroup_size(WG)
fn backward_weight_naive(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    let p = params;
    if (i >= p.co * p.ci * p.k * p.k) {
        return;
    }
    let kx = i % p.k;
    let ky = (i / p.k) % p.k;
    let c = (i / (p.k * p.k)) % p.ci;
    let o = i / (p.k * p.k * p.ci);
    var acc = 0.0;
    for (var n = 0u; n < p.n; n++) {
        for (var oy = 0u; oy < p.oh; oy++) {
            let iy = tap(oy, ky, p.pad_t);
            if (iy < 0 || iy >= i32(p.h)) {
                continue;
            }
            for (var ox = 0u; ox < p.ow; ox++) {
                let ix = tap(ox, kx, p.pad_l);
                if (ix < 0 || ix >= i32(p.w)) {
                    continue;
                }
                acc += dy[((n * p.co + o) * p.oh + oy) * p.ow + ox] * x[((n * p.ci + c) * p.h + u32(iy)) * p.w + u32(ix)];
            }
        }
    }
    dw[i] += acc;
}

// ---- tiled kernels: TILE_C channels × 8 pixels (or 8 input channels) per invocation ----------

// x[row + ix], or 0 when ix is outside [0, W) or the row is not (`in_y` false: padding). The index
// is clamped so the load is always in bounds; a negative ix wraps to a large u32.
fn xat(row: u32, ix: i32, in_y: bool) -> f32 {
    let u = u32(ix);
    return select(0.0, x[row + min(u, params.w - 1u)], in_y && u < params.w);
}

// dy[row + ox], or 0 when ox is outside [0, OW) or the row is not (`in_y` false).
fn dyat(row: u32, ox: i32, in_y: bool) -> f32 {
    let u = u32(ox);
    return select(0.0, dy[row + min(u, params.ow - 1u)], in_y && u < params.ow);
}

// x[row + ix] for the 4 taps ix, ix + s, ix + 2s, ix + 3s.
fn xat4(row: u32, ix: i32, s: i32, in_y: bool) -> vec4<f32> {
    return vec4<f32>(xat(row, ix, in_y), xat(row, ix + s, in_y), xat(row, ix + 2 * s, in_y), xat(row, ix + 3 * s, in_y));
}

// Register tile of TILE_C channels × 8 (pixels or input channels): the first 4 in lo, the next 4
// in hi (named vectors, not an indexed array: lavapipe keeps them in registers).
struct Block {
    lo: array<vec4<f32>, TILE_C>,
    hi: array<vec4<f32>, TILE_C>,
}

fn zero_block() -> Block {
    var b: Block;
    for (var i = 0u; i < TILE_C; i++) {
        b.lo[i] = vec4<f32>(0.0);
        b.hi[i] = vec4<f32>(0.0);
    }
    return b;
}

// Element (i, j) of a block, j < 8 (through a pointer: a by-value block would be copied per call).
fn block_at(b: ptr<function, Block>, i: u32, j: u32) -> f32 {
    return select((*b).hi[i][j % 4u], (*b).lo[i][j % 4u], j < 4u);
}

// The 8 output pixels (n, oy, ox0..ox0+7) of conv invocation q, and the input column of ox0's tap 0.
struct Pixels {
    n: u32,
    oy: u32,
    ox0: u32,
    ix0: i32,
}

fn pixels_of(q: u32) -> Pixels {
    let p = params;
    let ox0 = (q % p.groups) * 8u;
    return Pixels(q / (p.groups * p.oh), (q / p.groups) % p.oh, ox0, tap(ox0, 0u, p.pad_l));
}

// Input rows of the 8 pixels at tap (ky, kx) into x_lo, x_hi. With stride 1 and kx > 0 the
// window of tap kx − 1 shifted by one pixel: one new load instead of 8.
fn window(row: u32, ix: i32, kx: u32, in_y: bool, x_lo: ptr<function, vec4<f32>>, x_hi: ptr<function, vec4<f32>>) {
    let s = i32(params.stride);
    if (s == 1 && kx > 0u) {
        *x_lo = vec4<f32>((*x_lo).yzw, (*x_hi).x);
        *x_hi = vec4<f32>((*x_hi).yzw, xat(row, ix + 7, in_y));
    } else {
        *x_lo = xat4(row, ix, s, in_y);
        *x_hi = xat4(row, ix + 4 * s, s, in_y);
    }
}

// y[n, o0 + i, oy, ox0 + j] (+)= acc (i, j) (+ bias), for the channels < co and pixels < OW.
fn store_pixels(px: Pixels, o0: u32, acc: ptr<function, Block>) {
    let p = params;
    let add_bias = (p.flags & ADD_BIAS) != 0u;
    let accumulate = (p.flags & ACCUMULATE) != 0u;
    for (var i = 0u; i < TILE_C; i++) {
        let o = o0 + i;
        if (o >= p.co) {
            break;
        }
        let base = ((px.n * p.co + o) * p.oh + px.oy) * p.ow + px.ox0;
        let b = select(0.0, bias[o], add_bias);
        for (var j = 0u; j < 8u; j++) {
            if (px.ox0 + j < p.ow) {
                let v = block_at(acc, i, j) + b;
                if (accumulate) {
                    y[base + j] += v;
                } else {
                    y[base + j] = v;
                }
            }
        }
    }
}

@compute @workgroup_size(TILE_WG)
fn conv_tiled(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(workgroup_id) wid: vec3<u32>) {
    let q = gid.x + gid.y * nwg.x * TILE_WG;
    let p = params;
    if (q >= p.n * p.oh * p.groups) {
        return;
    }
    let px = pixels_of(q);
    let o0 = wid.z * TILE_C;
    // Index of w[o, 0, 0, 0] per output channel, clamped to a real channel (the accumulators of
    // channels ≥ co are computed but never stored). The weight loads are uniform in the workgroup.
    var wo: array<i32, TILE_C>;
    for (var i = 0u; i < TILE_C; i++) {
        wo[i] = p.w_base + i32(min(o0 + i, p.co - 1u)) * p.w_so;
    }
    var acc = zero_block();
    // No branch on the padding: the loops stay uniform, so the weight addresses do too.
    for (var c = 0u; c < p.ci; c++) {
        let wc = i32(c) * p.w_si;
        for (var ky = 0u; ky < p.k; ky++) {
            let iy = u32(tap(px.oy, ky, p.pad_t));
            let in_y = iy < p.h;
            let row = ((px.n * p.ci + c) * p.h + min(iy, p.h - 1u)) * p.w;
            var x_lo = vec4<f32>(0.0);
            var x_hi = vec4<f32>(0.0);
            for (var kx = 0u; kx < p.k; kx++) {
                window(row, px.ix0 + i32(kx), kx, in_y, &x_lo, &x_hi);
                let wk = wc + i32(ky) * p.w_sy + i32(kx) * p.w_sx;
                for (var i = 0u; i < TILE_C; i++) {
                    let wv = vec4<f32>(wt[wo[i] + wk]);
                    acc.lo[i] = fma(wv, x_lo, acc.lo[i]);
                    acc.hi[i] = fma(wv, x_hi, acc.hi[i]);
                }
            }
        }
    }
    store_pixels(px, o0, &acc);
}

// wpack[((c·k + ky)·k + kx)·co4 + o] = w[w_base + o·w_so + c·w_si + ky·w_sy + kx·w_sx] (0 for o ≥ co),
// co4 = Cout rounded up to 4: the weights conv_packed reads, output channels innermost. One
// invocation per element, 1D grid of WG.
@compute @workgroup_size(WG)
fn pack_weights(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    let p = params;
    let co4 = (p.co + 3u) / 4u * 4u;
    if (i >= p.ci * p.k * p.k * co4) {
        return;
    }
    let o = i % co4;
    let t = i / co4;
    let kx = t % p.k;
    let ky = (t / p.k) % p.k;
    let c = t / (p.k * p.k);
    let wi = p.w_base + i32(min(o, p.co - 1u)) * p.w_so + i32(c) * p.w_si + i32(ky) * p.w_sy + i32(kx) * p.w_sx;
    wpack[i] = select(0.0, wt[wi], o < p.co);
}

// conv_tiled reading packed weights (TILE_C a multiple of 4): per tap TILE_C/4 vec4 loads of 4
// output channels each instead of TILE_C scalar loads.
@compute @workgroup_size(TILE_WG)
fn conv_packed(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(workgroup_id) wid: vec3<u32>) {
    let q = gid.x + gid.y * nwg.x * TILE_WG;
    let p = params;
    if (q >= p.n * p.oh * p.groups) {
        return;
    }
    let px = pixels_of(q);
    let o0 = wid.z * TILE_C;
    let co4 = (p.co + 3u) / 4u;
    var acc = zero_block();
    for (var c = 0u; c < p.ci; c++) {
        for (var ky = 0u; ky < p.k; ky++) {
            let iy = u32(tap(px.oy, ky, p.pad_t));
            let in_y = iy < p.h;
            let row = ((px.n * p.ci + c) * p.h + min(iy, p.h - 1u)) * p.w;
            var x_lo = vec4<f32>(0.0);
            var x_hi = vec4<f32>(0.0);
            for (var kx = 0u; kx < p.k; kx++) {
                window(row, px.ix0 + i32(kx), kx, in_y, &x_lo, &x_hi);
                let wb = ((c * p.k + ky) * p.k + kx) * co4;
                for (var i4 = 0u; i4 < TILE_C / 4u; i4++) {
                    // Blocks past the last real one reread it (computed, never stored).
                    let w4 = wp[wb + min(o0 / 4u + i4, co4 - 1u)];
                    for (var j = 0u; j < 4u; j++) {
                        let wv = vec4<f32>(w4[j]);
                        acc.lo[4u * i4 + j] = fma(wv, x_lo, acc.lo[4u * i4 + j]);
                        acc.hi[4u * i4 + j] = fma(wv, x_hi, acc.hi[4u * i4 + j]);
                    }
                }
            }
        }
    }
    store_pixels(px, o0, &acc);
}

// TILE_C input channels × 8 input pixels (iy, ix_j), iy = ry + s·iq, ix_j = rx + s·(8g + j). Workgroup
// z = channel block · s² + ry · s + rx: all invocations of a workgroup share the residues (ry, rx),
// hence the taps that hit them (iy + pad_t − ky ≡ 0 mod s), so loops and weight loads are uniform;
// then oy = iq + (ry + pad_t − ky)/s and ox_j = 8g + j + (rx + pad_l − kx)/s, range-checked on load.
@compute @workgroup_size(TILE_WG)
fn backward_input_strided(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(workgroup_id) wid: vec3<u32>) {
    let q = gid.x + gid.y * nwg.x * TILE_WG;
    let p = params;
    let s = i32(p.stride);
    let rows = (p.h + p.stride - 1u) / p.stride;
    if (q >= p.n * rows * p.groups) {
        return;
    }
    let n = q / (p.groups * rows);
    let iq = i32((q / p.groups) % rows);
    let g = i32(q % p.groups);
    let ss = p.stride * p.stride;
    let ry = i32((wid.z % ss) / p.stride);
    let rx = i32(wid.z % p.stride);
    let c0 = (wid.z / ss) * TILE_C;
    let kk = p.k * p.k;
    // Index of w[0, c, 0, 0] per input channel, clamped to a real channel.
    var wc: array<u32, TILE_C>;
    for (var i = 0u; i < TILE_C; i++) {
        wc[i] = min(c0 + i, p.ci - 1u) * kk;
    }
    var acc = zero_block();
    // The offsets ry + pad − ky are negative for the taps below the row, and GLSL (the GL backend)
    // leaves % and / of negative integers undefined: Mesa gets some wrong. So both work on the
    // offset plus k·s, a multiple of the stride that makes it ≥ 1, and take k back afterwards.
    let lift = i32(p.k) * s;
    for (var ky = 0u; ky < p.k; ky++) {
        let ey = ry + p.pad_t - i32(ky) + lift;
        if (ey % s != 0) {
            continue;
        }
        let oy = u32(iq + ey / s - i32(p.k));
        let in_y = oy < p.oh;
        for (var kx = 0u; kx < p.k; kx++) {
            let ex = rx + p.pad_l - i32(kx) + lift;
            if (ex % s != 0) {
                continue;
            }
            let ox = 8 * g + ex / s - i32(p.k);
            for (var o = 0u; o < p.co; o++) {
                let row = ((n * p.co + o) * p.oh + min(oy, p.oh - 1u)) * p.ow;
                let d_lo = vec4<f32>(dyat(row, ox, in_y), dyat(row, ox + 1, in_y), dyat(row, ox + 2, in_y),
                                     dyat(row, ox + 3, in_y));
                let d_hi = vec4<f32>(dyat(row, ox + 4, in_y), dyat(row, ox + 5, in_y), dyat(row, ox + 6, in_y),
                                     dyat(row, ox + 7, in_y));
                let wk = o * p.ci * kk + ky * p.k + kx;
                for (var i = 0u; i < TILE_C; i++) {
                    let wv = vec4<f32>(wt[wc[i] + wk]);
                    acc.lo[i] = fma(wv, d_lo, acc.lo[i]);
                    acc.hi[i] = fma(wv, d_hi, acc.hi[i]);
                }
            }
        }
    }
    let iy = ry + s * iq;
    if (iy >= i32(p.h)) {
        return;
    }
    for (var i = 0u; i < TILE_C; i++) {
        let c = c0 + i;
        if (c >= p.ci) {
            break;
        }
        let base = ((n * p.ci + c) * p.h + u32(iy)) * p.w;
        for (var j = 0u; j < 8u; j++) {
            let ix = rx + s * (8 * g + i32(j));
            if (ix < i32(p.w)) {
                dx[base + u32(ix)] += block_at(&acc, i, j);
            }
        }
    }
}

// backward_weight: TILE_C output channels × 8 input channels c0.. at one tap (ky, kx), summed over
// the samples n_lo..n_hi and all (oy, ox): acc[i][j] += dy[n, o0+i, oy, ox] · x[n, c0+j, iy, ix]. ox
// runs only over the range whose tap lies inside the image. Channels are clamped to real ones (the
// extra accumulators are never stored).
fn weight_block(o0: u32, c0: u32, tk: u32, n_lo: u32, n_hi: u32) -> Block {
    let p = params;
    let ky = tk / p.k;
    let kx = tk % p.k;
    let hw = p.h * p.w;
    let ohw = p.oh * p.ow;
    let c_lo = min(vec4<u32>(c0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.ci - 1u)) * hw;
    let c_hi = min(vec4<u32>(c0) + vec4<u32>(4u, 5u, 6u, 7u), vec4<u32>(p.ci - 1u)) * hw;
    var os: array<u32, TILE_C>;
    for (var i = 0u; i < TILE_C; i++) {
        os[i] = min(o0 + i, p.co - 1u) * ohw;
    }
    var acc = zero_block();
    // 0 ≤ ox·s + kx − pad_l < W  ⇔  ox_lo ≤ ox < ox_hi (likewise for oy).
    let s = i32(p.stride);
    let ox_lo = u32(max(0, (p.pad_l - i32(kx) + s - 1) / s));
    let ox_hi = u32(clamp((i32(p.w) - 1 + p.pad_l - i32(kx) + s) / s, 0, i32(p.ow)));
    let oy_lo = u32(max(0, (p.pad_t - i32(ky) + s - 1) / s));
    let oy_hi = u32(clamp((i32(p.h) - 1 + p.pad_t - i32(ky) + s) / s, 0, i32(p.oh)));
    for (var n = n_lo; n < n_hi; n++) {
        for (var oy = oy_lo; oy < oy_hi; oy++) {
            let xr = n * p.ci * hw + u32(tap(oy, ky, p.pad_t)) * p.w;
            let dr = n * p.co * ohw + oy * p.ow;
            for (var ox = ox_lo; ox < ox_hi; ox++) {
                let xi = xr + u32(tap(ox, kx, p.pad_l));
                let x_lo = vec4<f32>(x[xi + c_lo.x], x[xi + c_lo.y], x[xi + c_lo.z], x[xi + c_lo.w]);
                let x_hi = vec4<f32>(x[xi + c_hi.x], x[xi + c_hi.y], x[xi + c_hi.z], x[xi + c_hi.w]);
                for (var i = 0u; i < TILE_C; i++) {
                    let d = vec4<f32>(dy[dr + ox + os[i]]);
                    acc.lo[i] = fma(d, x_lo, acc.lo[i]);
                    acc.hi[i] = fma(d, x_hi, acc.hi[i]);
                }
            }
        }
    }
    return acc;
}

// One invocation per block of 8 input channels (workgroups of BW_WG along x); workgroup z = output
// channel block · k² + tap, so the loops and the dy loads are uniform across the workgroup. Sums
// the whole batch and adds into dw.
@compute @workgroup_size(BW_WG)
fn backward_weight(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let p = params;
    let c0 = gid.x * 8u;
    if (c0 >= p.ci) {
        return;
    }
    let kk = p.k * p.k;
    let tk = wid.z % kk;
    let o0 = (wid.z / kk) * TILE_C;
    var acc = weight_block(o0, c0, tk, 0u, p.n);
    for (var i = 0u; i < TILE_C; i++) {
        let o = o0 + i;
        for (var j = 0u; j < 8u; j++) {
            let c = c0 + j;
            if (o < p.co && c < p.ci) {
                dw[(o * p.ci + c) * kk + tk] += block_at(&acc, i, j);
            }
        }
    }
}

// The same blocks, with the batch cut into `splits` slices of ⌈N/splits⌉ samples: invocation x =
// slice · (input channel blocks) + block, so a convolution with few channel blocks still fills the
// SIMD lanes (and a GPU's cores). Each writes its partial sums (=) to part[slice]; then
// backward_weight_reduce adds Σ_slice part[slice] into dw.
@compute @workgroup_size(BW_WG)
fn backward_weight_split(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let p = params;
    let blocks = (p.ci + 7u) / 8u;
    let slice = gid.x / blocks;
    if (slice >= p.splits) {
        return;
    }
    let c0 = (gid.x % blocks) * 8u;
    let per = (p.n + p.splits - 1u) / p.splits;
    let kk = p.k * p.k;
    let tk = wid.z % kk;
    let o0 = (wid.z / kk) * TILE_C;
    var acc = weight_block(o0, c0, tk, min(slice * per, p.n), min(slice * per + per, p.n));
    let len = p.co * p.ci * kk;
    for (var i = 0u; i < TILE_C; i++) {
        let o = o0 + i;
        for (var j = 0u; j < 8u; j++) {
            let c = c0 + j;
            if (o < p.co && c < p.ci) {
                part[slice * len + (o * p.ci + c) * kk + tk] = block_at(&acc, i, j);
            }
        }
    }
}

// dw[i] += Σ_slice part[slice, i]; one invocation per weight element, 1D grid of WG.
@compute @workgroup_size(WG)
fn backward_weight_reduce(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    let p = params;
    let len = p.co * p.ci * p.k * p.k;
    if (i >= len) {
        return;
    }
    var acc = 0.0;
    for (var j = 0u; j < p.splits; j++) {
        acc += part[j * len + i];
    }
    dw[i] += acc;
}

// ---- shared: implicit GEMM tiles in workgroup memory (see "Shared-memory tiles" above) --------

const SH_BM: u32 = 64u;   // rows (m) of C per workgroup tile
const SH_BN: u32 = 64u;   // columns (n) of C per workgroup tile
const SH_BK: u32 = 16u;   // reduction indices (k) per chunk held in workgroup memory
const SH_R: u32 = 4u;     // register block: SH_R rows × SH_R columns of C per invocation
const SH_T: u32 = 16u;    // invocations per side: SH_T × SH_T = SH_WG, SH_T · SH_R = SH_BM = SH_BN
const SH_WG: u32 = 256u;
// Row stride of the shared tiles: one word more than a row, so that the loads writing one k
// column (k fastest across invocations) hit different banks.
const SH_LD: u32 = SH_BM + 1u;
// The passes, as the `op` argument of the shared functions (a constant at each call).
const SH_FORWARD: u32 = 0u;
const SH_BACKWARD_INPUT: u32 = 1u;
const SH_BACKWARD_WEIGHT: u32 = 2u;

// sh_a[kk·SH_LD + mm] = A[k0 + kk, m0 + mm], sh_b[kk·SH_LD + nn] = B[k0 + kk, n0 + nn]:
// 2 · 16 · 65 · 4 = 8320 bytes.
var<workgroup> sh_a: array<f32, SH_BK * SH_LD>;
var<workgroup> sh_b: array<f32, SH_BK * SH_LD>;

// C (M × N) = Σ_k A[k, m] · B[k, n] of a pass.
struct Gemm {
    m: u32,
    n: u32,
    k: u32,
}

fn gemm_of(op: u32) -> Gemm {
    let p = params;
    let taps = p.ci * p.k * p.k;
    switch op {
        case SH_FORWARD: {
            return Gemm(p.co, p.n * p.oh * p.ow, taps);
        }
        case SH_BACKWARD_INPUT: {
            return Gemm(p.ci, p.n * p.h * p.w, p.co * p.k * p.k);
        }
        default: {
            return Gemm(p.co, taps, p.n * p.oh * p.ow);
        }
    }
}

// im2col: X̃[r, q] = x[b, c, oy·s + ky − pad_t, ox·s + kx − pad_l] for r = (c, ky, kx) and the
// output pixel q = (b, oy, ox), 0 in the padding. Gathered on the fly: no im2col buffer.
fn im2col(r: u32, q: u32) -> f32 {
    let p = params;
    let kk = p.k * p.k;
    let ohw = p.oh * p.ow;
    let t = r % kk;
    let pix = q % ohw;
    // A negative coordinate wraps to a large u32: one comparison tests both ends.
    let iy = u32(tap(pix / p.ow, t / p.k, p.pad_t));
    let ix = u32(tap(pix % p.ow, t % p.k, p.pad_l));
    if (iy >= p.h || ix >= p.w) {
        return 0.0;
    }
    return x[(((q / ohw) * p.ci + r / kk) * p.h + iy) * p.w + ix];
}

// dY gathered for backward_input: dy[b, o, oy, ox] for r = (o, ky, kx) and the input pixel
// q = (b, iy, ix), where iy = oy·s + ky − pad_t, i.e. oy = (iy + pad_t − ky)/s when that divides
// and lies in [0, OH) (likewise ox); 0 otherwise. iy + pad_t − ky ≥ −(k−1), so it is lifted by
// k·s (≥ k, a multiple of s) before % and /, and k is taken back after the division: no % or / of a
// negative integer.
fn dy_gather(r: u32, q: u32) -> f32 {
    let p = params;
    let kk = p.k * p.k;
    let hw = p.h * p.w;
    let t = r % kk;
    let pix = q % hw;
    let s = i32(p.stride);
    let lift = i32(p.k) * s;
    let ey = i32(pix / p.w) + p.pad_t - i32(t / p.k) + lift;
    let ex = i32(pix % p.w) + p.pad_l - i32(t % p.k) + lift;
    let oy = ey / s - i32(p.k);
    let ox = ex / s - i32(p.k);
    if (ey % s != 0 || ex % s != 0 || oy < 0 || oy >= i32(p.oh) || ox < 0 || ox >= i32(p.ow)) {
        return 0.0;
    }
    return dy[(((q / hw) * p.co + r / kk) * p.oh + u32(oy)) * p.ow + u32(ox)];
}

// A[k, m] of a pass, (k, m) in range.
fn gemm_a(op: u32, k: u32, m: u32) -> f32 {
    let p = params;
    let kk = p.k * p.k;
    switch op {
        case SH_FORWARD: {
            // W[o = m, r = k]: the weights (Cout, Cin·k·k) as they lie.
            return wt[m * p.ci * kk + k];
        }
        case SH_BACKWARD_INPUT: {
            // W[o, c = m, ky, kx] for k = (o, ky, kx).
            return wt[((k / kk) * p.ci + m) * kk + k % kk];
        }
        default: {
            // dY[o = m, q = k], q = (b, oy, ox).
            let ohw = p.oh * p.ow;
            return dy[((k / ohw) * p.co + m) * ohw + k % ohw];
        }
    }
}

// B[k, n] of a pass, (k, n) in range.
fn gemm_b(op: u32, k: u32, n: u32) -> f32 {
    switch op {
        case SH_FORWARD: {
            return im2col(k, n);
        }
        case SH_BACKWARD_INPUT: {
            return dy_gather(k, n);
        }
        default: {
            // X̃[r = n, q = k]: the reduction runs over the output pixels.
            return im2col(n, k);
        }
    }
}

// The register block of invocation `lid` in the tile (m0, n0) of C, summed over the reduction
// indices [k_begin, k_end) (k_end ≤ K; [0, K) for the whole product): acc[i][j] = C[m0 + ty + SH_T·i,
// n0 + tx + SH_T·j] with (tx, ty) = (lid mod SH_T, lid / SH_T). Every invocation of the workgroup
// must call it (it holds barriers), with the same op, tile and range.
fn tile_gemm(op: u32, m0: u32, n0: u32, k_begin: u32, k_end: u32, lid: u32) -> array<vec4<f32>, SH_R> {
    let g = gemm_of(op);
    let tx = lid % SH_T;
    let ty = lid / SH_T;
    // A's elements lie k-contiguous in every pass, B's n-contiguous in forward and backward_input
    // (pixels) but k-contiguous in backward_weight (the reduction runs over pixels): consecutive
    // invocations load consecutive addresses.
    let b_k_fastest = op == SH_BACKWARD_WEIGHT;
    var acc: array<vec4<f32>, SH_R>;
    for (var k0 = k_begin; k0 < k_end; k0 += SH_BK) {
        // Cooperative loads: SH_BK · SH_BM elements of each operand, SH_BK · SH_BM / SH_WG = 4 per
        // invocation; 0 outside the matrices (and past k_end), so the partial tiles at the edges
        // need no other care.
        for (var e = lid; e < SH_BK * SH_BM; e += SH_WG) {
            let ka = e % SH_BK;
            let ma = e / SH_BK;
            var a = 0.0;
            if (k0 + ka < k_end && m0 + ma < g.m) {
                a = gemm_a(op, k0 + ka, m0 + ma);
            }
            sh_a[ka * SH_LD + ma] = a;
            let kb = select(e / SH_BN, e % SH_BK, b_k_fastest);
            let nb = select(e % SH_BN, e / SH_BK, b_k_fastest);
            var b = 0.0;
            if (k0 + kb < k_end && n0 + nb < g.n) {
                b = gemm_b(op, k0 + kb, n0 + nb);
            }
            sh_b[kb * SH_LD + nb] = b;
        }
        // The tiles are complete before anyone reads them.
        workgroupBarrier();
        for (var kk = 0u; kk < SH_BK; kk++) {
            let row = kk * SH_LD;
            let av = vec4<f32>(sh_a[row + ty], sh_a[row + ty + SH_T], sh_a[row + ty + 2u * SH_T], sh_a[row + ty + 3u * SH_T]);
            let bv = vec4<f32>(sh_b[row + tx], sh_b[row + tx + SH_T], sh_b[row + tx + 2u * SH_T], sh_b[row + tx + 3u * SH_T]);
            for (var i = 0u; i < SH_R; i++) {
                acc[i] = fma(vec4<f32>(av[i]), bv, acc[i]);
            }
        }
        // Everyone has read the tiles before the next chunk overwrites them.
        workgroupBarrier();
    }
    return acc;
}

// Tiles: n (pixels) on the 2D grid (x, y) of workgroups, m (channels) on z; 16×16 invocations.
fn tile_n0(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return (wid.x + wid.y * nwg.x) * SH_BN;
}

// y[b, o, oy, ox] (+)= C[o, (b, oy, ox)] (+ bias[o]).
@compute @workgroup_size(SH_T, SH_T)
fn forward_shared(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let p = params;
    let m0 = wid.z * SH_BM;
    let n0 = tile_n0(wid, nwg);
    var acc = tile_gemm(SH_FORWARD, m0, n0, 0u, gemm_of(SH_FORWARD).k, lid);
    let ohw = p.oh * p.ow;
    let pixels = p.n * ohw;
    for (var i = 0u; i < SH_R; i++) {
        let o = m0 + lid / SH_T + SH_T * i;
        let b = select(0.0, bias[min(o, p.co - 1u)], (p.flags & ADD_BIAS) != 0u);
        for (var j = 0u; j < SH_R; j++) {
            let q = n0 + lid % SH_T + SH_T * j;
            if (o < p.co && q < pixels) {
                let yi = ((q / ohw) * p.co + o) * ohw + q % ohw;
                let v = acc[i][j] + b;
                if ((p.flags & ACCUMULATE) != 0u) {
                    y[yi] += v;
                } else {
                    y[yi] = v;
                }
            }
        }
    }
}

// dx[b, c, iy, ix] += C[c, (b, iy, ix)].
@compute @workgroup_size(SH_T, SH_T)
fn backward_input_shared(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>) {
    let p = params;
    let m0 = wid.z * SH_BM;
    let n0 = tile_n0(wid, nwg);
    var acc = tile_gemm(SH_BACKWARD_INPUT, m0, n0, 0u, gemm_of(SH_BACKWARD_INPUT).k, lid);
    let hw = p.h * p.w;
    let pixels = p.n * hw;
    for (var i = 0u; i < SH_R; i++) {
        let c = m0 + lid / SH_T + SH_T * i;
        for (var j = 0u; j < SH_R; j++) {
            let q = n0 + lid % SH_T + SH_T * j;
            if (c < p.ci && q < pixels) {
                dx[((q / hw) * p.ci + c) * hw + q % hw] += acc[i][j];
            }
        }
    }
}

// dw[o, r] += C[o, r], r = (c, ky, kx).
@compute @workgroup_size(SH_T, SH_T)
fn backward_weight_shared(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>) {
    let p = params;
    let m0 = wid.z * SH_BM;
    let n0 = tile_n0(wid, nwg);
    var acc = tile_gemm(SH_BACKWARD_WEIGHT, m0, n0, 0u, gemm_of(SH_BACKWARD_WEIGHT).k, lid);
    let taps = p.ci * p.k * p.k;
    for (var i = 0u; i < SH_R; i++) {
        let o = m0 + lid / SH_T + SH_T * i;
        for (var j = 0u; j < SH_R; j++) {
            let r = n0 + lid % SH_T + SH_T * j;
            if (o < p.co && r < taps) {
                dw[o * taps + r] += acc[i][j];
            }
        }
    }
}

// Split-K: part[slice, o, r] = Σ_{k in the slice} dY[o, k] · X̃[r, k]; workgroup z = slice · (row
// tiles) + row tile, column tiles on (x, y). The slices are ⌈chunks/splits⌉ chunks of SH_BK long;
// the bounds depend only on the workgroup, so the chunk loop stays uniform. Every element of the
// tile is written, zeros for an empty slice, so backward_weight_reduce may add every slice.
@compute @workgroup_size(SH_T, SH_T)
fn backward_weight_shared_split(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                                @builtin(num_workgroups) nwg: vec3<u32>) {
    let p = params;
    let m_tiles = (p.co + SH_BM - 1u) / SH_BM;
    let slice = wid.z / m_tiles;
    let m0 = (wid.z % m_tiles) * SH_BM;
    let n0 = tile_n0(wid, nwg);
    let g = gemm_of(SH_BACKWARD_WEIGHT);
    let per = ((g.k + SH_BK - 1u) / SH_BK + p.splits - 1u) / p.splits * SH_BK;
    let k_begin = min(slice * per, g.k);
    let k_end = min(k_begin + per, g.k);
    var acc = tile_gemm(SH_BACKWARD_WEIGHT, m0, n0, k_begin, k_end, lid);
    let taps = p.ci * p.k * p.k;
    let len = p.co * taps;
    for (var i = 0u; i < SH_R; i++) {
        let o = m0 + lid / SH_T + SH_T * i;
        for (var j = 0u; j < SH_R; j++) {
            let r = n0 + lid % SH_T + SH_T * j;
            if (o < p.co && r < taps) {
                part[slice * len + o * taps + r] = acc[i][j];
            }
        }
    }
}
