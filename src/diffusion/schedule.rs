//! Noise schedules of the DDPM forward process (Ho et al. 2020, §2 and §4), everything in f64,
//! following diffusers' `DDPMScheduler` and its `scheduler_config.json`.
//!
//! Timesteps are 0-based as in diffusers: t = 0..T−1 here is the paper's t = 1..T, and
//! ᾱ_t = Π_{s ≤ t} (1 − β_s). At t = 0 the "previous" ᾱ is 1.
//!
//! Linear betas: β_t = β_start + (β_end − β_start) · t/(T − 1), evaluated in f64. diffusers builds
//! them with `torch.linspace(.., dtype=float32)` and takes the cumulative product in f32; we match
//! the f64 mathematics instead (the difference in ᾱ is ~1e-6 relative, measured in
//! tests/ops_diffusion.rs). Cosine betas ("squaredcos_cap_v2", Nichol & Dhariwal 2021):
//! β_t = min(1 − f((t+1)/T) / f(t/T), 0.999), f(u) = cos²((u + 0.008)/1.008 · π/2), as diffusers'
//! `betas_for_alpha_bar` (which ignores beta_start / beta_end).

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Map, Value};

use crate::ops::p_sample::PSampleParams;
use crate::reference::p_sample::StepCoefs;

/// How the betas are laid out over the T steps (diffusers' `beta_schedule`).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    /// "linear": β from beta_start to beta_end (the paper's 1e-4 → 0.02).
    Linear,
    /// "squaredcos_cap_v2": the cosine schedule of Nichol & Dhariwal, β capped at 0.999.
    SquaredcosCapV2,
}

/// The reverse-process variance σ_t² (diffusers' `variance_type`, paper §3.2).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VarianceType {
    /// "fixed_small": σ_t² = β̃_t = (1 − ᾱ_{t−1})/(1 − ᾱ_t) · β_t.
    FixedSmall,
    /// "fixed_large": σ_t² = β_t.
    FixedLarge,
}

/// diffusers' `DDPMScheduler` configuration (`scheduler_config.json`), the keys this program uses.
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub variance_type: VarianceType,
    /// Clamp the predicted x̂0 to [−clip_sample_range, clip_sample_range] while sampling.
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    /// Only "epsilon" (the network predicts ε) is supported.
    pub prediction_type: String,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig::paper()
    }
}

/// Keys of diffusers' DDPMScheduler config that change nothing here when they hold these values;
/// any other value is refused (we would silently compute something else).
const NEUTRAL_KEYS: [(&str, Value); 3] = [
    ("trained_betas", Value::Null),
    ("thresholding", Value::Bool(false)),
    ("rescale_betas_zero_snr", Value::Bool(false)),
];

impl SchedulerConfig {
    /// The paper's setting (§4): T = 1000, β linear from 1e-4 to 0.02, x̂0 clipped to [−1, 1],
    /// and σ_t² = β̃_t, which is diffusers' default (the paper reports σ_t² = β_t and β̃_t give
    /// similar results; its CIFAR-10 run used β_t, i.e. `FixedLarge`).
    pub fn paper() -> Self {
        SchedulerConfig {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            variance_type: VarianceType::FixedSmall,
            clip_sample: true,
            clip_sample_range: 1.0,
            prediction_type: "epsilon".to_string(),
        }
    }

