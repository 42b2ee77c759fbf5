//! The diffusion pieces below the model: noise schedules, the counter-based RNG (GPU vs its CPU
//! twin, and statistics), q_sample, p_sample and dropout (GPU vs CPU references).

mod common;
use common::*;
use ddpm_gpu::diffusion::schedule::{
    cosine_alpha_bar, BetaSchedule, Schedule, SchedulerConfig, VarianceType, COSINE_MAX_BETA,
};
use ddpm_gpu::ops::q_sample::Inputs;
use ddpm_gpu::reference::p_sample::StepCoefs;
use ddpm_gpu::{ops, reference};

/// Relative L2 error of q_sample / p_sample / dropout outputs against the f64 references (the
/// kernels compute in f32 from f32 coefficients: ~1e-7 expected).
const TOL: f64 = 1e-5;
/// Largest |GPU normal − f64 normal| (f32 Box–Muller with our own ln/cos polynomials).
const NORMAL_ABS_TOL: f64 = 5e-6;
/// Samples for the statistical tests of the generator.
const N_STAT: usize = 1 << 20;
/// Bounds of the statistical tests, in standard errors. Under the null hypothesis a 6σ deviation
/// has probability 2e-9, so a failure means a defect, not bad luck.
const SIGMAS: f64 = 6.0;
/// Kolmogorov–Smirnov: P(√n·D_n > 1.95) ≈ 0.001 for the true distribution.
const KS_CRIT: f64 = 1.95;
/// Finite-difference tolerance of the dropout reference backward.
const FD_TOL: f64 = 1e-7;
/// f64 vs f64 reimplementations of the same formulas.
const F64_TOL: f64 = 1e-12;

// ---- helpers ------------------------------------------------------------------------------

/// erfc(x) with fractional error < 1.2e-7 everywhere (Chebyshev fit, Numerical Recipes §6.2).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// Standard normal CDF Φ.
fn phi(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// √n times the Kolmogorov–Smirnov distance between the sample and the CDF `cdf`.
fn ks_statistic(sample: &[f64], cdf: &dyn Fn(f64) -> f64) -> f64 {
    let mut s = sample.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = s.len() as f64;
    let d = s
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let f = cdf(x);
            (f - i as f64 / n).abs().max(((i + 1) as f64 / n - f).abs())
        })
        .fold(0.0, f64::max);
    d * n.sqrt()
}

fn mean_var(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    (m, x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n)
}

/// Pearson correlation of two equally long samples.
fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let (ma, va) = mean_var(a);
    let (mb, vb) = mean_var(b);
    let cov = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum::<f64>() / a.len() as f64;
    cov / (va * vb).sqrt()
}

fn gpu_normals(gpu: &Gpu, n: usize, seed: u32) -> Vec<f32> {
    let x = gpu.zeros(&[n]);
    let mut p = Plan::new(gpu);
    ops::p_sample::noise(&mut p, &x, seed);
    p.run();
    gpu.read(&x)
}

fn gpu_uniforms(gpu: &Gpu, n: usize, seed: u32) -> Vec<f32> {
    let y = gpu.zeros(&[n]);
    let mut p = Plan::new(gpu);
    ops::dropout::uniforms(&mut p, &y, seed);
    p.run();
    gpu.read(&y)
}

fn max_abs_diff(got: &[f32], want: &[f64]) -> f64 {
    got.iter()
        .zip(want)
        .map(|(&g, w)| (g as f64 - w).abs())
        .fold(0.0, f64::max)
}

fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("ddpm-gpu-{}-{name}", std::process::id()))
}

// ---- RNG ----------------------------------------------------------------------------------

#[test]
fn threefry_matches_random123_known_answers() {
    // Random123's kat_vectors for threefry2x32_20: (key, counter) -> output.
    let kat = [
        ([0u32, 0], [0u32, 0], [0x6B20_0159u32, 0x99BA_4EFE]),
        ([u32::MAX; 2], [u32::MAX; 2], [0x1CB9_96FC, 0xBB00_2BE7]),
        (
            [0x1319_8A2E, 0x0370_7344],
            [0x243F_6A88, 0x85A3_08D3],
            [0xC492_3A9C, 0x483D_F7A0],
        ),
    ];
    for (key, ctr, want) in kat {
        assert_eq!(
            reference::rng::threefry2x32(key, ctr),
            want,
            "key {key:x?} ctr {ctr:x?}"
        );
    }
}

