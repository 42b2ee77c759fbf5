//! Training (Algorithm 1 of the paper): one recorded plan per step, replayed.
//!
//! Per step the CPU draws the batch's dataset rows and timesteps (from `(seed, step)`, so a
//! resumed run draws exactly what an uninterrupted one would), writes them and the step's
//! scalars (seeds, learning rate, bias corrections), and submits one command buffer (a
//! class-conditional model also gets the rows' labels, each replaced by the "no class" label with
//! probability `class_dropout`, which trains the unconditional model of classifier-free guidance):
//! q_sample (gather x₀, draw ε, x_t = √ᾱ x₀ + √(1−ᾱ) ε, eq. 4) → U-Net forward → L_simple and its
//! gradient (eq. 14) → U-Net backward → global gradient norm → Adam → EMA.
//! The CPU waits only when it logs the loss.
//!
//! A run of several processes ([`crate::dist`]) records the step as two plans instead, from the
//! same code: the gradients of the rank's share of the batch, then the optimizer. Between them
//! the gradient buffer is read back, summed over the ranks and written back
//! ([`Trainer::run_step_in`]).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::diffusion::schedule::{Schedule, SchedulerConfig};
use crate::dist::{Collective, Shard, Single};
use crate::gpu::{Gpu, KernelRef, Plan, Tensor};
use crate::model::{DropoutKernel, ParamTable, UNet, UNetConfig};
use crate::ops::adam::{self, AdamParams};
use crate::ops::ema::EmaParams;
use crate::ops::q_sample::{self, QSample};
use crate::ops::{dropout, elementwise, ema, loss, reduce};

/// Hyper-parameters of a run (a JSON file or flags). Defaults are the paper's.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub batch_size: usize,
    pub steps: usize,
    pub lr: f64,
    pub warmup: usize,
    pub grad_clip: f64,
    pub ema_decay: f64,
    /// EMA warm-up (diffusers' `EMAModel` power schedule): the decay at update t is
    /// min(ema_decay, 1 − (1 + t)^−power), so early averages do not remember the initial weights;
    /// 0 = a fixed decay from the first step (the paper).
    pub ema_warmup_power: f64,
    /// Initial weights: the paper's (the last layer of each block near zero) or PyTorch's
    /// defaults (what diffusers' `UNet2DModel` gets).
    pub init: Init,
    pub weight_decay: f64,
    pub seed: u64,
    /// Random horizontal flips of the training images (the paper uses them for CIFAR-10).
    pub flip: bool,
    pub log_every: usize,
    pub checkpoint_every: usize,
    /// Sample a grid from the EMA weights every N steps (0 = only at the end).
    pub sample_every: usize,
    pub sample_images: usize,
    /// Denoising steps of the sample grids: 0 = ancestral sampling over all T steps (the paper's
    /// Algorithm 2), K = DDIM (η = 0) over K of them.
    pub sample_steps: usize,
    /// Score every sample grid against the (labelled) training data, as `ddpm-gpu score` does,
    /// into metrics.jsonl and score.png.
    pub score: bool,
    /// Images per forward/backward pass (must divide the batch); 0 = the largest that fits the
    /// adapter. Gradients of the micro-batches accumulate into one update.
    pub micro_batch: usize,
    /// Parameters per optimizer dispatch (0 = as many as one storage binding holds). Buffers
    /// larger than a binding, like the paper model's on lavapipe, are processed in chunks.
    pub param_chunk: usize,
    /// Class-conditional models: probability that a training image's label is replaced by the
    /// "no class" label (Ho & Salimans 2022 use 0.1–0.2), so one network learns both ε(x, c) and ε(x).
    pub class_dropout: f64,
    /// The training images (an MNIST IDX file, a CIFAR-10 folder or a folder of images) as an
    /// absolute path, so `--resume` trains on the same data from any directory; `null` = the
    /// built-in MNIST digits.
    pub data: Option<PathBuf>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            batch_size: 128,
            steps: 800_000,
            lr: 2e-4,
            warmup: 5000,
            grad_clip: 1.0,
            ema_decay: 0.9999,
            ema_warmup_power: 0.0,
            init: Init::Paper,
            weight_decay: 0.0,
            seed: 0,
            flip: true,
            log_every: 50,
            checkpoint_every: 5000,
            sample_every: 0,
            sample_images: 16,
            sample_steps: 0,
            score: true,
            micro_batch: 0,
            param_chunk: 0,
            class_dropout: 0.1,
            data: None,
        }
    }
}

