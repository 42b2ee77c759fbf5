//! The variational bound of DDPM in bits/dim (Ho et al. 2020, eq. 5; the paper's code
//! `diffusion_utils_2.py`: `_vb_terms_bpd`, `_prior_bpd`, `calc_bpd_loop`), on the CPU in f64.
//!
//!   L = L_T + Σ_{t>1} L_{t−1} + L_0 (eq. 5), in the 0-based timesteps used here (t = 0..T−1 is
//!   the paper's 1..T):
//!   - prior:  L_T = KL(q(x_T|x_0) ‖ N(0, I))                      → [`prior_bpd`]
//!   - t ≥ 1:  KL(q(x_{t−1}|x_t, x_0) ‖ p_θ(x_{t−1}|x_t))           → [`term_bpd`]
//!   - t = 0:  −log p_θ(x_0|x_1), the discretized Gaussian decoder (eq. 13) → [`term_bpd`]
//!
//! Each term is the mean over one image's elements divided by ln 2 (bits per dimension); the
//! total bits/dim of an image is `prior_bpd + Σ_t term_bpd`, each term evaluated at its own
//! x_t ~ q(x_t|x_0) with the model's ε_θ(x_t, t) (calc_bpd_loop).
//!
//! p_θ(x_{t−1}|x_t) = N(μ̃_t(x̂0, x_t), σ_t²) with x̂0 = x_t/√ᾱ_t − √(1/ᾱ_t − 1) ε_θ (optionally
//! clamped to [−1, 1], calc_bpd_loop's default) and the fixed variance of the paper's code:
//! fixed_small: log σ_t² = log β̃_t, with β̃_0 := β̃_1 ("posterior_log_variance_clipped");
//! fixed_large: log σ_t² = log β_t, with β_0 := β̃_1 (for a better decoder likelihood).
//! The true posterior's log variance is log β̃_t with the same clipping at t = 0.

use std::f64::consts::{FRAC_2_SQRT_PI, LN_2, SQRT_2};

use crate::diffusion::schedule::VarianceType;

/// Smallest probability whose logarithm is taken (the paper's code clamps at 1e-12, so a pixel
/// costs at most 27.6 nats).
const MIN_PROB: f64 = 1e-12;

/// Half the width of an 8-bit bin in [−1, 1]: 1/255.
const HALF_BIN: f64 = 1.0 / 255.0;

/// Elementwise KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) in nats (the paper's `normal_kl`):
/// ½ (−1 + logvar2 − logvar1 + e^(logvar1 − logvar2) + (mean1 − mean2)² e^(−logvar2)),
/// evaluated with exp_m1 so that nearly equal variances keep their precision.
pub fn normal_kl(mean1: f64, logvar1: f64, mean2: f64, logvar2: f64) -> f64 {
    let d = logvar1 - logvar2;
    0.5 * (d.exp_m1() - d + (mean1 - mean2).powi(2) * (-logvar2).exp())
}

/// The complementary error function erfc(x) = 1 − erf(x), to ~1e-15 relative (until it underflows
/// near x = 27).
/// |x| < 1.5: erf(x) = 2/√π · e^(−x²) · Σ_n 2^n x^(2n+1) / (1·3·…·(2n+1)) (positive terms);
/// x ≥ 1.5: the continued fraction erfc(x) = e^(−x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …)))),
/// evaluated backward from depth 120 (converged to 2e-16 at x = 1.5); x ≤ −1.5: 2 − erfc(−x).
pub fn erfc(x: f64) -> f64 {
    if x <= -1.5 {
        return 2.0 - erfc(-x);
    }
    if x < 1.5 {
        let x2 = x * x;
        let (mut term, mut sum) = (x, x);
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= 2.0 * x2 / (2.0 * n + 1.0);
            sum += term;
        }
        return 1.0 - FRAC_2_SQRT_PI * (-x2).exp() * sum;
    }
    let mut f = x;
    for k in (1..=120).rev() {
        f = x + (k as f64 / 2.0) / f;
    }
    (-x * x).exp() / (std::f64::consts::PI.sqrt() * f)
}

/// Standard normal CDF Φ(x) = ½ erfc(−x/√2).
pub fn standard_normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / SQRT_2)
}

/// P(a < Z ≤ b) for a standard normal Z, without cancellation in either tail.
fn normal_interval(a: f64, b: f64) -> f64 {
    if a >= 0.0 {
        // Both in the upper tail: Q(a) − Q(b) with Q(x) = 1 − Φ(x) = Φ(−x).
        standard_normal_cdf(-a) - standard_normal_cdf(-b)
    } else {
        standard_normal_cdf(b) - standard_normal_cdf(a)
    }
}