#[test]
fn gpu_uniforms_equal_cpu_bit_exactly() {
    let gpu = gpu();
    for (n, seed) in [(1usize, 0u32), (1000, 7), (N_STAT, 0xDEAD_BEEF), (4099, u32::MAX)] {
        let got = gpu_uniforms(&gpu, n, seed);
        let want = reference::rng::uniforms(seed, n);
        let mismatches = got
            .iter()
            .zip(&want)
            .filter(|(g, w)| g.to_bits() != w.to_bits())
            .count();
        println!("uniforms n={n} seed={seed:#x}: {mismatches} bit mismatches");
        assert_eq!(mismatches, 0, "GPU uniforms differ from the CPU twin (seed {seed:#x})");
        assert!(got.iter().all(|&u| u > 0.0 && u <= 1.0), "uniform outside (0, 1]");
    }
}

#[test]
fn gpu_normals_match_cpu_and_are_standard_normal() {
    let gpu = gpu();
    let seed = 20_200_619;
    let got = gpu_normals(&gpu, N_STAT, seed);
    let want = reference::rng::normals(seed, N_STAT);
    let err = max_abs_diff(&got, &want);
    println!("normals: max |GPU − CPU f64| = {err:.3e} (tolerance {NORMAL_ABS_TOL:.1e})");
    assert!(
        err <= NORMAL_ABS_TOL,
        "GPU normals differ from the f64 transform by {err:.3e}"
    );

    let z = to_f64(&got);
    let n = z.len() as f64;
    let (mean, var) = mean_var(&z);
    // Standard errors: mean 1/√n, variance √(2/n) for a normal sample.
    let (se_mean, se_var) = (1.0 / n.sqrt(), (2.0 / n).sqrt());
    println!(
        "normals: mean {mean:.2e} (bound {:.2e}), variance {var:.5} (bound 1 ± {:.2e})",
        SIGMAS * se_mean,
        SIGMAS * se_var
    );
    assert!(mean.abs() <= SIGMAS * se_mean, "mean {mean} too far from 0");
    assert!((var - 1.0).abs() <= SIGMAS * se_var, "variance {var} too far from 1");
    let ks = ks_statistic(&z, &phi);
    println!("normals: KS √n·D = {ks:.3} (critical {KS_CRIT} at α = 0.001)");
    assert!(ks <= KS_CRIT, "normals fail the KS test against Φ: √n·D = {ks}");
    // Tails: P(|z| > 3) = 2.7e-3, a binomial count.
    let p3 = 2.0 * (1.0 - phi(3.0));
    let tail = z.iter().filter(|v| v.abs() > 3.0).count() as f64 / n;
    let se_tail = (p3 * (1.0 - p3) / n).sqrt();
    println!(
        "normals: P(|z| > 3) = {tail:.3e} (expected {p3:.3e} ± {:.1e})",
        SIGMAS * se_tail
    );
    assert!((tail - p3).abs() <= SIGMAS * se_tail, "wrong tail mass {tail}");
}

#[test]
fn uniforms_pass_kolmogorov_smirnov() {
    let u = to_f64(&reference::rng::uniforms(99, N_STAT));
    let ks = ks_statistic(&u, &|x: f64| x.clamp(0.0, 1.0));
    println!("uniforms: KS √n·D = {ks:.3} (critical {KS_CRIT})");
    assert!(ks <= KS_CRIT, "uniforms fail the KS test: √n·D = {ks}");
}

#[test]
fn streams_are_reproducible_distinct_and_uncorrelated() {
    let gpu = gpu();
    let n = N_STAT / 4;
    // Same seed, same stream (GPU twice, CPU once).
    let a = gpu_normals(&gpu, n, 5);
    assert_eq!(a, gpu_normals(&gpu, n, 5), "same seed gave different GPU streams");
    // Different seeds: nearby seeds, one bit apart, and far apart.
    let bound = SIGMAS / (n as f64).sqrt();
    for other in [6u32, 5 ^ 0x8000_0000, 0xFFFF_FFFF] {
        let b = gpu_normals(&gpu, n, other);
        let equal = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        let rho = correlation(&to_f64(&a), &to_f64(&b));
        println!("seeds 5 vs {other:#x}: {equal} equal values, correlation {rho:.2e} (bound {bound:.2e})");
        assert!(equal < 10, "seeds 5 and {other:#x} give overlapping streams");
        assert!(rho.abs() <= bound, "seeds 5 and {other:#x} correlate: {rho}");
    }
    // Neighbouring counters: lag-1 and lag-2 correlations of normals and uniforms.
    let z = to_f64(&a);
    let u = to_f64(&reference::rng::uniforms(5, n));
    for (name, v) in [("normals", &z), ("uniforms", &u)] {
        for lag in [1usize, 2] {
            let rho = correlation(&v[..n - lag], &v[lag..]);
            println!("{name}: lag-{lag} correlation {rho:.2e} (bound {bound:.2e})");
            assert!(rho.abs() <= bound, "{name}: counters {lag} apart correlate: {rho}");
        }
    }
    // The two words of a block (the Box–Muller pair) and the flip stream are independent.
    let (w0, w1): (Vec<f64>, Vec<f64>) = (0..n as u32)
        .map(|c| {
            let [x, y] = reference::rng::block(5, 0, c);
            (x as f64, y as f64)
        })
        .unzip();
    let rho = correlation(&w0, &w1);
    println!("words 0 and 1 of a block: correlation {rho:.2e}");
    assert!(rho.abs() <= bound, "the two words of a block correlate: {rho}");
    let flip: Vec<f64> = (0..n as u32)
        .map(|c| reference::rng::block(5, 1, c)[0] as f64)
        .collect();
    let rho = correlation(&w0, &flip);
    println!("streams 0 and 1: correlation {rho:.2e}");
    assert!(rho.abs() <= bound, "streams 0 and 1 correlate: {rho}");
}

