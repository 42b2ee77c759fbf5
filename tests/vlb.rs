//! Variational bound in bits/dim: normal_kl and the erfc-based normal CDF vs closed forms and
//! numerical integration, the discretized Gaussian decoder (sums to one, bins vs integration),
//! the prior term's size for the paper's schedule, and term_bpd vs DDPM's eq. 12 and vs direct
//! numerical integration of the KL and of the decoder likelihood.

use ddpm_gpu::diffusion::schedule::VarianceType;
use ddpm_gpu::diffusion::vlb::{self, VlbOptions};
use ddpm_gpu::reference::rng::normals;
use std::f64::consts::{LN_2, PI};

/// f64 against closed forms.
const F64_TOL: f64 = 1e-12;
/// f64 against composite Simpson integration (the integration error is far below this).
const QUAD_TOL: f64 = 1e-9;

/// Composite Simpson rule of f over [a, b] with `m` (even) intervals.
fn simpson(f: &dyn Fn(f64) -> f64, a: f64, b: f64, m: usize) -> f64 {
    let h = (b - a) / m as f64;
    let inner: f64 = (1..m)
        .map(|i| f(a + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 })
        .sum();
    (f(a) + f(b) + inner) * h / 3.0
}

fn gauss_pdf(x: f64, mean: f64, var: f64) -> f64 {
    (-(x - mean).powi(2) / (2.0 * var)).exp() / (2.0 * PI * var).sqrt()
}

/// The paper's linear schedule (T = 1000, β from 1e-4 to 0.02) and its ᾱ.
fn paper_schedule() -> (Vec<f64>, Vec<f64>) {
    let betas: Vec<f64> = (0..1000).map(|t| 1e-4 + (0.02 - 1e-4) * t as f64 / 999.0).collect();
    let mut prod = 1.0;
    let ac = betas
        .iter()
        .map(|b| {
            prod *= 1.0 - b;
            prod
        })
        .collect();
    (betas, ac)
}

