//! Class-conditional training and classifier-free guidance on a `tiny` model with a class
//! embedding: the guided ε is the mix of the conditional and unconditional predictions, the class
//! changes the prediction, training draws labels with dropout deterministically and learns the
//! class embedding, and inputs that cannot work are refused.

mod common;
use common::*;

use ddpm_gpu::data::{self, Source};
use ddpm_gpu::diffusion::ddim::{step_coefs, step_pairs, DdimOptions, Spacing};
use ddpm_gpu::diffusion::sampler::{ddim_chain, Sampler};
use ddpm_gpu::diffusion::schedule::{Schedule, SchedulerConfig};
use ddpm_gpu::diffusion::trainer::{TrainConfig, Trainer};
use ddpm_gpu::model::{ParamTable, UNetConfig};
use ddpm_gpu::reference;

/// Relative L2 error of the guided ε against the mix computed on the CPU from two separate runs,
/// and of the guided step's x against the CPU DDIM step with that ε.
const MIX_TOL: f64 = 1e-5;
/// A changed class must move ε by at least this relative L2 (it moves by ~1e-1 here).
const CLASS_EFFECT: f64 = 1e-3;

/// The tiny preset with `classes` classes plus the "no class" label.
fn conditional(classes: usize) -> UNetConfig {
    UNetConfig {
        num_class_embeds: Some(classes + 1),
        ..UNetConfig::preset("tiny").unwrap()
    }
}

fn rel_diff(a: &[f32], b: &[f32]) -> f64 {
    rel_l2(a, &to_f64(b))
}

#[test]
fn guided_eps_mixes_the_conditional_and_unconditional_predictions() {
    let gpu = gpu();
    let model = conditional(3);
    let table = ParamTable::new(&model);
    // The paper's init makes every res block's last conv and conv_out ~0, so that ε hardly
    // depends on anything: perturb every weight to get a network whose class matters.
    let noisy: Vec<f32> = table
        .init(5)
        .iter()
        .zip(random(table.total, 6))
        .map(|(w, r)| w + 0.2 * r)
        .collect();
    let weights = gpu.tensor(&[table.total], &noisy);
    let schedule = Schedule::new(&SchedulerConfig {
        num_train_timesteps: 20,
        ..SchedulerConfig::paper()
    });
    // One DDIM step from the same x at t = 14, for each sampler.
    let opts = DdimOptions::default();
    let chain = ddim_chain(&schedule, 1, Spacing::Trailing, &opts, 0);
    let (t, prev) = step_pairs(schedule.len(), 1, Spacing::Trailing)[0];
    let coefs = step_coefs(&schedule.alphas_cumprod, t, prev, &opts);
    let x = random(3 * 64, 9);
    let eps_of = |mut s: Sampler| {
        s.set_x(&x);
        s.run(&chain, |_, _| {});
        (s.read_eps(), s.read_x())
    };
    let labels = [0, 2, 1];
    let (cond, _) = eps_of(Sampler::conditional(&gpu, &model, &table, &weights, &labels, 1.0).unwrap());
    let (uncond, _) = eps_of(Sampler::new(&gpu, &model, &table, &weights, 3).unwrap());
    let (other, _) = eps_of(Sampler::conditional(&gpu, &model, &table, &weights, &[1, 1, 1], 1.0).unwrap());
    let effect = rel_diff(&cond, &uncond).min(rel_diff(&cond, &other));
    println!("class effect on ε: rel L2 {effect:.3e} (must exceed {CLASS_EFFECT:.0e})");
    assert!(effect > CLASS_EFFECT, "the class label does not change ε");
    for scale in [0.0f32, 2.5, -1.0] {
        let (guided, x_next) = eps_of(Sampler::conditional(&gpu, &model, &table, &weights, &labels, scale).unwrap());
        let want: Vec<f64> = cond
            .iter()
            .zip(&uncond)
            .map(|(&c, &u)| u as f64 + scale as f64 * (c as f64 - u as f64))
            .collect();
        assert_close(&format!("guided ε, s = {scale}"), &guided, &want, MIX_TOL);
        // η = 0: the noise term is zero.
        let (want_x, _) = reference::ddim::step(&to_f64(&x), &to_f64(&guided), &vec![0.0; x.len()], &coefs);
        assert_close(&format!("guided DDIM step, s = {scale}"), &x_next, &want_x, MIX_TOL);
    }
}

fn setup(model: &UNetConfig, class_dropout: f64) -> (SchedulerConfig, TrainConfig, data::Dataset) {
    let cfg = TrainConfig {
        batch_size: 8,
        steps: 10,
        lr: 2e-3,
        warmup: 1,
        class_dropout,
        ..TrainConfig::for_preset("tiny")
    };
    let mut ds = data::load(&Source::BuiltinMnist, 1, 8).unwrap();
    ds.n = 256;
    ds.images.truncate(256 * 64);
    ds.labels.as_mut().unwrap().truncate(256);
    assert_eq!(model.sample_size(), 8);
    (SchedulerConfig::paper(), cfg, ds)
}

