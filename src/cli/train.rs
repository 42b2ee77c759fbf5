//! `ddpm-gpu train`: the training loop with progress bar, metrics log, loss curve, sample grids,
//! checkpoints (atomic), resume, Ctrl-C save and NaN stop.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use ddpm_gpu::data::{self, Source};
use ddpm_gpu::diffusion::ddim::{DdimOptions, Spacing};
use ddpm_gpu::diffusion::sampler::{ddim_chain, ddpm_chain, SampleOptions, Sampler};
use ddpm_gpu::diffusion::schedule::{BetaSchedule, SchedulerConfig};
use ddpm_gpu::diffusion::trainer::{RunDir, TrainConfig, Trainer};
use ddpm_gpu::dist::{Collective, Shard};
use ddpm_gpu::files::FolderLock;
use ddpm_gpu::gpu::{Gpu, GpuOptions};
use ddpm_gpu::model::{save_folder, UNetConfig};
use ddpm_gpu::quality::{self, Scorer};
use ddpm_gpu::viz;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    tune: super::TuneFlag,
    /// Model: a preset (mnist, mnist-large, ddpm-cifar10, tiny) or a diffusers config.json.
    #[arg(long, default_value = "mnist")]
    model: String,
    /// Training images: an MNIST IDX file (.gz or raw), a folder of CIFAR-10 `data_batch_*.bin`
    /// files, or a folder of PNG/JPEG images. Default: the built-in MNIST digits.
    #[arg(long)]
    data: Option<PathBuf>,
    /// A JSON file of training hyper-parameters (the keys of `train_config.json` in a run folder);
    /// flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run folder (default: runs/<timestamp>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this folder exactly where its last checkpoint left it.
    #[arg(long, conflicts_with_all = ["out", "model", "config"])]
    resume: Option<PathBuf>,
    #[arg(long)]
    batch_size: Option<usize>,
    /// Total optimisation steps of the run.
    #[arg(long)]
    steps: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    /// Linear learning-rate warm-up steps.
    #[arg(long)]
    warmup: Option<usize>,
    /// Gradient clipping at this global norm (0 disables).
    #[arg(long)]
    grad_clip: Option<f64>,
    #[arg(long)]
    ema_decay: Option<f64>,
    /// EMA warm-up: decay min(--ema-decay, 1 − (1 + t)^−P) at update t (diffusers' EMAModel;
    /// 0.75 suits runs of thousands of steps); 0 = a fixed decay (the paper).
    #[arg(long, value_name = "P")]
    ema_warmup_power: Option<f64>,
    /// Initial weights: paper (the last conv of each block near zero) or pytorch (PyTorch's
    /// layer defaults, as diffusers).
    #[arg(long, value_enum)]
    init: Option<ddpm_gpu::diffusion::trainer::Init>,
    #[arg(long)]
    seed: Option<u64>,
    /// Dropout probability in the res blocks, in [0, 1) (overrides the model config).
    #[arg(long)]
    dropout: Option<f32>,
    /// Random horizontal flips: true or false.
    #[arg(long)]
    flip: Option<bool>,
    #[arg(long)]
    log_every: Option<usize>,
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Sample a grid from the EMA weights every N steps (0 = only at the end).
    #[arg(long)]
    sample_every: Option<usize>,
    /// Images per forward/backward pass (divides the batch); default: the largest that fits.
    #[arg(long)]
    micro_batch: Option<usize>,
    /// Images in the sample grids (0: no sampling).
    #[arg(long)]
    sample_images: Option<usize>,
    /// Denoising steps of the sample grids: 0 = ancestral sampling over all T steps, K = DDIM
    /// over K steps (much quicker).
    #[arg(long, value_name = "K")]
    sample_steps: Option<usize>,
    /// Score each sample grid against the training data (`ddpm-gpu score`) into metrics.jsonl
    /// and score.png: true (default; needs labelled data) or false.
    #[arg(long, value_name = "BOOL")]
    score: Option<bool>,
    /// Noise schedule: linear (the paper; default) or cosine (Nichol & Dhariwal).
    #[arg(long)]
    schedule: Option<String>,
    /// Class-conditional training on the dataset's labels, for classifier-free guidance at
    /// sampling (`sample --class C --guidance S`): adds a class embedding of one row per class
    /// plus a "no class" row (diffusers `num_class_embeds`).
    #[arg(long, conflicts_with = "resume")]
    classes: bool,
    /// Probability that a training image's label is replaced by "no class", in [0, 1) (default 0.1).
    #[arg(long, value_name = "P")]
    class_dropout: Option<f64>,
}

