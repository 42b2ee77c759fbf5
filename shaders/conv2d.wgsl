// 2D convolution (NCHW, square k×k kernel, stride s, zero padding) and its three backward passes.
//
//   forward:  y[n,o,oy,ox] = b[o] + Σ_{c,ky,kx} w[o,c,ky,kx] · x[n, c, oy·s+ky−pad_t, ox·s+kx−pad_l]
//   backward: dx[n,c,iy,ix] += Σ_{o,ky,kx : iy = oy·s+ky−pad_t, ix = ox·s+kx−pad_l} dy[n,o,oy,ox] · w[o,c,ky,kx]
//             dw[o,c,ky,kx] += Σ_{n,oy,ox} dy[n,o,oy,ox] · x[n, c, oy·s+ky−pad_t, ox·s+kx−pad_l]
//             db[o]         += Σ_{n,oy,ox} dy[n,o,oy,ox]
//   (taps falling in the padding read zero). Bottom/right padding only enter through OH, OW.
//
// Layout: row-major NCHW images, weights (Cout, Cin, k, k) as in PyTorch. The tiled convolution
// addresses its weights through strides, w_base + o·w_so + c·w_si + ky·w_sy + kx·w_sx, so that the
// same kernel also runs the stride-1 backward-input pass (a convolution of dy with the flipped,
// channel-transposed kernel: negative y/x strides, input/output channel strides swapped).
//
// Mapping:
//   *_naive             one invocation per output element; 1D grid of WG (linear-index idiom).
//   conv_tiled[_k3s1]   one invocation per (4 output channels × 4 consecutive output pixels of a row):
//                       16 accumulators in registers, no barriers. Pixel groups on the 1D grid
//                       (x, y), the channel block on workgroup z, so weight loads are uniform
//                       across the workgroup. _k3s1 (3×3, stride 1) loads each input row segment
//                       once (6 values) for its 3 taps.
//   backward_input_strided  one invocation per (4 input channels × 4 input pixels spaced by s in a
//                       row, all with the same ix mod s, so they meet the same taps); channel block on z.
//   backward_weight     one invocation per (4 output channels × 4 input channels at one tap), a
//                       reduction over (N, OH, OW) in registers; output-channel block on z, so the
//                       dy loads are uniform across the workgroup. No atomics.
//   backward_bias       one invocation per output channel (workgroups of BIAS_WG).

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
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // (N, Cin, H, W)    conv input
@group(0) @binding(2) var<storage, read> wt: array<f32>;         // (Cout, Cin, k, k) weights
@group(0) @binding(3) var<storage, read> bias: array<f32>;       // (Cout)            used if flags bit 0
@group(0) @binding(4) var<storage, read_write> y: array<f32>;    // (N, Cout, OH, OW) conv output
@group(0) @binding(5) var<storage, read> dy: array<f32>;         // (N, Cout, OH, OW)
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;   // (N, Cin, H, W)    accumulated
@group(0) @binding(7) var<storage, read_write> dw: array<f32>;   // (Cout, Cin, k, k) accumulated
@group(0) @binding(8) var<storage, read_write> db: array<f32>;   // (Cout)            accumulated

const WG: u32 = 64u;
const TILE_WG: u32 = 64u;
const BIAS_WG: u32 = 8u;
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

@compute @workgroup_size(BIAS_WG)
fn backward_bias(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = gid.x + gid.y * nwg.x * BIAS_WG;
    let p = params;
    if (o >= p.co) {
        return;
    }
    let pixels = p.oh * p.ow;
    var acc = 0.0;
    for (var n = 0u; n < p.n; n++) {
        let base = (n * p.co + o) * pixels;
        for (var q = 0u; q < pixels; q++) {
            acc += dy[base + q];
        }
    }
    db[o] += acc;
}

// ---- tiled convolution: 4 output channels × 4 pixels per invocation -----------------------

// x[row + ix], or 0 when ix is outside [0, W) (the padding). The index is clamped so the load is
// always in bounds; a negative ix wraps to a large u32 and fails the range test.
fn xat(row: u32, ix: i32) -> f32 {
    let u = u32(ix);
    return select(0.0, x[row + min(u, params.w - 1u)], u < params.w);
}

