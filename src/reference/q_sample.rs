//! CPU reference for q_sample (see `shaders/q_sample.wgsl`): the forward process of eq. 4,
//! x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε, with the batch gather and random flips, drawing ε and the flip
//! coins from the same counter-based stream as the GPU.

use super::rng;

/// Whether image `b` is mirrored along W for `seed` (top bit of the flip stream's word 0).
pub fn flip_coin(seed: u32, b: usize) -> bool {
    rng::block(seed, rng::STREAM_FLIP, b as u32)[0] >> 31 == 1
}

/// Returns (x_t, eps), both (B, C, H, W). `data` (N_data, C, H, W); `index`, `t` (B); `alphas_cumprod`
/// (T) in f64 (the schedule's ᾱ); images of `chw` = (C, H, W).
#[allow(clippy::too_many_arguments)]
pub fn forward(
    chw: (usize, usize, usize),
    flip: bool,
    data: &[f64],
    index: &[usize],
    t: &[usize],
    alphas_cumprod: &[f64],
    seed: u32,
) -> (Vec<f64>, Vec<f64>) {
    let (c, h, w) = chw;
    let img = c * h * w;
    let batch = index.len();
    let mut x_t = vec![0.0; batch * img];
    let mut eps = vec![0.0; batch * img];
    for b in 0..batch {
        let mirrored = flip && flip_coin(seed, b);
        let a = alphas_cumprod[t[b]];
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let sx = if mirrored { w - 1 - x } else { x };
                    let x0 = data[index[b] * img + (ch * h + y) * w + sx];
                    let i = b * img + (ch * h + y) * w + x;
                    let e = rng::normal(seed, i as u32);
                    x_t[i] = a.sqrt() * x0 + (1.0 - a).sqrt() * e;
                    eps[i] = e;
                }
            }
        }
    }
    (x_t, eps)
}
