//! `ddpm-gpu sample`: images from a run folder or a diffusers DDPM folder.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use ddpm_gpu::diffusion::ddim::{DdimOptions, Spacing};
use ddpm_gpu::diffusion::sampler::{ddim_chain, ddpm_chain, SampleOptions, Sampler, Step};
use ddpm_gpu::diffusion::schedule::{Schedule, SchedulerConfig, VarianceType};
use ddpm_gpu::gpu::{Gpu, GpuOptions};
use ddpm_gpu::model::load_folder;
use ddpm_gpu::viz;

/// The reverse process to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SamplerKind {
    /// Ancestral sampling, all T steps (Algorithm 2 of the paper).
    Ddpm,
    /// DDIM (Song et al. 2021) over --steps of the T timesteps.
    Ddim,
}

#[derive(Args)]
pub struct SampleArgs {
    #[command(flatten)]
    tune: super::TuneFlag,
    /// A run folder of `ddpm-gpu train`, a diffusers DDPM pipeline folder (with unet/ and
    /// scheduler/), or a UNet2DModel folder (config.json + diffusion_pytorch_model.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// Number of images.
    #[arg(long, default_value_t = 16)]
    images: usize,
    /// Images per pass (default: as many as this adapter holds at once); more are drawn in
    /// several passes.
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// ddpm: ancestral sampling over all T steps; ddim: deterministic (η = 0) or stochastic DDIM
    /// over --steps timesteps.
    #[arg(long, value_enum, default_value_t = SamplerKind::Ddpm)]
    sampler: SamplerKind,
    /// Denoising steps: for ddim 1..=T (default 50); for ddpm it must be T (the default).
    #[arg(long)]
    steps: Option<usize>,
    /// DDIM's η in [0, 1]: 0 deterministic (default), 1 DDPM-like noise. ddim only.
    #[arg(long)]
    eta: Option<f64>,
    /// How DDIM spreads its timesteps over 0..T: leading (default), trailing or linspace. ddim only.
    #[arg(long)]
    spacing: Option<Spacing>,
    /// Posterior variance: fixed_small (β̃_t) or fixed_large (β_t). Default: the scheduler's.
    /// ddpm only.
    #[arg(long)]
    variance: Option<String>,
    /// The PNG grid to write.
    #[arg(long, default_value = "samples.png")]
    out: PathBuf,
    /// Also write each image as its own PNG into this folder.
    #[arg(long)]
    each: Option<PathBuf>,
    /// Also write <out stem>_progressive.png: the predicted x̂₀ of each image (rows) at K
    /// denoising steps spread from the first (t = T−1) to the last (t = 0) (columns), as Figure 6
    /// of the paper.
    #[arg(long, value_name = "K")]
    progressive: Option<usize>,
    /// Class-conditional models: the class of every image (default: image i gets class i mod
    /// the number of classes, one class per grid column).
    #[arg(long, value_name = "C")]
    class: Option<usize>,
    /// Class-conditional models: classifier-free guidance scale s, ε̃ = ε(x) + s·(ε(x, c) − ε(x))
    /// (Ho & Salimans 2022; their w is s − 1). 1 (default) is the conditional model alone, 0 the
    /// unconditional one; s > 1 gives more typical images of the class, at twice the cost per step.
    #[arg(long, value_name = "S")]
    guidance: Option<f32>,
}

/// The class of each image for a class-conditional model (`None` for an unconditional one).
fn class_labels(args: &SampleArgs, cfg: &ddpm_gpu::model::UNetConfig) -> Result<Option<Vec<usize>>> {
    let Some(null) = cfg.null_class() else {
        if args.class.is_some() || args.guidance.is_some() {
            bail!(
                "--class/--guidance: the model in {} is not class-conditional (its config has no `num_class_embeds`; train one with `ddpm-gpu train --classes`)",
                args.model.display()
            );
        }
        return Ok(None);
    };
    if null == 0 {
        bail!(
            "--model {}: `num_class_embeds` is 1, which leaves no class besides the \"no class\" label",
            args.model.display()
        );
    }
    if let Some(g) = args.guidance.filter(|g| !g.is_finite()) {
        bail!("--guidance {g}: expected a finite number");
    }
    Ok(Some(match args.class {
        Some(c) if c >= null => bail!("--class {c}: this model knows classes 0 to {}", null - 1),
        Some(c) => vec![c; args.images],
        None => (0..args.images).map(|i| i % null).collect(),
    }))
}