// Index of w[o, 0, 0, 0] for output channel o (clamped to a real channel; results of channels
// ≥ co are computed but never stored).
fn wbase(o: u32) -> i32 {
    return params.w_base + i32(min(o, params.co - 1u)) * params.w_so;
}

// Store the 4 pixels of output channel o starting at (n, o, oy, ox0), with bias and accumulation.
fn store_tile(n: u32, o: u32, oy: u32, ox0: u32, acc: vec4<f32>) {
    let p = params;
    if (o >= p.co) {
        return;
    }
    var v = acc;
    if ((p.flags & ADD_BIAS) != 0u) {
        v += vec4<f32>(bias[o]);
    }
    let base = ((n * p.co + o) * p.oh + oy) * p.ow + ox0;
    let accumulate = (p.flags & ACCUMULATE) != 0u;
    for (var j = 0u; j < 4u; j++) {
        if (ox0 + j < p.ow) {
            if (accumulate) {
                y[base + j] += v[j];
            } else {
                y[base + j] = v[j];
            }
        }
    }
}

struct Tile {
    n: u32,
    oy: u32,
    ox0: u32,
    o0: u32,
    valid: bool,
}

fn tile_of(gid: vec3<u32>, nwg: vec3<u32>, wid: vec3<u32>) -> Tile {
    let q = gid.x + gid.y * nwg.x * TILE_WG;
    let p = params;
    let row = q / p.groups;
    return Tile(row / p.oh, row % p.oh, (q % p.groups) * 4u, wid.z * 4u, q < p.n * p.oh * p.groups);
}

@compute @workgroup_size(TILE_WG)
fn conv_tiled(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(workgroup_id) wid: vec3<u32>) {
    let t = tile_of(gid, nwg, wid);
    if (!t.valid) {
        return;
    }
    let p = params;
    let s = i32(p.stride);
    let w0 = wbase(t.o0);
    let w1 = wbase(t.o0 + 1u);
    let w2 = wbase(t.o0 + 2u);
    let w3 = wbase(t.o0 + 3u);
    let ix0 = tap(t.ox0, 0u, p.pad_l);
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var c = 0u; c < p.ci; c++) {
        let wc = i32(c) * p.w_si;
        for (var ky = 0u; ky < p.k; ky++) {
            let iy = tap(t.oy, ky, p.pad_t);
            if (u32(iy) >= p.h) {
                continue;
            }
            let row = ((t.n * p.ci + c) * p.h + u32(iy)) * p.w;
            let wy = wc + i32(ky) * p.w_sy;
            for (var kx = 0u; kx < p.k; kx++) {
                let ix = ix0 + i32(kx);
                let xv = vec4<f32>(xat(row, ix), xat(row, ix + s), xat(row, ix + 2 * s), xat(row, ix + 3 * s));
                let wk = wy + i32(kx) * p.w_sx;
                a0 = fma(vec4<f32>(wt[w0 + wk]), xv, a0);
                a1 = fma(vec4<f32>(wt[w1 + wk]), xv, a1);
                a2 = fma(vec4<f32>(wt[w2 + wk]), xv, a2);
                a3 = fma(vec4<f32>(wt[w3 + wk]), xv, a3);
            }
        }
    }
    store_tile(t.n, t.o0, t.oy, t.ox0, a0);
    store_tile(t.n, t.o0 + 1u, t.oy, t.ox0, a1);
    store_tile(t.n, t.o0 + 2u, t.oy, t.ox0, a2);
    store_tile(t.n, t.o0 + 3u, t.oy, t.ox0, a3);
}