#[test]
fn training_draws_labels_with_dropout_and_learns_the_class_embedding() {
    let gpu = gpu();
    let model = conditional(10);
    let table = ParamTable::new(&model);
    let weights = table.init(0);
    let (sched, cfg, ds) = setup(&model, 0.25);
    let labels = ds.labels.clone().unwrap();
    let mut tr = Trainer::new(&gpu, &model, &sched, &cfg, ds.clone(), &weights).unwrap();

    // Labels: the rows' own, or the "no class" label 10 about a quarter of the time, the same on
    // every draw of a step.
    let (mut dropped, mut total) = (0, 0);
    for step in 0..200 {
        let (rows, _) = tr.batch_draw(step);
        let drawn = tr.label_draw(step, &rows).unwrap();
        assert_eq!(Some(&drawn), tr.label_draw(step, &rows).as_ref());
        for (&r, &l) in rows.iter().zip(&drawn) {
            if l == 10 {
                dropped += 1;
            } else {
                assert_eq!(l, labels[r] as usize, "row {r}");
            }
            total += 1;
        }
    }
    let frac = dropped as f64 / total as f64;
    println!("labels dropped: {dropped} of {total} ({frac:.3}, expected 0.25)");
    assert!((0.22..0.28).contains(&frac), "dropout fraction {frac}");

    for _ in 0..cfg.steps {
        tr.run_step();
    }
    let (loss, _) = tr.read_loss();
    assert!(loss.is_finite());
    let e = table.get("class_embedding.weight").unwrap();
    let after = tr.read_params();
    let moved: Vec<f64> = (0..11)
        .map(|row| {
            let r = e.offset + row * 64..e.offset + (row + 1) * 64;
            rel_diff(&after[r.clone()], &weights[r])
        })
        .collect();
    let least = moved.iter().cloned().fold(f64::INFINITY, f64::min);
    println!("class embedding rows moved by (rel L2) at least {least:.2e}");
    assert!(least > 1e-3, "every class row, the no-class row too, trains: {moved:?}");

    // Without dropout no label is "no class"; with dropout near 1 (1 itself is refused) all of
    // these draws are.
    for (p, want_null) in [(0.0, false), (0.999, true)] {
        let cfg = TrainConfig {
            class_dropout: p,
            ..cfg.clone()
        };
        let tr = Trainer::new(&gpu, &model, &sched, &cfg, ds.clone(), &weights).unwrap();
        let (rows, _) = tr.batch_draw(3);
        let drawn = tr.label_draw(3, &rows).unwrap();
        assert!(
            drawn.iter().all(|&l| (l == 10) == want_null),
            "class_dropout {p}: {drawn:?}"
        );
    }
}

#[test]
fn conditional_inputs_that_cannot_work_are_refused() {
    let gpu = gpu();
    let (sched, cfg, ds) = setup(&conditional(10), 0.1);
    let err = |model: &UNetConfig, ds: data::Dataset| {
        let weights = ParamTable::new(model).init(0);
        match Trainer::new(&gpu, model, &sched, &cfg, ds, &weights) {
            Ok(_) => panic!("accepted"),
            Err(e) => format!("{e:#}"),
        }
    };
    let mut unlabelled = ds.clone();
    unlabelled.labels = None;
    assert!(err(&conditional(10), unlabelled).contains("no labels"));
    // MNIST has labels up to 9: 5 classes leave no room for them.
    let e = err(&conditional(5), ds);
    assert!(e.contains("label") && e.contains("num_class_embeds"), "{e}");

    let model = conditional(3);
    let table = ParamTable::new(&model);
    let weights = gpu.tensor(&[table.total], &table.init(0));
    let e = Sampler::conditional(&gpu, &model, &table, &weights, &[0, 3], 2.0)
        .err()
        .unwrap();
    assert!(format!("{e}").contains("class 3"), "{e}");
    let plain = UNetConfig::preset("tiny").unwrap();
    let table = ParamTable::new(&plain);
    let weights = gpu.tensor(&[table.total], &table.init(0));
    let e = Sampler::conditional(&gpu, &plain, &table, &weights, &[0], 2.0)
        .err()
        .unwrap();
    assert!(format!("{e}").contains("not class-conditional"), "{e}");
    let bad = UNetConfig {
        class_embed_type: Some("timestep".into()),
        ..conditional(3)
    };
    assert!(format!("{}", bad.validate().unwrap_err()).contains("class_embed_type"));
}