/// The training settings (`TrainConfig` fields, each a flag) that may change between two steps of
/// a run, so `--resume` can apply them; `$m!` is invoked on the list.
macro_rules! changeable_between_steps {
    ($m:ident) => {
        $m!(
            steps,
            lr,
            warmup,
            grad_clip,
            ema_decay,
            ema_warmup_power,
            flip,
            log_every,
            checkpoint_every,
            sample_every,
            sample_images,
            sample_steps,
            score,
            micro_batch,
            class_dropout
        )
    };
}

fn train_config(args: &TrainArgs, preset: &str) -> Result<TrainConfig> {
    let mut cfg = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading --config {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("--config {}: not a valid training config", path.display()))?
        }
        None => TrainConfig::for_preset(preset),
    };
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = args.$f { cfg.$f = v; } )* };
    }
    set!(batch_size, init, seed);
    changeable_between_steps!(set);
    // From --data, else a --config file's `data`; stored absolute either way.
    if let Some(data) = args.data.clone().or(cfg.data.take()) {
        cfg.data = Some(absolute(&data)?);
    }
    cfg.validate()?;
    Ok(cfg)
}

/// `--data` as an absolute path, stored in train_config.json for `--resume`.
fn absolute(data: &Path) -> Result<PathBuf> {
    std::path::absolute(data).with_context(|| format!("--data {}: not a usable path", data.display()))
}

/// A config value as train_config.json writes it, without quotes.
fn show<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(v) => v.to_string(),
        Err(_) => "?".into(),
    }
}

fn beta_schedule(name: &str) -> Result<BetaSchedule> {
    Ok(match name {
        "linear" => BetaSchedule::Linear,
        "cosine" | "squaredcos_cap_v2" => BetaSchedule::SquaredcosCapV2,
        other => bail!("--schedule: unknown schedule '{other}' (expected linear or cosine)"),
    })
}

/// The config of a resumed run: the one stored in its folder, with each flag given beside
/// `--resume` either applied from the resumed step on (said in one line: a lower `--lr` after a
/// divergence is a real use) or, where it would no longer continue the same run, refused by name.
/// None is ignored. `say`: print the changes (rank 0 of a run of several does).
fn resume_config(
    args: &TrainArgs,
    mut cfg: TrainConfig,
    model: &UNetConfig,
    sched: &SchedulerConfig,
    dir: &Path,
    say: bool,
) -> Result<TrainConfig> {
    let flag = |field: &str| format!("--{}", field.replace('_', "-"));
    let refuse = |what: String, stored: String| -> Result<TrainConfig> {
        bail!(
            "{what}: the run in {} was trained with {stored}, and a resumed run keeps it \
             (start a new run with --out to change it; nothing was changed)",
            dir.display()
        )
    };
    // What fixes the run's draws, its weights or its data.
    macro_rules! refuse_changed {
        ($($f:ident),*) => { $(
            if let Some(v) = &args.$f {
                if *v != cfg.$f {
                    return refuse(format!("{} {}", flag(stringify!($f)), show(v)), show(&cfg.$f));
                }
            }
        )* };
    }
    refuse_changed!(batch_size, seed, init);
    if let Some(data) = &args.data {
        if Some(absolute(data)?) != cfg.data {
            let stored = cfg
                .data
                .as_ref()
                .map_or("the built-in MNIST digits".into(), |p| p.display().to_string());
            return refuse(format!("--data {}", data.display()), stored);
        }
    }
    if let Some(p) = args.dropout {
        if p != model.dropout {
            return refuse(format!("--dropout {p}"), format!("dropout {}", model.dropout));
        }
    }
    if let Some(name) = &args.schedule {
        if beta_schedule(name)? != sched.beta_schedule {
            return refuse(
                format!("--schedule {name}"),
                format!("the {} schedule", show(&sched.beta_schedule)),
            );
        }
    }
    // What may change between steps: applied from the resumed step on.
    macro_rules! apply {
        ($($f:ident),*) => { $(
            if let Some(v) = args.$f {
                if v != cfg.$f {
                    if say {
                        eprintln!("{}: {} → {} from here on", flag(stringify!($f)), show(&cfg.$f), show(&v));
                    }
                    cfg.$f = v;
                }
            }
        )* };
    }
    changeable_between_steps!(apply);
    cfg.validate()?;
    Ok(cfg)
}