    /// Read a diffusers `scheduler_config.json`. Missing keys take diffusers' defaults (those of
    /// [`SchedulerConfig::paper`]); unsupported values are an error naming the file and the key.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_json(&text).with_context(|| format!("scheduler config {}", path.display()))
    }

    /// Parse the text of a `scheduler_config.json` (see [`SchedulerConfig::load`]).
    pub fn from_json(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).context("not valid JSON")?;
        let Value::Object(obj) = value else {
            bail!("expected a JSON object");
        };
        let mut cfg = SchedulerConfig::paper();
        if let Some(v) = obj.get("_class_name") {
            if v.as_str() != Some("DDPMScheduler") {
                bail!("key \"_class_name\": {v} is not \"DDPMScheduler\"");
            }
        }
        if let Some(v) = obj.get("num_train_timesteps") {
            cfg.num_train_timesteps = v
                .as_u64()
                .filter(|&n| n >= 1)
                .with_context(|| format!("key \"num_train_timesteps\": {v} is not a positive integer"))?
                as usize;
        }
        let number = |key: &str, default: f64| -> Result<f64> {
            match obj.get(key) {
                None => Ok(default),
                Some(v) => v
                    .as_f64()
                    .filter(|x| x.is_finite())
                    .with_context(|| format!("key \"{key}\": {v} is not a number")),
            }
        };
        cfg.beta_start = number("beta_start", cfg.beta_start)?;
        cfg.beta_end = number("beta_end", cfg.beta_end)?;
        cfg.clip_sample_range = number("clip_sample_range", cfg.clip_sample_range)?;
        if let Some(v) = obj.get("beta_schedule") {
            cfg.beta_schedule = serde_json::from_value(v.clone()).map_err(|_| {
                anyhow::anyhow!("key \"beta_schedule\": {v} is not supported (use \"linear\" or \"squaredcos_cap_v2\")")
            })?;
        }
        if let Some(v) = obj.get("variance_type") {
            cfg.variance_type = serde_json::from_value(v.clone()).map_err(|_| {
                anyhow::anyhow!("key \"variance_type\": {v} is not supported (use \"fixed_small\" or \"fixed_large\")")
            })?;
        }
        if let Some(v) = obj.get("clip_sample") {
            cfg.clip_sample = v
                .as_bool()
                .with_context(|| format!("key \"clip_sample\": {v} is not true or false"))?;
        }
        if let Some(v) = obj.get("prediction_type") {
            if v.as_str() != Some("epsilon") {
                bail!("key \"prediction_type\": {v} is not supported (only \"epsilon\")");
            }
        }
        for (key, neutral) in NEUTRAL_KEYS {
            if let Some(v) = obj.get(key) {
                if *v != neutral {
                    bail!("key \"{key}\": {v} is not supported (only {neutral})");
                }
            }
        }
        if cfg.beta_schedule == BetaSchedule::Linear
            && !(cfg.beta_start > 0.0 && cfg.beta_end >= cfg.beta_start && cfg.beta_end < 1.0)
        {
            bail!(
                "keys \"beta_start\" / \"beta_end\": need 0 < beta_start ≤ beta_end < 1, got {} and {}",
                cfg.beta_start,
                cfg.beta_end
            );
        }
        if cfg.clip_sample_range <= 0.0 {
            bail!(
                "key \"clip_sample_range\": must be positive, got {}",
                cfg.clip_sample_range
            );
        }
        Ok(cfg)
    }

    /// The config as diffusers writes it: every key explicit, plus `_class_name`.
    pub fn to_json(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("_class_name".into(), json!("DDPMScheduler"));
        obj.insert("num_train_timesteps".into(), json!(self.num_train_timesteps));
        obj.insert("beta_start".into(), json!(self.beta_start));
        obj.insert("beta_end".into(), json!(self.beta_end));
        obj.insert(
            "beta_schedule".into(),
            serde_json::to_value(self.beta_schedule).unwrap(),
        );
        obj.insert(
            "variance_type".into(),
            serde_json::to_value(self.variance_type).unwrap(),
        );
        obj.insert("clip_sample".into(), json!(self.clip_sample));
        obj.insert("clip_sample_range".into(), json!(self.clip_sample_range));
        obj.insert("prediction_type".into(), json!(self.prediction_type));
        obj.insert("trained_betas".into(), Value::Null);
        obj.insert("thresholding".into(), json!(false));
        obj.insert("rescale_betas_zero_snr".into(), json!(false));
        Value::Object(obj)
    }

    /// Write the config as a diffusers `scheduler_config.json`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.to_json())?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }
}

/// ᾱ(u) of the cosine schedule at u = t/T (Nichol & Dhariwal eq. 17 with s = 0.008, unnormalised).
pub fn cosine_alpha_bar(u: f64) -> f64 {
    ((u + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2)
}

/// Largest β of the cosine schedule (diffusers' `max_beta`).
pub const COSINE_MAX_BETA: f64 = 0.999;

/// Smallest fixed_small variance (diffusers clamps β̃_t at 1e-20; only β̃_0 = 0 reaches it, and
/// t = 0 adds no noise).
const MIN_VARIANCE: f64 = 1e-20;

/// The precomputed schedule: per-step betas and the products derived from them, in f64.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub config: SchedulerConfig,
    /// β_t, t = 0..T−1.
    pub betas: Vec<f64>,
    /// α_t = 1 − β_t.
    pub alphas: Vec<f64>,
    /// ᾱ_t = Π_{s ≤ t} α_s.
    pub alphas_cumprod: Vec<f64>,
    /// ᾱ_{t−1}, with ᾱ_{−1} = 1.
    pub alphas_cumprod_prev: Vec<f64>,
    /// β̃_t = (1 − ᾱ_{t−1})/(1 − ᾱ_t) · β_t, the posterior variance (eq. 7), unclamped.
    pub posterior_variance: Vec<f64>,
}

