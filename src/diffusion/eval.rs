//! Evaluation of a trained model on held-out images: the variational bound in bits/dim (Ho et al.
//! 2020, eq. 5 with the discretized decoder of eq. 13; the paper's `calc_bpd_loop`), and the
//! arithmetic of interpolation in latent space (§4.4).
//!
//! Bits/dim of an image x₀ (timesteps 0-based, t = 0..T−1 is the paper's 1..T):
//!   L = L_T + Σ_{t=1}^{T−1} L_{t−1} + L_0
//!     = prior_bpd(x₀) + Σ_{t ≥ 1} term_bpd(t, x₀, x_t, ε_θ(x_t, t)) + term_bpd(0, ..)
//! with a fresh x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε, ε ~ N(0, I), per timestep. The network's ε comes from a
//! callback (the GPU U-Net in `ddpm-gpu eval`, [`EpsNet`]); the terms are summed on the CPU in f64
//! by `diffusion::vlb`. Evaluating every t costs T forwards per batch of images; with fewer middle
//! timesteps the sum over t = 1..T−1 is estimated from K evenly spread ones, each weighted
//! (T − 1)/K ([`middle_timesteps`]). The prior needs no network and the decoder term (t = 0) is
//! always evaluated.

use std::ops::ControlFlow;

use anyhow::Result;

use crate::diffusion::schedule::Schedule;
use crate::diffusion::trainer::step_seed;
use crate::diffusion::vlb::{prior_bpd, term_bpd, VlbOptions};
use crate::gpu::{Gpu, Plan, Tensor};
use crate::model::{ParamTable, UNet, UNetConfig};
use crate::reference::rng;

/// x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε (eq. 4) in f64, rounded to f32 (what the network sees).
/// `x0` and `eps` have the same length (any number of images).
pub fn q_sample(alphas_cumprod: &[f64], t: usize, x0: &[f32], eps: &[f64]) -> Vec<f32> {
    assert_eq!(x0.len(), eps.len(), "q_sample: x0 and eps differ in length");
    let a = alphas_cumprod[t];
    let (s, n) = (a.sqrt(), (1.0 - a).sqrt());
    x0.iter()
        .zip(eps)
        .map(|(&x, &e)| (s * x as f64 + n * e) as f32)
        .collect()
}

/// The middle timesteps (1..T−1) to evaluate and the weight of each: all of them with weight 1
/// (`count` None, or ≥ T − 1), else `count` midpoints of equal strata of 1..T−1,
/// t_j = 1 + ⌊(j + ½)(T − 1)/count⌋, each weighted (T − 1)/count.
pub fn middle_timesteps(num_train: usize, count: Option<usize>) -> (Vec<usize>, f64) {
    let m = num_train.saturating_sub(1);
    match count {
        Some(k) if k < m => {
            assert!(k >= 1, "eval: at least one middle timestep");
            let ts = (0..k).map(|j| 1 + ((2 * j + 1) * m) / (2 * k)).collect();
            (ts, m as f64 / k as f64)
        }
        _ => ((1..num_train).collect(), 1.0),
    }
}

/// Bits/dim of a set of images and its parts (means over the images).
#[derive(Clone, Debug, PartialEq)]
pub struct Bpd {
    /// L_T = KL(q(x_T|x₀) ‖ N(0, I)).
    pub prior: f64,
    /// Σ_{t=1}^{T−1} L_{t−1} (estimated when not every timestep was evaluated).
    pub middle: f64,
    /// L_0 = −log p_θ(x₀|x₁), the discretized decoder.
    pub decoder: f64,
    /// prior + middle + decoder.
    pub total: f64,
    /// The total of each image.
    pub per_image: Vec<f64>,
    /// The middle timesteps evaluated (all of 1..T−1 when exact).
    pub middle_timesteps: Vec<usize>,
    /// True when every middle timestep was evaluated (the sum is exact, not an estimate).
    pub exact: bool,
    /// What each evaluated timestep gave, in evaluation order (middle timesteps ascending, then 0).
    pub per_timestep: Vec<TimestepStats>,
}

