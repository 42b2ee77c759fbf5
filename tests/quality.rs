//! The sample-quality score: the Fréchet distance against closed forms, the grid reader against
//! the grid writer, and the whole scorer on real, noisy, blurred and random digits (the ordering
//! a quality measure must give).

mod common;
use common::*;

use ddpm_gpu::data::{self, Dataset, Source};
use ddpm_gpu::quality::frechet::{eigh, frechet_distance, sqrt_psd, Gaussian};
use ddpm_gpu::quality::{self, Scorer};
use ddpm_gpu::viz;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Samples of a Gaussian with the given mean and covariance root `a` (x = μ + a·z).
fn gaussian_rows(n: usize, mean: &[f64], a: &[f64], seed: u64) -> Vec<f32> {
    let d = mean.len();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n * d);
    for _ in 0..n {
        // Box–Muller normals.
        let z: Vec<f64> = (0..d)
            .map(|_| {
                let (u1, u2): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random_range(0.0..1.0));
                (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
            })
            .collect();
        for i in 0..d {
            out.push((mean[i] + (0..d).map(|k| a[i * d + k] * z[k]).sum::<f64>()) as f32);
        }
    }
    out
}

/// A random rotation (Gram–Schmidt of a random matrix), row-major d×d.
fn rotation(d: usize, seed: u64) -> Vec<f64> {
    let r = to_f64(&random(d * d, seed));
    let mut q: Vec<Vec<f64>> = Vec::new();
    for i in 0..d {
        let mut v: Vec<f64> = r[i * d..(i + 1) * d].to_vec();
        for u in &q {
            let dot: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(u).for_each(|(a, b)| *a -= dot * b);
        }
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        q.push(v.iter().map(|a| a / norm).collect());
    }
    q.concat()
}

fn gauss(mean: Vec<f64>, cov: Vec<f64>) -> Gaussian {
    Gaussian {
        dim: mean.len(),
        mean,
        cov,
        n: 2,
    }
}

#[test]
fn fit_gives_mean_and_unbiased_covariance() {
    // Rows (1, 2), (3, 6), (5, 7): means (3, 5), covariance /(n−1) = [[4, 5], [5, 7]].
    let g = Gaussian::fit(&[1.0, 2.0, 3.0, 6.0, 5.0, 7.0], 2);
    assert_eq!(g.mean, vec![3.0, 5.0]);
    assert_eq!(g.cov, vec![4.0, 5.0, 5.0, 7.0]);
}

#[test]
fn eigh_and_sqrt_reconstruct_symmetric_matrices() {
    let d = 12;
    let r = to_f64(&random(d * d, 3));
    // A symmetric positive semi-definite matrix of rank 7: Bᵀ B with B 7×d.
    let m: Vec<f64> = (0..d * d)
        .map(|ij| (0..7).map(|k| r[k * d + ij / d] * r[k * d + ij % d]).sum())
        .collect();
    let (values, v) = eigh(&m, d);
    for i in 0..d {
        for j in 0..d {
            let back: f64 = (0..d).map(|k| v[i * d + k] * values[k] * v[j * d + k]).sum();
            assert!((back - m[i * d + j]).abs() < 1e-12, "V Λ Vᵀ differs at ({i}, {j})");
        }
    }
    let root = sqrt_psd(&m, d);
    let err = (0..d * d)
        .map(|ij| {
            let sq: f64 = (0..d).map(|k| root[ij / d * d + k] * root[k * d + ij % d]).sum();
            (sq - m[ij]).abs()
        })
        .fold(0.0, f64::max);
    println!("‖√M √M − M‖_max = {err:.2e}");
    assert!(err < 1e-10);
}

