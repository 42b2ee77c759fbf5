//! Whole steps: `cargo bench --bench step`.
//!
//! - A training step (`Trainer::run_step`: q_sample → U-Net forward → L_simple → backward →
//!   gradient norm → Adam → EMA, one submission) on synthetic data (all-zero images; the work
//!   does not depend on the values), synchronised with `read_loss`. Reported per step: median
//!   seconds over the timed steps (after one warm-up step), images/s, and the model's GFLOP/s
//!   = 3 × forward FLOPs × steps/s (the usual forward + 2× backward convention) as % of the
//!   peak-FMA probe measured just before that row, and against 12 GFLOP/s, the simpler FMA probe the issue quotes.
//!   `tiny` and `mnist` at batch 32, `mnist` at 64 (the issue's target batch); `ddpm-cifar10` at `DDPM_BENCH_CIFAR_BATCH` (default 4): its
//!   batch 128 is only built (split into micro-batches), not run (minutes per step on lavapipe).
//! - A sampling step (`Sampler`: U-Net forward + p_sample + copy), timed over the reverse process
//!   of a shortened schedule (the work per step is the same for T = 1000): `mnist` at 16 images
//!   over 20 steps, `ddpm-cifar10` at 2 images over 3 steps (seconds per step on lavapipe).
//!
//! - The cost of the default run (`ddpm-gpu train` with no options), today's against the one
//!   before issue 11 (2000 steps, then 1000 ancestral steps for 16 images): training steps ×
//!   s/step + sampling steps × s/sampling step, both measured back to back here (the machine's
//!   speed drifts, so only the ratio means something).
//!
//! - The training step with the kernels `ddpm-gpu tune` measures fastest on this adapter against
//!   the built-in heuristics' (every case of the step tuned afresh first, then both timed
//!   alternately): `mnist` b32 and `ddpm-cifar10` b`DDPM_BENCH_CIFAR_BATCH`.
//!
//! `DDPM_BENCH_QUICK=1`: `tiny` and `mnist` only (the default run's cost and `mnist`'s tuning
//! too), fewer steps.

use std::time::{Duration, Instant};

use ddpm_gpu::data::Dataset;
use ddpm_gpu::diffusion::sampler::{SampleOptions, Sampler};
use ddpm_gpu::diffusion::schedule::{Schedule, SchedulerConfig, VarianceType};
use ddpm_gpu::diffusion::trainer::{TrainConfig, Trainer};
use ddpm_gpu::gpu::Gpu;
use ddpm_gpu::model::{ParamTable, UNetConfig};
use ddpm_gpu::ops::peak::peak_gflops;
use ddpm_gpu::ops::tune;

/// The FMA probe rate the issue quotes (10-13 GFLOP/s on this machine), for a second ratio.
const ISSUE_PROBE_GFLOPS: f64 = 12.0;

