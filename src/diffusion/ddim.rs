//! DDIM sampling (Song et al. 2021, "Denoising Diffusion Implicit Models") as diffusers'
//! `DDIMScheduler` does it with prediction_type "epsilon": the timestep subsequence
//! (`set_timesteps`) and the f64 coefficients of each step (`step`), for the kernel
//! `ops::ddim` and its reference `reference::ddim`.
//!
//! Timesteps are 0-based as in diffusers (t = 0..T−1 is the paper's 1..T), `steps_offset` is 0
//! (diffusers' default for DDIMScheduler) and the whole model is described by
//! `alphas_cumprod` (ᾱ_t = Π_{s ≤ t} (1 − β_s)).
//!
//! One step from t to `prev` (eq. 12 and 16 of the DDIM paper):
//!   x̂0     = (x_t − √(1 − ᾱ_t) ε_θ)/√ᾱ_t,  clamped to [−r, r] when clipping
//!   σ      = η · √((1 − ᾱ_prev)/(1 − ᾱ_t)) · √(1 − ᾱ_t/ᾱ_prev)
//!   x_prev = √ᾱ_prev x̂0 + √(1 − ᾱ_prev − σ²) ε_θ + σ z
//! η = 0 is deterministic DDIM, η = 1 with prev = t − 1 is DDPM's ancestral step with σ² = β̃_t.
//! After the last step (`prev` = None) ᾱ_prev is diffusers' `final_alpha_cumprod`: 1 with
//! `set_alpha_to_one` (default), else ᾱ_0.

use std::str::FromStr;

use crate::ops::ddim::DdimParams;
use crate::reference::ddim::DdimCoefs;

/// How the sampling timesteps are spread over 0..T (diffusers' `timestep_spacing`, Table 2 of
/// Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spacing {
    /// "leading" (DDIMScheduler's default): k · ⌊T/S⌋ for k = S−1..0, e.g. 980, 960, .., 0.
    Leading,
    /// "trailing": round(T − k · T/S) − 1 for k = 0..S−1, e.g. 999, 979, .., 19.
    Trailing,
    /// "linspace": round(k · (T−1)/(S−1)) for k = S−1..0, e.g. 999, 979, 958, .., 0.
    Linspace,
}

impl FromStr for Spacing {
    type Err = String;

    fn from_str(s: &str) -> Result<Spacing, String> {
        match s {
            "leading" => Ok(Spacing::Leading),
            "trailing" => Ok(Spacing::Trailing),
            "linspace" => Ok(Spacing::Linspace),
            _ => Err(format!(
                "unknown timestep spacing {s:?} (expected leading, trailing or linspace)"
            )),
        }
    }
}

/// The `steps` sampling timesteps, descending, exactly as diffusers' `DDIMScheduler.set_timesteps`
/// with `steps_offset` = 0 (numpy's float arithmetic and round-half-to-even reproduced).
///
/// One deliberate difference: for some (T, S), e.g. (100, 29), numpy's `arange(T, 0, −T/S)` is
/// one element too long through float rounding and diffusers' "trailing" then ends with a
/// timestep −1; here the list always has `steps` entries.
pub fn timesteps(num_train: usize, steps: usize, spacing: Spacing) -> Vec<usize> {
    assert!(
        (1..=num_train).contains(&steps),
        "ddim: {steps} sampling steps for {num_train} training steps (need 1 ≤ steps ≤ T)"
    );
    match spacing {
        Spacing::Leading => {
            let ratio = num_train / steps;
            (0..steps).rev().map(|k| k * ratio).collect()
        }
        Spacing::Trailing => {
            // np.arange(T, 0, -T/S): element k is T + k · ((T − T/S) − T).
            let start = num_train as f64;
            let delta = (start - start / steps as f64) - start;
            (0..steps)
                .map(|k| (start + k as f64 * delta).round_ties_even() as usize - 1)
                .collect()
        }
        Spacing::Linspace => {
            // np.linspace(0, T − 1, S): element k is k · (T − 1)/(S − 1), the last exactly T − 1.
            let last = (num_train - 1) as f64;
            (0..steps)
                .rev()
                .map(|k| {
                    let v = if k + 1 == steps && steps > 1 {
                        last
                    } else {
                        k as f64 * (last / (steps - 1).max(1) as f64)
                    };
                    v.round_ties_even() as usize
                })
                .collect()
        }
    }
}

/// The timestep diffusers' `DDIMScheduler.step` goes to from `t`: t − ⌊T/S⌋, or None (the final
/// step) when that is negative. Note that for "trailing" and "linspace" this is not always the
/// next entry of [`timesteps`] (e.g. T = 1000, S = 7, linspace: 999 → 857, then 832 → 690);
/// diffusers does it this way and so do we.
pub fn prev_timestep(num_train: usize, steps: usize, t: usize) -> Option<usize> {
    t.checked_sub(num_train / steps)
}

/// The sampling loop's (t, prev) pairs: [`timesteps`] with [`prev_timestep`] of each.
pub fn step_pairs(num_train: usize, steps: usize, spacing: Spacing) -> Vec<(usize, Option<usize>)> {
    timesteps(num_train, steps, spacing)
        .into_iter()
        .map(|t| (t, prev_timestep(num_train, steps, t)))
        .collect()
}