#[test]
fn frechet_distance_matches_closed_forms() {
    // Means and diagonal covariances: ‖Δμ‖² + Σ (√a − √b)².
    let a = gauss(vec![1.0, 0.0, 2.0], vec![4.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 9.0]);
    let b = gauss(vec![0.0, 0.0, 0.0], vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.25]);
    let want = 1.0 + 4.0 + 1.0 + 0.0 + 6.25;
    assert!((frechet_distance(&a, &b) - want).abs() < 1e-12);

    // Covariances sharing eigenvectors in a random rotated basis (full, non-diagonal matrices):
    // Σ₁ = Q D₁ Qᵀ, Σ₂ = Q D₂ Qᵀ give ‖Δμ‖² + Σ (√d₁ − √d₂)².
    let d = 16;
    let q = rotation(d, 5);
    let d1: Vec<f64> = (0..d).map(|i| 0.5 + i as f64).collect();
    let d2: Vec<f64> = (0..d)
        .map(|i| if i < 4 { 0.0 } else { 3.0 / (1.0 + i as f64) })
        .collect();
    let rot = |diag: &[f64]| -> Vec<f64> {
        (0..d * d)
            .map(|ij| (0..d).map(|k| q[ij / d * d + k] * diag[k] * q[ij % d * d + k]).sum())
            .collect()
    };
    let m1 = to_f64(&random(d, 6));
    let m2 = to_f64(&random(d, 7));
    let (a, b) = (gauss(m1.clone(), rot(&d1)), gauss(m2.clone(), rot(&d2)));
    let want: f64 = m1.iter().zip(&m2).map(|(x, y)| (x - y).powi(2)).sum::<f64>()
        + d1.iter()
            .zip(&d2)
            .map(|(x, y)| (x.sqrt() - y.sqrt()).powi(2))
            .sum::<f64>();
    let got = frechet_distance(&a, &b);
    println!("rotated commuting covariances (one singular): FD {got:.12} vs {want:.12}");
    assert!((got - want).abs() < 1e-9 * want);
    assert!((frechet_distance(&b, &a) - want).abs() < 1e-9 * want, "FD is symmetric");
    assert!(frechet_distance(&a, &a).abs() < 1e-9, "FD of a Gaussian to itself is 0");
}

#[test]
fn frechet_distance_of_samples_converges_to_the_population_value() {
    // Two Gaussians in 8 dimensions with different, non-commuting covariances. Their exact FD is
    // unknown in closed form, so compare estimates: more samples → closer to each other, and an
    // estimate from the same population goes to 0 as n grows (the small-sample bias the score's
    // floor accounts for).
    let d = 8;
    let a_root: Vec<f64> = to_f64(&random(d * d, 11));
    let b_root: Vec<f64> = to_f64(&random(d * d, 12));
    let (ma, mb) = (vec![0.0; d], vec![0.3; d]);
    let fd = |n: usize, seed: u64, same: bool| {
        let x = Gaussian::fit(&gaussian_rows(n, &ma, &a_root, seed), d);
        let y = if same {
            Gaussian::fit(&gaussian_rows(n, &ma, &a_root, seed + 1), d)
        } else {
            Gaussian::fit(&gaussian_rows(n, &mb, &b_root, seed + 1), d)
        };
        frechet_distance(&x, &y)
    };
    let (same_small, same_large) = (fd(50, 1, true), fd(20_000, 1, true));
    let (diff_a, diff_b) = (fd(20_000, 3, false), fd(20_000, 5, false));
    println!(
        "same population: FD {same_small:.4} (n=50) → {same_large:.4} (n=20000); different: {diff_a:.4}, {diff_b:.4}"
    );
    assert!(same_large < same_small / 10.0 && same_large < 0.02);
    assert!((diff_a - diff_b).abs() < 0.05 * diff_a && diff_a > 10.0 * same_large);
}