/// Train as one rank of `comm`'s run (alone, or under `mpirun`/`srun` with the feature `mpi`):
/// every rank trains; rank 0 alone writes the run folder, the metrics, checkpoints and samples.
pub fn run(opts: &GpuOptions, args: &TrainArgs, comm: &dyn Collective) -> Result<()> {
    let lead = comm.rank() == 0;
    // Where the run lives, and what it trains.
    let (mut run, mut model, sched, cfg) = match &args.resume {
        Some(dir) => {
            let run = RunDir { root: dir.clone() };
            if !run.state().exists() {
                bail!(
                    "--resume {}: no {} there (expected a run folder written by `ddpm-gpu train`)",
                    dir.display(),
                    run.state().display()
                );
            }
            let model = UNetConfig::load(&run.unet().join("config.json"))?;
            let sched = SchedulerConfig::load(&run.scheduler().join("scheduler_config.json"))?;
            let text = std::fs::read_to_string(run.train_config())
                .with_context(|| format!("reading {}", run.train_config().display()))?;
            let stored: TrainConfig =
                serde_json::from_str(&text).with_context(|| format!("{}: invalid", run.train_config().display()))?;
            let cfg = resume_config(args, stored, &model, &sched, dir, lead)?;
            (run, model, sched, cfg)
        }
        None => {
            let mut model = super::model_config(&args.model)?;
            if let Some(p) = args.dropout {
                model.dropout = p;
                model.validate()?;
            }
            let cfg = train_config(args, &args.model)?;
            let mut sched = SchedulerConfig::paper();
            sched.beta_schedule = beta_schedule(args.schedule.as_deref().unwrap_or("linear"))?;
            // The folder is claimed (created, or found empty) only once everything is ready, by
            // rank 0 alone.
            let root = args.out.clone().unwrap_or_default();
            if let Some(out) = args.out.as_ref().filter(|_| lead) {
                check_new_run_folder(out)?;
            }
            (RunDir { root }, model, sched, cfg)
        }
    };
    if !cfg.batch_size.is_multiple_of(comm.size()) {
        bail!(
            "--batch-size {} is the global batch of the {} ranks and must divide by {1} \
             (each rank trains on batch / ranks images)",
            cfg.batch_size,
            comm.size()
        );
    }
    let source = match &cfg.data {
        Some(p) => Source::Path(p.clone()),
        None => Source::BuiltinMnist,
    };
    let size = model.sample_size();
    let dataset = data::load(&source, model.in_channels, size)?;
    if args.classes && args.resume.is_none() {
        let Some(labels) = &dataset.labels else {
            bail!(
                "--classes: the training data ({}) has no labels (labels come with MNIST IDX files that have a labels-idx1 sibling and with CIFAR-10 .bin files)",
                source
            );
        };
        let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
        // Classes are 0..K−1: a label far above the others (all labels 200) would otherwise
        // build a model of 201 classes, most of them never seen.
        let mut seen = vec![false; classes];
        labels.iter().for_each(|&l| seen[l as usize] = true);
        let missing: Vec<usize> = (0..classes).filter(|&c| !seen[c]).collect();
        if !missing.is_empty() {
            bail!(
                "--classes: the labels of {} run from 0 to {}, but {} of those classes never occur \
                 (first: {:?}); labels must be the classes 0 to K − 1",
                source,
                classes - 1,
                missing.len(),
                &missing[..missing.len().min(5)]
            );
        }
        model.num_class_embeds = Some(classes + 1);
    }
    let gpu = Gpu::new(opts)?;
    if comm.size() > 1 {
        eprintln!(
            "rank {} of {} (local rank {}): adapter {}",
            comm.rank(),
            comm.size(),
            comm.local_rank(),
            gpu.describe()
        );
    } else {
        eprintln!("adapter: {}", gpu.describe());
    }
    if lead {
        eprintln!(
            "data: {} images {}×{size}×{size}; model: {} parameters",
            dataset.n,
            dataset.channels,
            ddpm_gpu::model::ParamTable::new(&model).count()
        );
    }
    if lead && cfg.batch_size > dataset.n {
        eprintln!(
            "warning: --batch-size {} is larger than the data ({} images): every step repeats images, \
             and costs {:.0}× a pass over the whole data set",
            cfg.batch_size,
            dataset.n,
            cfg.batch_size as f64 / dataset.n as f64
        );
    }

    let t_count = ddpm_gpu::diffusion::schedule::Schedule::new(&sched).len();
    if cfg.sample_steps > t_count {
        bail!(
            "--sample-steps {}: DDIM needs at most T = {t_count} steps (0 = ancestral over all T)",
            cfg.sample_steps
        );
    }
    // The scorer of the sample grids, from the training data (its classifier is cached).
    let scorer = if !lead {
        None
    } else if cfg.score && cfg.sample_images >= 2 && dataset.labels.is_some() && dataset.n >= quality::MIN_IMAGES {
        let cache = ddpm_gpu::files::cache_dir();
        Some(Scorer::new(&gpu, &dataset, cache.as_deref(), &mut |line| {
            eprintln!("{line}")
        })?)
    } else {
        if cfg.score && cfg.sample_images >= 2 {
            eprintln!(
                "not scoring the sample grids: the training data has no labels (or fewer than {} images)",
                quality::MIN_IMAGES
            );
        }
        None
    };
    let weights = cfg.init.weights(&ddpm_gpu::model::ParamTable::new(&model), cfg.seed);
    super::enable_tuning(&gpu, args.tune.no_tune);
    // The step's cases are found by recording it on synthetic data (one extra build at start):
    // the real data set moves into the trainer, which could then not be rebuilt after tuning.
    // A rank records (and tunes) its share of the batch.
    let share = TrainConfig {
        batch_size: cfg.batch_size / comm.size(),
        ..cfg.clone()
    };
    super::ensure_tuned(&gpu, || Trainer::synthetic(&gpu, &model, &share, &weights).map(drop))?;
    let mut trainer = Trainer::new_shard(&gpu, &model, &sched, &cfg, dataset, &weights, Shard::of(comm))?;
    let (weights_b, acts_b, data_b) = trainer.gpu_bytes();
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    if lead {
        eprintln!(
            "GPU memory: {:.0} MiB (weights, gradients, Adam and EMA {:.0} MiB; activations of {} images per pass {:.0} MiB; data {:.0} MiB)",
            mib(weights_b + acts_b + data_b),
            mib(weights_b),
            trainer.micro_batch,
            mib(acts_b),
            mib(data_b)
        );
    }
    if comm.size() > 1 && lead {
        eprintln!(
            "{} ranks, {} images each per step; each step sums {:.1} MiB of gradients over the ranks (MPI_Allreduce)",
            comm.size(),
            cfg.batch_size / comm.size(),
            mib(4 * trainer.table.total)
        );
    }
    if args.resume.is_some() && !lead {
        // Every rank reads the checkpoint (the run folder must be visible to all of them, as a
        // cluster's shared file system is); rank 0 alone writes.
        trainer.load_state(&run.state())?;
    }
    // Held while this process trains in the folder: a second one gets a clear error.
    let _lock = if !lead {
        None
    } else if args.resume.is_some() {
        let lock = FolderLock::take(&run.root)?;
        trainer.load_state(&run.state())?;
        if cfg.steps <= trainer.step {
            bail!(
                "--resume {0}: the run is at step {1} and trains to step {2}; give --steps above {1} to extend it",
                run.root.display(),
                trainer.step,
                cfg.steps
            );
        }
        eprintln!("resumed {} at step {}", run.root.display(), trainer.step);
        truncate_metrics(&run.metrics(), trainer.step)?;
        // The config as the run now continues: extended steps, flags applied.
        ddpm_gpu::files::write_atomic(&run.train_config(), serde_json::to_string_pretty(&cfg)?.as_bytes())?;
        Some(lock)
    } else {
        run.root = match &args.out {
            Some(out) => {
                check_new_run_folder(out)?;
                std::fs::create_dir_all(out).with_context(|| format!("creating run folder {}", out.display()))?;
                out.clone()
            }
            // Two runs started in the same second get different folders.
            None => ddpm_gpu::files::create_unique_dir(Path::new("runs"), &super::timestamp())?,
        };
        let lock = FolderLock::take(&run.root)?;
        ddpm_gpu::files::write_atomic(&run.train_config(), serde_json::to_string_pretty(&cfg)?.as_bytes())?;
        std::fs::create_dir_all(run.scheduler())?;
        sched.save(&run.scheduler().join("scheduler_config.json"))?;
        ddpm_gpu::files::write_atomic(&run.root.join("model_index.json"), MODEL_INDEX.as_bytes())?;
        save_folder(&run.unet(), &model, &trainer.table, &weights)?;
        Some(lock)
    };
    if comm.size() > 1 && comm.sum_f64(trainer.step as f64) != (trainer.step * comm.size()) as f64 {
        bail!(
            "rank {} resumed at step {}, but not every rank did",
            comm.rank(),
            trainer.step
        );
    }
    let stop = super::stop_flag()?;
    let bar = if lead {
        eprintln!("run folder: {}", run.root.display());
        ProgressBar::new(cfg.steps as u64).with_position(trainer.step as u64)
    } else {
        ProgressBar::hidden()
    };
    let flops_per_step = 3.0 * trainer.forward_flops();
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]")
            .expect("progress template"),
    );
    let mut metrics = match lead {
        true => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(run.metrics())
                .with_context(|| format!("opening {}", run.metrics().display()))?,
        ),
        false => None,
    };
    let mut window = (Instant::now(), trainer.step);
    let (run_start, first_step) = (Instant::now(), trainer.step);
    let mut last_line = Instant::now();
    // The step of the newest checkpoint on disk (a resumed run starts at one).
    let mut saved_step = (trainer.step > 0).then_some(trainer.step);
    while trainer.step < cfg.steps {
        trainer.run_step_in(comm);
        let step = trainer.step;
        if lead && step == first_step + 1 && cfg.steps > step {
            // Timed, so a user knows at once whether the run takes minutes or hours here.
            trainer.read_loss();
            let secs = run_start.elapsed().as_secs_f64();
            bar.suspend(|| {
                eprintln!(
                    "the first step took {}: the {} steps left will take about {} on this adapter, plus sampling",
                    super::duration(secs),
                    cfg.steps - step,
                    super::duration(secs * (cfg.steps - step) as f64)
                )
            });
        }
        let last = step == cfg.steps;
        // A stop asked of any rank stops every rank after this step (one cheap all-reduce).
        let signal = comm.max_i32(super::stop_signal());
        if signal > 0 {
            super::set_stop_signal(signal);
        }
        let mut interrupted = signal > 0;
        let save = last || interrupted || step % cfg.checkpoint_every == 0;
        // The loss is always checked before a checkpoint, so a diverged state is never saved.
        if step % cfg.log_every == 0 || save {
            let (loss, grad_norm) = trainer.read_loss();
            // Each rank's loss is that of its share of the batch: the batch's is their mean.
            let loss = match comm.size() {
                1 => loss,
                ranks => (comm.sum_f64(loss as f64) / ranks as f64) as f32,
            };
            if !loss.is_finite() || !grad_norm.is_finite() {
                bar.abandon();
                let kept = match saved_step {
                    Some(s) => format!("The last good checkpoint (step {s}) in {} is kept", run.root.display()),
                    None => format!(
                        "No checkpoint was written yet (the first comes at step {})",
                        cfg.checkpoint_every.min(cfg.steps)
                    ),
                };
                bail!(
                    "the loss became {loss} at step {step} (gradient norm {grad_norm}); training stopped. \
                     {kept}; try a lower --lr"
                );
            }
            let secs = window.0.elapsed().as_secs_f64();
            let done = (step - window.1) as f64;
            let ips = done * cfg.batch_size as f64 / secs;
            let gflops = done * flops_per_step / secs / 1e9;
            window = (Instant::now(), step);
            if let Some(metrics) = &mut metrics {
                writeln!(
                    metrics,
                    "{}",
                    serde_json::json!({"step": step, "loss": loss, "grad_norm": grad_norm, "lr": cfg.lr_at(step - 1), "images_per_s": ips})
                )?;
            }
            bar.set_message(format!("loss {loss:.4}  {ips:.1} img/s  {gflops:.1} GFLOP/s"));
            // The bar draws only on a terminal: into a file or pipe, a line every 30 s instead.
            if lead && bar.is_hidden() && (last_line.elapsed().as_secs() >= 30 || save) {
                last_line = Instant::now();
                let left = run_start.elapsed().as_secs_f64() / (step - first_step) as f64 * (cfg.steps - step) as f64;
                eprintln!(
                    "step {step}/{}  loss {loss:.4}  {ips:.1} img/s  elapsed {}  about {} left",
                    cfg.steps,
                    super::duration(run_start.elapsed().as_secs_f64()),
                    super::duration(left)
                );
            }
        }
        bar.set_position(step as u64);
        if save && lead {
            checkpoint(&trainer, &run)?;
            saved_step = Some(step);
        }
        if !last && cfg.sample_every > 0 && cfg.sample_images > 0 && step % cfg.sample_every == 0 {
            // Rank 0 (which holds the metrics) samples while the others wait for it in the next
            // collective.
            let mut stopped = false;
            if let Some(metrics) = &mut metrics {
                match sample_grid(&gpu, &trainer, &sched, &run, step, stop)? {
                    Some(images) => score_grid(&gpu, scorer.as_ref(), &images, &run, step, metrics)?,
                    None => stopped = true,
                }
            }
            if comm.size() > 1 {
                // Rank 0 stopped while sampling, or another rank was asked to stop meanwhile.
                let signal = comm.max_i32(super::stop_signal());
                if signal > 0 {
                    super::set_stop_signal(signal);
                    stopped = true;
                }
            }
            if stopped {
                // Save this step unless it was just saved.
                if lead && !save {
                    checkpoint(&trainer, &run)?;
                    saved_step = Some(step);
                }
                interrupted = true;
            }
        }
        if interrupted {
            bar.abandon_with_message(format!("interrupted: checkpoint saved at step {step}"));
            if lead {
                eprintln!("resume with: ddpm-gpu train --resume {}", run.root.display());
            }
            report_reduce_time(&trainer, comm, run_start.elapsed().as_secs_f64());
            return Err(super::Interrupted.into());
        }
    }
    bar.finish();
    report_reduce_time(&trainer, comm, run_start.elapsed().as_secs_f64());
    // Rank 0 draws the end-of-run grid; the other ranks are done.
    let Some(metrics) = &mut metrics else {
        return Ok(());
    };
    if cfg.sample_images > 0 && trainer.step > 0 {
        let Some(images) = sample_grid(&gpu, &trainer, &sched, &run, trainer.step, stop)? else {
            eprintln!(
                "interrupted while sampling the end-of-run grid; training finished and step {} is saved: \
                 draw samples with `ddpm-gpu sample --model {}`",
                trainer.step,
                run.root.display()
            );
            return Err(super::Interrupted.into());
        };
        score_grid(&gpu, scorer.as_ref(), &images, &run, trainer.step, metrics)?;
    }
    eprintln!("done: {}", run.root.display());
    Ok(())
}

