//! Samplers beyond Algorithm 2 and the bits/dim evaluation, on the `tiny` preset with a short
//! schedule: the GPU chains (DDPM, DDIM, shared noise, from a given x_t) against CPU chains built
//! from the reference steps with the network's ε read back at every step, DDIM's determinism, and
//! `diffusion::eval::bits_per_dim` against a plain CPU loop over the terms of eq. 5.

mod common;
use std::ops::ControlFlow;

use common::*;

use ddpm_gpu::data::{self, Source};
use ddpm_gpu::diffusion::ddim::{step_coefs, step_pairs, DdimOptions, Spacing};
use ddpm_gpu::diffusion::eval::{
    bits_per_dim, interpolate, lambdas, middle_timesteps, rate_distortion, Bpd, BpdOptions, EpsNet,
};
use ddpm_gpu::diffusion::sampler::{ddim_chain, ddpm_chain, SampleOptions, Sampler, Update};
use ddpm_gpu::diffusion::schedule::{Schedule, SchedulerConfig, VarianceType};
use ddpm_gpu::diffusion::trainer::step_seed;
use ddpm_gpu::diffusion::vlb::{prior_bpd, term_bpd, VlbOptions};
use ddpm_gpu::model::{ParamTable, UNetConfig};
use ddpm_gpu::reference::{self, rng};

/// Relative L2 error of a GPU step against the CPU step fed the same ε.
const STEP_TOL: f64 = 1e-5;
/// Relative L2 error of the final image of a GPU chain against the CPU chain.
const CHAIN_TOL: f64 = 1e-4;
/// Relative difference of the library's bits/dim sum and the test's own loop (same ε, same x_t).
const BPD_TOL: f64 = 1e-12;

/// A tiny model (8×8, one channel) with random weights and a schedule of `t` steps.
fn setup(gpu: &Gpu, images: usize, t: usize, seed: u64) -> (Sampler, Schedule, UNetConfig, ParamTable, Tensor) {
    let model = UNetConfig::preset("tiny").unwrap();
    let table = ParamTable::new(&model);
    let weights = gpu.tensor(&[table.total], &table.init(seed));
    let sched = SchedulerConfig {
        num_train_timesteps: t,
        ..SchedulerConfig::paper()
    };
    let sampler = Sampler::new(gpu, &model, &table, &weights, images).unwrap();
    (sampler, Schedule::new(&sched), model, table, weights)
}

fn ddpm_opts(seed: u64) -> SampleOptions {
    SampleOptions {
        images: 2,
        seed,
        variance: VarianceType::FixedSmall,
        clip: true,
    }
}

fn ddim_opts(eta: f64) -> DdimOptions {
    DdimOptions {
        eta,
        ..DdimOptions::default()
    }
}