/// An 8-bit image on the grid k/127.5 − 1, including both extreme values.
fn grid_image(n: usize, seed: u32) -> Vec<f64> {
    let mut x: Vec<f64> = normals(seed, n)
        .iter()
        .map(|z| ((z * 80.0 + 127.5).round().clamp(0.0, 255.0)) / 127.5 - 1.0)
        .collect();
    x[0] = -1.0;
    x[1] = 1.0;
    x
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

#[test]
fn erfc_and_normal_cdf_are_accurate() {
    // Values of Python's math.erfc (the C library's).
    let known = [
        (0.0, 1.0),
        (0.3, 0.6713732405408726),
        (0.5, 0.4795001221869535),
        (1.4999, 0.03390674833770473),
        (1.5, 0.033894853524689274),
        (-1.0, 1.8427007929497148),
        (2.0, 0.004677734981047266),
        (2.5, 4.069520174449589e-4),
        (3.0, 2.2090496998585438e-05),
        (5.0, 1.5374597944280351e-12),
        (10.0, 2.088487583762545e-45),
        (26.0, 5.663192408856143e-296),
    ];
    let mut worst = 0.0f64;
    for (x, want) in known {
        let e = rel(vlb::erfc(x), want);
        worst = worst.max(e);
        println!("erfc({x}) relative error {e:.2e}");
        assert!(e < 1e-14, "erfc({x}) = {:e}, want {want:e} ({e:e})", vlb::erfc(x));
    }
    println!("erfc: worst relative error {worst:.2e} against math.erfc");
    let mut worst = 0.0f64;
    // Φ against integration of the density, and symmetry, across the switch points ±1.5·√2.
    for x in [-6.0, -2.2, -2.1, -1.0, 0.0, 0.7, 2.1, 2.2, 6.0] {
        let tail = simpson(&|u| gauss_pdf(u, 0.0, 1.0), -40.0, x, 20000);
        let got = vlb::standard_normal_cdf(x);
        let e = rel(got, tail);
        worst = worst.max(e);
        assert!(e < QUAD_TOL, "Φ({x}) = {got:e} vs integral {tail:e}");
        assert!((got + vlb::standard_normal_cdf(-x) - 1.0).abs() < 1e-15);
    }
    println!("Φ: worst relative error {worst:.2e} against Simpson integration");
}

#[test]
fn normal_kl_matches_closed_form_and_is_nonnegative() {
    let mut worst = 0.0f64;
    let z = normals(1, 400);
    for i in 0..100 {
        let (m1, m2) = (z[4 * i], z[4 * i + 1] * 2.0);
        let (lv1, lv2) = (z[4 * i + 2] * 3.0, z[4 * i + 3] * 3.0);
        let (s1, s2) = ((0.5 * lv1).exp(), (0.5 * lv2).exp());
        // log(σ2/σ1) + (σ1² + (μ1 − μ2)²)/(2σ2²) − ½
        let want = (s2 / s1).ln() + (s1 * s1 + (m1 - m2).powi(2)) / (2.0 * s2 * s2) - 0.5;
        let got = vlb::normal_kl(m1, lv1, m2, lv2);
        let e = (got - want).abs() / (want.abs() + 1e-3);
        worst = worst.max(e);
        assert!(e < F64_TOL, "KL({m1}, {lv1} ‖ {m2}, {lv2}) = {got} vs {want}");
        assert!(got >= 0.0);
        assert_eq!(vlb::normal_kl(m1, lv1, m1, lv1), 0.0);
    }
    // Against ∫ q log(q/p) for a few pairs.
    for (m1, v1, m2, v2) in [(0.0, 1.0, 0.0, 2.0), (0.3, 0.01, -0.1, 0.05), (1.0, 4e-4, 1.01, 3e-4)] {
        let s1 = f64::sqrt(v1);
        let f = |x: f64| {
            let q = gauss_pdf(x, m1, v1);
            if q == 0.0 {
                0.0
            } else {
                q * (q / gauss_pdf(x, m2, v2)).ln()
            }
        };
        let want = simpson(&f, m1 - 15.0 * s1, m1 + 15.0 * s1, 20000);
        let got = vlb::normal_kl(m1, v1.ln(), m2, v2.ln());
        let e = rel(got, want);
        worst = worst.max(e);
        assert!(e < QUAD_TOL, "KL vs integral: {got} vs {want}");
    }
    println!("normal_kl: worst relative error {worst:.2e}");
}

#[test]
fn discretized_likelihood_sums_to_one_and_matches_integration() {
    let bins: Vec<f64> = (0..256).map(|k| k as f64 / 127.5 - 1.0).collect();
    let mut worst_sum = 0.0f64;
    for mean in [-1.3, -1.0, -0.5, 0.0, 0.37, 0.999, 1.2] {
        for scale in [1e-3, 0.0074, 0.05, 0.3, 1.0, 3.0] {
            let log_scale = f64::ln(scale);
            let total: f64 = bins
                .iter()
                .map(|&x| vlb::discretized_gaussian_log_likelihood(x, mean, log_scale).exp())
                .sum();
            // Bins clamped at 1e-12 add at most 256e-12.
            worst_sum = worst_sum.max((total - 1.0).abs());
            assert!((total - 1.0).abs() < 1e-9, "mean {mean} scale {scale}: Σ p = {total}");
            // Interior bins against ∫ of the density over [x − 1/255, x + 1/255]; the edge bins
            // against the integral from/to ±(|mean| + 40 σ + 2).
            for &k in &[0usize, 1, 100, 127, 128, 200, 254, 255] {
                let x = bins[k];
                let far = f64::abs(mean) + 40.0 * scale + 2.0;
                let lo = if k == 0 { -far } else { x - 1.0 / 255.0 };
                let hi = if k == 255 { far } else { x + 1.0 / 255.0 };
                // Integrate piecewise around the mean so the peak is resolved.
                let pdf = |u: f64| gauss_pdf(u, mean, scale * scale);
                let mut want = 0.0;
                let cuts = [
                    lo,
                    (mean - 8.0 * scale).clamp(lo, hi),
                    (mean + 8.0 * scale).clamp(lo, hi),
                    hi,
                ];
                for w in cuts.windows(2) {
                    if w[1] > w[0] {
                        want += simpson(&pdf, w[0], w[1], 4000);
                    }
                }
                let got = vlb::discretized_gaussian_log_likelihood(x, mean, log_scale).exp();
                if want > 1e-10 {
                    assert!(
                        rel(got, want) < 1e-8,
                        "bin {k}, mean {mean}, scale {scale}: {got:e} vs integral {want:e}"
                    );
                } else {
                    assert!(got < 1e-10 + 1e-12, "bin {k}: {got:e} vs ≈0");
                }
            }
        }
    }
    // Far away: clamped at 1e-12.
    assert_eq!(
        vlb::discretized_gaussian_log_likelihood(0.0, 0.9, f64::ln(1e-3)),
        1e-12f64.ln()
    );
    println!("discretized decoder: |Σ p − 1| ≤ {worst_sum:.2e} over 42 (mean, scale) pairs");
}

#[test]
fn prior_term_is_tiny_for_the_paper_schedule() {
    let (_, ac) = paper_schedule();
    let a = ac[999];
    assert!(rel(a, 4.035829765375676e-05) < 1e-9, "ᾱ_999 = {a:e}");
    // KL(N(√a x, 1 − a) ‖ N(0, 1)) = ½ (−a − ln(1 − a) + a x²) per element.
    let per = |x: f64| 0.5 * (-a - (-a).ln_1p() + a * x * x) / LN_2;
    for (x0, what) in [
        (vec![1.0, -1.0, 1.0], "±1"),
        (vec![0.0; 5], "0"),
        (grid_image(3072, 4), "image"),
    ] {
        let got = vlb::prior_bpd(&ac, &x0);
        let want = x0.iter().map(|&x| per(x)).sum::<f64>() / x0.len() as f64;
        println!("prior bpd, x0 = {what}: {got:.4e} bits/dim");
        assert!(rel(got, want) < 1e-9, "{got:e} vs {want:e}");
        assert!(got < 3e-5);
    }
    // x0 = ±1: 2.9113e-5 bits/dim; x0 = 0: 5.87e-10.
    assert!(rel(vlb::prior_bpd(&ac, &[1.0]), 2.9112945420307866e-05) < 1e-8);
}

/// Posterior q(x_{t−1}|x_t, x_0) = N(c0 x0 + c1 x_t, β̃_t) of eq. 6–7, written out here.
fn posterior(betas: &[f64], ac: &[f64], t: usize) -> (f64, f64, f64) {
    let a_prev = if t == 0 { 1.0 } else { ac[t - 1] };
    let c0 = a_prev.sqrt() * betas[t] / (1.0 - ac[t]);
    let c1 = (1.0 - betas[t]).sqrt() * (1.0 - a_prev) / (1.0 - ac[t]);
    (c0, c1, (1.0 - a_prev) / (1.0 - ac[t]) * betas[t])
}

/// x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε and a model ε_θ = ε + `err` · noise.
fn noisy(ac: &[f64], t: usize, x0: &[f64], err: f64, seed: u32) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let eps = normals(seed, x0.len());
    let wrong = normals(seed + 1, x0.len());
    let x_t = x0
        .iter()
        .zip(&eps)
        .map(|(x, e)| ac[t].sqrt() * x + (1.0 - ac[t]).sqrt() * e)
        .collect();
    let eps_pred = eps.iter().zip(&wrong).map(|(e, w)| e + err * w).collect();
    (x_t, eps, eps_pred)
}

