// Counter-based random numbers, shared by kernels through `#import rng`. No bindings, no entry
// points: only functions. The CPU twin is src/reference/rng.rs (bit-exact for the u32 stream).
//
// Generator: Threefry-2x32 with 20 rounds (Salmon et al. 2011, "Parallel random numbers: as easy
// as 1, 2, 3"; the generator behind jax.random). It encrypts a 64-bit counter under a 64-bit key
// with 32-bit adds, rotations and xors only (no multiplies), and passes TestU01's BigCrush.
// Here the key is (seed, stream) and the counter is (counter, 0):
//
//   rng_block(seed, stream, counter) = threefry2x32(key = (seed, stream), ctr = (counter, 0))
//
// so every (seed, stream, counter) gives two fresh u32 words with no state carried between
// invocations. Stream 0 feeds `rng_uniform` and `rng_normal`; kernels use other streams for
// side draws (e.g. q_sample's per-image flip coin uses stream 1).
//
// Transforms (counter c of stream 0, words (w0, w1) = rng_block(seed, 0, c)):
//   rng_uniform(seed, c) = ((w0 >> 8) + 1) / 2^24                 exact in f32, in (0, 1]
//   rng_normal(seed, c)  = sqrt(−2 ln u1) · cos(2π m2 / 2^24)       Box–Muller, cosine branch,
//                          u1 = rng_uniform(seed, c), m2 = w1 >> 8
// `rng_uniform` and `rng_normal` at the same (seed, c) share w0: a kernel draws one kind per
// (seed, counter). The logarithm and cosine are evaluated with our own f32 polynomials (below)
// rather than the built-ins, whose accuracy WGSL leaves to the driver (Vulkan allows 2^-11
// absolute error for cos): normals then agree with the f64 CPU transform to ~1e-6 on any GPU.
// |z| ≤ sqrt(2 · 24 ln 2) ≈ 5.77 (the tails beyond have probability 8e-9).

const THREEFRY_PARITY: u32 = 0x1BD11BDAu;

fn rng_rotl(x: u32, r: u32) -> u32 {
    return (x << r) | (x >> (32u - r));
}

// One Threefry round: x0 += x1; x1 = rotl(x1, r) ^ x0.
fn threefry_mix(x: vec2<u32>, r: u32) -> vec2<u32> {
    let a = x.x + x.y;
    return vec2<u32>(a, rng_rotl(x.y, r) ^ a);
}

// Rounds 8k..8k+3 and 8k+4..8k+7 use the rotation constants {13, 15, 26, 6} and {17, 29, 16, 24}.
fn threefry_rounds_a(x: vec2<u32>) -> vec2<u32> {
    return threefry_mix(threefry_mix(threefry_mix(threefry_mix(x, 13u), 15u), 26u), 6u);
}

fn threefry_rounds_b(x: vec2<u32>) -> vec2<u32> {
    return threefry_mix(threefry_mix(threefry_mix(threefry_mix(x, 17u), 29u), 16u), 24u);
}

// Key injection number s after every 4 rounds.
fn threefry_inject(x: vec2<u32>, ka: u32, kb: u32, s: u32) -> vec2<u32> {
    return vec2<u32>(x.x + ka, x.y + kb + s);
}

// Threefry-2x32-20 of counter `ctr` under `key`.
fn threefry2x32(key: vec2<u32>, ctr: vec2<u32>) -> vec2<u32> {
    let k0 = key.x;
    let k1 = key.y;
    let k2 = THREEFRY_PARITY ^ k0 ^ k1;
    var x = ctr + key;
    x = threefry_inject(threefry_rounds_a(x), k1, k2, 1u);
    x = threefry_inject(threefry_rounds_b(x), k2, k0, 2u);
    x = threefry_inject(threefry_rounds_a(x), k0, k1, 3u);
    x = threefry_inject(threefry_rounds_b(x), k1, k2, 4u);
    x = threefry_inject(threefry_rounds_a(x), k2, k0, 5u);
    return x;
}

// Two random u32 words for (seed, stream, counter).
fn rng_block(seed: u32, stream: u32, counter: u32) -> vec2<u32> {
    return threefry2x32(vec2<u32>(seed, stream), vec2<u32>(counter, 0u));
}

// The top 24 bits of a word as a float in (0, 1] (exact).
fn rng_unit(word: u32) -> f32 {
    return f32((word >> 8u) + 1u) * (1.0 / 16777216.0);
}

// Uniform in (0, 1] for element `counter` of the stream `seed`.
fn rng_uniform(seed: u32, counter: u32) -> f32 {
    return rng_unit(rng_block(seed, 0u, counter).x);
}

// ln(u) for a normal positive f32: u = m · 2^e with m in [√½, √2), ln m = 2 atanh(s),
// s = (m − 1)/(m + 1), |s| ≤ 0.1716, odd series to s^11 (truncation < 2e-11). m − 1 is exact,
// so the relative accuracy holds near u = 1 too.
fn rng_ln(u: f32) -> f32 {
    let bits = bitcast<u32>(u);
    var e = f32(i32(bits >> 23u) - 127);
    var m = bitcast<f32>((bits & 0x007FFFFFu) | 0x3F800000u); // [1, 2)
    if (m > 1.4142135) {
        m = m * 0.5;
        e = e + 1.0;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let series = 1.0 + s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0 + s2 * (1.0 / 11.0)))));
    return 2.0 * s * series + e * 0.6931471805599453;
}

// cos(2π m / 2^24) for a 24-bit integer m: the quadrant (top 2 bits) is exact, the angle within
// it a = (m mod 2^22) · (π/2) / 2^22 lies in [0, π/2) where Taylor series to a^12 / a^13 are
// accurate to < 1e-8.
fn rng_cos_turns24(m: u32) -> f32 {
    let q = m >> 22u;
    let a = f32(m & 0x003FFFFFu) * (1.5707963267948966 / 4194304.0);
    let a2 = a * a;
    let c = 1.0 - a2 / 2.0 * (1.0 - a2 / 12.0 * (1.0 - a2 / 30.0 * (1.0 - a2 / 56.0 * (1.0 - a2 / 90.0 * (1.0 - a2 / 132.0)))));
    let s = a * (1.0 - a2 / 6.0 * (1.0 - a2 / 20.0 * (1.0 - a2 / 42.0 * (1.0 - a2 / 72.0 * (1.0 - a2 / 110.0 * (1.0 - a2 / 156.0))))));
    // cos(qπ/2 + a) for q = 0, 1, 2, 3: cos a, −sin a, −cos a, sin a.
    var r = c;
    if (q == 1u) {
        r = -s;
    } else if (q == 2u) {
        r = -c;
    } else if (q == 3u) {
        r = s;
    }
    return r;
}

// Standard normal for element `counter` of the stream `seed` (Box–Muller, cosine branch).
fn rng_normal(seed: u32, counter: u32) -> f32 {
    let w = rng_block(seed, 0u, counter);
    let radius = sqrt(-2.0 * rng_ln(rng_unit(w.x)));
    return radius * rng_cos_turns24(w.y >> 8u);
}