impl TrainConfig {
    /// Defaults suited to a preset: the paper's for `ddpm-cifar10`, shorter runs for the small ones.
    pub fn for_preset(preset: &str) -> TrainConfig {
        match preset {
            // Chosen with `ddpm-gpu score` (docs/QUALITY.md): the tiny preset's settings, trained
            // 3000 steps instead of 2000 (1.46× the wall time of the default before issue 11,
            // `cargo bench --bench step`; the budget is 1.5×).
            "mnist" => TrainConfig {
                steps: 3000,
                ..TrainConfig::for_preset("tiny")
            },
            "tiny" => TrainConfig {
                batch_size: 32,
                steps: 2000,
                lr: 1e-3,
                warmup: 100,
                ema_decay: 0.995,
                flip: false,
                log_every: 10,
                checkpoint_every: 500,
                ..TrainConfig::default()
            },
            "mnist-large" => TrainConfig {
                batch_size: 64,
                steps: 20_000,
                lr: 5e-4,
                warmup: 500,
                ema_decay: 0.9995,
                flip: false,
                checkpoint_every: 2000,
                ..TrainConfig::default()
            },
            _ => TrainConfig::default(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        if self.steps == 0 {
            bail!("--steps must be at least 1");
        }
        if !(self.grad_clip >= 0.0 && self.grad_clip.is_finite()) {
            bail!(
                "--grad-clip must be a finite number ≥ 0 (0 turns clipping off), got {}",
                self.grad_clip
            );
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            bail!("weight_decay must be a finite number ≥ 0, got {}", self.weight_decay);
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            bail!("--lr must be a positive number, got {}", self.lr);
        }
        if self.log_every == 0 || self.checkpoint_every == 0 {
            bail!("--log-every and --checkpoint-every must be at least 1");
        }
        if self.micro_batch > 0 && !self.batch_size.is_multiple_of(self.micro_batch) {
            bail!(
                "--micro-batch {} must divide --batch-size {}",
                self.micro_batch,
                self.batch_size
            );
        }
        // Like --dropout, 1 is excluded: a label always dropped would leave the class
        // embedding untrained, and the conditional model with it.
        if !(0.0..1.0).contains(&self.class_dropout) {
            bail!("--class-dropout must be in [0, 1), got {}", self.class_dropout);
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            bail!("--ema-decay must be in [0, 1), got {}", self.ema_decay);
        }
        if !(0.0..=1.0).contains(&self.ema_warmup_power) {
            bail!(
                "--ema-warmup-power must be in [0, 1] (0 = no warm-up), got {}",
                self.ema_warmup_power
            );
        }
        Ok(())
    }

    /// EMA decay of the update after `step` (0-based) steps: see `ema_warmup_power`.
    pub fn ema_decay_at(&self, step: usize) -> f64 {
        if self.ema_warmup_power == 0.0 {
            self.ema_decay
        } else {
            let t = (step + 1) as f64;
            self.ema_decay.min(1.0 - (1.0 + t).powf(-self.ema_warmup_power))
        }
    }

    /// Learning rate at `step` (0-based): linear warm-up, then constant (as the paper).
    pub fn lr_at(&self, step: usize) -> f64 {
        if self.warmup == 0 {
            self.lr
        } else {
            self.lr * ((step + 1) as f64 / self.warmup as f64).min(1.0)
        }
    }
}

/// How a run's weights start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// The paper's: variance scaling, and the last conv of each res block, the attention output
    /// and `conv_out` near zero ([`ParamTable::init`]).
    #[default]
    Paper,
    /// PyTorch's layer defaults, as diffusers' `UNet2DModel` ([`ParamTable::init_pytorch`]).
    Pytorch,
}

impl Init {
    /// The initial weights of `table`.
    pub fn weights(self, table: &ParamTable, seed: u64) -> Vec<f32> {
        match self {
            Init::Paper => table.init(seed),
            Init::Pytorch => table.init_pytorch(seed),
        }
    }
}

/// Split `total` elements into chunks of at most `max` elements starting on 64-element
/// boundaries, so that buffers larger than one storage binding can be processed.
pub fn chunks(total: usize, max: usize) -> Vec<(usize, usize)> {
    let step = (max / 64).max(1) * 64;
    (0..total).step_by(step).map(|o| (o, step.min(total - o))).collect()
}

/// A 32-bit seed for stream `what` at `step`, from the run seed (SplitMix64 finaliser).
pub fn step_seed(seed: u64, step: usize, what: u64) -> u32 {
    let mut z = seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ what.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as u32
}

/// Everything on the GPU that a run trains, and the recorded step.
pub struct Trainer {
    pub gpu: Gpu,
    pub model: UNetConfig,
    pub table: ParamTable,
    pub cfg: TrainConfig,
    pub schedule: Schedule,
    pub params: Tensor,
    pub grads: Tensor,
    pub m: Tensor,
    pub v: Tensor,
    pub ema: Tensor,
    pub grad_sumsq: Tensor,
    /// Steps completed.
    pub step: usize,
    /// Images per forward/backward pass; this process's share of the batch is
    /// `micro_batch × micro_batches.len()`.
    pub micro_batch: usize,
    /// This process's share of each batch (the whole batch unless the run has several ranks).
    pub shard: Shard,
    /// Time spent summing gradients over the ranks (zero for one process).
    pub reduce_time: ReduceTime,
    net: UNet,
    /// The step; with several ranks, its gradient part only.
    plan: Plan,
    /// With several ranks, the optimizer part of the step (norm, Adam, EMA), run once the
    /// gradients are summed; `None` for one process, whose single plan holds it.
    optimizer: Option<Plan>,
    data: Tensor,
    /// When the dataset does not fit one binding, batches are gathered on the CPU.
    host_data: Option<Dataset>,
    dataset_len: usize,
    /// The dataset's labels, for a class-conditional model.
    labels: Option<Vec<u8>>,
    micro_batches: Vec<MicroBatch>,
    adam_kernels: Vec<(KernelRef<AdamParams>, usize)>, // (kernel, chunk length)
    ema_kernels: Vec<(KernelRef<EmaParams>, usize)>,   // (kernel, chunk length)
}

/// Seconds of the steps' gradient exchange in a run of several ranks, summed over steps.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReduceTime {
    pub steps: usize,
    /// Reading the gradients back from the GPU and writing the sums back.
    pub copy: f64,
    /// `MPI_Allreduce` (including waiting for the slowest rank to arrive).
    pub all_reduce: f64,
}

