//! The Fréchet distance between two Gaussians fitted to feature sets, as FID computes it
//! (Heusel et al. 2017), in f64 on the CPU:
//!
//!   FD = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁^½ Σ₂ Σ₁^½)^½
//!
//! tr (Σ₁^½ Σ₂ Σ₁^½)^½ equals tr (Σ₁ Σ₂)^½ (the two matrices are similar), but the left form is a
//! symmetric positive semi-definite matrix, so both square roots come from a symmetric eigen-
//! decomposition (cyclic Jacobi) and stay real even when a covariance is singular (fewer images
//! than feature dimensions), where scipy's `sqrtm` of the product needs its imaginary part dropped.

/// Mean and covariance (unbiased, divided by n − 1 as numpy's `cov`) of `n` rows of `dim` features.
#[derive(Clone, Debug, PartialEq)]
pub struct Gaussian {
    pub dim: usize,
    pub mean: Vec<f64>,
    /// dim × dim, row-major.
    pub cov: Vec<f64>,
    /// Rows it was fitted to.
    pub n: usize,
}

impl Gaussian {
    /// Fit to `features` (n rows of `dim`); needs at least 2 rows.
    pub fn fit(features: &[f32], dim: usize) -> Gaussian {
        assert!(
            dim > 0 && features.len().is_multiple_of(dim),
            "features: not rows of {dim}"
        );
        let n = features.len() / dim;
        assert!(n >= 2, "a covariance needs at least 2 feature rows, got {n}");
        let mut mean = vec![0.0; dim];
        for row in features.chunks_exact(dim) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut cov = vec![0.0; dim * dim];
        let mut d = vec![0.0; dim];
        for row in features.chunks_exact(dim) {
            for k in 0..dim {
                d[k] = row[k] as f64 - mean[k];
            }
            for i in 0..dim {
                for j in i..dim {
                    cov[i * dim + j] += d[i] * d[j];
                }
            }
        }
        for i in 0..dim {
            for j in i..dim {
                let v = cov[i * dim + j] / (n - 1) as f64;
                cov[i * dim + j] = v;
                cov[j * dim + i] = v;
            }
        }
        Gaussian { dim, mean, cov, n }
    }
}

/// The Fréchet distance between two fitted Gaussians of the same dimension.
pub fn frechet_distance(a: &Gaussian, b: &Gaussian) -> f64 {
    assert_eq!(a.dim, b.dim, "Fréchet distance of features of different sizes");
    let d = a.dim;
    let mean_term: f64 = a.mean.iter().zip(&b.mean).map(|(x, y)| (x - y).powi(2)).sum();
    let trace = |m: &[f64]| (0..d).map(|i| m[i * d + i]).sum::<f64>();
    let root_a = sqrt_psd(&a.cov, d);
    let m = matmul(&matmul(&root_a, &b.cov, d), &root_a, d);
    let (values, _) = eigh(&m, d);
    let cross: f64 = values.iter().map(|&l| l.max(0.0).sqrt()).sum();
    (mean_term + trace(&a.cov) + trace(&b.cov) - 2.0 * cross).max(0.0)
}

fn matmul(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
    let mut c = vec![0.0; d * d];
    for i in 0..d {
        for k in 0..d {
            let aik = a[i * d + k];
            for j in 0..d {
                c[i * d + j] += aik * b[k * d + j];
            }
        }
    }
    c
}

/// The symmetric square root V diag(√max(λ, 0)) Vᵀ of a symmetric positive semi-definite matrix.
pub fn sqrt_psd(m: &[f64], d: usize) -> Vec<f64> {
    let (values, vectors) = eigh(m, d);
    let mut r = vec![0.0; d * d];
    for (k, &l) in values.iter().enumerate() {
        let s = l.max(0.0).sqrt();
        for i in 0..d {
            let vik = vectors[i * d + k] * s;
            for j in 0..d {
                r[i * d + j] += vik * vectors[j * d + k];
            }
        }
    }
    r
}

/// Eigenvalues and eigenvectors (columns of the row-major result) of a symmetric matrix, by
/// cyclic Jacobi rotations until the off-diagonal mass is at rounding level.
pub fn eigh(m: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(m.len(), d * d);
    let mut a = m.to_vec();
    let mut v = vec![0.0; d * d];
    for i in 0..d {
        v[i * d + i] = 1.0;
    }
    let norm: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    for _sweep in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * d + j].powi(2))
            .sum::<f64>()
            .sqrt();
        if off <= 1e-15 * norm.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq == 0.0 {
                    continue;
                }
                // The rotation that zeroes a[p][q] (Golub & Van Loan, symmetric Schur 2×2).
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let (akp, akq) = (a[k * d + p], a[k * d + q]);
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let (apk, aqk) = (a[p * d + k], a[q * d + k]);
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for k in 0..d {
                    let (vkp, vkq) = (v[k * d + p], v[k * d + q]);
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..d).map(|i| a[i * d + i]).collect(), v)
}
