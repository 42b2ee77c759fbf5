//! DDIM: timestep spacings vs diffusers' set_timesteps worked out by hand, the reference step vs
//! diffusers' formulas written out directly, η = 1 vs DDPM's ancestral step, exact recovery of x0
//! along a deterministic trajectory, and the GPU kernel vs the reference (η = 0 and η > 0 with
//! the same counter-based noise), plus the statistics of the noise it adds.

mod common;
use common::*;
use ddpm_gpu::diffusion::ddim::{self, DdimOptions, Spacing};
use ddpm_gpu::diffusion::schedule::{Schedule, SchedulerConfig, VarianceType};
use ddpm_gpu::{ops, reference};

/// GPU vs f64 reference, relative L2 (f32 coefficients and arithmetic).
const TOL: f64 = 1e-5;
/// With η > 0, largest absolute error: the GPU's normals agree with the CPU's to ~5e-6 absolute
/// (tests/ops_diffusion.rs), times σ ≤ 1, plus f32 rounding of values of order 1 (a relative
/// measure is meaningless for single elements where σ z nearly cancels the mean).
const NOISY_ABS_TOL: f64 = 2e-5;
/// Reference vs the direct formulas, both f64.
const F64_TOL: f64 = 1e-12;
/// Elements of the noise-statistics test and the bounds on the standardised noise's sample mean
/// and variance: 5 standard errors (√(1/N) and √(2/N)).
const N_STAT: usize = 1 << 16;
const SIGMAS: f64 = 5.0;

/// ᾱ_t of the paper's schedule (T = 1000, β linear 1e-4 → 0.02), computed here.
fn paper_alphas_cumprod() -> Vec<f64> {
    let mut prod = 1.0;
    (0..1000)
        .map(|t| {
            prod *= 1.0 - (1e-4 + (0.02 - 1e-4) * t as f64 / 999.0);
            prod
        })
        .collect()
}