/// The per-micro-batch inputs and the kernels whose seeds change every step.
struct MicroBatch {
    /// Dataset rows (as f32) and timesteps of this micro-batch.
    index: Tensor,
    t: Tensor,
    /// Its class labels (as f32), for a class-conditional model.
    labels: Option<Tensor>,
    /// Its loss (one value; views of one buffer 64 elements apart, so each is aligned).
    loss: Tensor,
    /// Its noising (x₀ gathered, ε drawn) and that kernel, whose seed changes every step.
    q: QSample,
    q_kernel: KernelRef<q_sample::Params>,
    /// The dropout kernels of its forward and backward.
    dropout: Vec<DropoutKernel>,
}

impl Trainer {
    /// Build the run on `gpu`: upload the dataset (when it fits one binding), the weights and the
    /// optimizer state, and record the training step. When a batch's activations would exceed
    /// the adapter's storage binding, the batch is split into micro-batches whose gradients
    /// accumulate (the backward kernels add into the gradient buffers), which gives the same
    /// update as the whole batch at once.
    pub fn new(
        gpu: &Gpu,
        model: &UNetConfig,
        sched: &SchedulerConfig,
        cfg: &TrainConfig,
        dataset: Dataset,
        weights: &[f32],
    ) -> Result<Trainer> {
        Self::new_shard(gpu, model, sched, cfg, dataset, weights, Shard::WHOLE)
    }