/// One evaluated timestep of [`bits_per_dim`], means over the images.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimestepStats {
    pub t: usize,
    /// The weight of its term in the sum ((T − 1)/K for an estimate, else 1).
    pub weight: f64,
    /// The term (KL, or the decoder's −log p at t = 0) in bits/dim, unweighted.
    pub term: f64,
    /// RMSE between x₀ and the clipped prediction x̂₀(x_t) = x_t/√ᾱ_t − √(1/ᾱ_t − 1) ε_θ, on the
    /// 8-bit scale [0, 255] (the distortion of Figure 5).
    pub distortion: f64,
}

impl Bpd {
    /// The results of several batches of images (evaluated with the same options) as one: means
    /// weighted by the number of images, distortions combined as root mean squares.
    pub fn combine(parts: &[Bpd]) -> Bpd {
        assert!(!parts.is_empty(), "eval: nothing to combine");
        let n: f64 = parts.iter().map(|p| p.per_image.len() as f64).sum();
        let mean = |f: &dyn Fn(&Bpd) -> f64| parts.iter().map(|p| f(p) * p.per_image.len() as f64).sum::<f64>() / n;
        let per_timestep = (0..parts[0].per_timestep.len())
            .map(|k| TimestepStats {
                term: mean(&|p| p.per_timestep[k].term),
                distortion: mean(&|p| p.per_timestep[k].distortion.powi(2)).sqrt(),
                ..parts[0].per_timestep[k]
            })
            .collect();
        Bpd {
            prior: mean(&|p| p.prior),
            middle: mean(&|p| p.middle),
            decoder: mean(&|p| p.decoder),
            total: mean(&|p| p.total),
            per_image: parts.iter().flat_map(|p| p.per_image.iter().copied()).collect(),
            middle_timesteps: parts[0].middle_timesteps.clone(),
            exact: parts[0].exact,
            per_timestep,
        }
    }
}

/// Rate and distortion of progressive lossy coding (§4.3, Figure 5) from a [`Bpd`]: for each
/// evaluated timestep t, descending, (t, rate, distortion), where the rate is the bits/dim a
/// receiver holding x_t has received, L_T + Σ_{s > t} (weighted) term(s), and the distortion is
/// that of x̂₀(x_t).
pub fn rate_distortion(bpd: &Bpd) -> Vec<(usize, f64, f64)> {
    let mut stats = bpd.per_timestep.clone();
    stats.sort_by_key(|s| std::cmp::Reverse(s.t));
    let mut rate = bpd.prior;
    stats
        .iter()
        .map(|s| {
            let point = (s.t, rate, s.distortion);
            rate += s.weight * s.term;
            point
        })
        .collect()
}

/// The noise ε of timestep t for every image: normals of the stream (seed, t).
pub fn eval_noise(seed: u64, t: usize, n: usize) -> Vec<f64> {
    rng::normals(step_seed(seed, t, 9), n)
}

/// How [`bits_per_dim`] evaluates the bound.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BpdOptions {
    /// The model's p_θ(x_{t−1}|x_t): variance and clipping of x̂₀.
    pub vlb: VlbOptions,
    /// How many middle timesteps to evaluate (None: all of 1..T−1, the exact sum).
    pub middle: Option<usize>,
    /// Seed of the noise of q(x_t|x₀), stream (seed, t) per timestep ([`eval_noise`]).
    pub seed: u64,
}

