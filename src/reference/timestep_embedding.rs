//! CPU reference for the sinusoidal timestep embedding (see `shaders/timestep_embedding.wgsl`),
//! diffusers `get_timestep_embedding(t, dim, flip_sin_to_cos, freq_shift, scale=1,
//! max_period=10000)`.

/// y (n, dim): half = dim/2, freq_j = exp(−ln(10000)·j/(half − freq_shift)), arg = t·freq_j,
/// row = [sin(arg), cos(arg)] ([cos, sin] when flipped), then a zero column if dim is odd.
pub fn forward(n: usize, dim: usize, flip_sin_to_cos: bool, freq_shift: f64, t: &[f64]) -> Vec<f64> {
    let half = dim / 2;
    let mut y = Vec::with_capacity(n * dim);
    for &ts in &t[..n] {
        let args: Vec<f64> = (0..half)
            .map(|j| ts * (-(10000f64.ln()) * j as f64 / (half as f64 - freq_shift)).exp())
            .collect();
        let sin = args.iter().map(|a| a.sin());
        let cos = args.iter().map(|a| a.cos());
        if flip_sin_to_cos {
            y.extend(cos.chain(sin));
        } else {
            y.extend(sin.chain(cos));
        }
        if dim % 2 == 1 {
            y.push(0.0);
        }
    }
    y
}