/// With several ranks, rank 0 says what summing the gradients cost: bytes and seconds per step
/// and the share of the training time (`secs`, sampling included) it took.
fn report_reduce_time(trainer: &Trainer, comm: &dyn Collective, secs: f64) {
    let t = trainer.reduce_time;
    if comm.size() < 2 || comm.rank() != 0 || t.steps == 0 {
        return;
    }
    let per_step = |s: f64| s / t.steps as f64 * 1e3;
    eprintln!(
        "gradient all-reduce: {:.1} MiB per step over {} ranks; {:.1} ms per step (read back and write {:.1} ms, MPI_Allreduce {:.1} ms), {:.1}% of the {:.1} ms of a step",
        (4 * trainer.table.total) as f64 / (1 << 20) as f64,
        comm.size(),
        per_step(t.copy + t.all_reduce),
        per_step(t.copy),
        per_step(t.all_reduce),
        100.0 * (t.copy + t.all_reduce) / secs,
        secs / t.steps as f64 * 1e3
    );
}

/// Refuse an `--out` folder that already holds something: a run's files (that run would be
/// overwritten and its metrics mixed with this one's) or anything else.
fn check_new_run_folder(out: &Path) -> Result<()> {
    if !out.exists() {
        return Ok(());
    }
    if !out.is_dir() {
        bail!("--out {}: exists and is not a folder", out.display());
    }
    let holds_run = ["train_state.safetensors", "train_config.json", "metrics.jsonl"]
        .iter()
        .any(|f| out.join(f).exists());
    if holds_run {
        bail!(
            "--out {0}: already holds a training run; continue it with `ddpm-gpu train --resume {0}` \
             or choose another --out (nothing was changed)",
            out.display()
        );
    }
    let mut entries = std::fs::read_dir(out).with_context(|| format!("--out {}: cannot read it", out.display()))?;
    if entries.next().is_some() {
        bail!(
            "--out {}: the folder is not empty; give a new or empty folder",
            out.display()
        );
    }
    Ok(())
}

