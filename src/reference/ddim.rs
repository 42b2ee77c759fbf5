//! CPU reference for the DDIM step (see `shaders/ddim.wgsl`): eq. 12 of Song et al. 2021 with
//! σ_t(η) of eq. 16, as diffusers' `DDIMScheduler.step` (prediction_type "epsilon"), in f64.

/// The f64 coefficients of one step t → prev (built by `diffusion::ddim::step_coefs`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DdimCoefs {
    /// 1 / √ᾱ_t
    pub sqrt_recip_alphas_cumprod: f64,
    /// √(1/ᾱ_t − 1)
    pub sqrt_recipm1_alphas_cumprod: f64,
    /// √ᾱ_t
    pub sqrt_alphas_cumprod: f64,
    /// 1 / √(1 − ᾱ_t)
    pub sqrt_recip_one_minus_alphas_cumprod: f64,
    /// √ᾱ_prev
    pub sqrt_alpha_prev: f64,
    /// √(1 − ᾱ_prev − σ²)
    pub dir: f64,
    /// σ = η · √((1 − ᾱ_prev)/(1 − ᾱ_t) · (1 − ᾱ_t/ᾱ_prev))
    pub sigma: f64,
    /// Clamp x̂0 to [−r, r] when `Some(r)`.
    pub clip: Option<f64>,
    /// With `clip`: recompute ε = (x_t − √ᾱ_t x̂0)/√(1 − ᾱ_t) from the clamped x̂0.
    pub clipped_eps: bool,
}

/// One step: returns (x_prev, x0_pred) with x̂0 = x_t/√ᾱ_t − √(1/ᾱ_t − 1) ε (clamped when
/// `c.clip`, and then ε recomputed from it when `c.clipped_eps`),
/// x_prev = √ᾱ_prev x̂0 + √(1 − ᾱ_prev − σ²) ε + σ z.
/// `z` are the standard normals (`reference::rng::normals(seed, n)` to match the GPU).
pub fn step(x_t: &[f64], eps: &[f64], z: &[f64], c: &DdimCoefs) -> (Vec<f64>, Vec<f64>) {
    assert!(x_t.len() == eps.len() && x_t.len() == z.len(), "ddim: lengths differ");
    let mut x_prev = Vec::with_capacity(x_t.len());
    let mut x0_pred = Vec::with_capacity(x_t.len());
    for i in 0..x_t.len() {
        let mut e = eps[i];
        let mut x0 = c.sqrt_recip_alphas_cumprod * x_t[i] - c.sqrt_recipm1_alphas_cumprod * e;
        if let Some(r) = c.clip {
            x0 = x0.clamp(-r, r);
            if c.clipped_eps {
                e = (x_t[i] - c.sqrt_alphas_cumprod * x0) * c.sqrt_recip_one_minus_alphas_cumprod;
            }
        }
        x_prev.push(c.sqrt_alpha_prev * x0 + c.dir * e + c.sigma * z[i]);
        x0_pred.push(x0);
    }
    (x_prev, x0_pred)
}