/// Options of a DDIM step (diffusers' `DDIMScheduler` config and `step` arguments).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DdimOptions {
    /// η ∈ [0, 1]: 0 is deterministic DDIM, 1 DDPM-like noise.
    pub eta: f64,
    /// Clamp x̂0 to [−r, r] when `Some(r)` (`clip_sample`, `clip_sample_range`).
    pub clip: Option<f64>,
    /// Recompute ε from the clamped x̂0 (`use_clipped_model_output`; only acts with `clip`).
    pub clipped_eps: bool,
    /// ᾱ after the last step is 1 (`set_alpha_to_one`), else ᾱ_0.
    pub set_alpha_to_one: bool,
}

impl Default for DdimOptions {
    /// diffusers' defaults: η = 0, clip_sample with range 1, use_clipped_model_output off,
    /// set_alpha_to_one on.
    fn default() -> Self {
        DdimOptions {
            eta: 0.0,
            clip: Some(1.0),
            clipped_eps: false,
            set_alpha_to_one: true,
        }
    }
}

/// ᾱ_prev of a step to `prev` (None: after the last step, `final_alpha_cumprod`).
pub fn alpha_prev(alphas_cumprod: &[f64], prev: Option<usize>, set_alpha_to_one: bool) -> f64 {
    match prev {
        Some(p) => alphas_cumprod[p],
        None if set_alpha_to_one => 1.0,
        None => alphas_cumprod[0],
    }
}

/// σ²/η² of the step t → prev, diffusers' `_get_variance`: (1 − ᾱ_prev)/(1 − ᾱ_t) · (1 − ᾱ_t/ᾱ_prev).
pub fn variance(alphas_cumprod: &[f64], t: usize, prev: Option<usize>, set_alpha_to_one: bool) -> f64 {
    let a_t = alphas_cumprod[t];
    let a_prev = alpha_prev(alphas_cumprod, prev, set_alpha_to_one);
    (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev)
}

/// The f64 coefficients of the step t → prev.
pub fn step_coefs(alphas_cumprod: &[f64], t: usize, prev: Option<usize>, opts: &DdimOptions) -> DdimCoefs {
    assert!(
        t < alphas_cumprod.len(),
        "ddim: timestep {t} of {}",
        alphas_cumprod.len()
    );
    assert!(
        prev.is_none_or(|p| p < t),
        "ddim: step from {t} to {prev:?} does not go back"
    );
    assert!(
        (0.0..=1.0).contains(&opts.eta),
        "ddim: η = {} outside [0, 1] (1 − ᾱ_prev − σ² would be negative)",
        opts.eta
    );
    let a_t = alphas_cumprod[t];
    let a_prev = alpha_prev(alphas_cumprod, prev, opts.set_alpha_to_one);
    let sigma = opts.eta * variance(alphas_cumprod, t, prev, opts.set_alpha_to_one).sqrt();
    DdimCoefs {
        sqrt_recip_alphas_cumprod: 1.0 / a_t.sqrt(),
        sqrt_recipm1_alphas_cumprod: (1.0 / a_t - 1.0).sqrt(),
        sqrt_alphas_cumprod: a_t.sqrt(),
        sqrt_recip_one_minus_alphas_cumprod: 1.0 / (1.0 - a_t).sqrt(),
        sqrt_alpha_prev: a_prev.sqrt(),
        // ≥ 0 for η ≤ 1 up to rounding (at η = 1 it is (1 − ᾱ_prev)(ᾱ_t/ᾱ_prev − ᾱ_t)/(1 − ᾱ_t)).
        dir: (1.0 - a_prev - sigma * sigma).max(0.0).sqrt(),
        sigma,
        clip: opts.clip,
        clipped_eps: opts.clipped_eps,
    }
}

/// [`step_coefs`] as the DDIM kernel's uniforms (f32) for tensors of `n` elements and noise seed
/// `seed`.
pub fn step_params(
    alphas_cumprod: &[f64],
    t: usize,
    prev: Option<usize>,
    opts: &DdimOptions,
    n: usize,
    seed: u32,
) -> DdimParams {
    let c = step_coefs(alphas_cumprod, t, prev, opts);
    DdimParams {
        n: n as u32,
        seed,
        sqrt_recip_alphas_cumprod: c.sqrt_recip_alphas_cumprod as f32,
        sqrt_recipm1_alphas_cumprod: c.sqrt_recipm1_alphas_cumprod as f32,
        sqrt_alphas_cumprod: c.sqrt_alphas_cumprod as f32,
        sqrt_recip_one_minus_alphas_cumprod: c.sqrt_recip_one_minus_alphas_cumprod as f32,
        sqrt_alpha_prev: c.sqrt_alpha_prev as f32,
        dir: c.dir as f32,
        sigma: c.sigma as f32,
        clip: c.clip.is_some() as u32,
        clip_range: c.clip.unwrap_or(0.0) as f32,
        clipped_eps: c.clipped_eps as u32,
    }
}