fn bitwise_equal(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn ddim_with_eta_0_is_deterministic_and_only_x_t_matters() {
    let gpu = gpu();
    let (mut s, schedule, ..) = setup(&gpu, 2, 50, 3);
    let chain = ddim_chain(&schedule, 10, Spacing::Leading, &ddim_opts(0.0), 7);
    assert_eq!(chain.len(), 10);
    s.draw_noise(7);
    let x_t = s.read_x();
    let first = s.run(&chain, |_, _| {});
    s.draw_noise(7);
    let second = s.run(&chain, |_, _| {});
    assert!(
        bitwise_equal(&first, &second),
        "two DDIM runs from the same seed differ"
    );
    // Another seed for the steps changes nothing when η = 0; only x_T matters.
    let other_seeds = ddim_chain(&schedule, 10, Spacing::Leading, &ddim_opts(0.0), 12345);
    s.set_x(&x_t);
    let third = s.run(&other_seeds, |_, _| {});
    assert!(
        bitwise_equal(&first, &third),
        "η = 0: the step seeds changed the images"
    );
    // ... while another x_T does, and so do the step seeds when η = 1 (the test can fail).
    s.draw_noise(8);
    let other_start = s.run(&chain, |_, _| {});
    assert!(!bitwise_equal(&first, &other_start));
    let noisy = |seed| {
        let c = ddim_chain(&schedule, 10, Spacing::Leading, &ddim_opts(1.0), seed);
        let mut s2 = setup(&gpu, 2, 50, 3).0;
        s2.set_x(&x_t);
        s2.run(&c, |_, _| {})
    };
    assert!(
        !bitwise_equal(&noisy(1), &noisy(2)),
        "η = 1: the step seeds had no effect"
    );
    assert_eq!(first.len(), 2 * 8 * 8);
    assert!(first.iter().all(|v| v.is_finite() && v.abs() <= 1.0 + 1e-6));
}

#[test]
fn gpu_ddim_chain_matches_a_cpu_chain_with_the_networks_eps() {
    let gpu = gpu();
    let (mut s, schedule, ..) = setup(&gpu, 2, 50, 4);
    let (steps, spacing, opts, seed) = (6, Spacing::Trailing, ddim_opts(0.5), 21);
    let chain = ddim_chain(&schedule, steps, spacing, &opts, seed);
    let pairs = step_pairs(schedule.len(), steps, spacing);
    s.draw_noise(seed);
    let mut x_cpu = to_f64(&s.read_x());
    let (mut worst_step, mut worst_x0) = (0.0f64, 0.0f64);
    let last = s.run(&chain, |i, s| {
        let (t, prev) = pairs[i];
        assert_eq!(chain[i].t, t);
        let Update::Ddim(hp) = chain[i].update else {
            panic!("not a DDIM step")
        };
        let c = step_coefs(&schedule.alphas_cumprod, t, prev, &opts);
        let z = rng::normals(hp.seed, x_cpu.len());
        // One CPU step from the GPU's own x_t and ε: the step kernel in the loop.
        let eps = to_f64(&s.read_eps());
        let (x_next, x0) = reference::ddim::step(&x_cpu, &eps, &z, &c);
        worst_step = worst_step.max(rel_l2(&s.read_x(), &x_next));
        worst_x0 = worst_x0.max(rel_l2(&s.read_x0_pred(), &x0));
        x_cpu = x_next;
    });
    let chain_err = rel_l2(&last, &x_cpu);
    println!("DDIM η = 0.5, {steps} trailing steps: worst step error {worst_step:.2e}, worst x̂₀ error {worst_x0:.2e}, final {chain_err:.2e}");
    assert!(worst_step <= STEP_TOL && worst_x0 <= STEP_TOL && chain_err <= CHAIN_TOL);
    assert!(last.iter().all(|v| v.is_finite()));
}

#[test]
fn gpu_ddpm_chain_from_x_t_matches_a_cpu_chain_and_sample_is_that_chain() {
    let gpu = gpu();
    let (mut s, schedule, ..) = setup(&gpu, 2, 30, 5);
    let opts = ddpm_opts(9);
    // From a given x_t at t = 12 (the interpolation path).
    let x_start = random(2 * 64, 1);
    let chain = ddpm_chain(&schedule, 12, &opts, false);
    assert_eq!(
        chain.iter().map(|s| s.t).collect::<Vec<_>>(),
        (0..=12).rev().collect::<Vec<_>>()
    );
    s.set_x(&x_start);
    let mut x_cpu = to_f64(&x_start);
    let mut worst = 0.0f64;
    let last = s.run(&chain, |i, s| {
        let t = chain[i].t;
        let Update::Ddpm(hp) = chain[i].update else {
            panic!("not a DDPM step")
        };
        let c = schedule.step_coefs(t, opts.variance, opts.clip);
        let z = rng::normals(hp.seed, x_cpu.len());
        let (x_next, _) = reference::p_sample::step(&x_cpu, &to_f64(&s.read_eps()), &c, &z);
        worst = worst.max(rel_l2(&s.read_x(), &x_next));
        x_cpu = x_next;
    });
    let chain_err = rel_l2(&last, &x_cpu);
    println!("DDPM from t = 12: worst step error {worst:.2e}, final {chain_err:.2e}");
    assert!(worst <= STEP_TOL && chain_err <= CHAIN_TOL);
    // `sample` is x_T from the seed followed by the full chain.
    let mut calls = 0;
    let sampled = s.sample(&schedule, &opts, |_| calls += 1);
    assert_eq!(calls, 30);
    s.draw_noise(opts.seed);
    let manual = s.run(&ddpm_chain(&schedule, 29, &opts, false), |_, _| {});
    assert!(bitwise_equal(&sampled, &manual));
}

#[test]
fn shared_noise_decodes_equal_inputs_equally() {
    let gpu = gpu();
    let (mut s, schedule, ..) = setup(&gpu, 3, 20, 6);
    let one = random(64, 2);
    let same = one.repeat(3);
    let opts = ddpm_opts(4);
    s.set_x(&same);
    let shared = s.run(&ddpm_chain(&schedule, 10, &opts, true), |_, _| {});
    let img = |v: &[f32], i: usize| v[i * 64..(i + 1) * 64].to_vec();
    assert!(bitwise_equal(&img(&shared, 0), &img(&shared, 1)) && bitwise_equal(&img(&shared, 0), &img(&shared, 2)));
    // Without shared noise the three copies part ways.
    s.set_x(&same);
    let own = s.run(&ddpm_chain(&schedule, 10, &opts, false), |_, _| {});
    assert!(!bitwise_equal(&img(&own, 0), &img(&own, 1)));
    // Image 0 of a shared-noise batch sees the noise a batch of one would draw in the kernel.
    let (mut single, ..) = setup(&gpu, 1, 20, 6);
    single.set_x(&one);
    let alone = single.run(&ddpm_chain(&schedule, 10, &opts, false), |_, _| {});
    let e = rel_l2(&img(&shared, 0), &to_f64(&alone));
    println!("shared noise vs the kernel's own noise for image 0: rel L2 {e:.2e}");
    assert!(e <= CHAIN_TOL);
}

#[test]
fn interpolation_math() {
    let ls = lambdas(5);
    assert_eq!(ls, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
    let (a, b) = (vec![1.0f32, -1.0], vec![3.0f32, 1.0]);
    let x = interpolate(&a, &b, &ls);
    assert_eq!(x, vec![1.0, -1.0, 1.5, -0.5, 2.0, 0.0, 2.5, 0.5, 3.0, 1.0]);
}

#[test]
fn middle_timesteps_are_spread_and_weighted() {
    let (all, w) = middle_timesteps(20, None);
    assert_eq!((all, w), ((1..20).collect::<Vec<_>>(), 1.0));
    assert_eq!(middle_timesteps(20, Some(50)).0.len(), 19);
    let (ts, w) = middle_timesteps(1000, Some(100));
    assert_eq!(ts.len(), 100);
    assert!((w - 9.99).abs() < 1e-12);
    assert!(ts.windows(2).all(|p| p[0] < p[1]) && ts[0] >= 1 && *ts.last().unwrap() <= 999);
    assert_eq!((ts[0], ts[99]), (5, 995));
}

#[test]
fn bits_per_dim_sums_the_terms_of_a_cpu_loop() {
    let gpu = gpu();
    let (_, schedule, model, table, weights) = setup(&gpu, 1, 20, 7);
    let images = 3;
    let ds = data::load(&Source::BuiltinMnist, 1, 8).unwrap();
    let x0 = ds.batch(&[0, 1, 2]);
    let mut net = EpsNet::new(&gpu, &model, &table, &weights, images).unwrap();
    let vlb = VlbOptions {
        variance: VarianceType::FixedSmall,
        clip_denoised: true,
    };
    let opts = BpdOptions {
        vlb,
        middle: None,
        seed: 11,
    };
    let got = bits_per_dim(
        &schedule,
        &x0,
        images,
        &opts,
        |t, x| net.eps(t, x),
        |_, _| ControlFlow::Continue(()),
    )
    .expect("never stopped");

    // The same loop written out: per t one network call for all images, then eq. 5 term by term.
    let ac = &schedule.alphas_cumprod;
    let dim = 64;
    let mut want = vec![0.0; images];
    let (mut prior, mut middle, mut decoder) = (0.0, 0.0, 0.0);
    for (i, w) in want.iter_mut().enumerate() {
        let p = prior_bpd(ac, &to_f64(&x0[i * dim..(i + 1) * dim]));
        *w += p;
        prior += p / images as f64;
    }
    for t in 0..schedule.len() {
        let eps = rng::normals(step_seed(11, t, 9), x0.len());
        let x_t: Vec<f32> = x0
            .iter()
            .zip(&eps)
            .map(|(&x, &e)| (ac[t].sqrt() * x as f64 + (1.0 - ac[t]).sqrt() * e) as f32)
            .collect();
        let e_net = to_f64(&net.eps(t, &x_t));
        for (i, w) in want.iter_mut().enumerate() {
            let r = i * dim..(i + 1) * dim;
            let term = term_bpd(
                &schedule.betas,
                ac,
                t,
                &to_f64(&x0[r.clone()]),
                &to_f64(&x_t[r.clone()]),
                &e_net[r],
                &vlb,
            );
            *w += term;
            if t == 0 {
                decoder += term / images as f64;
            } else {
                middle += term / images as f64;
            }
        }
    }
    let want_total = want.iter().sum::<f64>() / images as f64;
    let rel = |a: f64, b: f64| (a - b).abs() / b.abs();
    let worst = [
        rel(got.total, want_total),
        rel(got.prior, prior),
        rel(got.middle, middle),
        rel(got.decoder, decoder),
    ]
    .into_iter()
    .chain(got.per_image.iter().zip(&want).map(|(&a, &b)| rel(a, b)))
    .fold(0.0, f64::max);
    println!(
        "bits/dim {:.4} (prior {:.2e}, middle {:.4}, decoder {:.4}); worst relative difference to the CPU loop {worst:.1e}",
        got.total, got.prior, got.middle, got.decoder
    );
    assert!(got.exact && got.middle_timesteps.len() == 19);
    assert!(worst <= BPD_TOL);
    assert!(got.total.is_finite() && got.total > 0.0 && got.per_image.iter().all(|v| *v > 0.0));

    // Rate-distortion: a receiver at x_{T−1} holds the prior's bits, at x_0 all but the decoder's.
    let rd = rate_distortion(&got);
    assert_eq!(rd.len(), 20);
    assert_eq!((rd[0].0, rd[0].1), (19, got.prior));
    assert_eq!(rd[19].0, 0);
    assert!((rd[19].1 - (got.prior + got.middle)).abs() <= 1e-12 * got.total);
    assert!(rd.windows(2).all(|p| p[1].1 >= p[0].1), "the rate grows as t falls");
    assert!(rd.iter().all(|p| p.2.is_finite() && (0.0..=255.0).contains(&p.2)));
    println!(
        "distortion (RMSE on [0, 255]) at t = 19: {:.1}, at t = 0: {:.1}",
        rd[0].2, rd[19].2
    );
    // Batches combine into means weighted by their number of images.
    let halves = [
        Bpd {
            per_image: vec![1.0, 2.0],
            total: 1.5,
            ..got.clone()
        },
        Bpd {
            per_image: vec![6.0],
            total: 6.0,
            ..got.clone()
        },
    ];
    let both = Bpd::combine(&halves);
    assert_eq!(both.per_image, vec![1.0, 2.0, 6.0]);
    assert!((both.total - 3.0).abs() < 1e-12 && (both.middle - got.middle).abs() < 1e-12);

    // The strided estimate: 5 of the 19 middle terms, weighted 19/5, the same prior and decoder.
    let est = bits_per_dim(
        &schedule,
        &x0,
        images,
        &BpdOptions {
            middle: Some(5),
            ..opts
        },
        |t, x| net.eps(t, x),
        |_, _| ControlFlow::Continue(()),
    )
    .expect("never stopped");
    println!(
        "estimate from 5 middle timesteps {:?}: {:.4} bits/dim",
        est.middle_timesteps, est.total
    );
    assert!(!est.exact && est.middle_timesteps.len() == 5);
    assert_eq!((est.prior, est.decoder), (got.prior, got.decoder));
    assert!(est.total.is_finite() && est.total > 0.0);
}