// ---- schedule -----------------------------------------------------------------------------

#[test]
fn linear_schedule_matches_the_paper() {
    let s = Schedule::new(&SchedulerConfig::paper());
    assert_eq!(s.len(), 1000);
    assert_eq!(s.betas[0], 1e-4);
    assert!((s.betas[999] - 0.02).abs() < F64_TOL, "β_T = {}", s.betas[999]);
    // ᾱ_T independently: exp(Σ ln(1 − β_t)) with the betas written out again.
    let log_sum: f64 = (0..1000)
        .map(|t| (-(1e-4 + (0.02 - 1e-4) * t as f64 / 999.0)).ln_1p())
        .sum();
    let a_t = s.alphas_cumprod[999];
    println!(
        "linear T=1000: ᾱ_T = {a_t:.6e}, exp Σ ln(1 − β) = {:.6e}",
        log_sum.exp()
    );
    assert!((a_t / log_sum.exp() - 1.0).abs() < 1e-10);
    assert!((a_t - 4.04e-5).abs() < 0.005e-5, "ᾱ_T = {a_t:e}, expected ≈ 4.04e-5");
    // Paper §4: L_T = D_KL(q(x_T|x0) ‖ N(0, I)) ≈ 1e-5 bits per dimension. Per dimension,
    // KL = ½(ᾱ x0² − ᾱ − ln(1 − ᾱ)); averaged over x0 ~ U[−1, 1] (E x0² = 1/3).
    let l_t = 0.5 * (a_t / 3.0 - a_t - (-a_t).ln_1p()) / std::f64::consts::LN_2;
    println!("L_T ≈ {l_t:.3e} bits/dim");
    assert!(
        (5e-6..2e-5).contains(&l_t),
        "L_T = {l_t:e} bits/dim, paper quotes ≈ 1e-5"
    );
    // α, ᾱ_prev and the posterior variance are consistent.
    for t in [0usize, 1, 500, 999] {
        assert_eq!(s.alphas[t], 1.0 - s.betas[t]);
        let prev = if t == 0 { 1.0 } else { s.alphas_cumprod[t - 1] };
        assert_eq!(s.alphas_cumprod_prev[t], prev);
    }
    assert_eq!(s.posterior_variance[0], 0.0);
    assert_eq!(s.variance(0, VarianceType::FixedSmall), 1e-20);
}

#[test]
fn f64_linear_schedule_is_close_to_diffusers_f32() {
    // diffusers: torch.linspace(float32) then cumprod in float32. Emulated here in f32 to
    // measure how far our f64 schedule is from it.
    let s = Schedule::new(&SchedulerConfig::paper());
    let step = (0.02f32 - 1e-4f32) / 999.0;
    let mut prod = 1.0f32;
    let worst = (0..1000)
        .map(|t| {
            let beta = if t < 500 {
                1e-4f32 + step * t as f32
            } else {
                0.02f32 - step * (999 - t) as f32
            };
            prod *= 1.0 - beta;
            (prod as f64 / s.alphas_cumprod[t] - 1.0).abs()
        })
        .fold(0.0, f64::max);
    println!("ᾱ: f64 schedule vs f32 (diffusers-style): worst relative difference {worst:.2e}");
    assert!(worst < 1e-4, "f64 and f32 schedules differ by {worst:e}");
}

#[test]
fn cosine_schedule_matches_closed_form() {
    let cfg = SchedulerConfig {
        beta_schedule: BetaSchedule::SquaredcosCapV2,
        ..SchedulerConfig::paper()
    };
    for t_count in [1000usize, 37] {
        let s = Schedule::new(&SchedulerConfig {
            num_train_timesteps: t_count,
            ..cfg.clone()
        });
        // ᾱ_t telescopes to f((t+1)/T)/f(0) while no β is capped.
        let mut worst = 0.0f64;
        for t in 0..t_count {
            if s.betas[t] >= COSINE_MAX_BETA {
                assert_eq!(t, t_count - 1, "only the last β may reach the cap");
                continue;
            }
            let closed = cosine_alpha_bar((t + 1) as f64 / t_count as f64) / cosine_alpha_bar(0.0);
            worst = worst.max((s.alphas_cumprod[t] / closed - 1.0).abs());
        }
        println!("cosine T={t_count}: ᾱ vs closed form, worst relative error {worst:.2e}");
        assert!(worst < 1e-10);
        assert_eq!(
            s.betas[t_count - 1],
            COSINE_MAX_BETA,
            "f(1) = 0 so the last β is capped"
        );
        assert!(s.betas.iter().all(|&b| b > 0.0 && b <= COSINE_MAX_BETA));
    }
}

