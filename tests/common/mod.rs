//! Helpers shared by the kernel tests: random data, error measures, finite differences.
#![allow(dead_code, unused_imports)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub use ddpm_gpu::gpu::{Gpu, Plan, Tensor};

/// One device for a whole test binary (opening lavapipe costs ~100 ms).
pub fn gpu() -> Gpu {
    static GPU: std::sync::OnceLock<Gpu> = std::sync::OnceLock::new();
    GPU.get_or_init(Gpu::for_tests).clone()
}

/// `n` values uniform in [-1, 1), reproducible from `seed`.
pub fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// prefill + v elementwise: what a kernel that accumulates (`+=`) into a prefilled buffer must give.
pub fn plus(prefill: &[f32], v: &[f64]) -> Vec<f64> {
    prefill.iter().zip(v).map(|(&a, b)| a as f64 + b).collect()
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// ‖got − want‖₂ / max(‖want‖₂, tiny): the relative L2 error.
pub fn rel_l2(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let num: f64 = got.iter().zip(want).map(|(&g, &w)| (g as f64 - w).powi(2)).sum();
    let den: f64 = want.iter().map(|w| w * w).sum();
    (num / den.max(1e-30)).sqrt()
}

/// Largest |got − want| / (|want| + atol) over all elements.
pub fn max_rel(got: &[f32], want: &[f64], atol: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs() / (w.abs() + atol))
        .fold(0.0, f64::max)
}

/// Assert the GPU result matches the reference within relative L2 `tol`, printing the error.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    let e = rel_l2(got, want);
    println!("{what}: rel L2 error {e:.3e} (tolerance {tol:.1e})");
    assert!(e <= tol, "{what}: rel L2 error {e:.3e} exceeds {tol:.1e}");
    assert!(got.iter().all(|v| v.is_finite()), "{what}: non-finite output");
}

/// Central finite differences of the scalar `f` at `x`, step `h`, for the coordinates `idx`.
pub fn finite_diff(f: &dyn Fn(&[f64]) -> f64, x: &[f64], idx: &[usize], h: f64) -> Vec<f64> {
    idx.iter()
        .map(|&i| {
            let mut xp = x.to_vec();
            xp[i] += h;
            let mut xm = x.to_vec();
            xm[i] -= h;
            (f(&xp) - f(&xm)) / (2.0 * h)
        })
        .collect()
}

/// Check an analytic gradient against central differences of `f` on up to `samples` coordinates
/// (all when fewer), with relative error per coordinate max(|a−n|)/(max|n| + 1e-8) ≤ `tol`.
pub fn check_grad(what: &str, f: &dyn Fn(&[f64]) -> f64, x: &[f64], grad: &[f64], samples: usize, tol: f64) {
    assert_eq!(x.len(), grad.len());
    let idx: Vec<usize> = if x.len() <= samples {
        (0..x.len()).collect()
    } else {
        let mut rng = StdRng::seed_from_u64(x.len() as u64);
        (0..samples).map(|_| rng.random_range(0..x.len())).collect()
    };
    let num = finite_diff(f, x, &idx, 1e-6);
    let scale = num.iter().fold(0.0f64, |m, v| m.max(v.abs())) + 1e-8;
    let err = idx
        .iter()
        .zip(&num)
        .map(|(&i, n)| (grad[i] - n).abs())
        .fold(0.0, f64::max)
        / scale;
    println!(
        "{what}: finite-difference error {err:.3e} over {} coordinates (tolerance {tol:.1e})",
        idx.len()
    );
    assert!(
        err <= tol,
        "{what}: analytic gradient differs from finite differences by {err:.3e}"
    );
}

/// Σ out·w: turns a vector output into a scalar loss with a fixed random cotangent `w`.
pub fn dot(out: &[f64], w: &[f64]) -> f64 {
    out.iter().zip(w).map(|(a, b)| a * b).sum()
}

/// Whether group norm mapping `m` can run on this adapter: all can, except `Subgroup` on an
/// adapter without subgroup operations (the GL backend), which is skipped with a note.
pub fn runs_here(gpu: &Gpu, m: ddpm_gpu::ops::group_norm::Mapping) -> bool {
    if m == ddpm_gpu::ops::group_norm::Mapping::Subgroup && !gpu.features.contains(wgpu::Features::SUBGROUP) {
        println!(
            "note: {} has no subgroup operations; Mapping::Subgroup not tested",
            gpu.describe()
        );
        return false;
    }
    true
}
