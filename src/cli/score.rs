//! `ddpm-gpu score`: how close a set of generated images is to the real data set, as FID measures
//! it but with features of a classifier trained by ddpm-gpu on the data set (`quality`).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use ddpm_gpu::data::{self, Source};
use ddpm_gpu::gpu::{Gpu, GpuOptions};
use ddpm_gpu::quality::{self, Scorer};

#[derive(Args)]
pub struct ScoreArgs {
    /// The images to score: a PNG grid as `ddpm-gpu sample --out` writes, or a folder of
    /// PNG/JPEG images (as `sample --each` writes).
    #[arg(long)]
    samples: PathBuf,
    /// The labelled real data set the samples imitate: "mnist" (the built-in digits, default), an
    /// MNIST IDX images file with its labels-idx1 sibling, or CIFAR-10 batches.
    #[arg(long, default_value = "mnist")]
    data: String,
    /// Image side in pixels (default: the data set's own).
    #[arg(long)]
    size: Option<usize>,
    /// Image channels, 1 or 3 (default: the data set's own).
    #[arg(long)]
    channels: Option<usize>,
    /// Print the score as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Neither read nor write the cached classifier (train a fresh one).
    #[arg(long)]
    no_cache: bool,
}

pub fn run(opts: &GpuOptions, args: &ScoreArgs) -> Result<()> {
    let source = Source::parse(&args.data);
    let (channels, size) = match (args.channels, args.size) {
        (Some(c), Some(s)) => (c, s),
        (c, s) => {
            let (nc, ns) =
                data::native_shape(&source).map_err(|e| e.context("--data (or give --size and --channels)"))?;
            (c.unwrap_or(nc), s.unwrap_or(ns))
        }
    };
    if channels != 1 && channels != 3 {
        bail!("--channels {channels}: expected 1 or 3");
    }
    if size == 0 {
        bail!("--size must be at least 1");
    }
    let (images, n) = quality::load_images(&args.samples, channels, size)?;
    if n < 2 {
        bail!(
            "--samples {}: {n} image(s) found; scoring needs at least 2",
            args.samples.display()
        );
    }
    let dataset = data::load(&source, channels, size)?;
    let gpu = Gpu::new(opts)?;
    eprintln!("adapter: {}", gpu.describe());
    let cache = if args.no_cache {
        None
    } else {
        ddpm_gpu::files::cache_dir()
    };
    let scorer = Scorer::new(&gpu, &dataset, cache.as_deref(), &mut |line| eprintln!("{line}"))?;
    let score = scorer.score(&gpu, &images, n)?;
    if args.json {
        println!("{}", serde_json::to_string(&score_json(&score))?);
    } else {
        print!("{}", score.report());
    }
    Ok(())
}

/// The score as the keys `train` also writes to metrics.jsonl.
pub fn score_json(s: &quality::Score) -> serde_json::Value {
    serde_json::json!({
        "fd": s.samples.fd,
        "fd_floor": s.floor.fd,
        "fd_excess": s.fd_excess(),
        "score_images": s.samples.images,
        "floor_images": s.floor.images,
        "confidence": s.samples.confidence,
        "confidence_floor": s.floor.confidence,
        "class_entropy": s.samples.class_entropy,
        "class_entropy_floor": s.floor.class_entropy,
        "classifier_accuracy": s.accuracy,
    })
}