    /// [`Trainer::new`] for one rank of a data-parallel run: it processes `shard`'s share of
    /// each global batch of `cfg.batch_size` images, and its step is two plans (gradients, then
    /// the optimizer) for [`Trainer::run_step_in`] to sum the gradients between.
    pub fn new_shard(
        gpu: &Gpu,
        model: &UNetConfig,
        sched: &SchedulerConfig,
        cfg: &TrainConfig,
        dataset: Dataset,
        weights: &[f32],
        shard: Shard,
    ) -> Result<Trainer> {
        cfg.validate()?;
        if !cfg.batch_size.is_multiple_of(shard.ranks) {
            bail!(
                "--batch-size {} (the global batch) must divide by the {} ranks of the run",
                cfg.batch_size,
                shard.ranks
            );
        }
        let table = ParamTable::new(model);
        let size = model.sample_size();
        if dataset.channels != model.in_channels || dataset.height != size || dataset.width != size {
            bail!(
                "dataset images are {}×{}×{} but the model expects {}×{size}×{size}",
                dataset.channels,
                dataset.height,
                dataset.width,
                model.in_channels
            );
        }
        if model.in_channels != model.out_channels {
            bail!(
                "the model predicts ε, so out_channels ({}) must equal in_channels ({})",
                model.out_channels,
                model.in_channels
            );
        }
        let labels = match model.null_class() {
            None => None,
            Some(null) => {
                let Some(labels) = &dataset.labels else {
                    bail!("the model is class-conditional (`num_class_embeds`) but the dataset has no labels");
                };
                if let Some(&bad) = labels.iter().find(|&&l| l as usize >= null) {
                    bail!(
                        "the dataset has label {bad}, but the model's `num_class_embeds` {} leaves room for labels 0 to {} (the last row is the \"no class\" label)",
                        null + 1,
                        null as isize - 1
                    );
                }
                Some(labels.clone())
            }
        };
        let schedule = Schedule::new(sched);
        // This rank's images of each batch.
        let n = cfg.batch_size / shard.ranks;
        if cfg.micro_batch > 0 && !n.is_multiple_of(cfg.micro_batch) {
            bail!(
                "--micro-batch {} must divide each rank's share of the batch ({} of {} images)",
                cfg.micro_batch,
                n,
                cfg.batch_size
            );
        }
        let max_binding = gpu.limits.max_storage_buffer_binding_size as usize;
        let total = table.total;
        let params = gpu.tensor(&[total], weights);
        let grads = gpu.zeros(&[total]);
        let (m, v) = (gpu.zeros(&[total]), gpu.zeros(&[total]));
        let ema = gpu.tensor(&[total], weights);

        // The largest micro-batch dividing the batch whose activations fit the adapter.
        let mut built = None;
        let mut last_err = None;
        let sizes: Vec<usize> = match cfg.micro_batch {
            0 => (1..=n).rev().filter(|mb| n.is_multiple_of(*mb)).collect(),
            mb => vec![mb],
        };
        for mb in sizes {
            // Out-of-memory while allocating activations is caught and a smaller size tried.
            let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let net = UNet::new(gpu, model, &table, &params, Some(&grads), mb);
            let oom = pollster::block_on(scope.pop());
            match (net, oom) {
                (Ok(net), None) => {
                    built = Some((mb, net));
                    break;
                }
                (Err(e), _) => last_err = Some(e),
                (Ok(net), Some(e)) => {
                    last_err = Some(anyhow::anyhow!(
                        "out of GPU memory for {mb} images per pass ({} MiB of activations and their gradients): {e}",
                        net.activation_bytes >> 20
                    ))
                }
            }
        }
        let Some((mb, net)) = built else {
            let e = last_err.expect("at least one micro-batch size was tried");
            return Err(e.context(format!("no micro-batch of batch size {n} fits this adapter's limits")));
        };
        let k = n / mb;
        // This rank's first image and micro-batch within the global batch.
        let first = shard.rank * n;

        // The dataset stays on the GPU when it fits one storage binding.
        let dataset_len = dataset.n;
        let (data, host_data) = if dataset.images.len() * 4 <= max_binding {
            (
                gpu.tensor(&[dataset.n, dataset.channels, size, size], &dataset.images),
                None,
            )
        } else {
            // Kept, not copied: the data may be most of the machine's memory.
            (gpu.zeros(&[n, dataset.channels, size, size]), Some(dataset))
        };
        let table_t = gpu.tensor(&[schedule.betas.len(), 2], &schedule.q_sample_table());
        let target = gpu.zeros(&[mb, model.in_channels, size, size]);
        let losses = gpu.zeros(&[k * 64]);
        let chunk_list = match cfg.param_chunk {
            0 => chunks(total, max_binding / 4),
            c => chunks(total, c.min(max_binding / 4)),
        };
        // One partial sum per chunk, 64 elements apart so each view is aligned for binding; the
        // elements between them stay zero, so summing the whole buffer sums the partials.
        let partials = gpu.zeros(&[chunk_list.len() * 64]);
        let grad_sumsq = gpu.zeros(&[1]);

        let mut plan = Plan::new(gpu);
        for &(o, len) in &chunk_list {
            plan.clear(&grads.view(o, &[len]));
        }
        let mut micro_batches = Vec::new();
        for c in 0..k {
            let (index, t, loss) = (gpu.zeros(&[mb]), gpu.zeros(&[mb]), losses.view(c * 64, &[1]));
            let micro_labels = net.class_labels.as_ref().map(|_| gpu.zeros(&[mb]));
            let qs = QSample {
                batch: mb,
                channels: model.in_channels,
                h: size,
                w: size,
                flip: cfg.flip,
                first: first + c * mb,
            };
            // x₀ gathered from the dataset, ε drawn, x_t = √ᾱ x₀ + √(1−ᾱ) ε (eq. 4).
            let qk = plan.within("q_sample", |plan| {
                let inputs = q_sample::Inputs {
                    data: &data,
                    index: &index,
                    t: &t,
                    table: &table_t,
                };
                let qk = q_sample::forward(plan, &qs, inputs, &net.input, &target, 0);
                elementwise::copy(plan, &t, &net.timesteps);
                if let (Some(src), Some(dst)) = (&micro_labels, &net.class_labels) {
                    elementwise::copy(plan, src, dst);
                }
                qk
            });
            let mut dropout = net.forward(&mut plan);
            net.zero_grads(&mut plan);
            // L_simple (eq. 14) and its gradient; a micro-batch's mean counts 1/(ranks·k) of the
            // batch's, so that the gradients summed over micro-batches and ranks are the batch's.
            let parts = shard.ranks * k;
            plan.within("loss", |plan| {
                loss::mse_forward_backward(plan, net.output(), &target, &loss, net.d_output());
                if parts > 1 {
                    elementwise::scale(plan, 1.0 / parts as f32, net.d_output(), net.d_output());
                }
            });
            dropout.extend(net.backward(&mut plan));
            micro_batches.push(MicroBatch {
                index,
                t,
                labels: micro_labels,
                loss,
                q: qs,
                q_kernel: qk,
                dropout,
            });
        }
        // Global gradient norm² = Σ over chunks of each chunk's Σ g², then Adam and the EMA: in
        // the step's plan, or with several ranks in a plan of its own, run after the all-reduce.
        let mut optimizer = (shard.ranks > 1).then(|| Plan::new(gpu));
        let (adam_kernels, ema_kernels) = optimizer.as_mut().unwrap_or(&mut plan).within("optimizer", |plan| {
            for (i, &(o, len)) in chunk_list.iter().enumerate() {
                reduce::sum_squares(plan, &grads.view(o, &[len]), &partials.view(i * 64, &[1]));
            }
            reduce::sum(plan, &partials, &grad_sumsq);
            let mut adam_kernels = Vec::new();
            for &(o, len) in &chunk_list {
                let hp = Self::adam_params(cfg, 0, len);
                let view = |t: &Tensor| t.view(o, &[len]);
                let idx = adam::step(
                    plan,
                    &view(&params),
                    &view(&grads),
                    &view(&m),
                    &view(&v),
                    &grad_sumsq,
                    &hp,
                );
                adam_kernels.push((idx, len));
            }
            let ema_kernels = chunk_list
                .iter()
                .map(|&(o, len)| {
                    let k = ema::update(
                        plan,
                        &ema.view(o, &[len]),
                        &params.view(o, &[len]),
                        cfg.ema_decay_at(0) as f32,
                    );
                    (k, len)
                })
                .collect();
            (adam_kernels, ema_kernels)
        });
        Ok(Trainer {
            gpu: gpu.clone(),
            model: model.clone(),
            table,
            cfg: cfg.clone(),
            schedule,
            params,
            grads,
            m,
            v,
            ema,
            grad_sumsq,
            step: 0,
            micro_batch: mb,
            shard,
            reduce_time: ReduceTime::default(),
            net,
            plan,
            optimizer,
            data,
            host_data,
            dataset_len,
            labels,
            micro_batches,
            adam_kernels,
            ema_kernels,
        })
    }