// conv_tiled for k = 3, stride 1: the 4 pixels × 3 taps of a row read 6 consecutive inputs.
@compute @workgroup_size(TILE_WG)
fn conv_tiled_k3s1(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(workgroup_id) wid: vec3<u32>) {
    let t = tile_of(gid, nwg, wid);
    if (!t.valid) {
        return;
    }
    let p = params;
    let w0 = wbase(t.o0);
    let w1 = wbase(t.o0 + 1u);
    let w2 = wbase(t.o0 + 2u);
    let w3 = wbase(t.o0 + 3u);
    let ix0 = i32(t.ox0) - p.pad_l;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var c = 0u; c < p.ci; c++) {
        let wc = i32(c) * p.w_si;
        for (var ky = 0u; ky < 3u; ky++) {
            let iy = i32(t.oy + ky) - p.pad_t;
            if (u32(iy) >= p.h) {
                continue;
            }
            let row = ((t.n * p.ci + c) * p.h + u32(iy)) * p.w;
            let lo = vec4<f32>(xat(row, ix0), xat(row, ix0 + 1), xat(row, ix0 + 2), xat(row, ix0 + 3));
            let hi = vec2<f32>(xat(row, ix0 + 4), xat(row, ix0 + 5));
            let wy = wc + i32(ky) * p.w_sy;
            for (var kx = 0; kx < 3; kx++) {
                var xv = lo;
                if (kx == 1) {
                    xv = vec4<f32>(lo.yzw, hi.x);
                } else if (kx == 2) {
                    xv = vec4<f32>(lo.zw, hi);
                }
                let wk = wy + kx * p.w_sx;
                a0 = fma(vec4<f32>(wt[w0 + wk]), xv, a0);
                a1 = fma(vec4<f32>(wt[w1 + wk]), xv, a1);
                a2 = fma(vec4<f32>(wt[w2 + wk]), xv, a2);
                a3 = fma(vec4<f32>(wt[w3 + wk]), xv, a3);
            }
        }
    }
    store_tile(t.n, t.o0, t.oy, t.ox0, a0);
    store_tile(t.n, t.o0 + 1u, t.oy, t.ox0, a1);
    store_tile(t.n, t.o0 + 2u, t.oy, t.ox0, a2);
    store_tile(t.n, t.o0 + 3u, t.oy, t.ox0, a3);
}

// ---- tiled backward passes ---------------------------------------------------------------------

// dy[base + ox], or 0 when ox is outside [0, OW).
fn dyat(base: u32, ox: i32) -> f32 {
    let u = u32(ox);
    return select(0.0, dy[base + min(u, params.ow - 1u)], u < params.ow);
}

// w[o, c, ky, kx] in PyTorch layout, c clamped to a real channel.
fn wat(o: u32, c: u32, tk: u32) -> f32 {
    return wt[(o * params.ci + min(c, params.ci - 1u)) * params.k * params.k + tk];
}

// 4 input channels × 4 input pixels ix = r + s·(4g + j), j = 0..3 (same residue r = ix mod s, so for
// a tap kx either all or none of them are hit, by ox = 4g + j + (r + pad_l − kx)/s).
@compute @workgroup_size(TILE_WG)
fn backward_input_strided(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(workgroup_id) wid: vec3<u32>) {
    let q = gid.x + gid.y * nwg.x * TILE_WG;
    let p = params;
    if (q >= p.n * p.h * p.groups) {
        return;
    }
    let s = i32(p.stride);
    let gq = q % p.groups;
    let iy = i32((q / p.groups) % p.h);
    let n = q / (p.groups * p.h);
    let r = i32(gq % p.stride);
    let g = i32(gq / p.stride);
    let c0 = wid.z * 4u;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var o = 0u; o < p.co; o++) {
        for (var ky = 0u; ky < p.k; ky++) {
            let ny = iy + p.pad_t - i32(ky);
            if (ny < 0 || ny % s != 0 || ny / s >= i32(p.oh)) {
                continue;
            }
            let row = ((n * p.co + o) * p.oh + u32(ny / s)) * p.ow;
            for (var kx = 0u; kx < p.k; kx++) {
                let d = r + p.pad_l - i32(kx);
                if (d % s != 0) {
                    continue;
                }
                let ox = 4 * g + d / s;
                let dv = vec4<f32>(dyat(row, ox), dyat(row, ox + 1), dyat(row, ox + 2), dyat(row, ox + 3));
                let tk = ky * p.k + kx;
                a0 = fma(vec4<f32>(wat(o, c0, tk)), dv, a0);
                a1 = fma(vec4<f32>(wat(o, c0 + 1u, tk)), dv, a1);
                a2 = fma(vec4<f32>(wat(o, c0 + 2u, tk)), dv, a2);
                a3 = fma(vec4<f32>(wat(o, c0 + 3u, tk)), dv, a3);
            }
        }
    }
    let accs = array<vec4<f32>, 4>(a0, a1, a2, a3);
    for (var i = 0u; i < 4u; i++) {
        let c = c0 + i;
        if (c >= p.ci) {
            break;
        }
        let base = ((n * p.ci + c) * p.h + u32(iy)) * p.w;
        for (var j = 0; j < 4; j++) {
            let ix = r + s * (4 * g + j);
            if (ix < i32(p.w)) {
                dx[base + u32(ix)] += accs[i][j];
            }
        }
    }
}