/// diffusers' pipeline index, so `DDPMPipeline.from_pretrained(run_folder)` works.
const MODEL_INDEX: &str = r#"{
  "_class_name": "DDPMPipeline",
  "_diffusers_version": "0.31.0",
  "scheduler": ["diffusers", "DDPMScheduler"],
  "unet": ["diffusers", "UNet2DModel"]
}
"#;

/// Save the training state, the EMA weights as a diffusers model, and the loss curve.
fn checkpoint(trainer: &Trainer, run: &RunDir) -> Result<()> {
    trainer.save_state(&run.state())?;
    save_folder(&run.unet(), &trainer.model, &trainer.table, &trainer.read_ema())?;
    let (steps, losses) = read_metrics(&run.metrics())?;
    if steps.len() >= 2 {
        viz::save_loss_curve(&run.root.join("loss.png"), &steps, &losses, "training loss (L_simple)")?;
    }
    Ok(())
}

fn read_metrics(path: &Path) -> Result<(Vec<usize>, Vec<f64>)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut steps = Vec::new();
    let mut losses = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let (Some(s), Some(l)) = (v["step"].as_u64(), v["loss"].as_f64()) {
            steps.push(s as usize);
            losses.push(l);
        }
    }
    Ok((steps, losses))
}

/// Drop metric lines past `step` (written after the checkpoint a resume starts from).
fn truncate_metrics(path: &Path, step: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= step)
        })
        .collect();
    ddpm_gpu::files::write_atomic(
        path,
        (kept.join("\n") + if kept.is_empty() { "" } else { "\n" }).as_bytes(),
    )
}