#[test]
fn perfect_eps_leaves_only_the_variance_mismatch() {
    let (betas, ac) = paper_schedule();
    let x0 = grid_image(300, 5);
    for t in [1usize, 2, 10, 500, 999] {
        let (x_t, eps, _) = noisy(&ac, t, &x0, 0.0, t as u32);
        for clip_denoised in [false, true] {
            let small = VlbOptions {
                variance: VarianceType::FixedSmall,
                clip_denoised,
            };
            let large = VlbOptions {
                variance: VarianceType::FixedLarge,
                clip_denoised,
            };
            let got_small = vlb::term_bpd(&betas, &ac, t, &x0, &x_t, &eps, &small);
            let got_large = vlb::term_bpd(&betas, &ac, t, &x0, &x_t, &eps, &large);
            // Equal means: KL = ½ (r − 1 − ln r), r = β̃_t / β_t, for every element.
            let r = posterior(&betas, &ac, t).2 / betas[t];
            let want_large = 0.5 * (r - 1.0 - r.ln()) / LN_2;
            assert!(got_small.abs() < 1e-12, "t={t}: fixed_small KL {got_small:e} ≠ 0");
            // Means agree to rounding (x̂0 = x0 up to ~1e-16 · 1/√ᾱ_t), a relative 1e-9.
            assert!(
                rel(got_large, want_large) < 1e-9,
                "t={t}: {got_large:e} vs {want_large:e}"
            );
            if t == 999 || t == 1 {
                println!("t={t}: perfect ε: fixed_small {got_small:.2e}, fixed_large {got_large:.4e} bits/dim");
            }
        }
    }
}

