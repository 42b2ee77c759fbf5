//! `ddpm-gpu tune`: time every kernel variant at the shapes of a model's training and sampling
//! steps on this adapter, cache the fastest, and compare the tuned step with the heuristic one.

use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use ddpm_gpu::diffusion::sampler::Sampler;
use ddpm_gpu::diffusion::trainer::{TrainConfig, Trainer};
use ddpm_gpu::gpu::{Gpu, GpuOptions};
use ddpm_gpu::model::ParamTable;
use ddpm_gpu::ops::tune;

#[derive(Args, Debug)]
pub struct TuneArgs {
    /// Model: a preset name or a config.json (or a folder holding one).
    #[arg(long, default_value = "mnist")]
    model: String,
    /// Images per training step (default: the preset's batch); sampling is tuned for as many.
    #[arg(long)]
    batch: Option<usize>,
}

/// Median seconds of `steps` training steps (after one).
fn step_seconds(t: &mut Trainer, steps: usize) -> f64 {
    t.run_step();
    t.gpu.sync();
    let mut v: Vec<f64> = (0..steps)
        .map(|_| {
            let start = Instant::now();
            t.run_step();
            t.gpu.sync();
            start.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn run(opts: &GpuOptions, args: &TuneArgs) -> Result<()> {
    let model = super::model_config(&args.model)?;
    let defaults = TrainConfig::for_preset(&args.model);
    let batch = args.batch.unwrap_or(defaults.batch_size);
    if batch == 0 {
        bail!("--batch must be at least 1");
    }
    let cfg = TrainConfig {
        batch_size: batch,
        ..defaults
    };
    let gpu = Gpu::new(opts)?;
    println!("adapter: {}", gpu.describe());
    let table = ParamTable::new(&model);
    let weights = table.init(0);

    // Every case of a training step and a sampling step, measured afresh.
    gpu.tuning.lock().unwrap().enabled = true;
    drop(Trainer::synthetic(&gpu, &model, &cfg, &weights)?);
    let params = gpu.tensor(&[table.total], &weights);
    drop(Sampler::new(&gpu, &model, &table, &params, batch)?);
    let cases = gpu.tuning.lock().unwrap().missing.len();
    println!(
        "{cases} cases (op × shape) in a training and a sampling step of {} at batch {batch}",
        args.model
    );
    let start = Instant::now();
    let tuned = tune::tune_missing(&gpu, std::time::Duration::MAX, |_, _| {})?;
    let secs = start.elapsed().as_secs_f64();
    for t in &tuned {
        let mut times: Vec<(&String, &f64)> = t.times_ms.iter().collect();
        times.sort_by(|a, b| a.1.total_cmp(b.1));
        let list: Vec<String> = times
            .iter()
            .map(|(v, ms)| {
                let mark = match (**v == t.variant, **v == t.heuristic) {
                    (true, true) => " (heuristic, chosen)",
                    (true, false) => " (chosen)",
                    (false, true) => " (heuristic)",
                    _ => "",
                };
                format!("{v} {ms:.3} ms{mark}")
            })
            .collect();
        println!("{}: {}", t.case.describe(), list.join(" | "));
    }
    let changed = tuned.iter().filter(|t| t.variant != t.heuristic).count();
    println!(
        "tuning took {secs:.1} s; {changed} of {} cases chose another variant than the heuristic",
        tuned.len()
    );
    match tune::cache_file(&gpu) {
        Some(path) => {
            tune::save(&gpu, &path, &tuned)?;
            println!("cached in {}", path.display());
        }
        None => println!("not cached: no cache folder (set DDPM_GPU_CACHE)"),
    }

    // The training step with the heuristics, then tuned, back to back.
    let steps = 5;
    gpu.tuning.lock().unwrap().enabled = false;
    let heuristic = step_seconds(&mut Trainer::synthetic(&gpu, &model, &cfg, &weights)?, steps);
    gpu.tuning.lock().unwrap().enabled = true;
    let tuned_step = step_seconds(&mut Trainer::synthetic(&gpu, &model, &cfg, &weights)?, steps);
    println!(
        "training step (median of {steps}): heuristic {:.1} ms, tuned {:.1} ms: {:.2}× the heuristic's speed",
        heuristic * 1e3,
        tuned_step * 1e3,
        heuristic / tuned_step
    );
    Ok(())
}