    /// Adam's scalars for 0-based `step` over a chunk of `len` parameters: AdamW when weight decay
    /// is set, β = (0.9, 0.999), ε = 1e-8 (the paper's TensorFlow Adam defaults), clipping.
    fn adam_params(cfg: &TrainConfig, step: usize, len: usize) -> AdamParams {
        AdamParams {
            weight_decay: cfg.weight_decay as f32,
            decoupled: u32::from(cfg.weight_decay > 0.0),
            max_norm: cfg.grad_clip as f32,
            ..AdamParams::new(len, cfg.lr_at(step) as f32)
        }
        .at_step(step as u32 + 1)
    }

    /// The rows and timesteps of step `step`'s (global) batch, drawn from `(seed, step)` only:
    /// every rank draws the whole batch and takes its share.
    pub fn batch_draw(&self, step: usize) -> (Vec<usize>, Vec<usize>) {
        let mut rng = StdRng::seed_from_u64(step_seed(self.cfg.seed, step, 0) as u64 | ((step as u64) << 32));
        let t_max = self.schedule.betas.len();
        let rows = (0..self.cfg.batch_size)
            .map(|_| rng.random_range(0..self.dataset_len))
            .collect();
        let ts = (0..self.cfg.batch_size).map(|_| rng.random_range(0..t_max)).collect();
        (rows, ts)
    }