impl Schedule {
    pub fn new(cfg: &SchedulerConfig) -> Schedule {
        let t_count = cfg.num_train_timesteps;
        assert!(t_count >= 1, "a schedule needs at least one timestep");
        let betas: Vec<f64> = match cfg.beta_schedule {
            BetaSchedule::Linear => (0..t_count)
                .map(|t| {
                    if t_count == 1 {
                        cfg.beta_start
                    } else {
                        cfg.beta_start + (cfg.beta_end - cfg.beta_start) * t as f64 / (t_count - 1) as f64
                    }
                })
                .collect(),
            BetaSchedule::SquaredcosCapV2 => (0..t_count)
                .map(|t| {
                    let a1 = cosine_alpha_bar(t as f64 / t_count as f64);
                    let a2 = cosine_alpha_bar((t + 1) as f64 / t_count as f64);
                    (1.0 - a2 / a1).min(COSINE_MAX_BETA)
                })
                .collect(),
        };
        let alphas: Vec<f64> = betas.iter().map(|b| 1.0 - b).collect();
        let mut alphas_cumprod = Vec::with_capacity(t_count);
        let mut prod = 1.0;
        for a in &alphas {
            prod *= a;
            alphas_cumprod.push(prod);
        }
        let alphas_cumprod_prev: Vec<f64> = std::iter::once(1.0)
            .chain(alphas_cumprod[..t_count - 1].iter().copied())
            .collect();
        let posterior_variance = (0..t_count)
            .map(|t| (1.0 - alphas_cumprod_prev[t]) / (1.0 - alphas_cumprod[t]) * betas[t])
            .collect();
        Schedule {
            config: cfg.clone(),
            betas,
            alphas,
            alphas_cumprod,
            alphas_cumprod_prev,
            posterior_variance,
        }
    }

    /// T, the number of diffusion steps.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }

    /// (T, 2) rows [√ᾱ_t, √(1 − ᾱ_t)] for the q_sample kernel.
    pub fn q_sample_table(&self) -> Vec<f32> {
        self.alphas_cumprod
            .iter()
            .flat_map(|&a| [a.sqrt() as f32, (1.0 - a).sqrt() as f32])
            .collect()
    }

    /// σ_t² for `variance`: β̃_t (clamped at 1e-20 as diffusers) or β_t.
    pub fn variance(&self, t: usize, variance: VarianceType) -> f64 {
        match variance {
            VarianceType::FixedSmall => self.posterior_variance[t].max(MIN_VARIANCE),
            VarianceType::FixedLarge => self.betas[t],
        }
    }

    /// The f64 coefficients of the sampling step t → t−1 (diffusers' `DDPMScheduler.step` with all
    /// T steps): x̂0 = x_t/√ᾱ_t − √(1/ᾱ_t − 1) ε, clamped to the config's range when `clip`;
    /// μ̃ = c0 x̂0 + c1 x_t (eq. 7); σ_t = sqrt(variance), 0 at t = 0 (no noise on the last step).
    pub fn step_coefs(&self, t: usize, variance: VarianceType, clip: bool) -> StepCoefs {
        let ab = self.alphas_cumprod[t];
        let ab_prev = self.alphas_cumprod_prev[t];
        StepCoefs {
            sqrt_recip_alphas_cumprod: 1.0 / ab.sqrt(),
            sqrt_recipm1_alphas_cumprod: (1.0 / ab - 1.0).sqrt(),
            c0: ab_prev.sqrt() * self.betas[t] / (1.0 - ab),
            c1: self.alphas[t].sqrt() * (1.0 - ab_prev) / (1.0 - ab),
            sigma: if t == 0 { 0.0 } else { self.variance(t, variance).sqrt() },
            clip: clip.then_some(self.config.clip_sample_range),
        }
    }

    /// [`Schedule::step_coefs`] as the p_sample kernel's uniforms (f32; `n` and `seed` zero, set
    /// the seed with [`PSampleParams::with_seed`]).
    pub fn p_sample_coefs(&self, t: usize, variance: VarianceType, clip: bool) -> PSampleParams {
        let c = self.step_coefs(t, variance, clip);
        PSampleParams {
            n: 0,
            seed: 0,
            sqrt_recip_alphas_cumprod: c.sqrt_recip_alphas_cumprod as f32,
            sqrt_recipm1_alphas_cumprod: c.sqrt_recipm1_alphas_cumprod as f32,
            c0: c.c0 as f32,
            c1: c.c1 as f32,
            sigma: c.sigma as f32,
            clip: clip as u32,
            clip_range: self.config.clip_sample_range as f32,
        }
    }
}
