//! End to end on the `tiny` preset: training lowers the loss, a resumed run matches an
//! uninterrupted one exactly, and sampling gives finite images of the right shape.

mod common;
use common::*;

use ddpm_gpu::data::{self, Source};
use ddpm_gpu::diffusion::sampler::{SampleOptions, Sampler};
use ddpm_gpu::diffusion::schedule::{Schedule, SchedulerConfig};
use ddpm_gpu::diffusion::trainer::{TrainConfig, Trainer};
use ddpm_gpu::model::{ParamTable, UNetConfig};

/// Mean loss of the last steps must fall below this fraction of the first steps' mean.
const LOSS_DROP: f64 = 0.7;

fn setup(steps: usize) -> (UNetConfig, SchedulerConfig, TrainConfig, data::Dataset) {
    let model = UNetConfig::preset("tiny").unwrap();
    let sched = SchedulerConfig::paper();
    let cfg = TrainConfig {
        batch_size: 8,
        steps,
        lr: 2e-3,
        warmup: 5,
        log_every: 1,
        ..TrainConfig::for_preset("tiny")
    };
    let mut ds = data::load(&Source::BuiltinMnist, 1, 8).unwrap();
    // A small subset keeps the test's data upload cheap.
    ds.n = 256;
    ds.images.truncate(256 * 64);
    (model, sched, cfg, ds)
}

#[test]
fn training_lowers_the_loss() {
    let gpu = gpu();
    let steps = 40;
    let (model, sched, cfg, ds) = setup(steps);
    let weights = ParamTable::new(&model).init(0);
    let mut tr = Trainer::new(&gpu, &model, &sched, &cfg, ds, &weights).unwrap();
    let mut losses = Vec::new();
    for _ in 0..steps {
        tr.run_step();
        losses.push(tr.read_loss().0 as f64);
    }
    assert!(losses.iter().all(|l| l.is_finite()));
    let first: f64 = losses[..5].iter().sum::<f64>() / 5.0;
    let last: f64 = losses[steps - 5..].iter().sum::<f64>() / 5.0;
    println!("loss: first 5 steps {first:.4}, last 5 steps {last:.4} (must fall below {LOSS_DROP} × first)");
    assert!(last < LOSS_DROP * first, "loss did not drop: {first:.4} → {last:.4}");
}

#[test]
fn resume_gives_the_same_weights_as_an_uninterrupted_run() {
    let gpu = gpu();
    let (model, sched, cfg, ds) = setup(7);
    let weights = ParamTable::new(&model).init(1);
    let mut straight = Trainer::new(&gpu, &model, &sched, &cfg, ds.clone(), &weights).unwrap();
    for _ in 0..7 {
        straight.run_step();
    }
    let mut first = Trainer::new(&gpu, &model, &sched, &cfg, ds.clone(), &weights).unwrap();
    for _ in 0..4 {
        first.run_step();
    }
    let path = std::env::temp_dir().join(format!("ddpm-gpu-resume-{}.safetensors", std::process::id()));
    first.save_state(&path).unwrap();
    drop(first);
    let mut resumed = Trainer::new(&gpu, &model, &sched, &cfg, ds, &ParamTable::new(&model).init(99)).unwrap();
    resumed.load_state(&path).unwrap();
    assert_eq!(resumed.step, 4);
    for _ in 0..3 {
        resumed.run_step();
    }
    std::fs::remove_file(&path).unwrap();
    let (a, b) = (straight.read_params(), resumed.read_params());
    let differing = a.iter().zip(&b).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
    println!("{differing} of {} parameters differ bitwise", a.len());
    assert_eq!(differing, 0, "4 + 3 resumed steps differ from 7 straight steps");
    assert_eq!(straight.read_ema(), resumed.read_ema());
}

#[test]
fn sampling_gives_finite_images_of_the_right_shape() {
    let gpu = gpu();
    let model = UNetConfig::preset("tiny").unwrap();
    let table = ParamTable::new(&model);
    let weights = gpu.tensor(&[table.total], &table.init(2));
    let mut sched = SchedulerConfig::paper();
    sched.num_train_timesteps = 50; // a short chain keeps the test fast
    let schedule = Schedule::new(&sched);
    let mut sampler = Sampler::new(&gpu, &model, &table, &weights, 3).unwrap();
    let opts = SampleOptions {
        images: 3,
        seed: 5,
        variance: sched.variance_type,
        clip: true,
    };
    let mut calls = 0;
    let images = sampler.sample(&schedule, &opts, |_| calls += 1);
    assert_eq!(calls, 50);
    assert_eq!(images.len(), 3 * 8 * 8);
    assert!(images.iter().all(|v| v.is_finite()));
    // With clip_sample the last step returns the clipped x̂₀ (no noise at t = 0).
    assert!(
        images.iter().all(|v| v.abs() <= 1.0 + 1e-5),
        "clipped samples stay in [-1, 1]"
    );
}