fn synthetic(cfg: &UNetConfig, n: usize) -> Dataset {
    let (c, s) = (cfg.in_channels, cfg.sample_size());
    Dataset {
        images: vec![0.0; n * c * s * s],
        labels: None,
        n,
        channels: c,
        height: s,
        width: s,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Build a trainer for `preset` at `batch`; `None` (with the reason printed) when it does not build.
fn trainer(gpu: &Gpu, preset: &str, batch: usize) -> Option<Trainer> {
    let model = UNetConfig::preset(preset).expect("preset");
    let cfg = TrainConfig {
        batch_size: batch,
        ..TrainConfig::for_preset(preset)
    };
    let weights = ParamTable::new(&model).init(0);
    let data = synthetic(&model, 256.max(batch));
    match Trainer::new(gpu, &model, &SchedulerConfig::paper(), &cfg, data, &weights) {
        Ok(t) => Some(t),
        Err(e) => {
            println!("| {preset} | {batch} | does not build: {e:#} | | | | | | |");
            None
        }
    }
}

/// Time `steps` training steps; returns the model GFLOP/s. The peak-FMA probe is measured right
/// before, so the ratio holds even when the machine's speed drifts during the run (on a shared
/// virtual machine it does, by ±25% over minutes).
fn train_step(gpu: &Gpu, preset: &str, batch: usize, steps: usize) -> Option<f64> {
    let mut t = trainer(gpu, preset, batch)?;
    let peak = peak_gflops(gpu);
    let secs = time_steps(&mut t, steps);
    let passes = (batch / t.micro_batch) as f64;
    let gflops = 3.0 * t.forward_flops() * passes / secs / 1e9;
    println!(
        "| {preset} | {batch} ({} × {}) | {:.3} | {:.1} | {:.2} | {peak:.1} | {:.1}% | {:.0}% | {steps} |",
        batch / t.micro_batch,
        t.micro_batch,
        secs,
        batch as f64 / secs,
        gflops,
        100.0 * gflops / peak,
        100.0 * gflops / ISSUE_PROBE_GFLOPS
    );
    Some(gflops)
}

/// Time one reverse process of `steps` steps (after a warm-up one); prints the per-step figures
/// and returns the seconds per step.
fn sample_step(gpu: &Gpu, preset: &str, images: usize, steps: usize) -> f64 {
    let model = UNetConfig::preset(preset).expect("preset");
    let table = ParamTable::new(&model);
    let weights = gpu.tensor(&[table.total], &table.init(0));
    let mut sampler = Sampler::new(gpu, &model, &table, &weights, images).expect("sampler");
    let schedule = Schedule::new(&SchedulerConfig {
        num_train_timesteps: steps,
        ..SchedulerConfig::paper()
    });
    let opts = SampleOptions {
        images,
        seed: 0,
        variance: VarianceType::FixedSmall,
        clip: true,
    };
    sampler.sample(&schedule, &opts, |_| {}); // warm-up
    let peak = peak_gflops(gpu);
    let start = Instant::now();
    sampler.sample(&schedule, &opts, |_| {});
    let secs = start.elapsed().as_secs_f64() / steps as f64;
    // Forward FLOPs per image, from a training-free U-Net at batch 1 (p_sample adds none to count).
    let net = ddpm_gpu::model::UNet::new(gpu, &model, &table, &weights, None, 1).expect("U-Net");
    let gflops = net.forward_flops * images as f64 / secs / 1e9;
    println!(
        "| {preset} | {images} | {:.3} | {:.1} | {:.2} | {peak:.1} | {:.1}% | {:.0}% | {:.0} s |",
        secs,
        images as f64 / secs,
        gflops,
        100.0 * gflops / peak,
        100.0 * gflops / ISSUE_PROBE_GFLOPS,
        secs * 1000.0
    );
    secs
}

/// Median seconds of `steps` training steps of `t`, after one warm-up step.
fn time_steps(t: &mut Trainer, steps: usize) -> f64 {
    t.run_step();
    t.read_loss();
    median(
        (0..steps)
            .map(|_| {
                let start = Instant::now();
                t.run_step();
                t.read_loss();
                start.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// The default run's cost against the default before issue 11, from step times measured
/// alternately (old sampling, new sampling, training, twice over; medians).
fn default_run_cost(gpu: &Gpu) {
    let new = TrainConfig::for_preset("mnist");
    let (old_steps, old_images, old_sampling_steps) = (2000.0, 16, 1000.0);
    let new_sampling_steps = if new.sample_steps == 0 { 1000 } else { new.sample_steps } as f64;
    println!(
        "\nThe default run (`mnist`, batch {}): before issue 11 2000 steps + 1000 ancestral sampling steps of 16 images; \
         now {} steps + {} sampling steps of {} images:\n",
        new.batch_size, new.steps, new_sampling_steps, new.sample_images
    );
    println!("| preset | images | s/step | images·steps/s | model GFLOP/s | probe | % of FMA probe | vs issue's 12 GFLOP/s probe | 1000 steps |");
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|");
    let (mut s_old, mut s_new, mut train) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..2 {
        s_old.push(sample_step(gpu, "mnist", old_images, 10));
        s_new.push(sample_step(gpu, "mnist", new.sample_images, 10));
        let mut t = trainer(gpu, "mnist", new.batch_size).expect("the trainer builds");
        train.push(time_steps(&mut t, 3));
    }
    let (s_old, s_new, train) = (median(s_old), median(s_new), median(train));
    let old = old_steps * train + old_sampling_steps * s_old;
    let now = new.steps as f64 * train + new_sampling_steps * s_new;
    println!(
        "\ntraining step {train:.3} s; old run {:.0} s (sampling {:.0} s), new run {:.0} s (sampling {:.0} s): \
         **new / old = {:.2}**",
        old,
        old_sampling_steps * s_old,
        now,
        new_sampling_steps * s_new,
        now / old
    );
}

/// The training step with the kernels tuned on this adapter against the heuristics' (alternately,
/// twice; medians), after timing every candidate of the step's cases afresh (no cache).
fn tuned_vs_heuristic(gpu: &Gpu, preset: &str, batch: usize, steps: usize) {
    let set = |on: bool| gpu.tuning.lock().unwrap().enabled = on;
    set(true);
    let start = Instant::now();
    let Some(t) = trainer(gpu, preset, batch) else { return };
    drop(t);
    let tuned = tune::tune_missing(gpu, Duration::MAX, |_, _| {}).expect("tuning");
    let tune_secs = start.elapsed().as_secs_f64();
    let changed = tuned.iter().filter(|t| t.variant != t.heuristic).count();
    let (mut heuristic, mut chosen) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        set(false);
        heuristic.push(time_steps(&mut trainer(gpu, preset, batch).expect("builds"), steps));
        set(true);
        chosen.push(time_steps(&mut trainer(gpu, preset, batch).expect("builds"), steps));
    }
    set(false);
    let (h, c) = (median(heuristic), median(chosen));
    println!(
        "| {preset} | {batch} | {} ({changed} changed) | {tune_secs:.1} | {h:.3} | {c:.3} | {:.2} |",
        tuned.len(),
        h / c
    );
}

fn main() {
    let quick = std::env::var("DDPM_BENCH_QUICK").is_ok_and(|v| v == "1");
    let cifar_batch: usize = std::env::var("DDPM_BENCH_CIFAR_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let gpu = Gpu::for_tests();
    println!(
        "# ddpm-gpu step benchmark{}\n",
        if quick { " (DDPM_BENCH_QUICK=1)" } else { "" }
    );
    println!("- adapter: {}", gpu.describe());
    println!(
        "- LP_NUM_THREADS: {}",
        std::env::var("LP_NUM_THREADS").unwrap_or_else(|_| "unset".into())
    );
    println!("- peak FMA probe: measured before each row (column `probe`, GFLOP/s)\n");
    println!("Training step (median of the timed steps after one warm-up):\n");
    println!(
        "| preset | batch (micro-batches × size) | s/step | images/s | model GFLOP/s | probe | % of FMA probe | vs issue's 12 GFLOP/s probe | steps timed |"
    );
    println!("|---|---|--:|--:|--:|--:|--:|--:|--:|");
    train_step(&gpu, "tiny", 32, if quick { 5 } else { 10 });
    train_step(&gpu, "mnist", 32, if quick { 2 } else { 5 });
    if !quick {
        // The batch the performance issue's step target is stated at.
        train_step(&gpu, "mnist", 64, 3);
        let rate = train_step(&gpu, "ddpm-cifar10", cifar_batch, 1);
        let start = Instant::now();
        if let (Some(t), Some(rate)) = (trainer(&gpu, "ddpm-cifar10", 128), rate) {
            println!(
                "\n`ddpm-cifar10` at batch 128 builds as {} micro-batches of {} ({:.1} s to build); not run: \
                 at the batch-{cifar_batch} rate a step would take about {:.0} s.",
                128 / t.micro_batch,
                t.micro_batch,
                start.elapsed().as_secs_f64(),
                3.0 * t.forward_flops() * (128 / t.micro_batch) as f64 / 1e9 / rate
            );
        }
    }
    println!("\nSampling step (U-Net forward + p_sample + copy; model GFLOP/s = forward FLOPs × steps/s):\n");
    println!(
        "| preset | images | s/step | images·steps/s | model GFLOP/s | probe | % of FMA probe | vs issue's 12 GFLOP/s probe | 1000 steps |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|");
    sample_step(&gpu, "mnist", 16, 20);
    if !quick {
        sample_step(&gpu, "ddpm-cifar10", 2, 3);
    }
    default_run_cost(&gpu);

    println!("\nTuned kernels against the heuristics (`ddpm-gpu tune`; training step, s):\n");
    println!("| preset | batch | cases tuned | tuning s | heuristic | tuned | speed-up |");
    println!("|---|--:|--:|--:|--:|--:|--:|");
    tuned_vs_heuristic(&gpu, "mnist", 32, if quick { 2 } else { 5 });
    if !quick {
        tuned_vs_heuristic(&gpu, "ddpm-cifar10", cifar_batch, 1);
    }
}