    /// The class labels of step `step`'s batch (for a class-conditional model): the rows' labels,
    /// each replaced by the "no class" label with probability `class_dropout`, drawn from
    /// `(seed, step)` only.
    pub fn label_draw(&self, step: usize, rows: &[usize]) -> Option<Vec<usize>> {
        let (labels, null) = (self.labels.as_ref()?, self.model.null_class()?);
        let mut rng = StdRng::seed_from_u64(step_seed(self.cfg.seed, step, 2) as u64 | ((step as u64) << 32));
        let p = self.cfg.class_dropout;
        Some(
            rows.iter()
                .map(|&r| {
                    if rng.random::<f64>() < p {
                        null
                    } else {
                        labels[r] as usize
                    }
                })
                .collect(),
        )
    }

    /// Run one training step (queued; does not wait). One process only: a rank of a run of
    /// several calls [`Trainer::run_step_in`].
    pub fn run_step(&mut self) {
        self.run_step_in(&Single);
    }

    /// Run one training step as one rank of `comm`'s run (the trainer's [`Shard`]): with several
    /// ranks, record the gradients of this rank's share, read them back, sum them over the ranks
    /// (`comm.sum`, which waits for every rank), write the sums back and queue the optimizer.
    pub fn run_step_in(&mut self, comm: &dyn Collective) {
        assert_eq!(
            comm.size(),
            self.shard.ranks,
            "a trainer runs with the ranks it was built for"
        );
        let step = self.step;
        let (rows, ts) = self.batch_draw(step);
        let labels = self.label_draw(step, &rows);
        let mb = self.micro_batch;
        // This rank's images of the batch.
        let first = self.shard.rank * mb * self.micro_batches.len();
        if let Some(ds) = &self.host_data {
            let share = first..first + mb * self.micro_batches.len();
            self.gpu.write(&self.data, &ds.batch(&rows[share]));
        }
        let drop = self.model.dropout;
        let seed = self.cfg.seed;
        for (c, micro) in self.micro_batches.iter().enumerate() {
            let range = first + c * mb..first + (c + 1) * mb;
            let t: Vec<f32> = ts[range.clone()].iter().map(|&t| t as f32).collect();
            let index: Vec<f32> = match &self.host_data {
                None => rows[range.clone()].iter().map(|&r| r as f32).collect(),
                Some(_) => (c * mb..(c + 1) * mb).map(|r| r as f32).collect(),
            };
            self.gpu.write(&micro.t, &t);
            if let (Some(dst), Some(labels)) = (&micro.labels, &labels) {
                let l: Vec<f32> = labels[range.clone()].iter().map(|&l| l as f32).collect();
                self.gpu.write(dst, &l);
            }
            self.gpu.write(&micro.index, &index);
            // Every micro-batch draws from the step's one noise stream (QSample::first).
            q_sample::set_seed(&self.plan, micro.q_kernel, &micro.q, step_seed(seed, step, 1));
            // The global micro-batch's index: a rank's share draws what one process draws.
            let stream = ((first / mb + c) as u64) << 16;
            // A dropout layer's forward and backward kernels share its seed (the same mask).
            for d in &micro.dropout {
                let layer_seed = step_seed(seed, step, 100 + d.layer as u64 + stream);
                dropout::set_seed(&self.plan, d.kernel, d.len, drop, layer_seed);
            }
        }
        let optimizer = self.optimizer.as_ref().unwrap_or(&self.plan);
        for &(k, len) in &self.adam_kernels {
            optimizer.set_params(k, &Self::adam_params(&self.cfg, step, len));
        }
        let decay = self.cfg.ema_decay_at(step) as f32;
        for &(k, len) in &self.ema_kernels {
            optimizer.set_params(k, &EmaParams::new(len, decay));
        }
        self.plan.run();
        if let Some(optimizer) = &self.optimizer {
            // Waiting for the gradients first keeps their computation out of the copy's time.
            self.gpu.sync();
            let start = std::time::Instant::now();
            let mut grads = self.gpu.read(&self.grads);
            let read = start.elapsed().as_secs_f64();
            let start = std::time::Instant::now();
            comm.sum(&mut grads);
            self.reduce_time.all_reduce += start.elapsed().as_secs_f64();
            let start = std::time::Instant::now();
            self.gpu.write(&self.grads, &grads);
            optimizer.run();
            self.reduce_time.copy += read + start.elapsed().as_secs_f64();
            self.reduce_time.steps += 1;
        }
        self.step += 1;
    }

