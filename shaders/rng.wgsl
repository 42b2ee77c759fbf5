// Counter-based random numbers, shared by kernels through `#import rng`.
//
// A PCG-style integer hash (Jarzynski & Olano 2020, "Hash Functions for GPU Rendering") of
// (seed, counter) gives independent uniform u32s without state; `rng_normal` turns two of them
// into a standard Gaussian with the Box–Muller transform.
// No bindings, no entry points: only functions.

fn pcg_hash(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

// Uniform in (0, 1], from a seed and a counter.
fn rng_uniform(seed: u32, counter: u32) -> f32 {
    let h = pcg_hash(counter ^ pcg_hash(seed));
    return (f32(h >> 8u) + 1.0) / 16777216.0;
}

// Standard normal for element `counter` of the stream `seed` (Box–Muller, cosine branch).
fn rng_normal(seed: u32, counter: u32) -> f32 {
    let u1 = rng_uniform(seed, 2u * counter);
    let u2 = rng_uniform(seed, 2u * counter + 1u);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
