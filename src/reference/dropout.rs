//! CPU reference for dropout (see `shaders/dropout.wgsl`), with the mask drawn from the same
//! counter-based stream as the GPU.

use super::rng;

/// mask_i = 1 when element i is kept: rng::uniform(seed, i) > prob (the same f32 comparison as
/// the GPU, so the masks agree exactly).
pub fn mask(n: usize, prob: f32, seed: u32) -> Vec<bool> {
    (0..n as u32).map(|i| rng::uniform(seed, i) > prob).collect()
}

/// y = x · mask / (1 − prob)
pub fn forward(prob: f32, x: &[f64], seed: u32) -> Vec<f64> {
    let scale = 1.0 / (1.0 - prob as f64);
    mask(x.len(), prob, seed)
        .iter()
        .zip(x)
        .map(|(&k, &v)| if k { v * scale } else { 0.0 })
        .collect()
}

/// dx = dy · mask / (1 − prob)
pub fn backward(prob: f32, dy: &[f64], seed: u32) -> Vec<f64> {
    forward(prob, dy, seed)
}
