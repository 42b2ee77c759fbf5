//! Sampling on the GPU, one submission per denoising step:
//! - DDPM ancestral sampling (Algorithm 2 of the paper): x_T ~ N(0, I) drawn on the GPU, then for
//!   t = T−1 … 0 one U-Net forward and one fused p_sample step (eq. 11) — [`Sampler::sample`];
//! - DDIM (Song et al. 2021) over a subsequence of the timesteps — [`ddim_chain`];
//! - a DDPM chain from any x_t at any t, optionally with the same noise for every image of the
//!   batch (interpolation, §4.4 of the paper) — [`Sampler::set_x`] and [`ddpm_chain`];
//! - class-conditional sampling with classifier-free guidance (Ho & Salimans 2022) —
//!   [`Sampler::conditional`]: the network runs on 2N images (N with their labels, N with the
//!   "no class" label) and `ops::guidance` mixes the two predictions before the update.
//!
//! A chain is a list of [`Step`]s. Each step is one U-Net forward at its timestep followed by the
//! update of its kind ([`Update`]); the sampler records one plan per kind once and replays it
//! with the step's uniforms. After every step the hook of [`Sampler::run`] may read the network's
//! ε, the predicted x̂₀ and the new x (progressive pictures, tests).

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;

use crate::diffusion::ddim::{step_pairs, step_params, DdimOptions, Spacing};
use crate::diffusion::schedule::{Schedule, VarianceType};
use crate::diffusion::trainer::step_seed;
use crate::gpu::{Gpu, KernelRef, Plan, Tensor};
use crate::model::{ParamTable, UNet, UNetConfig};
use crate::ops::ddim::{self, DdimParams};
use crate::ops::p_sample::{self, PSampleParams};
use crate::ops::{elementwise, guidance};
use crate::reference::rng;

/// What a sampling run needs besides the weights.
#[derive(Clone, Debug)]
pub struct SampleOptions {
    pub images: usize,
    pub seed: u64,
    pub variance: VarianceType,
    pub clip: bool,
}

/// The update applied after the U-Net forward of a step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Update {
    /// Ancestral step t → t−1 (eq. 11); the kernel draws z from (seed, element).
    Ddpm(PSampleParams),
    /// Ancestral step t → t−1 whose noise σ_t z is the same for every image of the batch: z is one
    /// image's worth of `reference::rng::normals(seed, C·H·W)` drawn on the CPU, the p_sample kernel
    /// runs with σ = 0 and σ_t z is added afterwards.
    DdpmSharedNoise(PSampleParams),
    /// DDIM step t → prev (eq. 12 of Song et al.).
    Ddim(DdimParams),
}

/// One denoising step: the network sees timestep `t`, then `update` turns x_t into the next x.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    pub t: usize,
    pub update: Update,
}

/// DDPM steps t_start, t_start − 1, …, 0 (Algorithm 2 when t_start = T − 1), the noise of step t
/// seeded by (seed, t); with `shared_noise` every image of the batch gets the same noise.
pub fn ddpm_chain(schedule: &Schedule, t_start: usize, opts: &SampleOptions, shared_noise: bool) -> Vec<Step> {
    assert!(
        t_start < schedule.len(),
        "sampler: t_start {t_start} ≥ T = {}",
        schedule.len()
    );
    (0..=t_start)
        .rev()
        .map(|t| {
            let hp = schedule
                .p_sample_coefs(t, opts.variance, opts.clip)
                .with_seed(step_seed(opts.seed, t, 7));
            let update = if shared_noise {
                Update::DdpmSharedNoise(hp)
            } else {
                Update::Ddpm(hp)
            };
            Step { t, update }
        })
        .collect()
}

/// DDIM steps over `steps` of the T timesteps laid out by `spacing` (diffusers' DDIMScheduler),
/// the noise of the step from t (used only when η > 0) seeded by (seed, t).
pub fn ddim_chain(schedule: &Schedule, steps: usize, spacing: Spacing, opts: &DdimOptions, seed: u64) -> Vec<Step> {
    step_pairs(schedule.len(), steps, spacing)
        .into_iter()
        .map(|(t, prev)| {
            // `n` is filled in from the tensors when the step runs.
            let hp = step_params(&schedule.alphas_cumprod, t, prev, opts, 0, step_seed(seed, t, 8));
            Step {
                t,
                update: Update::Ddim(hp),
            }
        })
        .collect()
}

/// A recorded step: U-Net forward → update kernel(s) → copy x_prev back into the network's input.
struct Recorded<U> {
    plan: Plan,
    /// The update kernel (p_sample or ddim) whose uniforms change per step.
    kernel: KernelRef<U>,
}

