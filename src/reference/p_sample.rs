//! CPU reference for p_sample (see `shaders/p_sample.wgsl`): one ancestral sampling step of
//! Algorithm 2 (Ho et al. 2020), in f64.

/// The f64 coefficients of step t (built by `Schedule::step_coefs`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepCoefs {
    /// 1 / √ᾱ_t
    pub sqrt_recip_alphas_cumprod: f64,
    /// √(1/ᾱ_t − 1)
    pub sqrt_recipm1_alphas_cumprod: f64,
    /// Coefficient of x̂0 in the posterior mean μ̃ (eq. 7).
    pub c0: f64,
    /// Coefficient of x_t in the posterior mean μ̃ (eq. 7).
    pub c1: f64,
    /// σ_t, the standard deviation of the added noise (0 at t = 0).
    pub sigma: f64,
    /// Clamp x̂0 to [−r, r] when `Some(r)`.
    pub clip: Option<f64>,
}

/// One step: returns (x_prev, x0_pred) with
/// x̂0 = x_t/√ᾱ_t − √(1/ᾱ_t − 1) ε (clamped when `c.clip`), x_prev = c0 x̂0 + c1 x_t + σ_t z.
/// `z` are the standard normals (from `reference::rng::normals(seed, n)` to match the GPU).
pub fn step(x_t: &[f64], eps: &[f64], c: &StepCoefs, z: &[f64]) -> (Vec<f64>, Vec<f64>) {
    assert!(
        x_t.len() == eps.len() && x_t.len() == z.len(),
        "p_sample: lengths differ"
    );
    let mut x_prev = Vec::with_capacity(x_t.len());
    let mut x0_pred = Vec::with_capacity(x_t.len());
    for i in 0..x_t.len() {
        let mut x0 = c.sqrt_recip_alphas_cumprod * x_t[i] - c.sqrt_recipm1_alphas_cumprod * eps[i];
        if let Some(r) = c.clip {
            x0 = x0.clamp(-r, r);
        }
        x_prev.push(c.c0 * x0 + c.c1 * x_t[i] + c.sigma * z[i]);
        x0_pred.push(x0);
    }
    (x_prev, x0_pred)
}