fn max_abs(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

// ---- timesteps ------------------------------------------------------------------------------

#[test]
fn timesteps_match_diffusers_set_timesteps() {
    use Spacing::*;
    // T = 1000, S = 50. leading: ratio 1000 // 50 = 20, arange(50) · 20 reversed.
    let lead: Vec<usize> = (0..50).rev().map(|k| 20 * k).collect();
    assert_eq!(ddim::timesteps(1000, 50, Leading), lead);
    // trailing: arange(1000, 0, −20) − 1 = 999, 979, .., 19.
    let trail: Vec<usize> = (0..50).map(|k| 999 - 20 * k).collect();
    assert_eq!(ddim::timesteps(1000, 50, Trailing), trail);
    // linspace: round(k · 999/49), k = 49..0; 999/49 = 20.3877..., no value is a tie.
    let lin = [
        999, 979, 958, 938, 917, 897, 877, 856, 836, 816, 795, 775, 754, 734, 714, 693, 673, 652, 632, 612, 591, 571,
        550, 530, 510, 489, 469, 449, 428, 408, 387, 367, 347, 326, 306, 285, 265, 245, 224, 204, 183, 163, 143, 122,
        102, 82, 61, 41, 20, 0,
    ];
    assert_eq!(ddim::timesteps(1000, 50, Linspace), lin);

    // T = 1000, S = 7. leading: ratio 142: 852, 710, 568, 426, 284, 142, 0.
    assert_eq!(ddim::timesteps(1000, 7, Leading), [852, 710, 568, 426, 284, 142, 0]);
    // trailing: 1000 − k · 142.857.. = 1000, 857.14, 714.29, 571.43, 428.57, 285.71, 142.86,
    // rounded 1000, 857, 714, 571, 429, 286, 143, minus 1.
    assert_eq!(ddim::timesteps(1000, 7, Trailing), [999, 856, 713, 570, 428, 285, 142]);
    // linspace: k · 166.5 = 0, 166.5, 333, 499.5, 666, 832.5, 999; numpy rounds ties to even:
    // 166.5 → 166, 499.5 → 500, 832.5 → 832.
    assert_eq!(ddim::timesteps(1000, 7, Linspace), [999, 832, 666, 500, 333, 166, 0]);

    // T = 1000, S = 16, trailing: 1000 − 62.5 k has ties: 937.5 → 938, 812.5 → 812, 687.5 → 688,
    // 562.5 → 562, 437.5 → 438, 312.5 → 312, 187.5 → 188, 62.5 → 62; minus 1.
    assert_eq!(
        ddim::timesteps(1000, 16, Trailing),
        [999, 937, 874, 811, 749, 687, 624, 561, 499, 437, 374, 311, 249, 187, 124, 61]
    );
    // T = 10, S = 3: leading 6, 3, 0; trailing 10, 6.67, 3.33 → 9, 6, 2; linspace 9, 4.5 → 4, 0.
    assert_eq!(ddim::timesteps(10, 3, Leading), [6, 3, 0]);
    assert_eq!(ddim::timesteps(10, 3, Trailing), [9, 6, 2]);
    assert_eq!(ddim::timesteps(10, 3, Linspace), [9, 4, 0]);
    // One step, and all steps.
    assert_eq!(ddim::timesteps(1000, 1, Leading), [0]);
    assert_eq!(ddim::timesteps(1000, 1, Trailing), [999]);
    assert_eq!(ddim::timesteps(1000, 1, Linspace), [0]);
    let all: Vec<usize> = (0..1000).rev().collect();
    for spacing in [Leading, Trailing, Linspace] {
        assert_eq!(ddim::timesteps(1000, 1000, spacing), all, "{spacing:?} with S = T");
    }
    // numpy's arange(100, 0, −100/29) has 30 elements (the last −7e-14, diffusers' timestep −1);
    // we keep the first 29 (this list checked against numpy 2.4).
    assert_eq!(
        ddim::timesteps(100, 29, Trailing),
        [
            99, 96, 92, 89, 85, 82, 78, 75, 71, 68, 65, 61, 58, 54, 51, 47, 44, 40, 37, 33, 30, 27, 23, 20, 16, 13, 9,
            6, 2
        ]
    );
    // All lists descend strictly for every S of T = 1000.
    for steps in 1..=1000 {
        for spacing in [Leading, Trailing, Linspace] {
            let t = ddim::timesteps(1000, steps, spacing);
            assert_eq!(t.len(), steps);
            assert!(
                t.windows(2).all(|w| w[0] > w[1]) && t[0] < 1000,
                "{spacing:?} S={steps}"
            );
        }
    }
    assert_eq!("trailing".parse::<Spacing>(), Ok(Trailing));
    assert!("uniform".parse::<Spacing>().is_err());
    println!(
        "timesteps: leading/trailing/linspace agree with diffusers for (1000, 50), (1000, 7), (1000, 16), (10, 3)"
    );
}

#[test]
fn prev_timestep_is_diffusers_t_minus_ratio() {
    assert_eq!(ddim::prev_timestep(1000, 50, 980), Some(960));
    assert_eq!(ddim::prev_timestep(1000, 50, 20), Some(0));
    assert_eq!(ddim::prev_timestep(1000, 50, 19), None);
    // linspace, S = 7: diffusers steps 999 → 857 although the next timestep is 832.
    let pairs = ddim::step_pairs(1000, 7, Spacing::Linspace);
    assert_eq!(pairs[0], (999, Some(857)));
    assert_eq!(pairs[1], (832, Some(690)));
    assert_eq!(*pairs.last().unwrap(), (0, None));
    let lead = ddim::step_pairs(1000, 50, Spacing::Leading);
    assert!(lead.windows(2).all(|w| w[0].1 == Some(w[1].0)) && lead[49] == (0, None));
}

// ---- reference --------------------------------------------------------------------------------

/// diffusers' DDIMScheduler.step (epsilon) for one element, written out from ᾱ directly.
#[allow(clippy::too_many_arguments)]
fn diffusers_step(ac: &[f64], t: usize, prev: Option<usize>, o: &DdimOptions, x: f64, e: f64, z: f64) -> (f64, f64) {
    let alpha_prod_t = ac[t];
    let alpha_prod_t_prev = match prev {
        Some(p) => ac[p],
        None if o.set_alpha_to_one => 1.0,
        None => ac[0],
    };
    let beta_prod_t = 1.0 - alpha_prod_t;
    let mut pred_original_sample = (x - beta_prod_t.powf(0.5) * e) / alpha_prod_t.powf(0.5);
    if let Some(r) = o.clip {
        pred_original_sample = pred_original_sample.clamp(-r, r);
    }
    let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
    let variance = (beta_prod_t_prev / beta_prod_t) * (1.0 - alpha_prod_t / alpha_prod_t_prev);
    let std_dev_t = o.eta * variance.powf(0.5);
    let mut pred_epsilon = e;
    if o.clipped_eps {
        pred_epsilon = (x - alpha_prod_t.powf(0.5) * pred_original_sample) / beta_prod_t.powf(0.5);
    }
    let pred_sample_direction = (1.0 - alpha_prod_t_prev - std_dev_t * std_dev_t).powf(0.5) * pred_epsilon;
    let prev_sample = alpha_prod_t_prev.powf(0.5) * pred_original_sample + pred_sample_direction + std_dev_t * z;
    (prev_sample, pred_original_sample)
}

#[test]
fn reference_step_matches_diffusers_formulas() {
    let ac = paper_alphas_cumprod();
    let n = 300;
    let x: Vec<f64> = reference::rng::normals(1, n);
    let eps: Vec<f64> = reference::rng::normals(2, n).iter().map(|v| v * 0.9).collect();
    let z = reference::rng::normals(3, n);
    let mut worst = 0.0f64;
    for &(t, prev) in &[
        (999, Some(979)),
        (500, Some(499)),
        (500, Some(100)),
        (20, Some(0)),
        (19, None),
        (0, None),
    ] {
        for eta in [0.0, 0.3, 1.0] {
            for clip in [None, Some(1.0), Some(0.5)] {
                for clipped_eps in [false, true] {
                    for set_alpha_to_one in [true, false] {
                        let o = DdimOptions {
                            eta,
                            clip,
                            clipped_eps,
                            set_alpha_to_one,
                        };
                        let c = ddim::step_coefs(&ac, t, prev, &o);
                        let (got_prev, got_x0) = reference::ddim::step(&x, &eps, &z, &c);
                        for i in 0..n {
                            let (wp, w0) = diffusers_step(&ac, t, prev, &o, x[i], eps[i], z[i]);
                            let e = ((got_prev[i] - wp).abs() / (wp.abs() + 1.0))
                                .max((got_x0[i] - w0).abs() / (w0.abs() + 1.0));
                            worst = worst.max(e);
                            assert!(e < F64_TOL, "t={t} prev={prev:?} {o:?} i={i}: {e:e}");
                        }
                        if let Some(r) = clip {
                            assert!(got_x0.iter().all(|v| v.abs() <= r));
                            assert!(got_x0.iter().any(|v| v.abs() == r), "test data never clips");
                        }
                    }
                }
            }
        }
    }
    println!("reference DDIM step vs diffusers' formulas: worst relative error {worst:.2e}");
}

#[test]
fn eta_one_with_consecutive_steps_is_ddpm() {
    let ac = paper_alphas_cumprod();
    let betas: Vec<f64> = (0..1000).map(|t| 1e-4 + (0.02 - 1e-4) * t as f64 / 999.0).collect();
    // σ² = (1 − ᾱ_{t−1})/(1 − ᾱ_t) · β_t, the posterior variance β̃_t, for every t ≥ 1.
    let mut worst = 0.0f64;
    for t in 1..1000 {
        let c = ddim::step_coefs(
            &ac,
            t,
            Some(t - 1),
            &DdimOptions {
                eta: 1.0,
                ..Default::default()
            },
        );
        let tilde = (1.0 - ac[t - 1]) / (1.0 - ac[t]) * betas[t];
        let e = (c.sigma * c.sigma - tilde).abs() / tilde;
        worst = worst.max(e);
        assert!(e < 1e-9, "t={t}: σ² {} vs β̃ {tilde}", c.sigma * c.sigma);
    }
    println!("η = 1, prev = t − 1: σ² = β̃_t within {worst:.2e} relative");
    // The whole step equals the DDPM ancestral step (fixed_small, same clipping, same z) when ε
    // is recomputed from the clipped x̂0 (without clipping the two agree anyway).
    let sched = Schedule::new(&SchedulerConfig::paper());
    let n = 400;
    let x = reference::rng::normals(4, n);
    let eps = reference::rng::normals(5, n);
    let z = reference::rng::normals(6, n);
    for clip in [false, true] {
        for t in [1usize, 2, 50, 500, 999] {
            let o = DdimOptions {
                eta: 1.0,
                clip: clip.then_some(1.0),
                clipped_eps: true,
                set_alpha_to_one: true,
            };
            let (got, _) = reference::ddim::step(&x, &eps, &z, &ddim::step_coefs(&ac, t, Some(t - 1), &o));
            let (want, _) =
                reference::p_sample::step(&x, &eps, &sched.step_coefs(t, VarianceType::FixedSmall, clip), &z);
            let e = max_abs(&got, &want);
            assert!(e < 1e-9, "t={t} clip={clip}: DDIM(η=1) vs DDPM step differ by {e:e}");
        }
    }
}

#[test]
fn deterministic_ddim_recovers_x0_on_its_trajectory() {
    // With ε_θ = ε fixed, x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε is a fixed point of the η = 0 step for any
    // (t, prev): the leading schedule's chain ends exactly at x0 (no clipping, x0 in [−1, 1]).
    let ac = paper_alphas_cumprod();
    let n = 64;
    let x0: Vec<f64> = to_f64(&random(n, 9));
    let eps = reference::rng::normals(10, n);
    let zeros = vec![0.0; n];
    let o = DdimOptions {
        clip: None,
        ..Default::default()
    };
    for steps in [1usize, 7, 50, 1000] {
        let pairs = ddim::step_pairs(1000, steps, Spacing::Leading);
        let t0 = pairs[0].0;
        let mut x: Vec<f64> = (0..n)
            .map(|i| ac[t0].sqrt() * x0[i] + (1.0 - ac[t0]).sqrt() * eps[i])
            .collect();
        for &(t, prev) in &pairs {
            x = reference::ddim::step(&x, &eps, &zeros, &ddim::step_coefs(&ac, t, prev, &o)).0;
        }
        let e = max_abs(&x, &x0);
        println!("DDIM S={steps}: |x_final − x0| ≤ {e:.2e}");
        assert!(e < 1e-10, "S={steps}: {e:e}");
    }
}

// ---- GPU ----------------------------------------------------------------------------------------

/// Inputs near a real sampling state: x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε with x0 ∈ [−1.2, 1.2] and a
/// slightly wrong ε_θ, so that some x̂0 fall outside [−1, 1] and get clipped.
fn sampling_state(ac: &[f64], t: usize, n: usize, seed: u32) -> (Vec<f32>, Vec<f32>) {
    let x0 = random(n, seed as u64);
    let eps = reference::rng::normals(seed + 1000, n);
    let err = reference::rng::normals(seed + 2000, n);
    let x: Vec<f32> = (0..n)
        .map(|i| (ac[t].sqrt() * 1.2 * x0[i] as f64 + (1.0 - ac[t]).sqrt() * eps[i]) as f32)
        .collect();
    let e: Vec<f32> = (0..n).map(|i| (eps[i] + 0.05 * err[i]) as f32).collect();
    (x, e)
}

#[test]
fn ddim_kernel_matches_reference() {
    let gpu = gpu();
    let ac = paper_alphas_cumprod();
    let cases = [
        (999usize, Some(979usize)),
        (500, Some(250)),
        (500, Some(499)),
        (3, None),
        (0, None),
    ];
    for &(b, c, h, w) in &[(1usize, 1usize, 1usize, 1usize), (1, 3, 5, 7), (3, 2, 9, 13)] {
        let n = b * c * h * w;
        let shape = [b, c, h, w];
        let (tx, te, tp, t0) = (
            gpu.zeros(&shape),
            gpu.zeros(&shape),
            gpu.zeros(&shape),
            gpu.zeros(&shape),
        );
        let mut p = Plan::new(&gpu);
        let first = ddim::step_params(&ac, 999, Some(979), &DdimOptions::default(), n, 0);
        let k = ops::ddim::forward(&mut p, &tx, &te, &tp, &t0, &first);
        for (ci, &(t, prev)) in cases.iter().enumerate() {
            let (x, e) = sampling_state(&ac, t, n, (n + ci) as u32);
            gpu.write(&tx, &x);
            gpu.write(&te, &e);
            for eta in [0.0, 0.5, 1.0] {
                for (clip, clipped_eps) in [(None, false), (Some(1.0), false), (Some(1.0), true)] {
                    let o = DdimOptions {
                        eta,
                        clip,
                        clipped_eps,
                        set_alpha_to_one: true,
                    };
                    let seed = 7 + ci as u32 * 31 + (eta * 10.0) as u32;
                    ops::ddim::set_params(&p, k, n, &ddim::step_params(&ac, t, prev, &o, n, seed));
                    p.run();
                    let z = reference::rng::normals(seed, n);
                    let coefs = ddim::step_coefs(&ac, t, prev, &o);
                    let (want_prev, want_x0) = reference::ddim::step(&to_f64(&x), &to_f64(&e), &z, &coefs);
                    let what = format!("ddim {b}x{c}x{h}x{w} t={t} prev={prev:?} η={eta} clip={clip:?}/{clipped_eps}");
                    let got_prev = gpu.read(&tp);
                    if eta == 0.0 {
                        assert_close(&format!("{what} x_prev"), &got_prev, &want_prev, TOL);
                    } else {
                        let e = max_abs(&to_f64(&got_prev), &want_prev);
                        println!("{what} x_prev: max abs error {e:.3e} (tolerance {NOISY_ABS_TOL:.1e})");
                        assert!(e <= NOISY_ABS_TOL, "{what} x_prev: max abs error {e:.3e}");
                    }
                    assert_close(&format!("{what} x0_pred"), &gpu.read(&t0), &want_x0, TOL);
                }
            }
        }
    }
}

#[test]
fn ddim_noise_has_variance_sigma_squared() {
    // η > 0: x_prev − (deterministic part) = σ z must be N(0, σ²): over N elements the sample mean
    // of z lies within 5/√N of 0 and its sample variance within 5·√(2/N) of 1; two seeds give
    // uncorrelated noise (|ρ| < 5/√N) and the same seed the same noise.
    let gpu = gpu();
    let ac = paper_alphas_cumprod();
    let (t, prev, n) = (600usize, Some(580usize), N_STAT);
    let (x, e) = sampling_state(&ac, t, n, 42);
    let shape = [4, 4, 64, 64];
    let (tx, te, tp, t0) = (
        gpu.tensor(&shape, &x),
        gpu.tensor(&shape, &e),
        gpu.zeros(&shape),
        gpu.zeros(&shape),
    );
    let o = DdimOptions {
        eta: 0.8,
        ..Default::default()
    };
    let coefs = ddim::step_coefs(&ac, t, prev, &o);
    let (det, _) = reference::ddim::step(&to_f64(&x), &to_f64(&e), &vec![0.0; n], &coefs);
    let mut p = Plan::new(&gpu);
    let k = ops::ddim::forward(&mut p, &tx, &te, &tp, &t0, &ddim::step_params(&ac, t, prev, &o, n, 1));
    let noise = |seed: u32| -> Vec<f64> {
        ops::ddim::set_params(&p, k, n, &ddim::step_params(&ac, t, prev, &o, n, seed));
        p.run();
        gpu.read(&tp)
            .iter()
            .zip(&det)
            .map(|(&g, d)| (g as f64 - d) / coefs.sigma)
            .collect()
    };
    let (z1, z2, z1_again) = (noise(11), noise(12), noise(11));
    let nf = n as f64;
    let mean = z1.iter().sum::<f64>() / nf;
    let var = z1.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (nf - 1.0);
    let rho = z1.iter().zip(&z2).map(|(a, b)| a * b).sum::<f64>() / nf;
    println!(
        "σ = {:.4}: noise/σ mean {mean:.2e} (≤ {:.1e}), variance {var:.4} (1 ± {:.1e}), ρ(seed 11, 12) {rho:.2e}",
        coefs.sigma,
        SIGMAS / nf.sqrt(),
        SIGMAS * (2.0 / nf).sqrt()
    );
    assert!(mean.abs() < SIGMAS / nf.sqrt());
    assert!((var - 1.0).abs() < SIGMAS * (2.0 / nf).sqrt());
    assert!(rho.abs() < SIGMAS / nf.sqrt());
    assert!(max_abs(&z1, &z1_again) < 1e-3, "same seed, different noise");
}
