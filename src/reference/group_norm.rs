//! CPU reference for group normalization (see `shaders/group_norm.wgsl`), PyTorch
//! `nn.GroupNorm(groups, c, eps, affine=True)` semantics: biased variance, per-channel γ and β;
//! and for the fused group norm + SiLU, as the composition of this and `reference::silu`.

pub use crate::ops::group_norm::GroupNorm;

/// The forward's outputs: y (n, c, hw), and the statistics mean and rstd (n, groups).
pub struct Forward {
    pub y: Vec<f64>,
    pub mean: Vec<f64>,
    pub rstd: Vec<f64>,
}

/// The backward's gradients: dx (n, c, hw), dgamma (c), dbeta (c).
pub struct Backward {
    pub dx: Vec<f64>,
    pub dgamma: Vec<f64>,
    pub dbeta: Vec<f64>,
}

/// Channel index of element `i` of the (n, c, hw) layout, and its (sample, group) index.
fn locate(s: &GroupNorm, i: usize) -> (usize, usize) {
    let ch = (i / s.hw) % s.c;
    let sample = i / (s.c * s.hw);
    (ch, sample * s.groups + ch / (s.c / s.groups))
}

/// y = (x − μ) / √(σ² + eps) · γ + β, statistics over each (sample, group).
pub fn forward(s: &GroupNorm, x: &[f64], gamma: &[f64], beta: &[f64]) -> Forward {
    let len = s.c / s.groups * s.hw;
    let mut mean = vec![0.0; s.n * s.groups];
    let mut rstd = vec![0.0; s.n * s.groups];
    for (ng, values) in x.chunks(len).enumerate() {
        let mu = values.iter().sum::<f64>() / len as f64;
        let var = values.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / len as f64;
        mean[ng] = mu;
        rstd[ng] = 1.0 / (var + s.eps as f64).sqrt();
    }
    let y = (0..x.len())
        .map(|i| {
            let (ch, ng) = locate(s, i);
            (x[i] - mean[ng]) * rstd[ng] * gamma[ch] + beta[ch]
        })
        .collect();
    Forward { y, mean, rstd }
}

/// Gradients of Σ y·dy: with x̂ = (x − μ)·rstd, g = dy·γ and means over the group,
/// dx = rstd·(g − mean(g) − x̂·mean(g·x̂)), dγ[c] = Σ dy·x̂, dβ[c] = Σ dy.
pub fn backward(s: &GroupNorm, x: &[f64], gamma: &[f64], mean: &[f64], rstd: &[f64], dy: &[f64]) -> Backward {
    let len = s.c / s.groups * s.hw;
    let xhat: Vec<f64> = (0..x.len())
        .map(|i| {
            let (_, ng) = locate(s, i);
            (x[i] - mean[ng]) * rstd[ng]
        })
        .collect();
    let g: Vec<f64> = (0..x.len()).map(|i| dy[i] * gamma[locate(s, i).0]).collect();
    let mut mean_g = vec![0.0; s.n * s.groups];
    let mut mean_gx = vec![0.0; s.n * s.groups];
    let (mut dgamma, mut dbeta) = (vec![0.0; s.c], vec![0.0; s.c]);
    for i in 0..x.len() {
        let (ch, ng) = locate(s, i);
        mean_g[ng] += g[i] / len as f64;
        mean_gx[ng] += g[i] * xhat[i] / len as f64;
        dgamma[ch] += dy[i] * xhat[i];
        dbeta[ch] += dy[i];
    }
    let dx = (0..x.len())
        .map(|i| {
            let ng = locate(s, i).1;
            rstd[ng] * (g[i] - mean_g[ng] - xhat[i] * mean_gx[ng])
        })
        .collect();
    Backward { dx, dgamma, dbeta }
}

/// a = silu(group_norm(x)): [`forward`] then SiLU; `y` of the result holds a.
pub fn forward_silu(s: &GroupNorm, x: &[f64], gamma: &[f64], beta: &[f64]) -> Forward {
    let f = forward(s, x, gamma, beta);
    Forward {
        y: super::silu::forward(&f.y),
        ..f
    }
}

/// Gradients of Σ a·da for a = silu(n), n = group_norm(x): n is recomputed from x and the
/// statistics, dn = silu'(n)·da, then [`backward`] with dy = dn.
pub fn backward_silu(
    s: &GroupNorm,
    x: &[f64],
    gamma: &[f64],
    beta: &[f64],
    mean: &[f64],
    rstd: &[f64],
    da: &[f64],
) -> Backward {
    let n: Vec<f64> = (0..x.len())
        .map(|i| {
            let (ch, ng) = locate(s, i);
            (x[i] - mean[ng]) * rstd[ng] * gamma[ch] + beta[ch]
        })
        .collect();
    let dn = super::silu::backward(&n, da);
    backward(s, x, gamma, mean, rstd, &dn)
}