/// The U-Net folder and scheduler config of a model folder.
pub fn locate(dir: &Path) -> Result<(PathBuf, SchedulerConfig)> {
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

/// The steps of the chain `args` asks for, validated, for `images` images drawn from `seed`.
fn chain(
    args: &SampleArgs,
    sched: &SchedulerConfig,
    schedule: &Schedule,
    images: usize,
    seed: u64,
) -> Result<Vec<Step>> {
    let t_count = schedule.len();
    match args.sampler {
        SamplerKind::Ddpm => {
            if let Some(s) = args.steps.filter(|&s| s != t_count) {
                bail!(
                    "--steps {s}: the ddpm sampler runs all T = {t_count} steps of the model's schedule; \
                     use --sampler ddim for fewer steps"
                );
            }
            if args.eta.is_some() || args.spacing.is_some() {
                bail!("--eta and --spacing apply to --sampler ddim only");
            }
            let variance = match args.variance.as_deref() {
                None => sched.variance_type,
                Some("fixed_small") => VarianceType::FixedSmall,
                Some("fixed_large") => VarianceType::FixedLarge,
                Some(other) => {
                    bail!("--variance: '{other}' is not a variance type (expected fixed_small or fixed_large)")
                }
            };
            let o = SampleOptions {
                images,
                seed,
                variance,
                clip: sched.clip_sample,
            };
            Ok(ddpm_chain(schedule, t_count - 1, &o, false))
        }
        SamplerKind::Ddim => {
            if args.variance.is_some() {
                bail!("--variance applies to --sampler ddpm only (DDIM's noise is set by --eta)");
            }
            let steps = args.steps.unwrap_or(50.min(t_count));
            if !(1..=t_count).contains(&steps) {
                bail!("--steps {steps}: DDIM needs between 1 and T = {t_count} steps");
            }
            let eta = args.eta.unwrap_or(0.0);
            if !(0.0..=1.0).contains(&eta) {
                bail!("--eta {eta}: expected a number between 0 and 1");
            }
            let opts = DdimOptions {
                eta,
                clip: sched.clip_sample.then_some(sched.clip_sample_range),
                ..DdimOptions::default()
            };
            let spacing = args.spacing.unwrap_or(Spacing::Leading);
            Ok(ddim_chain(schedule, steps, spacing, &opts, seed))
        }
    }
}

/// `<out stem>_progressive.png` next to `out`.
fn progressive_path(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.with_file_name(format!("{stem}_progressive.png"))
}

/// `k` chain indices spread evenly from the first step (0) to the last (`len` − 1).
fn spread(len: usize, k: usize) -> Vec<usize> {
    (0..k).map(|j| (j * (len - 1) + (k - 1) / 2) / (k - 1)).collect()
}

pub fn run(opts: &GpuOptions, args: &SampleArgs) -> Result<()> {
    // Installed first, so Ctrl-C at any moment gets the clean stop.
    let stop = super::stop_flag()?;
    if args.images == 0 {
        bail!("--images must be at least 1");
    }
    if args.batch_size == Some(0) {
        bail!("--batch-size must be at least 1");
    }
    viz::check_png_name("--out", &args.out)?;
    let (unet_dir, sched) = locate(&args.model)?;
    let schedule = Schedule::new(&sched);
    let chain = chain(args, &sched, &schedule, args.images, args.seed)?;
    let snapshots = match args.progressive {
        Some(k) if !(2..=chain.len()).contains(&k) => bail!(
            "--progressive {k}: expected between 2 and the number of denoising steps ({})",
            chain.len()
        ),
        Some(k) => spread(chain.len(), k),
        None => Vec::new(),
    };
    let (cfg, table, flat) = load_folder(&unet_dir)?;
    let labels = class_labels(args, &cfg)?;
    let gpu = Gpu::new(opts)?;
    eprintln!("adapter: {}", gpu.describe());
    super::enable_tuning(&gpu, args.tune.no_tune);
    let weights = gpu.tensor(&[table.total], &flat);
    // Images [from, from + count) of the grid, in one pass.
    let build = |from: usize, count: usize| match &labels {
        Some(l) => Sampler::conditional(
            &gpu,
            &cfg,
            &table,
            &weights,
            &l[from..from + count],
            args.guidance.unwrap_or(1.0),
        ),
        None => Sampler::new(&gpu, &cfg, &table, &weights, count),
    };
    // As many images per pass as this adapter holds (each activation must fit one storage
    // binding); the rest in further passes, as training splits its batch into micro-batches.
    let mut per_pass = args.batch_size.unwrap_or(args.images).min(args.images);
    let mut sampler = loop {
        match build(0, per_pass) {
            Ok(s) => break s,
            Err(_) if per_pass > 1 => per_pass = per_pass.div_ceil(2),
            Err(e) => return Err(e.context("not even one image fits this adapter")),
        }
    };
    if super::tune_missing_now(&gpu)? {
        sampler = build(0, per_pass)?;
    }
    let passes = args.images.div_ceil(per_pass);
    if passes > 1 {
        eprintln!(
            "{} images in {passes} passes of up to {per_pass} (what this adapter holds at once)",
            args.images
        );
    }
    let mut progress = super::Progress::new(chain.len() * passes, "denoising steps");
    let mut images = Vec::new();
    // x̂₀ of every image at each snapshot step, in chain order.
    let mut x0_preds: Vec<Vec<f32>> = vec![Vec::new(); snapshots.len()];
    for pass in 0..passes {
        let (from, count) = (pass * per_pass, per_pass.min(args.images - pass * per_pass));
        // The first pass is what a single pass would draw; later ones start from other noise.
        let seed = if pass == 0 {
            args.seed
        } else {
            args.seed ^ ((pass as u64) << 40)
        };
        // A sampler is rebuilt only for the last, smaller pass, or for other images' classes.
        if pass > 0 && (count != per_pass || labels.is_some()) {
            sampler = build(from, count)?;
        }
        let own_chain = match pass {
            0 => None,
            _ => Some(self::chain(args, &sched, &schedule, count, seed)?),
        };
        let chain = own_chain.as_deref().unwrap_or(&chain);
        sampler.draw_noise(seed);
        let done = pass * chain.len();
        let drawn = sampler.run_until(chain, stop, |i, s| {
            if let Some(j) = snapshots.iter().position(|&k| k == i) {
                x0_preds[j].extend(s.read_x0_pred());
            }
            progress.set(done + i + 1);
        });
        let Some(drawn) = drawn else {
            progress.finish();
            eprintln!("interrupted: nothing written");
            return Err(super::Interrupted.into());
        };
        images.extend(drawn);
    }
    progress.finish();
    let size = cfg.sample_size();
    let (c, n) = (cfg.out_channels, args.images);
    // Cycling classes: one class per column.
    let cols = match (&labels, args.class, cfg.null_class()) {
        (Some(_), None, Some(classes)) if n >= classes => classes,
        _ => (n as f64).sqrt().ceil() as usize,
    };
    viz::save_grid(&args.out, &images, [n, c, size, size], cols, 2)?;
    eprintln!("wrote {}", args.out.display());
    if let Some(dir) = &args.each {
        viz::save_each(dir, &images, [n, c, size, size])?;
        eprintln!("wrote {n} images into {}", dir.display());
    }
    if !snapshots.is_empty() {
        // Row = image, column = snapshot.
        let len = c * size * size;
        let k = snapshots.len();
        let strip: Vec<f32> = (0..n)
            .flat_map(|img| {
                x0_preds
                    .iter()
                    .flat_map(move |x| x[img * len..(img + 1) * len].iter().copied())
            })
            .collect();
        let path = progressive_path(&args.out);
        viz::save_grid(&path, &strip, [n * k, c, size, size], k, 2)?;
        let ts: Vec<String> = snapshots.iter().map(|&i| chain[i].t.to_string()).collect();
        eprintln!("wrote {} (x̂₀ at t = {})", path.display(), ts.join(", "));
    }
    Ok(())
}