#[test]
fn term_matches_ddpm_eq_12() {
    // With a wrong ε_θ the means differ by c0 (x̂0 − x0) = −β_t/(√α_t √(1 − ᾱ_t)) (ε_θ − ε) without
    // clipping, so KL = β_t² / (2 σ_t² α_t (1 − ᾱ_t)) ‖ε − ε_θ‖² (eq. 12) + ½ (r − 1 − ln r),
    // r = β̃_t/σ_t². With clipping, the mean difference is c0 (clamp(x̂0) − x0).
    let (betas, ac) = paper_schedule();
    let x0 = grid_image(500, 6);
    let mut worst = 0.0f64;
    for t in [1usize, 3, 100, 600, 999] {
        let (x_t, eps, eps_pred) = noisy(&ac, t, &x0, 0.3, 100 + t as u32);
        let (c0, _, tilde) = posterior(&betas, &ac, t);
        for variance in [VarianceType::FixedSmall, VarianceType::FixedLarge] {
            let var = match variance {
                VarianceType::FixedSmall => tilde,
                VarianceType::FixedLarge => betas[t],
            };
            let r = tilde / var;
            let mismatch = 0.5 * (r - 1.0 - r.ln());
            for clip_denoised in [false, true] {
                let mut clipped = 0;
                let want: f64 = (0..x0.len())
                    .map(|i| {
                        if clip_denoised {
                            let x0_hat = (x_t[i] - (1.0 - ac[t]).sqrt() * eps_pred[i]) / ac[t].sqrt();
                            clipped += (x0_hat.abs() > 1.0) as usize;
                            (c0 * (x0_hat.clamp(-1.0, 1.0) - x0[i])).powi(2) / (2.0 * var) + mismatch
                        } else {
                            let alpha = 1.0 - betas[t];
                            betas[t].powi(2) / (2.0 * var * alpha * (1.0 - ac[t])) * (eps[i] - eps_pred[i]).powi(2)
                                + mismatch
                        }
                    })
                    .sum::<f64>()
                    / x0.len() as f64
                    / LN_2;
                let opts = VlbOptions {
                    variance,
                    clip_denoised,
                };
                let got = vlb::term_bpd(&betas, &ac, t, &x0, &x_t, &eps_pred, &opts);
                let e = rel(got, want);
                worst = worst.max(e);
                assert!(e < 1e-8, "t={t} {variance:?} clip={clip_denoised}: {got:e} vs {want:e}");
                if clip_denoised && t == 999 {
                    assert!(clipped > 0, "test data never clips");
                }
            }
        }
    }
    println!("term_bpd vs eq. 12: worst relative error {worst:.2e}");
}

#[test]
fn term_matches_numerical_integration() {
    let (betas, ac) = paper_schedule();
    // t ≥ 1, one-element image: ∫ q log(q/p) with q, p written out from eq. 7 and the model's x̂0.
    for (t, variance) in [
        (1usize, VarianceType::FixedLarge),
        (250, VarianceType::FixedSmall),
        (900, VarianceType::FixedLarge),
    ] {
        let x0 = [0.2];
        let (x_t, _, eps_pred) = noisy(&ac, t, &x0, 0.5, 7 + t as u32);
        let (c0, c1, tilde) = posterior(&betas, &ac, t);
        let x0_hat = (x_t[0] - (1.0 - ac[t]).sqrt() * eps_pred[0]) / ac[t].sqrt();
        let (mq, mp) = (c0 * x0[0] + c1 * x_t[0], c0 * x0_hat + c1 * x_t[0]);
        let vp = if variance == VarianceType::FixedSmall {
            tilde
        } else {
            betas[t]
        };
        let f = |x: f64| {
            let q = gauss_pdf(x, mq, tilde);
            if q == 0.0 {
                0.0
            } else {
                q * (q / gauss_pdf(x, mp, vp)).ln()
            }
        };
        let s = tilde.sqrt();
        let want = simpson(&f, mq - 15.0 * s, mq + 15.0 * s, 20000) / LN_2;
        let opts = VlbOptions {
            variance,
            clip_denoised: false,
        };
        let got = vlb::term_bpd(&betas, &ac, t, &x0, &x_t, &eps_pred, &opts);
        println!("t={t} {variance:?}: term {got:.6e} bits vs integral {want:.6e}");
        assert!(rel(got, want) < QUAD_TOL);
    }
    // t = 0: the decoder NLL against −log2 ∫_bin N(x̂0, β̃_1), both fixed variances (equal at t = 0).
    let x0 = grid_image(40, 8);
    let (x_t, _, eps_pred) = noisy(&ac, 0, &x0, 0.02, 9);
    let var1 = posterior(&betas, &ac, 1).2;
    let s = var1.sqrt();
    let want: f64 = (0..x0.len())
        .map(|i| {
            let mean = (x_t[i] - (1.0 - ac[0]).sqrt() * eps_pred[i]) / ac[0].sqrt();
            let lo = if x0[i] < -0.999 {
                mean - 40.0 * s
            } else {
                x0[i] - 1.0 / 255.0
            };
            let hi = if x0[i] > 0.999 {
                mean + 40.0 * s
            } else {
                x0[i] + 1.0 / 255.0
            };
            let p = simpson(&|u| gauss_pdf(u, mean, var1), lo, hi.max(lo), 20000).max(1e-12);
            -p.log2()
        })
        .sum::<f64>()
        / x0.len() as f64;
    for variance in [VarianceType::FixedSmall, VarianceType::FixedLarge] {
        let opts = VlbOptions {
            variance,
            clip_denoised: false,
        };
        let got = vlb::term_bpd(&betas, &ac, 0, &x0, &x_t, &eps_pred, &opts);
        println!("t=0 {variance:?}: decoder NLL {got:.6} bits/dim vs integral {want:.6}");
        assert!(rel(got, want) < 1e-8, "{got} vs {want}");
    }
}