/// A grid of samples from the EMA weights into `samples/step_XXXXXXX.png`; `None` (nothing
/// written) when `stop` is set while sampling.
fn sample_grid(
    gpu: &Gpu,
    trainer: &Trainer,
    sched: &SchedulerConfig,
    run: &RunDir,
    step: usize,
    stop: &AtomicBool,
) -> Result<Option<Vec<f32>>> {
    let n = trainer.cfg.sample_images;
    // A class-conditional model samples image i from class i mod classes, one class per column.
    let m = &trainer.model;
    let build = || match m.null_class() {
        Some(classes) if classes > 0 => {
            let labels: Vec<usize> = (0..n).map(|i| i % classes).collect();
            Sampler::conditional(gpu, m, &trainer.table, &trainer.ema, &labels, 1.0)
        }
        _ => Sampler::new(gpu, m, &trainer.table, &trainer.ema, n),
    };

    // A class-conditional grid has a column per class.
    let cols = match m.null_class() {
        Some(classes) if classes > 0 => n.min(classes),
        _ => (n as f64).sqrt().ceil() as usize,
    };
    let mut sampler = build()?;
    // Cases the cache lacks (the first grid at this size): tune them, then record again.
    if super::tune_missing_now(gpu)? {
        sampler = build()?;
    }
    let schedule = ddpm_gpu::diffusion::schedule::Schedule::new(sched);
    let seed = trainer.cfg.seed;
    let chain = match trainer.cfg.sample_steps {
        0 => {
            let opts = SampleOptions {
                images: n,
                seed,
                variance: sched.variance_type,
                clip: sched.clip_sample,
            };
            ddpm_chain(&schedule, schedule.len() - 1, &opts, false)
        }
        steps => {
            let opts = DdimOptions {
                clip: sched.clip_sample.then_some(sched.clip_sample_range),
                ..DdimOptions::default()
            };
            ddim_chain(&schedule, steps, Spacing::Leading, &opts, seed)
        }
    };
    let mut progress = super::Progress::new(chain.len(), &format!("denoising steps of the step-{step} grid"));
    sampler.draw_noise(seed);
    let images = sampler.run_until(&chain, stop, |i, _| progress.set(i + 1));
    progress.finish();
    let Some(images) = images else {
        return Ok(None);
    };
    let dir = run.root.join("samples");
    std::fs::create_dir_all(&dir)?;
    let size = m.sample_size();
    let path = dir.join(format!("step_{step:07}.png"));
    viz::save_grid(&path, &images, [n, m.out_channels, size, size], cols, 2)?;
    eprintln!("samples: {}", path.display());
    Ok(Some(images))
}