    /// What this run holds on the GPU, in bytes: the weights with their gradients, Adam moments
    /// and EMA (5 copies); the activations and their gradients of one pass of
    /// [`Trainer::micro_batch`] images; the data set (or, when it did not fit one binding, a
    /// batch of it). wgpu cannot ask a device how much memory it has, so this is for the user
    /// to compare with their GPU's.
    pub fn gpu_bytes(&self) -> (usize, usize, usize) {
        (5 * self.table.total * 4, self.net.activation_bytes, self.data.len() * 4)
    }

    /// The recorded training step (what [`Trainer::run_step`] submits), for profiling.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The loss of the last step (of this rank's share of the batch, with several ranks) and the
    /// gradient norm (of the whole batch) (waits for the GPU).
    pub fn read_loss(&self) -> (f32, f32) {
        let k = self.micro_batches.len();
        let loss = self
            .micro_batches
            .iter()
            .map(|m| self.gpu.read(&m.loss)[0])
            .sum::<f32>()
            / k as f32;
        (loss, self.gpu.read(&self.grad_sumsq)[0].sqrt())
    }

    /// Forward FLOPs of one batch (the training step costs about 3×).
    pub fn forward_flops(&self) -> f64 {
        self.net.forward_flops
    }

    pub fn read_params(&self) -> Vec<f32> {
        self.gpu.read(&self.params)
    }