/// Bits/dim of `images` images `x0` (N, C, H, W on the 8-bit grid in [−1, 1]) under the model
/// whose ε_θ(x_t, t) for the whole batch is `eps(t, x_t)`. `progress(i, total)` is called after
/// each network evaluation; when it breaks (Ctrl-C), the evaluation stops there and gives `None`.
pub fn bits_per_dim(
    schedule: &Schedule,
    x0: &[f32],
    images: usize,
    opts: &BpdOptions,
    mut eps: impl FnMut(usize, &[f32]) -> Vec<f32>,
    mut progress: impl FnMut(usize, usize) -> ControlFlow<()>,
) -> Option<Bpd> {
    assert!(
        images >= 1 && !x0.is_empty() && x0.len().is_multiple_of(images),
        "eval: bad image batch"
    );
    let dim = x0.len() / images;
    let ac = &schedule.alphas_cumprod;
    let image = |v: &[f32], i: usize| -> Vec<f64> { v[i * dim..(i + 1) * dim].iter().map(|&x| x as f64).collect() };
    let x0_64: Vec<Vec<f64>> = (0..images).map(|i| image(x0, i)).collect();
    let (ts, weight) = middle_timesteps(schedule.len(), opts.middle);
    // (timestep, weight): the middle terms, then the decoder.
    let evals: Vec<(usize, f64)> = ts.iter().map(|&t| (t, weight)).chain([(0, 1.0)]).collect();
    let (mut mids, mut decs) = (vec![0.0; images], vec![0.0; images]);
    let mut per_timestep = Vec::with_capacity(evals.len());
    for (k, &(t, weight)) in evals.iter().enumerate() {
        let x_t = q_sample(ac, t, x0, &eval_noise(opts.seed, t, x0.len()));
        let e = eps(t, &x_t);
        assert_eq!(e.len(), x0.len(), "eval: ε of the wrong length");
        let sums = if t == 0 { &mut decs } else { &mut mids };
        let mut term = 0.0;
        for (i, sum) in sums.iter_mut().enumerate() {
            let (x0_i, x_t_i, e_i) = (&x0_64[i], image(&x_t, i), image(&e, i));
            let v = term_bpd(&schedule.betas, ac, t, x0_i, &x_t_i, &e_i, &opts.vlb);
            *sum += weight * v;
            term += v / images as f64;
        }
        let (recip, recipm1) = ((1.0 / ac[t]).sqrt(), (1.0 / ac[t] - 1.0).sqrt());
        let sq_err: f64 = (0..x0.len())
            .map(|j| {
                let x0_hat = (recip * x_t[j] as f64 - recipm1 * e[j] as f64).clamp(-1.0, 1.0);
                (127.5 * (x0_hat - x0[j] as f64)).powi(2)
            })
            .sum();
        per_timestep.push(TimestepStats {
            t,
            weight,
            term,
            distortion: (sq_err / x0.len() as f64).sqrt(),
        });
        if progress(k + 1, evals.len()).is_break() {
            return None;
        }
    }
    let priors: Vec<f64> = x0_64.iter().map(|x| prior_bpd(ac, x)).collect();
    let per_image: Vec<f64> = (0..images).map(|i| priors[i] + mids[i] + decs[i]).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / images as f64;
    Some(Bpd {
        prior: mean(&priors),
        middle: mean(&mids),
        decoder: mean(&decs),
        total: mean(&per_image),
        exact: ts.len() + 1 == schedule.len(),
        middle_timesteps: ts,
        per_image,
        per_timestep,
    })
}

/// A U-Net that maps (t, x_t) of a fixed batch to ε_θ(x_t, t): one submission per call.
pub struct EpsNet {
    gpu: Gpu,
    net: UNet,
    plan: Plan,
}

impl EpsNet {
    pub fn new(gpu: &Gpu, cfg: &UNetConfig, table: &ParamTable, weights: &Tensor, images: usize) -> Result<EpsNet> {
        let net = UNet::new(gpu, cfg, table, weights, None, images)?;
        let mut plan = Plan::new(gpu);
        net.forward(&mut plan);
        Ok(EpsNet {
            gpu: gpu.clone(),
            net,
            plan,
        })
    }

    /// ε_θ(x_t, t) for the whole batch (N, C, H, W), the same t for every image.
    pub fn eps(&mut self, t: usize, x_t: &[f32]) -> Vec<f32> {
        self.gpu.write(&self.net.input, x_t);
        self.gpu.write(&self.net.timesteps, &vec![t as f32; self.net.batch]);
        self.plan.run();
        self.gpu.read(self.net.output())
    }
}

/// `count` ≥ 2 evenly spaced λ from 0 to 1 inclusive.
pub fn lambdas(count: usize) -> Vec<f64> {
    assert!(count >= 2, "interpolation: at least two λ");
    (0..count).map(|k| k as f64 / (count - 1) as f64).collect()
}

/// The batch x(λ) = (1 − λ) a + λ b for each λ, in order (a and b one image each).
pub fn interpolate(a: &[f32], b: &[f32], lambdas: &[f64]) -> Vec<f32> {
    assert_eq!(a.len(), b.len(), "interpolation: images differ in size");
    lambdas
        .iter()
        .flat_map(|&l| {
            a.iter()
                .zip(b)
                .map(move |(&x, &y)| ((1.0 - l) * x as f64 + l * y as f64) as f32)
        })
        .collect()
}
