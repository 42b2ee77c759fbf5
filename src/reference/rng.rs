//! CPU twin of the counter-based RNG of `shaders/rng.wgsl`: Threefry-2x32-20 (Salmon et al.
//! 2011) keyed by (seed, stream) over the counter (counter, 0). The u32 words and the uniforms are
//! bit-exact copies of the GPU's; the Box–Muller normal is evaluated in f64 from the same words
//! (the GPU evaluates it in f32 with its own polynomials, agreeing to ~1e-6).

/// Skein's key-schedule parity constant.
const THREEFRY_PARITY: u32 = 0x1BD1_1BDA;
/// Rotation of round r is `ROTATIONS[r % 8]`.
const ROTATIONS: [u32; 8] = [13, 15, 26, 6, 17, 29, 16, 24];

/// Stream of `uniform` and `normal`; kernels use other streams for side draws.
pub const STREAM_MAIN: u32 = 0;
/// Stream of q_sample's per-image horizontal-flip coin.
pub const STREAM_FLIP: u32 = 1;

/// Threefry-2x32 with 20 rounds of the counter `ctr` under `key`.
pub fn threefry2x32(key: [u32; 2], ctr: [u32; 2]) -> [u32; 2] {
    let ks = [key[0], key[1], THREEFRY_PARITY ^ key[0] ^ key[1]];
    let mut x0 = ctr[0].wrapping_add(ks[0]);
    let mut x1 = ctr[1].wrapping_add(ks[1]);
    for r in 0..20 {
        x0 = x0.wrapping_add(x1);
        x1 = x1.rotate_left(ROTATIONS[r % 8]) ^ x0;
        if r % 4 == 3 {
            let s = r / 4 + 1;
            x0 = x0.wrapping_add(ks[s % 3]);
            x1 = x1.wrapping_add(ks[(s + 1) % 3]).wrapping_add(s as u32);
        }
    }
    [x0, x1]
}

/// Two random words for (seed, stream, counter), as `rng_block` in WGSL.
pub fn block(seed: u32, stream: u32, counter: u32) -> [u32; 2] {
    threefry2x32([seed, stream], [counter, 0])
}

/// The top 24 bits of a word as a float in (0, 1], exactly as the GPU's `rng_unit`.
pub fn unit(word: u32) -> f32 {
    ((word >> 8) + 1) as f32 / 16_777_216.0
}

/// Uniform in (0, 1] for element `counter` of the stream `seed` (bit-exact with `rng_uniform`).
pub fn uniform(seed: u32, counter: u32) -> f32 {
    unit(block(seed, STREAM_MAIN, counter)[0])
}

/// Standard normal for element `counter` of the stream `seed`, in f64 from the same words as
/// the GPU's `rng_normal`: sqrt(−2 ln u1) · cos(2π m2 / 2^24), u1 = unit(w0), m2 = w1 >> 8.
pub fn normal(seed: u32, counter: u32) -> f64 {
    let [w0, w1] = block(seed, STREAM_MAIN, counter);
    let u1 = unit(w0) as f64;
    let theta = std::f64::consts::TAU * (w1 >> 8) as f64 / 16_777_216.0;
    (-2.0 * u1.ln()).sqrt() * theta.cos()
}

/// `n` normals for counters `0..n` of `seed`.
pub fn normals(seed: u32, n: usize) -> Vec<f64> {
    (0..n as u32).map(|c| normal(seed, c)).collect()
}

/// `n` uniforms for counters `0..n` of `seed`.
pub fn uniforms(seed: u32, n: usize) -> Vec<f32> {
    (0..n as u32).map(|c| uniform(seed, c)).collect()
}
