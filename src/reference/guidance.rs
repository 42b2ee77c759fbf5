//! CPU reference for classifier-free guidance (see `shaders/guidance.wgsl`).

/// ε̃ = ε_u + s·(ε_c − ε_u) from eps2 = [ε_c, ε_u] (two halves of equal length).
pub fn combine(eps2: &[f64], scale: f64) -> Vec<f64> {
    let (cond, uncond) = eps2.split_at(eps2.len() / 2);
    cond.iter().zip(uncond).map(|(&c, &u)| u + scale * (c - u)).collect()
}
