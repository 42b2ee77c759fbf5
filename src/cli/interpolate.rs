//! `ddpm-gpu interpolate`: interpolation in the latent x_t (§4.4 and Figure 8 of the paper).
//!
//! Two source images x₀ᵃ, x₀ᵇ are noised to step t with the same ε (x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε,
//! eq. 4), mixed linearly, x_t(λ) = (1 − λ) x_tᵃ + λ x_tᵇ, and every x_t(λ) is decoded in one batch
//! by the reverse process from t, with the same noise for every λ (so the pictures differ only
//! through λ). The strip written is [x₀ᵃ, decoded λ = 0 … 1, x₀ᵇ].

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use ddpm_gpu::data::{self, Source};
use ddpm_gpu::diffusion::eval::{interpolate, lambdas, q_sample};
use ddpm_gpu::diffusion::sampler::{ddpm_chain, SampleOptions, Sampler};
use ddpm_gpu::diffusion::schedule::Schedule;
use ddpm_gpu::diffusion::trainer::step_seed;
use ddpm_gpu::gpu::{Gpu, GpuOptions};
use ddpm_gpu::model::load_folder;
use ddpm_gpu::reference::rng;
use ddpm_gpu::viz;

#[derive(Args)]
pub struct InterpolateArgs {
    #[command(flatten)]
    tune: super::TuneFlag,
    /// A run folder of `ddpm-gpu train` or a diffusers DDPM / UNet2DModel folder.
    #[arg(long)]
    model: PathBuf,
    /// The images to take --a and --b from: "mnist" (the built-in digits, default), an MNIST IDX
    /// file, CIFAR-10 batches or a folder of PNG/JPEG images; converted to the model's size.
    #[arg(long, default_value = "mnist")]
    data: String,
    /// Index of the first source image in --data.
    #[arg(long, default_value_t = 0, conflicts_with = "image_a")]
    a: usize,
    /// Index of the second source image in --data.
    #[arg(long, default_value_t = 1, conflicts_with = "image_b")]
    b: usize,
    /// A PNG/JPEG file as the first source image (instead of --data and --a).
    #[arg(long, requires = "image_b")]
    image_a: Option<PathBuf>,
    /// A PNG/JPEG file as the second source image (instead of --data and --b).
    #[arg(long, requires = "image_a")]
    image_b: Option<PathBuf>,
    /// The (0-based) timestep to noise to and decode from, below T. Default: T/2 (500 for T = 1000).
    #[arg(long)]
    t: Option<usize>,
    /// Number of λ values evenly spaced over [0, 1] (at least 2).
    #[arg(long, default_value_t = 9)]
    lambdas: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The PNG strip to write.
    #[arg(long, default_value = "interpolation.png")]
    out: PathBuf,
}

pub fn run(opts: &GpuOptions, args: &InterpolateArgs) -> Result<()> {
    // Installed first, so Ctrl-C at any moment gets the clean stop.
    let stop = super::stop_flag()?;
    if args.lambdas < 2 {
        bail!("--lambdas {}: expected at least 2 values of λ", args.lambdas);
    }
    viz::check_png_name("--out", &args.out)?;
    let (unet_dir, sched) = super::sample::locate(&args.model)?;
    let schedule = Schedule::new(&sched);
    let t_count = schedule.len();
    let t = args.t.unwrap_or(t_count / 2);
    if t >= t_count {
        bail!("--t {t}: expected a timestep below T = {t_count}");
    }
    let (cfg, table, flat) = load_folder(&unet_dir)?;
    let size = cfg.sample_size();
    let (x0_a, x0_b) = match (&args.image_a, &args.image_b) {
        (Some(a), Some(b)) => {
            for (flag, path) in [("--image-a", a), ("--image-b", b)] {
                let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase());
                if !matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg")) {
                    bail!("{flag} {}: expected a .png, .jpg or .jpeg file", path.display());
                }
            }
            // Converted to the model's channels and size exactly as a training folder's images.
            let ds = data::load_files(&[a.clone(), b.clone()], cfg.in_channels, size)?;
            (ds.batch(&[0]), ds.batch(&[1]))
        }
        _ => {
            let ds = data::load(&Source::parse(&args.data), cfg.in_channels, size)?;
            for (flag, i) in [("--a", args.a), ("--b", args.b)] {
                if i >= ds.n {
                    bail!("{flag} {i}: --data has {} images (indices 0..{})", ds.n, ds.n - 1);
                }
            }
            (ds.batch(&[args.a]), ds.batch(&[args.b]))
        }
    };
    // The same ε for both sources.
    let eps = rng::normals(step_seed(args.seed, t, 10), x0_a.len());
    let x_t_a = q_sample(&schedule.alphas_cumprod, t, &x0_a, &eps);
    let x_t_b = q_sample(&schedule.alphas_cumprod, t, &x0_b, &eps);
    let ls = lambdas(args.lambdas);
    let batch = interpolate(&x_t_a, &x_t_b, &ls);

    let gpu = Gpu::new(opts)?;
    eprintln!("adapter: {}", gpu.describe());
    let weights = gpu.tensor(&[table.total], &flat);
    super::enable_tuning(&gpu, args.tune.no_tune);
    let build = || {
        Sampler::new(&gpu, &cfg, &table, &weights, ls.len())
            .with_context(|| format!("--lambdas {}: the strip is decoded in one pass", ls.len()))
    };
    let mut sampler = build()?;
    if super::tune_missing_now(&gpu)? {
        sampler = build()?;
    }
    let o = SampleOptions {
        images: ls.len(),
        seed: args.seed,
        variance: sched.variance_type,
        clip: sched.clip_sample,
    };
    let chain = ddpm_chain(&schedule, t, &o, true);
    let mut progress = super::Progress::new(chain.len(), "denoising steps");
    sampler.set_x(&batch);
    let decoded = sampler.run_until(&chain, stop, |i, _| progress.set(i + 1));
    progress.finish();
    let Some(decoded) = decoded else {
        eprintln!("interrupted: nothing written");
        return Err(super::Interrupted.into());
    };

    let strip: Vec<f32> = [x0_a.as_slice(), &decoded, &x0_b].concat();
    let cells = ls.len() + 2;
    viz::save_grid(&args.out, &strip, [cells, cfg.out_channels, size, size], cells, 2)?;
    eprintln!(
        "wrote {}: source a, {} interpolations decoded from t = {t}, source b",
        args.out.display(),
        ls.len()
    );
    Ok(())
}