#[test]
fn grids_read_back_as_written() {
    let dir = std::env::temp_dir().join(format!("ddpm-gpu-quality-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (c, side, b, cols, scale) in [
        (1usize, 7usize, 10usize, 4usize, 2u32),
        (3, 5, 6, 3, 1),
        (1, 9, 1, 1, 3),
    ] {
        let images: Vec<f32> = random(b * c * side * side, (b + c) as u64);
        let path = dir.join(format!("grid_{c}_{side}_{b}.png"));
        viz::save_grid(&path, &images, [b, c, side, side], cols, scale).unwrap();
        let (px, n, got_c) = viz::read_grid(&path, side).unwrap();
        assert_eq!((n, got_c), (b, c), "{path:?}: images and channels");
        let want: Vec<u8> = images.iter().map(|&v| viz::to_byte(v)).collect();
        assert_eq!(px, want, "{path:?}: pixels");
    }
    // A picture of the wrong size is refused with its size in the message.
    let path = dir.join("odd.png");
    viz::save_grid(&path, &random(4 * 28 * 28, 1), [4, 1, 28, 28], 2, 2).unwrap();
    let err = format!("{:#}", viz::read_grid(&path, 32).unwrap_err());
    assert!(err.contains("114×114") && err.contains("32×32"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The first `n` digits of the built-in set.
fn digits(all: &Dataset, range: std::ops::Range<usize>) -> Dataset {
    let per = all.image_len();
    Dataset {
        images: all.images[range.start * per..range.end * per].to_vec(),
        labels: all.labels.as_ref().map(|l| l[range.clone()].to_vec()),
        n: range.len(),
        ..all.clone()
    }
}

/// 3×3 box blur of each 28×28 plane.
fn blur(images: &[f32], side: usize) -> Vec<f32> {
    let mut out = images.to_vec();
    for (plane, dst) in images.chunks_exact(side * side).zip(out.chunks_exact_mut(side * side)) {
        for y in 0..side {
            for x in 0..side {
                let mut s = 0.0;
                let mut k = 0.0;
                for dy in -1i64..=1 {
                    for dx in -1i64..=1 {
                        let (yy, xx) = (y as i64 + dy, x as i64 + dx);
                        if (0..side as i64).contains(&yy) && (0..side as i64).contains(&xx) {
                            s += plane[yy as usize * side + xx as usize];
                            k += 1.0;
                        }
                    }
                }
                dst[y * side + x] = s / k;
            }
        }
    }
    out
}

#[test]
fn real_digits_score_near_the_floor_and_degraded_ones_far_from_it() {
    let gpu = gpu();
    let all = data::load(&Source::BuiltinMnist, 1, 28).unwrap();
    // The classifier learns from 3,000 digits (quicker than the 10,000 `score` uses); unseen
    // digits 3,000.. are the "samples".
    let train = digits(&all, 0..3000);
    let mut log = |line: &str| println!("{line}");
    let scorer = Scorer::new(&gpu, &train, None, &mut log).unwrap();
    println!(
        "classifier held-out accuracy {:.2}%",
        100.0 * scorer.classifier.accuracy
    );
    assert!(scorer.classifier.accuracy > 0.9);

    let n = 200;
    let real = digits(&all, 3000..3000 + n).images;
    let mut rng = StdRng::seed_from_u64(9);
    let mut noisy = |amp: f32| -> Vec<f32> { real.iter().map(|&v| v + amp * rng.random_range(-1.0f32..1.0)).collect() };
    let (noisy_small, noisy_large) = (noisy(0.3), noisy(0.6));
    let blurred = blur(&real, 28);
    let blurred_twice = blur(&blurred, 28);
    let noise: Vec<f32> = real.iter().map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let mut fd = std::collections::HashMap::new();
    let mut floor = 0.0;
    for (name, images) in [
        ("real", &real),
        ("blurred", &blurred),
        ("blurred twice", &blurred_twice),
        ("noisy ±0.3", &noisy_small),
        ("noisy ±0.6", &noisy_large),
        ("noise", &noise),
    ] {
        let s = scorer.score(&gpu, images, n).unwrap();
        println!(
            "{name:>14}: FD {:8.3} (floor {:.3} on {} held-out), confidence {:.3}, class entropy {:.3}",
            s.samples.fd, s.floor.fd, s.floor.images, s.samples.confidence, s.samples.class_entropy
        );
        assert_eq!((s.samples.images, s.floor.images), (n, n.min(300)));
        fd.insert(name, s.samples.fd);
        floor = s.floor.fd;
    }
    // Unseen real digits score like the held-out ones (the floor); every degradation scores
    // worse, and more of it scores worse still.
    assert!(fd["real"] < 2.0 * floor, "unseen real digits score near the floor");
    for chain in [
        ["real", "blurred", "blurred twice"],
        ["real", "noisy ±0.3", "noisy ±0.6"],
    ] {
        for w in chain.windows(2) {
            assert!(
                fd[w[0]] < fd[w[1]],
                "{} should score better (lower) than {}",
                w[0],
                w[1]
            );
        }
    }
    for degraded in ["blurred", "noisy ±0.6"] {
        assert!(fd[degraded] > 3.0 * floor, "{degraded} digits are far from the floor");
    }
    assert!(fd["noise"] > 10.0 * fd["noisy ±0.6"], "noise is farthest");
}

#[test]
fn scoring_refuses_unlabelled_or_tiny_data() {
    let gpu = gpu();
    let all = data::load(&Source::BuiltinMnist, 1, 28).unwrap();
    let unlabelled = Dataset {
        labels: None,
        ..digits(&all, 0..50)
    };
    let err = Scorer::new(&gpu, &unlabelled, None, &mut |_| {}).err().unwrap();
    assert!(format!("{err:#}").contains("labelled"), "{err:#}");
    let err = Scorer::new(&gpu, &digits(&all, 0..5), None, &mut |_| {}).err().unwrap();
    assert!(format!("{err:#}").contains("at least"), "{err:#}");
    assert_eq!(quality::split(10_000), 9000);
    assert_eq!(quality::split(50), 45);
}