/// A U-Net (inference only) and its recorded denoising steps.
pub struct Sampler {
    gpu: Gpu,
    net: UNet,
    images: usize,
    /// The current x (N, C, H, W): the network's input itself, or with guidance the tensor
    /// duplicated into both halves of the input.
    x: Tensor,
    /// The ε the update uses: the network's output, or with guidance the mixed prediction.
    eps: Tensor,
    /// x_T ~ N(0, I) into `x`.
    init: Plan,
    init_kernel: KernelRef<PSampleParams>,
    ddpm: Recorded<PSampleParams>,
    ddpm_shared: Recorded<PSampleParams>,
    ddim: Recorded<DdimParams>,
    /// x after the update, before it is copied into the input (owned here for the plans).
    _x_prev: Tensor,
    /// σ_t z of a shared-noise step, the same for every image (written by the CPU).
    shared_noise: Tensor,
    /// The model's prediction of x₀ at the last step run (for progressive pictures).
    pub x0_pred: Tensor,
}

impl Sampler {
    /// Unconditional sampling of `images` images. A class-conditional model runs with the
    /// "no class" label (its unconditional half).
    pub fn new(gpu: &Gpu, cfg: &UNetConfig, table: &ParamTable, weights: &Tensor, images: usize) -> Result<Sampler> {
        Sampler::build(gpu, cfg, table, weights, images, None, 1.0)
    }

    /// Class-conditional sampling of one image per label with guidance scale `scale`
    /// (ε̃ = ε_u + s·(ε_c − ε_u); 1 is the conditional model alone and costs one forward per
    /// step, any other scale runs the network on twice the images).
    pub fn conditional(
        gpu: &Gpu,
        cfg: &UNetConfig,
        table: &ParamTable,
        weights: &Tensor,
        labels: &[usize],
        scale: f32,
    ) -> Result<Sampler> {
        let Some(null) = cfg.null_class() else {
            anyhow::bail!("this model is not class-conditional (its config has no `num_class_embeds`)");
        };
        if let Some(&bad) = labels.iter().find(|&&l| l >= null) {
            anyhow::bail!(
                "class {bad} does not exist: this model knows classes 0 to {} (`num_class_embeds` {} includes the \"no class\" label {null})",
                null.saturating_sub(1),
                null + 1
            );
        }
        Sampler::build(gpu, cfg, table, weights, labels.len(), Some(labels), scale)
    }

    fn build(
        gpu: &Gpu,
        cfg: &UNetConfig,
        table: &ParamTable,
        weights: &Tensor,
        images: usize,
        labels: Option<&[usize]>,
        scale: f32,
    ) -> Result<Sampler> {
        let guided = labels.is_some() && scale != 1.0;
        let batch = if guided { 2 * images } else { images };
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let net = UNet::new(gpu, cfg, table, weights, None, batch)?;
        if let Some(e) = pollster::block_on(scope.pop()) {
            anyhow::bail!("out of GPU memory for {batch} images at once ({e}); ask for fewer images");
        }
        if let (Some(labels), Some(t)) = (labels, &net.class_labels) {
            let mut all: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
            if guided {
                let null = cfg.null_class().expect("a conditional model") as f32;
                all.extend(std::iter::repeat_n(null, images));
            }
            gpu.write(t, &all);
        }
        let shape = [images, cfg.in_channels, cfg.sample_size(), cfg.sample_size()];
        let (x_prev, x0_pred, shared_noise) = (gpu.zeros(&shape), gpu.zeros(&shape), gpu.zeros(&shape));
        let (x, eps) = if guided {
            (gpu.zeros(&shape), gpu.zeros(&shape))
        } else {
            (net.input.clone(), net.output().clone())
        };
        let mut init = Plan::new(gpu);
        let init_kernel = p_sample::noise(&mut init, &x, 0);
        // One plan per update kind, each: (x into both halves of the input) → forward → (mixed
        // ε) → update → x_prev into x.
        let forward = || {
            let mut plan = Plan::new(gpu);
            if guided {
                guidance::duplicate(&mut plan, &x, &net.input);
            }
            net.forward(&mut plan);
            if guided {
                guidance::combine(&mut plan, net.output(), &eps, scale);
            }
            plan
        };
        let copy_back = |plan: &mut Plan| elementwise::copy(plan, &x_prev, &x);
        let p_sample = |plan: &mut Plan| {
            let hp = PSampleParams::default();
            p_sample::forward(plan, &x, &eps, &x_prev, &x0_pred, &hp)
        };
        let ddpm = {
            let mut plan = forward();
            let kernel = p_sample(&mut plan);
            copy_back(&mut plan);
            Recorded { plan, kernel }
        };
        let ddpm_shared = {
            let mut plan = forward();
            let kernel = p_sample(&mut plan);
            elementwise::axpy(&mut plan, 1.0, &shared_noise, &x_prev);
            copy_back(&mut plan);
            Recorded { plan, kernel }
        };
        let ddim = {
            let mut plan = forward();
            let kernel = ddim::forward(&mut plan, &x, &eps, &x_prev, &x0_pred, &DdimParams::default());
            copy_back(&mut plan);
            Recorded { plan, kernel }
        };
        Ok(Sampler {
            gpu: gpu.clone(),
            net,
            images,
            x,
            eps,
            init,
            init_kernel,
            ddpm,
            ddpm_shared,
            ddim,
            _x_prev: x_prev,
            shared_noise,
            x0_pred,
        })
    }