/// Score a sample grid's images into metrics.jsonl (one line with the step and the keys of
/// `ddpm-gpu score --json`) and redraw score.png, the Fréchet distance against the step.
fn score_grid(
    gpu: &Gpu,
    scorer: Option<&Scorer>,
    images: &[f32],
    run: &RunDir,
    step: usize,
    metrics: &mut std::fs::File,
) -> Result<()> {
    let Some(scorer) = scorer else {
        return Ok(());
    };
    let n = images.len() / (scorer.shape().channels * scorer.shape().size * scorer.shape().size);
    let score = scorer.score(gpu, images, n)?;
    eprintln!(
        "score at step {step}: FD {:.2} (real held-out images: {:.2}), confidence {:.3}, class entropy {:.3}",
        score.samples.fd, score.floor.fd, score.samples.confidence, score.samples.class_entropy
    );
    let mut line = super::score::score_json(&score);
    line["step"] = serde_json::json!(step);
    writeln!(metrics, "{line}")?;
    let (mut steps, mut fds) = (Vec::new(), Vec::new());
    for l in std::fs::read_to_string(run.metrics()).unwrap_or_default().lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
            continue;
        };
        if let (Some(s), Some(f)) = (v["step"].as_u64(), v["fd"].as_f64()) {
            steps.push(s as usize);
            fds.push(f);
        }
    }
    let title = format!(
        "sample FD to the data ({n} images, real ones score {:.2})",
        score.floor.fd
    );
    let plot = viz::PlotOptions {
        smooth: 1,
        y_label: "FD",
        ..viz::PlotOptions::default()
    };
    viz::save_loss_curve_with(&run.root.join("score.png"), &steps, &fds, &title, &plot)
}