// 4 output channels (o0.., workgroup z) × 4 input channels (c0..) at tap (ky, kx), summed over
// (n, oy, ox): acc[i][j] += dy[n, o0+i, oy, ox] · x[n, c0+j, iy, ix].
@compute @workgroup_size(TILE_WG)
fn backward_weight(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(workgroup_id) wid: vec3<u32>) {
    let q = gid.x + gid.y * nwg.x * TILE_WG;
    let p = params;
    let kk = p.k * p.k;
    let cblocks = (p.ci + 3u) / 4u;
    if (q >= cblocks * kk) {
        return;
    }
    let tk = q % kk;
    let ky = tk / p.k;
    let kx = tk % p.k;
    let c0 = (q / kk) * 4u;
    let o0 = wid.z * 4u;
    let hw = p.h * p.w;
    let ohw = p.oh * p.ow;
    // Clamped channels: the extra accumulators are computed from real data and never stored.
    let cs = min(vec4<u32>(c0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.ci - 1u)) * hw;
    let os = min(vec4<u32>(o0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.co - 1u)) * ohw;
    // Range of ox whose tap kx falls inside the image: 0 ≤ ox·s + kx − pad_l < W.
    let s = i32(p.stride);
    let lo_num = p.pad_l - i32(kx);
    let ox_lo = u32(max(0, (lo_num + s - 1) / s));
    let hi_num = i32(p.w) - 1 + p.pad_l - i32(kx);
    let ox_hi = select(0u, min(p.ow, u32(hi_num / s + 1)), hi_num >= 0);
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var n = 0u; n < p.n; n++) {
        let xn = n * p.ci * hw;
        let dn = n * p.co * ohw;
        for (var oy = 0u; oy < p.oh; oy++) {
            let iy = tap(oy, ky, p.pad_t);
            if (u32(iy) >= p.h) {
                continue;
            }
            let xr = xn + u32(iy) * p.w;
            let dr = dn + oy * p.ow;
            for (var ox = ox_lo; ox < ox_hi; ox++) {
                let xi = xr + u32(tap(ox, kx, p.pad_l));
                let xv = vec4<f32>(x[xi + cs.x], x[xi + cs.y], x[xi + cs.z], x[xi + cs.w]);
                let di = dr + ox;
                a0 = fma(vec4<f32>(dy[di + os.x]), xv, a0);
                a1 = fma(vec4<f32>(dy[di + os.y]), xv, a1);
                a2 = fma(vec4<f32>(dy[di + os.z]), xv, a2);
                a3 = fma(vec4<f32>(dy[di + os.w]), xv, a3);
            }
        }
    }
    let accs = array<vec4<f32>, 4>(a0, a1, a2, a3);
    for (var i = 0u; i < 4u; i++) {
        let o = o0 + i;
        for (var j = 0u; j < 4u; j++) {
            let c = c0 + j;
            if (o < p.co && c < p.ci) {
                dw[(o * p.ci + c) * kk + tk] += accs[i][j];
            }
        }
    }
}