#[test]
fn micro_batches_give_the_same_update_as_the_whole_batch() {
    let gpu = gpu();
    let (model, sched, cfg, ds) = setup(2);
    let weights = ParamTable::new(&model).init(4);
    let mut whole = Trainer::new(&gpu, &model, &sched, &cfg, ds.clone(), &weights).unwrap();
    let split_cfg = TrainConfig {
        micro_batch: 2,
        ..cfg.clone()
    };
    let mut split = Trainer::new(&gpu, &model, &sched, &split_cfg, ds, &weights).unwrap();
    assert_eq!((whole.micro_batch, split.micro_batch), (8, 2));
    for _ in 0..2 {
        whole.run_step();
        split.run_step();
        let (a, b) = (whole.read_loss(), split.read_loss());
        assert!((a.0 - b.0).abs() <= 1e-6 * a.0.abs() + 1e-7, "loss {a:?} vs {b:?}");
        assert!((a.1 - b.1).abs() <= 1e-5 * a.1.abs(), "gradient norm {a:?} vs {b:?}");
    }
    let (a, b) = (whole.read_params(), split.read_params());
    let moved = to_f64(&a)
        .iter()
        .zip(&weights)
        .map(|(x, &w)| (x - w as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    println!("parameters moved {moved:.3e}; whole vs 4 micro-batches differ by {diff:.3e}");
    assert!(
        diff <= 1e-4 * moved,
        "micro-batched update differs: {diff:.3e} vs step size {moved:.3e}"
    );
}

#[test]
fn parameters_processed_in_chunks_train_the_same() {
    // The paper model's parameters exceed one storage binding on lavapipe, so the optimizer, the
    // gradient norm and the EMA run over chunks; force that path on the tiny model.
    let gpu = gpu();
    let (model, sched, cfg, ds) = setup(2);
    let weights = ParamTable::new(&model).init(6);
    let mut whole = Trainer::new(&gpu, &model, &sched, &cfg, ds.clone(), &weights).unwrap();
    let chunked_cfg = TrainConfig {
        param_chunk: 4096,
        ..cfg.clone()
    };
    let mut chunked = Trainer::new(&gpu, &model, &sched, &chunked_cfg, ds, &weights).unwrap();
    for _ in 0..2 {
        whole.run_step();
        chunked.run_step();
    }
    let (a, b) = (whole.read_loss(), chunked.read_loss());
    assert!((a.1 - b.1).abs() <= 1e-5 * a.1, "gradient norm {a:?} vs {b:?}");
    let (pa, pb) = (whole.read_params(), chunked.read_params());
    let diff = pa
        .iter()
        .zip(&pb)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm = pa.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    println!(
        "{} parameters in chunks of 4096: difference {diff:.3e} (norm {norm:.3e})",
        pa.len()
    );
    assert!(diff <= 1e-6 * norm, "chunked optimizer differs by {diff:.3e}");
    assert!(whole
        .read_ema()
        .iter()
        .zip(chunked.read_ema())
        .all(|(x, y)| (x - y).abs() <= 1e-6));
}

#[test]
fn ema_warm_up_follows_the_power_schedule_on_the_gpu() {
    // The decay is min(ema_decay, 1 − (1 + t)^−p) at update t = 1, 2, …: the first update keeps
    // 1 − 2^−p of the old average, so with p = 1 after one step ema = (init + params₁) / 2.
    let cfg = TrainConfig {
        ema_decay: 0.9,
        ema_warmup_power: 1.0,
        ..TrainConfig::for_preset("tiny")
    };
    assert_eq!(cfg.ema_decay_at(0), 0.5);
    assert!((cfg.ema_decay_at(3) - 0.8).abs() < 1e-15);
    assert_eq!(cfg.ema_decay_at(100), 0.9, "capped at --ema-decay");
    let fixed = TrainConfig {
        ema_warmup_power: 0.0,
        ..cfg.clone()
    };
    assert_eq!(fixed.ema_decay_at(0), 0.9);

    let gpu = gpu();
    let (model, sched, base, ds) = setup(2);
    let cfg = TrainConfig {
        ema_decay: 0.9,
        ema_warmup_power: 1.0,
        ..base
    };
    let weights = ParamTable::new(&model).init(4);
    let mut tr = Trainer::new(&gpu, &model, &sched, &cfg, ds, &weights).unwrap();
    let mut want: Vec<f64> = to_f64(&weights);
    for step in 0..2 {
        tr.run_step();
        let d = cfg.ema_decay_at(step);
        let p = gpu.read(&tr.params);
        want.iter_mut()
            .zip(&p)
            .for_each(|(e, &p)| *e = d * *e + (1.0 - d) * p as f64);
    }
    assert_close("EMA with warm-up after 2 steps", &tr.read_ema(), &want, 1e-6);
}

#[test]
fn pytorch_initialisation_is_uniform_in_one_over_root_fan_in() {
    let table = ParamTable::new(&UNetConfig::preset("mnist").unwrap());
    let w = table.init_pytorch(0);
    let mut weight_bound = 0.0f32;
    for e in &table.entries {
        let v = &w[e.offset..e.offset + e.len()];
        if e.name.contains("norm") {
            let want = if e.name.ends_with(".weight") { 1.0 } else { 0.0 };
            assert!(v.iter().all(|&x| x == want), "{}: γ = 1, β = 0", e.name);
            continue;
        }
        if e.name.ends_with(".weight") {
            weight_bound = 1.0 / (e.shape[1..].iter().product::<usize>() as f32).sqrt();
        }
        let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!(max <= weight_bound, "{}: |w| ≤ 1/√fan_in", e.name);
        if e.len() >= 256 {
            // A uniform on ±b has standard deviation b/√3; no layer starts near zero.
            let std = (v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
            let want = weight_bound as f64 / 3f64.sqrt();
            assert!((std / want - 1.0).abs() < 0.1, "{}: std {std} vs {want}", e.name);
        }
    }
}