#[test]
fn q_sample_table_holds_square_roots() {
    let s = Schedule::new(&SchedulerConfig::paper());
    let table = s.q_sample_table();
    assert_eq!(table.len(), 2000);
    for t in [0usize, 321, 999] {
        let a = s.alphas_cumprod[t];
        assert_eq!(table[2 * t], a.sqrt() as f32);
        assert_eq!(table[2 * t + 1], (1.0 - a).sqrt() as f32);
    }
}

#[test]
fn config_names_match_diffusers() {
    assert_eq!(serde_json::to_string(&BetaSchedule::Linear).unwrap(), "\"linear\"");
    assert_eq!(
        serde_json::to_string(&BetaSchedule::SquaredcosCapV2).unwrap(),
        "\"squaredcos_cap_v2\""
    );
    assert_eq!(
        serde_json::to_string(&VarianceType::FixedSmall).unwrap(),
        "\"fixed_small\""
    );
    assert_eq!(
        serde_json::to_string(&VarianceType::FixedLarge).unwrap(),
        "\"fixed_large\""
    );
}

#[test]
fn config_load_save_round_trip_and_defaults() {
    let cfg = SchedulerConfig {
        num_train_timesteps: 250,
        beta_start: 2e-4,
        beta_end: 0.03,
        beta_schedule: BetaSchedule::SquaredcosCapV2,
        variance_type: VarianceType::FixedLarge,
        clip_sample: false,
        clip_sample_range: 2.5,
        prediction_type: "epsilon".into(),
    };
    let path = temp_path("scheduler_config.json");
    cfg.save(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    for key in [
        "\"_class_name\": \"DDPMScheduler\"",
        "\"num_train_timesteps\"",
        "\"beta_start\"",
        "\"beta_end\"",
        "\"beta_schedule\": \"squaredcos_cap_v2\"",
        "\"variance_type\": \"fixed_large\"",
        "\"clip_sample\": false",
        "\"clip_sample_range\"",
        "\"prediction_type\": \"epsilon\"",
    ] {
        assert!(text.contains(key), "saved config lacks {key}:\n{text}");
    }
    assert_eq!(SchedulerConfig::load(&path).unwrap(), cfg);
    // Missing keys take diffusers' defaults.
    std::fs::write(&path, "{}").unwrap();
    assert_eq!(SchedulerConfig::load(&path).unwrap(), SchedulerConfig::paper());
    // A config as diffusers writes it (google/ddpm-cifar10-32 style, with keys we ignore).
    std::fs::write(
        &path,
        r#"{"_class_name": "DDPMScheduler", "_diffusers_version": "0.27.0", "beta_end": 0.02,
            "beta_schedule": "linear", "beta_start": 0.0001, "clip_sample": true,
            "num_train_timesteps": 1000, "trained_betas": null, "variance_type": "fixed_large",
            "timestep_spacing": "leading", "steps_offset": 0, "thresholding": false}"#,
    )
    .unwrap();
    let loaded = SchedulerConfig::load(&path).unwrap();
    assert_eq!(
        loaded,
        SchedulerConfig {
            variance_type: VarianceType::FixedLarge,
            ..SchedulerConfig::paper()
        }
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn bad_configs_give_errors_naming_file_and_key() {
    let path = temp_path("bad_scheduler_config.json");
    let cases = [
        ("{\"beta_schedule\": \"linear\",", "JSON"),
        ("[1, 2]", "object"),
        ("{\"beta_schedule\": \"scaled_linear\"}", "beta_schedule"),
        ("{\"variance_type\": \"learned_range\"}", "variance_type"),
        ("{\"prediction_type\": \"v_prediction\"}", "prediction_type"),
        ("{\"num_train_timesteps\": \"many\"}", "num_train_timesteps"),
        ("{\"num_train_timesteps\": 0}", "num_train_timesteps"),
        ("{\"beta_start\": \"small\"}", "beta_start"),
        ("{\"beta_start\": 0.5, \"beta_end\": 0.1}", "beta_start"),
        ("{\"clip_sample\": 1}", "clip_sample"),
        ("{\"thresholding\": true}", "thresholding"),
        ("{\"trained_betas\": [0.1, 0.2]}", "trained_betas"),
        ("{\"_class_name\": \"DDIMScheduler\"}", "_class_name"),
    ];
    for (text, key) in cases {
        std::fs::write(&path, text).unwrap();
        let err = format!("{:#}", SchedulerConfig::load(&path).unwrap_err());
        println!("{text} → {err}");
        assert!(err.contains(key), "error for {text} does not name {key}: {err}");
        assert!(
            err.contains(&path.display().to_string()),
            "error does not name the file: {err}"
        );
    }
    let missing = temp_path("no_such_config.json");
    let err = format!("{:#}", SchedulerConfig::load(&missing).unwrap_err());
    assert!(err.contains("no_such_config.json"), "{err}");
    std::fs::remove_file(&path).unwrap();
}

// ---- q_sample -----------------------------------------------------------------------------

#[test]
fn q_sample_matches_reference() {
    let gpu = gpu();
    let sched = Schedule::new(&SchedulerConfig::paper());
    let table = gpu.tensor(&[sched.len(), 2], &sched.q_sample_table());
    // (B, C, H, W, flip, N_data): batch 1, odd sizes, C not a multiple of 4, many images for flips.
    for (b, c, h, w, flip, n_data) in [
        (1usize, 3usize, 5usize, 7usize, false, 4usize),
        (5, 2, 4, 3, true, 9),
        (16, 3, 8, 8, true, 20),
        (3, 1, 1, 1, true, 2),
    ] {
        let img = c * h * w;
        let data = random(n_data * img, (b * 31 + w) as u64);
        let index: Vec<usize> = (0..b).map(|i| (i * 7 + 3) % n_data).collect();
        let t: Vec<usize> = (0..b).map(|i| [0, 999, 500, 1, 123][i % 5]).collect();
        let s = ops::q_sample::QSample {
            batch: b,
            channels: c,
            h,
            w,
            flip,
            first: 0,
        };
        let to_f = |v: &[usize]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
        let (td, ti, tt) = (
            gpu.tensor(&[n_data, c, h, w], &data),
            gpu.tensor(&[b], &to_f(&index)),
            gpu.tensor(&[b], &to_f(&t)),
        );
        let (x_t, eps) = (gpu.zeros(&[b, c, h, w]), gpu.zeros(&[b, c, h, w]));
        let mut p = Plan::new(&gpu);
        let inputs = Inputs {
            data: &td,
            index: &ti,
            t: &tt,
            table: &table,
        };
        let k = ops::q_sample::forward(&mut p, &s, inputs, &x_t, &eps, 11);
        for seed in [11u32, 12] {
            ops::q_sample::set_seed(&p, k, &s, seed);
            p.run();
            let (want_x, want_e) =
                reference::q_sample::forward((c, h, w), flip, &to_f64(&data), &index, &t, &sched.alphas_cumprod, seed);
            let what = format!("q_sample B={b} C={c} H={h} W={w} flip={flip} seed={seed}");
            assert_close(&format!("{what} x_t"), &gpu.read(&x_t), &want_x, TOL);
            assert_close(&format!("{what} eps"), &gpu.read(&eps), &want_e, TOL);
        }
    }
}

#[test]
fn q_sample_flips_and_gathers_the_right_images() {
    // At t = 0 the image is almost clean: check the gather and the flips directly, not through
    // the reference. With √(1 − ᾱ_0) = 0.01 and |ε| ≤ 5.8, |x_t − √ᾱ_0 x0| ≤ 0.058.
    let gpu = gpu();
    let sched = Schedule::new(&SchedulerConfig::paper());
    let table = gpu.tensor(&[sched.len(), 2], &sched.q_sample_table());
    let (b, c, h, w, n_data) = (32usize, 2usize, 3usize, 4usize, 5usize);
    let img = c * h * w;
    // Distinct, well separated pixel values: image k, pixel j → (k·img + j) / (n_data·img) · 2 − 1.
    let data: Vec<f32> = (0..n_data * img)
        .map(|i| (i as f32 / (n_data * img) as f32) * 2.0 - 1.0)
        .collect();
    let index: Vec<usize> = (0..b).map(|i| (i * 3) % n_data).collect();
    let s = ops::q_sample::QSample {
        batch: b,
        channels: c,
        h,
        w,
        flip: true,
        first: 0,
    };
    let x_t = gpu.zeros(&[b, c, h, w]);
    let eps = gpu.zeros(&[b, c, h, w]);
    let mut p = Plan::new(&gpu);
    let inputs = Inputs {
        data: &gpu.tensor(&[n_data, c, h, w], &data),
        index: &gpu.tensor(&[b], &index.iter().map(|&i| i as f32).collect::<Vec<_>>()),
        t: &gpu.zeros(&[b]),
        table: &table,
    };
    ops::q_sample::forward(&mut p, &s, inputs, &x_t, &eps, 2024);
    p.run();
    let (got, e) = (gpu.read(&x_t), gpu.read(&eps));
    let a0 = sched.alphas_cumprod[0].sqrt();
    let mut flipped = 0;
    for (bi, &row) in index.iter().enumerate() {
        let mirrored = reference::q_sample::flip_coin(2024, bi);
        flipped += mirrored as usize;
        for j in 0..img {
            let x = j % w;
            let src = row * img + j - x + if mirrored { w - 1 - x } else { x };
            let i = bi * img + j;
            let clean = got[i] as f64 - (1.0 - sched.alphas_cumprod[0]).sqrt() * e[i] as f64;
            assert!(
                (clean - a0 * data[src] as f64).abs() < 1e-5,
                "image {bi} element {j}: wrong source pixel"
            );
        }
    }
    println!("{flipped} of {b} images flipped");
    assert!(
        flipped > 4 && flipped < b - 4,
        "flip coin is not fair: {flipped} of {b}"
    );
}

// ---- p_sample -----------------------------------------------------------------------------

/// x_{t−1} of one step written directly from ᾱ and β recomputed here (not from the schedule's
/// coefficients): eq. 11 when not clipping (μ_θ = (x_t − β_t/√(1 − ᾱ_t) ε)/√α_t), eq. 7 with the
/// clamped x̂0 when clipping; σ_t² = β̃_t or β_t, no noise at t = 0.
fn direct_step(t: usize, variance: VarianceType, clip: bool, x: f64, eps: f64, z: f64) -> f64 {
    let beta = |s: usize| 1e-4 + (0.02 - 1e-4) * s as f64 / 999.0;
    let abar = |s: usize| (0..=s).map(|k| 1.0 - beta(k)).product::<f64>();
    let (b, a, ab) = (beta(t), 1.0 - beta(t), abar(t));
    let ab_prev = if t == 0 { 1.0 } else { abar(t - 1) };
    let mean = if clip {
        let x0 = ((x - (1.0 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1.0, 1.0);
        ab_prev.sqrt() * b / (1.0 - ab) * x0 + a.sqrt() * (1.0 - ab_prev) / (1.0 - ab) * x
    } else {
        (x - b / (1.0 - ab).sqrt() * eps) / a.sqrt()
    };
    let var = match variance {
        VarianceType::FixedSmall => (1.0 - ab_prev) / (1.0 - ab) * b,
        VarianceType::FixedLarge => b,
    };
    if t == 0 {
        mean
    } else {
        mean + var.sqrt() * z
    }
}

#[test]
fn reference_step_matches_direct_equations() {
    let sched = Schedule::new(&SchedulerConfig::paper());
    let n = 200;
    let x: Vec<f64> = to_f64(&random(n, 1)).iter().map(|v| v * 3.0).collect();
    let eps = to_f64(&random(n, 2));
    let z = reference::rng::normals(3, n);
    for variance in [VarianceType::FixedSmall, VarianceType::FixedLarge] {
        for clip in [false, true] {
            for t in [0usize, 1, 10, 500, 998, 999] {
                let c = sched.step_coefs(t, variance, clip);
                let (got, x0) = reference::p_sample::step(&x, &eps, &c, &z);
                let want: Vec<f64> = (0..n)
                    .map(|i| direct_step(t, variance, clip, x[i], eps[i], z[i]))
                    .collect();
                let err = got
                    .iter()
                    .zip(&want)
                    .map(|(g, w)| (g - w).abs() / (w.abs() + 1.0))
                    .fold(0.0, f64::max);
                assert!(
                    err < 1e-10,
                    "step t={t} {variance:?} clip={clip}: reference vs eq. 7/11 differ by {err:e}"
                );
                if clip {
                    assert!(x0.iter().all(|v| v.abs() <= 1.0), "x̂0 not clipped");
                    assert!(x0.iter().any(|v| v.abs() == 1.0), "test data never reaches the clip");
                }
            }
            // t = 0 adds no noise: the result does not depend on z.
            let c = sched.step_coefs(0, variance, clip);
            assert_eq!(c.sigma, 0.0);
            let big_z = vec![1e3; n];
            assert_eq!(
                reference::p_sample::step(&x, &eps, &c, &z).0,
                reference::p_sample::step(&x, &eps, &c, &big_z).0
            );
        }
    }
    println!("reference p_sample step agrees with eq. 7 / eq. 11 to < 1e-10");
}

#[test]
fn p_sample_matches_reference() {
    let gpu = gpu();
    for cfg in [
        SchedulerConfig::paper(),
        SchedulerConfig {
            beta_schedule: BetaSchedule::SquaredcosCapV2,
            clip_sample_range: 1.5,
            ..SchedulerConfig::paper()
        },
    ] {
        let sched = Schedule::new(&cfg);
        for &(b, c, h, w) in &[(1usize, 3usize, 5usize, 7usize), (2, 2, 3, 1)] {
            let n = b * c * h * w;
            let x: Vec<f32> = random(n, n as u64).iter().map(|v| v * 3.0).collect();
            let e = random(n, n as u64 + 1);
            let (tx, te) = (gpu.tensor(&[b, c, h, w], &x), gpu.tensor(&[b, c, h, w], &e));
            let (tp, t0) = (gpu.zeros(&[b, c, h, w]), gpu.zeros(&[b, c, h, w]));
            let mut p = Plan::new(&gpu);
            let first = sched.p_sample_coefs(999, VarianceType::FixedSmall, true).with_seed(1);
            let k = ops::p_sample::forward(&mut p, &tx, &te, &tp, &t0, &first);
            for variance in [VarianceType::FixedSmall, VarianceType::FixedLarge] {
                for clip in [false, true] {
                    for t in [0usize, 1, 500, 999] {
                        let seed = (t as u32) * 4 + clip as u32 * 2 + variance as u32;
                        let hp = sched.p_sample_coefs(t, variance, clip).with_seed(seed);
                        ops::p_sample::set_params(&p, k, n, &hp);
                        p.run();
                        let z = reference::rng::normals(seed, n);
                        let coefs: StepCoefs = sched.step_coefs(t, variance, clip);
                        let (want_prev, want_x0) = reference::p_sample::step(&to_f64(&x), &to_f64(&e), &coefs, &z);
                        let what = format!(
                            "p_sample {:?} {b}x{c}x{h}x{w} t={t} {variance:?} clip={clip}",
                            cfg.beta_schedule
                        );
                        assert_close(&format!("{what} x_prev"), &gpu.read(&tp), &want_prev, TOL);
                        assert_close(&format!("{what} x0_pred"), &gpu.read(&t0), &want_x0, TOL);
                    }
                }
            }
        }
    }
}

#[test]
fn noise_kernel_reseeds() {
    let gpu = gpu();
    let n = 1001;
    let x = gpu.zeros(&[n]);
    let mut p = Plan::new(&gpu);
    let k = ops::p_sample::noise(&mut p, &x, 1);
    ops::p_sample::set_noise_seed(&p, k, n, 77);
    p.run();
    let err = max_abs_diff(&gpu.read(&x), &reference::rng::normals(77, n));
    println!("noise after reseed: max error {err:.2e}");
    assert!(err <= NORMAL_ABS_TOL);
}

// ---- dropout ------------------------------------------------------------------------------

#[test]
fn dropout_matches_reference() {
    let gpu = gpu();
    for (n, prob, seed) in [
        (1usize, 0.3f32, 1u32),
        (257, 0.1, 2),
        (3 * 5 * 7 * 11 * 13, 0.5, 3),
        (100, 0.0, 4),
    ] {
        let x = random(n, seed as u64);
        let dy = random(n, seed as u64 + 100);
        let dx0 = random(n, seed as u64 + 200);
        let (tx, ty, tdy, tdx) = (gpu.zeros(&[n]), gpu.zeros(&[n]), gpu.zeros(&[n]), gpu.zeros(&[n]));
        gpu.write(&tx, &x);
        gpu.write(&tdy, &dy);
        gpu.write(&tdx, &dx0);
        let mut p = Plan::new(&gpu);
        ops::dropout::forward(&mut p, prob, &tx, &ty, seed);
        ops::dropout::backward(&mut p, prob, &tdy, &tdx, seed);
        p.run();
        let want_y = reference::dropout::forward(prob, &to_f64(&x), seed);
        let want_dx: Vec<f64> = reference::dropout::backward(prob, &to_f64(&dy), seed)
            .iter()
            .zip(&dx0)
            .map(|(g, &a)| g + a as f64)
            .collect();
        assert_close(&format!("dropout forward n={n} p={prob}"), &gpu.read(&ty), &want_y, TOL);
        assert_close(
            &format!("dropout backward n={n} p={prob}"),
            &gpu.read(&tdx),
            &want_dx,
            TOL,
        );
        if prob == 0.0 {
            assert_eq!(gpu.read(&ty), x, "p = 0 must be the identity");
        }
    }
}

#[test]
fn dropout_keeps_the_right_fraction_with_identical_masks() {
    let gpu = gpu();
    let n = N_STAT;
    let ones = gpu.tensor(&[n], &vec![1.0; n]);
    for prob in [0.1f32, 0.5, 0.9] {
        let (y, dx) = (gpu.zeros(&[n]), gpu.zeros(&[n]));
        let mut p = Plan::new(&gpu);
        let kf = ops::dropout::forward(&mut p, prob, &ones, &y, 0);
        let kb = ops::dropout::backward(&mut p, prob, &ones, &dx, 0);
        ops::dropout::set_seed(&p, kf, n, prob, 31);
        ops::dropout::set_seed(&p, kb, n, prob, 31);
        p.run();
        let (fy, bx) = (gpu.read(&y), gpu.read(&dx));
        assert_eq!(fy, bx, "forward and backward masks differ (p = {prob})");
        let scale = 1.0 / (1.0 - prob);
        assert!(fy.iter().all(|&v| v == 0.0 || (v - scale).abs() <= 1e-6 * scale));
        let kept = fy.iter().filter(|&&v| v != 0.0).count() as f64 / n as f64;
        let q = 1.0 - prob as f64;
        let bound = SIGMAS * (q * (1.0 - q) / n as f64).sqrt();
        println!("dropout p={prob}: kept {kept:.5}, expected {q:.5} ± {bound:.1e}");
        assert!((kept - q).abs() <= bound, "kept fraction {kept} vs {q}");
        let mask = reference::dropout::mask(n, prob, 31);
        assert!(
            mask.iter().zip(&fy).all(|(&m, &v)| m == (v != 0.0)),
            "GPU mask differs from CPU"
        );
        // Another seed gives another mask.
        ops::dropout::set_seed(&p, kf, n, prob, 32);
        p.run();
        let other = gpu.read(&y);
        let same = other.iter().zip(&fy).filter(|(a, b)| a == b).count() as f64 / n as f64;
        let expect = q * q + (1.0 - q) * (1.0 - q);
        assert!(
            (same - expect).abs() < 0.01,
            "seeds 31 and 32: agreement {same}, expected {expect}"
        );
    }
}

#[test]
fn dropout_reference_backward_matches_finite_differences() {
    let x = to_f64(&random(60, 9));
    let w = to_f64(&random(60, 10));
    let f = |x: &[f64]| dot(&reference::dropout::forward(0.3, x, 5), &w);
    check_grad("dropout", &f, &x, &reference::dropout::backward(0.3, &w, 5), 60, FD_TOL);
}

#[test]
fn q_sample_split_into_micro_batches_draws_the_same_numbers() {
    // The trainer splits big batches into micro-batches; with `first` each image must get the
    // same noise and flip as in the whole batch, bit for bit.
    let gpu = gpu();
    let sched = Schedule::new(&SchedulerConfig::paper());
    let table = gpu.tensor(&[sched.len(), 2], &sched.q_sample_table());
    let (b, c, h, w, mb) = (6usize, 2usize, 3usize, 5usize, 2usize);
    let img = c * h * w;
    let data = gpu.tensor(&[4, c, h, w], &random(4 * img, 77));
    let index: Vec<f32> = (0..b).map(|i| (i % 4) as f32).collect();
    let t: Vec<f32> = (0..b).map(|i| (i * 150) as f32).collect();
    let whole = ops::q_sample::QSample {
        batch: b,
        channels: c,
        h,
        w,
        flip: true,
        first: 0,
    };
    let (x_all, e_all) = (gpu.zeros(&[b, c, h, w]), gpu.zeros(&[b, c, h, w]));
    let mut p = Plan::new(&gpu);
    let (ti, tt) = (gpu.tensor(&[b], &index), gpu.tensor(&[b], &t));
    let inputs = Inputs {
        data: &data,
        index: &ti,
        t: &tt,
        table: &table,
    };
    ops::q_sample::forward(&mut p, &whole, inputs, &x_all, &e_all, 5);
    let mut parts = Vec::new();
    for first in (0..b).step_by(mb) {
        let s = ops::q_sample::QSample {
            batch: mb,
            first,
            ..whole
        };
        let (x, e) = (gpu.zeros(&[mb, c, h, w]), gpu.zeros(&[mb, c, h, w]));
        let ti = gpu.tensor(&[mb], &index[first..first + mb]);
        let tt = gpu.tensor(&[mb], &t[first..first + mb]);
        let inputs = Inputs {
            data: &data,
            index: &ti,
            t: &tt,
            table: &table,
        };
        ops::q_sample::forward(&mut p, &s, inputs, &x, &e, 5);
        parts.push((x, e));
    }
    p.run();
    let (mut xs, mut es) = (Vec::new(), Vec::new());
    for (x, e) in &parts {
        xs.extend(gpu.read(x));
        es.extend(gpu.read(e));
    }
    assert_eq!(
        gpu.read(&x_all),
        xs,
        "x_t of micro-batches differs from the whole batch"
    );
    assert_eq!(gpu.read(&e_all), es, "ε of micro-batches differs from the whole batch");
}