    /// Run the whole reverse process (Algorithm 2); `progress(i)` is called after each of the T
    /// steps. Returns the images (N, C, H, W), nominally in [−1, 1].
    pub fn sample(&mut self, schedule: &Schedule, opts: &SampleOptions, mut progress: impl FnMut(usize)) -> Vec<f32> {
        self.draw_noise(opts.seed);
        let chain = ddpm_chain(schedule, schedule.len() - 1, opts, false);
        self.run(&chain, |i, _| progress(i))
    }

    /// Images sampled at once.
    /// The recorded ancestral step (U-Net forward, p_sample update, copy back), for profiling.
    pub fn step_plan(&self) -> &Plan {
        &self.ddpm.plan
    }

    pub fn images(&self) -> usize {
        self.images
    }

    /// Start a chain at x_T ~ N(0, I), drawn on the GPU from `seed`.
    pub fn draw_noise(&mut self, seed: u64) {
        let n = self.x.len();
        p_sample::set_noise_seed(&self.init, self.init_kernel, n, step_seed(seed, 0, 6));
        self.init.run();
    }

    /// Start a chain at the given x (N, C, H, W), e.g. an x_t of the forward process.
    pub fn set_x(&mut self, x: &[f32]) {
        self.gpu.write(&self.x, x);
    }

    /// Run `chain` from the current x; `after(i, self)` is called after step i (it may read
    /// [`Sampler::read_eps`], [`Sampler::read_x0_pred`], [`Sampler::read_x`]; reading waits for the
    /// GPU). Returns the final x (N, C, H, W).
    pub fn run(&mut self, chain: &[Step], after: impl FnMut(usize, &Sampler)) -> Vec<f32> {
        self.run_until(chain, &AtomicBool::new(false), after)
            .expect("never stopped")
    }

    /// [`Sampler::run`], stopping after the step during which `stop` became true (Ctrl-C):
    /// `None` then.
    pub fn run_until(
        &mut self,
        chain: &[Step],
        stop: &AtomicBool,
        mut after: impl FnMut(usize, &Sampler),
    ) -> Option<Vec<f32>> {
        let n = self.x.len();
        let image_len = n / self.images;
        for (i, step) in chain.iter().enumerate() {
            self.gpu
                .write(&self.net.timesteps, &vec![step.t as f32; self.net.batch]);
            let plan = match step.update {
                Update::Ddpm(hp) => {
                    p_sample::set_params(&self.ddpm.plan, self.ddpm.kernel, n, &hp);
                    &self.ddpm.plan
                }
                Update::DdpmSharedNoise(hp) => {
                    let z = rng::normals(hp.seed, image_len);
                    let noise: Vec<f32> = z.iter().map(|&z| hp.sigma * z as f32).collect();
                    self.gpu.write(&self.shared_noise, &noise.repeat(self.images));
                    let mean_only = PSampleParams { sigma: 0.0, ..hp };
                    p_sample::set_params(&self.ddpm_shared.plan, self.ddpm_shared.kernel, n, &mean_only);
                    &self.ddpm_shared.plan
                }
                Update::Ddim(hp) => {
                    ddim::set_params(&self.ddim.plan, self.ddim.kernel, n, &hp);
                    &self.ddim.plan
                }
            };
            plan.run();
            after(i, self);
            if stop.load(Ordering::SeqCst) {
                return None;
            }
        }
        Some(self.read_x())
    }

    /// The current x (N, C, H, W): the start of the chain, or the result of the last step.
    pub fn read_x(&self) -> Vec<f32> {
        self.gpu.read(&self.x)
    }

    /// The network's ε_θ(x_t, t) of the last step (N, C, H, W).
    pub fn read_eps(&self) -> Vec<f32> {
        self.gpu.read(&self.eps)
    }

    /// The predicted x̂₀ of the last step (N, C, H, W).
    pub fn read_x0_pred(&self) -> Vec<f32> {
        self.gpu.read(&self.x0_pred)
    }
}
