//! `ddpm-gpu eval`: the variational bound of a model on held-out images in bits/dim (Table 2 of
//! the paper: L_T + Σ L_{t−1} + L_0, eq. 5), the ε of every timestep from the U-Net on the GPU,
//! the terms on the CPU (`diffusion::eval`).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use anyhow::{bail, Result};
use clap::Args;
use ddpm_gpu::data::{self, Source};
use ddpm_gpu::diffusion::eval::{bits_per_dim, rate_distortion, Bpd, BpdOptions, EpsNet};
use ddpm_gpu::diffusion::schedule::Schedule;
use ddpm_gpu::diffusion::vlb::VlbOptions;
use ddpm_gpu::gpu::{Gpu, GpuOptions};
use ddpm_gpu::model::load_folder;
use ddpm_gpu::viz::{self, PlotOptions, YScale};

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    tune: super::TuneFlag,
    /// A run folder of `ddpm-gpu train` or a diffusers DDPM / UNet2DModel folder.
    #[arg(long)]
    model: PathBuf,
    /// Held-out images: "mnist" (the built-in digits, default; note a model trained on them has
    /// seen them), an MNIST IDX file, CIFAR-10 batches or a folder of PNG/JPEG images.
    #[arg(long, default_value = "mnist")]
    data: String,
    /// Number of images to evaluate.
    #[arg(long, default_value_t = 16)]
    images: usize,
    /// Index of the first image in --data.
    #[arg(long, default_value_t = 0)]
    offset: usize,
    /// Images per GPU batch.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// How many of the middle timesteps 1..T−1 to evaluate per image: "all" (the exact sum, T
    /// forwards per batch) or K (K evenly spread timesteps, each weighted (T−1)/K: an estimate).
    /// Default: every 10th timestep.
    #[arg(long, value_name = "all|K", conflicts_with = "all_timesteps")]
    timesteps_per_image: Option<String>,
    /// Evaluate every timestep (the same as --timesteps-per-image all).
    #[arg(long)]
    all_timesteps: bool,
    /// Also write the rate (bits/dim received) and distortion (RMSE of x̂₀ on [0, 255]) of
    /// progressive coding at each evaluated timestep (Figure 5 of the paper) to this CSV file, and
    /// plots of both against the reverse steps to <stem>_distortion.png and <stem>_rate.png.
    #[arg(long, value_name = "CSV")]
    rate_distortion: Option<PathBuf>,
    /// Seed of the noise of q(x_t|x₀).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// The number of middle timesteps to evaluate (None: all).
fn middle_count(args: &EvalArgs, t_count: usize) -> Result<Option<usize>> {
    if args.all_timesteps {
        return Ok(None);
    }
    match args.timesteps_per_image.as_deref() {
        None => Ok(Some((t_count - 1).div_ceil(10).max(1))),
        Some("all") => Ok(None),
        Some(s) => match s.parse::<usize>() {
            Ok(k) if k >= 1 => Ok(Some(k)),
            _ => bail!("--timesteps-per-image {s}: expected \"all\" or a positive number of timesteps"),
        },
    }
}

/// The CSV and the two plots of `--rate-distortion`.
fn write_rate_distortion(path: &Path, r: &Bpd, t_count: usize) -> Result<()> {
    let points = rate_distortion(r);
    let mut csv = String::from("t,reverse_steps,rate_bits_per_dim,distortion_rmse\n");
    for &(t, rate, d) in &points {
        csv += &format!("{t},{},{rate:.6},{d:.6}\n", t_count - t);
    }
    ddpm_gpu::files::write_atomic(path, csv.as_bytes())?;
    let steps: Vec<usize> = points.iter().map(|p| t_count - p.0).collect();
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    for (name, values, title, y_label) in [
        (
            "distortion",
            points.iter().map(|p| p.2).collect::<Vec<_>>(),
            "distortion (RMSE) vs reverse steps",
            "RMSE",
        ),
        (
            "rate",
            points.iter().map(|p| p.1).collect(),
            "rate (bits/dim) vs reverse steps",
            "RATE",
        ),
    ] {
        let plot = PlotOptions {
            smooth: 1,
            y_scale: YScale::Linear,
            y_label,
            ..PlotOptions::default()
        };
        let png = path.with_file_name(format!("{stem}_{name}.png"));
        viz::save_loss_curve_with(&png, &steps, &values, title, &plot)?;
    }
    eprintln!("wrote {} and its plots", path.display());
    Ok(())
}