    pub fn read_ema(&self) -> Vec<f32> {
        self.gpu.read(&self.ema)
    }

    /// Write the full training state (raw weights, Adam moments, EMA, step) atomically.
    pub fn save_state(&self, path: &Path) -> Result<()> {
        use safetensors::tensor::{Dtype, TensorView};
        let tensors = [
            ("params", self.read_params()),
            ("adam_m", self.gpu.read(&self.m)),
            ("adam_v", self.gpu.read(&self.v)),
            ("ema", self.read_ema()),
        ];
        let mut views = Vec::new();
        for (name, data) in &tensors {
            views.push((
                name.to_string(),
                TensorView::new(Dtype::F32, vec![data.len()], bytemuck::cast_slice(data))?,
            ));
        }
        let meta = std::collections::HashMap::from([
            ("step".to_string(), self.step.to_string()),
            ("train_config".to_string(), serde_json::to_string(&self.cfg)?),
            ("model_config".to_string(), self.model.to_json()),
        ]);
        let bytes = safetensors::serialize(views, Some(meta))?;
        crate::files::write_atomic(path, &bytes)
    }

    /// Restore the state written by [`Trainer::save_state`]; the model must be the same.
    pub fn load_state(&mut self, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path).with_context(|| format!("reading training state {}", path.display()))?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: not a valid training state ({e})", path.display()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: not a valid training state ({e})", path.display()))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        let step: usize = meta
            .get("step")
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("{}: no step recorded", path.display()))?;
        for (name, dst) in [
            ("params", &self.params),
            ("adam_m", &self.m),
            ("adam_v", &self.v),
            ("ema", &self.ema),
        ] {
            let view = st
                .tensor(name)
                .map_err(|_| anyhow::anyhow!("{}: tensor '{name}' missing", path.display()))?;
            let data: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            if data.len() != dst.len() {
                bail!(
                    "{}: '{name}' has {} values, the model needs {} (different model config?)",
                    path.display(),
                    data.len(),
                    dst.len()
                );
            }
            self.gpu.write(dst, &data);
        }
        self.step = step;
        Ok(())
    }
}

/// Paths inside a run folder.
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn state(&self) -> PathBuf {
        self.root.join("train_state.safetensors")
    }
    pub fn unet(&self) -> PathBuf {
        self.root.join("unet")
    }
    pub fn scheduler(&self) -> PathBuf {
        self.root.join("scheduler")
    }
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
    pub fn train_config(&self) -> PathBuf {
        self.root.join("train_config.json")
    }
}

impl Trainer {
    /// A trainer for `model` at `cfg.batch_size` on zero images, with the paper's schedule: the
    /// step `train` would record, for tuning, profiling and benchmarks (its speed does not depend
    /// on the pixels).
    pub fn synthetic(gpu: &Gpu, model: &UNetConfig, cfg: &TrainConfig, weights: &[f32]) -> Result<Trainer> {
        let size = model.sample_size();
        let n = cfg.batch_size;
        let data = Dataset {
            images: vec![0.0; n * model.in_channels * size * size],
            labels: model.num_class_embeds.map(|_| vec![0; n]),
            n,
            channels: model.in_channels,
            height: size,
            width: size,
        };
        Trainer::new(gpu, model, &SchedulerConfig::paper(), cfg, data, weights)
    }
}
