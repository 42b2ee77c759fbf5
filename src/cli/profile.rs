//! `ddpm-gpu profile`: where the time of one training (or sampling) step goes on this adapter,
//! dispatch by dispatch, from the very plan `train` (or `sample`) runs.

use anyhow::Result;
use clap::Args;
use ddpm_gpu::diffusion::sampler::Sampler;
use ddpm_gpu::diffusion::trainer::{TrainConfig, Trainer};
use ddpm_gpu::gpu::{Gpu, GpuOptions, Probes, Profile, Timer};
use ddpm_gpu::model::ParamTable;

#[derive(Args, Debug)]
pub struct ProfileArgs {
    /// Model: a preset name or a config.json (or a folder holding one).
    #[arg(long, default_value = "mnist")]
    model: String,
    /// Images per step (default: the preset's training batch).
    #[arg(long)]
    batch: Option<usize>,
    /// Profile a sampling step (the U-Net forward and the ancestral update) instead of a
    /// training step.
    #[arg(long)]
    sample: bool,
    /// Timed runs; each dispatch reports its median.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    #[command(flatten)]
    tune: super::TuneFlag,
    /// Rows of each table (the rest are summed into one line).
    #[arg(long, default_value_t = 25)]
    rows: usize,
}

pub fn run(opts: &GpuOptions, args: &ProfileArgs) -> Result<()> {
    let model = super::model_config(&args.model)?;
    let defaults = TrainConfig::for_preset(&args.model);
    let batch = args.batch.unwrap_or(defaults.batch_size);
    if batch == 0 || args.reps == 0 {
        anyhow::bail!("--batch and --reps must be at least 1");
    }
    let gpu = Gpu::new(opts)?;
    eprintln!("adapter: {}", gpu.describe());
    let table = ParamTable::new(&model);
    let weights = table.init(0);
    let timer = Timer::for_gpu(&gpu);
    super::enable_tuning(&gpu, args.tune.no_tune);
    let what = if args.sample { "sampling" } else { "training" };
    eprintln!("building a {what} step of {} at batch {batch}", args.model);
    let profile = if args.sample {
        let params = gpu.tensor(&[table.total], &weights);
        let mut sampler = Sampler::new(&gpu, &model, &table, &params, batch)?;
        if super::tune_missing_now(&gpu)? {
            sampler = Sampler::new(&gpu, &model, &table, &params, batch)?;
        }
        Profile::measure(sampler.step_plan(), timer, args.reps)
    } else {
        let cfg = TrainConfig {
            batch_size: batch,
            ..defaults
        };
        let build = || Trainer::synthetic(&gpu, &model, &cfg, &weights);
        let mut trainer = build()?;
        if super::tune_missing_now(&gpu)? {
            trainer = build()?;
        }
        Profile::measure(trainer.plan(), timer, args.reps)
    };
    let probes = Probes::measure(&gpu, &[&profile]);
    let total = profile.total();
    println!("{what} step of {} at batch {batch} on {}", args.model, gpu.describe());
    println!(
        "{} dispatches timed one by one ({:?}, median of {}): {:.1} ms in all; the whole step in one submission: {:.1} ms",
        profile.dispatches.len(),
        timer,
        args.reps,
        total * 1e3,
        profile.step_seconds * 1e3
    );
    println!("{}\n", probes.describe());
    let by_kernel = profile.rows(|d| d.kernel.clone());
    println!("{}", profile.table("kernel", &by_kernel, args.rows, &probes));
    let by_layer = profile.rows(|d| d.layer.clone());
    println!("{}", profile.table("layer", &by_layer, args.rows, &probes));
    let by_both = profile.rows(|d| format!("{} {}", d.kernel, if d.layer.is_empty() { "-" } else { &d.layer }));
    println!("{}", profile.table("kernel and layer", &by_both, args.rows, &probes));
    Ok(())
}
