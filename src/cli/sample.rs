//! `ddpm-gpu sample`: images from a run folder or a diffusers DDPM folder.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;
use ddpm_gpu::diffusion::sampler::{SampleOptions, Sampler};
use ddpm_gpu::diffusion::schedule::{Schedule, SchedulerConfig, VarianceType};
use ddpm_gpu::gpu::{Gpu, GpuOptions};
use ddpm_gpu::model::load_folder;
use ddpm_gpu::viz;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Args)]
pub struct SampleArgs {
    /// A run folder of `ddpm-gpu train`, a diffusers DDPM pipeline folder (with unet/ and
    /// scheduler/), or a UNet2DModel folder (config.json + diffusion_pytorch_model.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// Number of images.
    #[arg(long, default_value_t = 16)]
    images: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Posterior variance: fixed_small (β̃_t) or fixed_large (β_t). Default: the scheduler's.
    #[arg(long)]
    variance: Option<String>,
    /// The PNG grid to write.
    #[arg(long, default_value = "samples.png")]
    out: PathBuf,
    /// Also write each image as its own PNG into this folder.
    #[arg(long)]
    each: Option<PathBuf>,
}

/// The U-Net folder and scheduler config of a model folder.
fn locate(dir: &Path) -> Result<(PathBuf, SchedulerConfig)> {
    if !dir.exists() {
        bail!("--model {}: no such folder", dir.display());
    }
    let unet = if dir.join("unet").join("config.json").exists() {
        dir.join("unet")
    } else {
        dir.to_path_buf()
    };
    let candidates = [
        dir.join("scheduler").join("scheduler_config.json"),
        dir.join("scheduler_config.json"),
    ];
    let sched = match candidates.iter().find(|p| p.exists()) {
        Some(p) => SchedulerConfig::load(p)?,
        None => SchedulerConfig::paper(),
    };
    Ok((unet, sched))
}

pub fn run(opts: &GpuOptions, args: &SampleArgs) -> Result<()> {
    if args.images == 0 {
        bail!("--images must be at least 1");
    }
    let (unet_dir, mut sched) = locate(&args.model)?;
    if let Some(v) = &args.variance {
        sched.variance_type = match v.as_str() {
            "fixed_small" => VarianceType::FixedSmall,
            "fixed_large" => VarianceType::FixedLarge,
            other => bail!("--variance: '{other}' is not a variance type (expected fixed_small or fixed_large)"),
        };
    }
    let (cfg, table, flat) = load_folder(&unet_dir)?;
    let gpu = Gpu::new(opts)?;
    eprintln!("adapter: {}", gpu.describe());
    let weights = gpu.tensor(&[table.total], &flat);
    let mut sampler = Sampler::new(&gpu, &cfg, &table, &weights, args.images)?;
    let schedule = Schedule::new(&sched);
    let bar = ProgressBar::new(schedule.betas.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} denoising steps [{elapsed_precise} < {eta_precise}]")
            .expect("template"),
    );
    let o = SampleOptions {
        images: args.images,
        seed: args.seed,
        variance: sched.variance_type,
        clip: sched.clip_sample,
    };
    let images = sampler.sample(&schedule, &o, |i| bar.set_position(i as u64 + 1));
    bar.finish();
    let size = cfg.sample_size();
    let cols = (args.images as f64).sqrt().ceil() as usize;
    viz::save_grid(&args.out, &images, args.images, cfg.out_channels, size, size, cols, 2)?;
    eprintln!("wrote {}", args.out.display());
    if let Some(dir) = &args.each {
        viz::save_each(dir, &images, args.images, cfg.out_channels, size, size)?;
        eprintln!("wrote {} images into {}", args.images, dir.display());
    }
    Ok(())
}