/// log p(x) of 8-bit data x ∈ {k/127.5 − 1} under the discretized Gaussian decoder of eq. 13:
/// the mass of N(mean, e^(2 log_scale)) on the bin [x − 1/255, x + 1/255], the first bin
/// (x < −0.999) extended to −∞ and the last (x > 0.999) to +∞, clamped at 1e-12 as in the
/// paper's code. Uses the exact CDF (erfc-based, [`standard_normal_cdf`]), not the paper code's
/// tanh approximation `approx_standard_normal_cdf` (off by up to 1.8e-4 in the CDF).
pub fn discretized_gaussian_log_likelihood(x: f64, mean: f64, log_scale: f64) -> f64 {
    let inv_stdv = (-log_scale).exp();
    let lo = inv_stdv * (x - mean - HALF_BIN);
    let hi = inv_stdv * (x - mean + HALF_BIN);
    let p = if x < -0.999 {
        standard_normal_cdf(hi)
    } else if x > 0.999 {
        standard_normal_cdf(-lo)
    } else {
        normal_interval(lo, hi)
    };
    p.max(MIN_PROB).ln()
}

/// The prior term L_T = KL(q(x_T|x_0) ‖ N(0, I)) of one image in bits/dim, with
/// q(x_T|x_0) = N(√ᾱ_{T−1} x_0, 1 − ᾱ_{T−1}). `x0`: the image's values (any layout).
pub fn prior_bpd(alphas_cumprod: &[f64], x0: &[f64]) -> f64 {
    assert!(!x0.is_empty(), "vlb: empty image");
    let a = *alphas_cumprod.last().expect("vlb: empty schedule");
    let (scale, logvar) = (a.sqrt(), (-a).ln_1p());
    let kl: f64 = x0.iter().map(|&x| normal_kl(scale * x, logvar, 0.0, 0.0)).sum();
    kl / x0.len() as f64 / LN_2
}

/// How the model's p_θ(x_{t−1}|x_t) is formed from ε_θ.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VlbOptions {
    /// Fixed variance σ_t²: β̃_t (FixedSmall) or β_t (FixedLarge), see the module docs.
    pub variance: VarianceType,
    /// Clamp x̂0 to [−1, 1] before forming the mean (`clip_denoised`, on in calc_bpd_loop).
    pub clip_denoised: bool,
}

/// β̃_t = β_t (1 − ᾱ_{t−1})/(1 − ᾱ_t), ᾱ_{−1} = 1.
fn posterior_variance(betas: &[f64], alphas_cumprod: &[f64], t: usize) -> f64 {
    let a_prev = if t == 0 { 1.0 } else { alphas_cumprod[t - 1] };
    betas[t] * (1.0 - a_prev) / (1.0 - alphas_cumprod[t])
}

/// One term of the bound for one image at (0-based) timestep t, in bits/dim:
/// t ≥ 1: mean over elements of KL(q(x_{t−1}|x_t, x_0) ‖ p_θ(x_{t−1}|x_t)) / ln 2;
/// t = 0: mean of −log p_θ(x_0|x_1) (discretized decoder, `x0` on the 8-bit grid) / ln 2.
/// `x0`, `x_t` (a draw of q(x_t|x_0)) and `eps_pred` (ε_θ(x_t, t)) hold one image each.
pub fn term_bpd(
    betas: &[f64],
    alphas_cumprod: &[f64],
    t: usize,
    x0: &[f64],
    x_t: &[f64],
    eps_pred: &[f64],
    opts: &VlbOptions,
) -> f64 {
    let steps = betas.len();
    assert!(
        alphas_cumprod.len() == steps && steps >= 2 && t < steps,
        "vlb: timestep {t} of {} betas and {} alphas_cumprod (need T ≥ 2)",
        steps,
        alphas_cumprod.len()
    );
    assert!(
        !x0.is_empty() && x_t.len() == x0.len() && eps_pred.len() == x0.len(),
        "vlb: x0, x_t and eps_pred differ in length or are empty"
    );
    let a_t = alphas_cumprod[t];
    let a_prev = if t == 0 { 1.0 } else { alphas_cumprod[t - 1] };
    // Posterior q(x_{t−1}|x_t, x_0) = N(c0 x_0 + c1 x_t, β̃_t) (eq. 6, 7).
    let c0 = betas[t] * a_prev.sqrt() / (1.0 - a_t);
    let c1 = (1.0 - a_prev) * (1.0 - betas[t]).sqrt() / (1.0 - a_t);
    let clipped_log_var = posterior_variance(betas, alphas_cumprod, t.max(1)).ln();
    let model_log_var = match opts.variance {
        VarianceType::FixedSmall => clipped_log_var,
        VarianceType::FixedLarge if t == 0 => clipped_log_var,
        VarianceType::FixedLarge => betas[t].ln(),
    };
    let (recip, recipm1) = ((1.0 / a_t).sqrt(), (1.0 / a_t - 1.0).sqrt());
    let mut total = 0.0;
    for i in 0..x0.len() {
        let mut x0_hat = recip * x_t[i] - recipm1 * eps_pred[i];
        if opts.clip_denoised {
            x0_hat = x0_hat.clamp(-1.0, 1.0);
        }
        let model_mean = c0 * x0_hat + c1 * x_t[i];
        total += if t == 0 {
            -discretized_gaussian_log_likelihood(x0[i], model_mean, 0.5 * model_log_var)
        } else {
            let true_mean = c0 * x0[i] + c1 * x_t[i];
            normal_kl(true_mean, clipped_log_var, model_mean, model_log_var)
        };
    }
    total / x0.len() as f64 / LN_2
}