pub fn run(opts: &GpuOptions, args: &EvalArgs) -> Result<()> {
    // Installed first, so Ctrl-C at any moment gets the clean stop.
    let stop = super::stop_flag()?;
    if args.images == 0 {
        bail!("--images must be at least 1");
    }
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let (unet_dir, sched) = super::sample::locate(&args.model)?;
    let schedule = Schedule::new(&sched);
    let t_count = schedule.len();
    if t_count < 2 {
        bail!("the model's schedule has T = {t_count} step; the bound needs T ≥ 2");
    }
    let middle = middle_count(args, t_count)?;
    let (cfg, table, flat) = load_folder(&unet_dir)?;
    let size = cfg.sample_size();
    let ds = data::load(&Source::parse(&args.data), cfg.in_channels, size)?;
    if args.offset + args.images > ds.n {
        bail!(
            "--offset {} --images {}: --data has only {} images",
            args.offset,
            args.images,
            ds.n
        );
    }
    let gpu = Gpu::new(opts)?;
    eprintln!("adapter: {}", gpu.describe());
    let weights = gpu.tensor(&[table.total], &flat);
    let bpd_opts = BpdOptions {
        vlb: VlbOptions {
            variance: sched.variance_type,
            clip_denoised: true,
        },
        middle,
        seed: args.seed,
    };
    let batches: Vec<Vec<usize>> = (args.offset..args.offset + args.images)
        .collect::<Vec<_>>()
        .chunks(args.batch_size)
        .map(|c| c.to_vec())
        .collect();
    super::enable_tuning(&gpu, args.tune.no_tune);
    if let Some(first) = batches.first() {
        super::ensure_tuned(&gpu, || {
            EpsNet::new(&gpu, &cfg, &table, &weights, first.len()).map(drop)
        })?;
    }
    let evals_per_batch = middle.map_or(t_count, |k| k.min(t_count - 1) + 1);
    let mut progress = super::Progress::new(batches.len() * evals_per_batch, "network evaluations");
    let mut parts = Vec::new();
    for (b, rows) in batches.iter().enumerate() {
        let mut net = EpsNet::new(&gpu, &cfg, &table, &weights, rows.len())?;
        let part = bits_per_dim(
            &schedule,
            &ds.batch(rows),
            rows.len(),
            &bpd_opts,
            |t, x_t| net.eps(t, x_t),
            |i, _| {
                progress.set(b * evals_per_batch + i);
                if stop.load(Ordering::SeqCst) {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        );
        let Some(part) = part else {
            progress.finish();
            eprintln!("interrupted: nothing written");
            return Err(super::Interrupted.into());
        };
        parts.push(part);
    }
    progress.finish();
    let r = Bpd::combine(&parts);
    let what = if r.exact {
        format!("all {t_count} timesteps")
    } else {
        let k = r.middle_timesteps.len();
        format!(
            "ESTIMATE: {k} of the {} middle timesteps, each weighted {:.2}; --all-timesteps for the exact sum",
            t_count - 1,
            (t_count - 1) as f64 / k as f64
        )
    };
    println!("images {}..{} of {}", args.offset, args.offset + args.images, args.data);
    println!("bits/dim        {:.4}   ({what})", r.total);
    println!("  prior   L_T   {:.6}", r.prior);
    println!("  Σ L_t-1       {:.4}", r.middle);
    println!("  decoder L_0   {:.4}", r.decoder);
    if let Some(path) = &args.rate_distortion {
        write_rate_distortion(path, &r, t_count)?;
    }
    Ok(())
}
