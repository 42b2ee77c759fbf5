//! The digit classifier's head: global average pooling and the softmax cross-entropy (fused forward
//! and gradient, and the inference softmax), GPU kernels vs CPU references; reference backwards vs
//! finite differences.

mod common;
use common::*;
use ddpm_gpu::ops::cross_entropy::Outputs;
use ddpm_gpu::{ops, reference};

/// A few f32 roundings per element, or sums of at most a few hundred f32 values.
const TOL: f64 = 1e-6;
const FD_TOL: f64 = 1e-7;

/// `rows` labels in [0, classes), reproducible from `seed`.
fn labels(rows: usize, classes: usize, seed: u64) -> Vec<usize> {
    random(rows, seed)
        .iter()
        .map(|v| (((v + 1.0) * 0.5 * classes as f32) as usize).min(classes - 1))
        .collect()
}

/// Labels as the kernels take them: f32 integers.
fn labels_f32(labels: &[usize]) -> Vec<f32> {
    labels.iter().map(|&l| l as f32).collect()
}

/// Logits in ±3, every third row in ±30 (probabilities from 1 down to e^-60: the row maximum must
/// be subtracted, and −log p formed without taking the log of a probability).
fn logits(rows: usize, classes: usize, seed: u64) -> Vec<f32> {
    let mut z = random(rows * classes, seed);
    for (i, v) in z.iter_mut().enumerate() {
        *v *= if (i / classes) % 3 == 2 { 30.0 } else { 3.0 };
    }
    z
}

#[test]
fn global_avg_pool_forward_and_backward_match_reference() {
    let gpu = gpu();
    let mut seed = 0;
    // 257 rows: more than one workgroup of the forward (64 rows) and of the backward (256 elements).
    for rows in [1usize, 3, 37, 257] {
        for hw in [1usize, 7 * 7, 4 * 4, 13] {
            seed += 10;
            let n = rows * hw;
            let (x, dy) = (random(n, seed), random(rows, seed + 1));
            let (y0, dx0) = (random(rows, seed + 2), random(n, seed + 3)); // y is overwritten, dx accumulated into
            let (tx, ty, tdy, tdx) = (
                gpu.tensor(&[n], &x),
                gpu.tensor(&[rows], &y0),
                gpu.tensor(&[rows], &dy),
                gpu.tensor(&[n], &dx0),
            );
            let mut p = Plan::new(&gpu);
            ops::pool::global_avg_forward(&mut p, rows, hw, &tx, &ty);
            ops::pool::global_avg_backward(&mut p, rows, hw, &tdy, &tdx);
            p.run();
            let want_y = reference::pool::global_avg_forward(&to_f64(&x), rows, hw);
            let want_dx = plus(&dx0, &reference::pool::global_avg_backward(&to_f64(&dy), rows, hw));
            assert_close(
                &format!("pool forward rows={rows} hw={hw}"),
                &gpu.read(&ty),
                &want_y,
                TOL,
            );
            assert_close(
                &format!("pool backward rows={rows} hw={hw}"),
                &gpu.read(&tdx),
                &want_dx,
                TOL,
            );
        }
    }
}

#[test]
fn global_avg_pool_backward_matches_finite_differences() {
    let (rows, hw) = (3, 13);
    let x = to_f64(&random(rows * hw, 1));
    let w = to_f64(&random(rows, 2));
    let f = |x: &[f64]| dot(&reference::pool::global_avg_forward(x, rows, hw), &w);
    let grad = reference::pool::global_avg_backward(&w, rows, hw);
    check_grad("pool", &f, &x, &grad, 50, FD_TOL);
}

/// Run `forward_backward` with probs and dlogits prefilled (both must be overwritten) and loss[0]
/// in a view 64 elements into a prefilled buffer; check all three and that the view's neighbours
/// are untouched.
fn check_cross_entropy(what: &str, rows: usize, classes: usize, z: &[f32], labels: &[usize], seed: u64) {
    let gpu = gpu();
    let n = rows * classes;
    let (lo, len) = (64, 130); // a 256-byte aligned view
    let around = random(len, seed);
    let (tz, tl, tprobs, tdz, tloss) = (
        gpu.tensor(&[n], z),
        gpu.tensor(&[rows], &labels_f32(labels)),
        gpu.tensor(&[n], &random(n, seed + 1)),
        gpu.tensor(&[n], &random(n, seed + 2)),
        gpu.tensor(&[len], &around),
    );
    let mut p = Plan::new(&gpu);
    let loss_view = tloss.view(lo, &[1]);
    let out = Outputs {
        probs: &tprobs,
        loss: &loss_view,
        dlogits: &tdz,
    };
    ops::cross_entropy::forward_backward(&mut p, [rows, classes], &tz, &tl, out);
    p.run();
    let (want_loss, want_dz, want_probs) = reference::cross_entropy::forward_backward(&to_f64(z), labels, classes);
    let got_loss = gpu.read(&tloss);
    for (i, (&g, &a)) in got_loss.iter().zip(&around).enumerate() {
        assert!(
            i == lo || g == a,
            "{what}: loss buffer element {i} changed ({a} -> {g})"
        );
    }
    assert_close(&format!("{what}: loss"), &got_loss[lo..lo + 1], &[want_loss], TOL);
    assert_close(&format!("{what}: probs"), &gpu.read(&tprobs), &want_probs, TOL);
    assert_close(&format!("{what}: dlogits"), &gpu.read(&tdz), &want_dz, TOL);
}

#[test]
fn cross_entropy_matches_reference() {
    let mut seed = 1000;
    // 257 rows: more than one workgroup (64 rows), and a two-level reduction of the row losses.
    for rows in [1usize, 3, 37, 257] {
        for classes in [2usize, 10, 11] {
            seed += 10;
            let z = logits(rows, classes, seed);
            let l = labels(rows, classes, seed + 1);
            check_cross_entropy(
                &format!("cross entropy rows={rows} classes={classes}"),
                rows,
                classes,
                &z,
                &l,
                seed + 2,
            );
        }
    }
}

/// Rows a trained classifier gets right by a wide margin (12 to 20): −log p_label and p_label − 1 are
/// about 9·e^-margin (5e-5 .. 2e-8 here) and must keep their relative accuracy. Measured on lavapipe:
/// 2.7e-7 (the rounding of z − m ≈ −16 to f32), where log(s) and p − 1 (cancelling against 1) give
/// 1.5e-3 in the mean loss. Then rows of logits in ±100 with random labels, one with p_label below
/// f32's range (log p_label would be −∞).
#[test]
fn cross_entropy_is_accurate_for_confident_rows() {
    let (rows, classes) = (37, 10);
    let l = labels(rows, classes, 1);
    let mut z = random(rows * classes, 2);
    for (r, &t) in l.iter().enumerate() {
        z[r * classes + t] = 12.0 + 8.0 * r as f32 / rows as f32;
    }
    check_cross_entropy("cross entropy, confident and right", rows, classes, &z, &l, 3);

    let (rows, classes) = (5, 11);
    let mut z: Vec<f32> = random(rows * classes, 4).iter().map(|v| 100.0 * v).collect();
    let mut l = labels(rows, classes, 5);
    // Row 0: the label is the row minimum, at least ~100 below the maximum (p_label = 0 in f32).
    z[..classes].copy_from_slice(&[-100.0, 100.0, 50.0, -20.0, 0.0, 90.0, 99.0, 3.0, -60.0, 10.0, 70.0]);
    l[0] = 0;
    check_cross_entropy("cross entropy, logits in ±100", rows, classes, &z, &l, 6);
}

#[test]
fn cross_entropy_gradient_matches_finite_differences() {
    let (rows, classes) = (5, 11);
    let z = to_f64(&logits(rows, classes, 7));
    let l = labels(rows, classes, 8);
    let f = |z: &[f64]| reference::cross_entropy::forward_backward(z, &l, classes).0;
    let grad = reference::cross_entropy::forward_backward(&z, &l, classes).1;
    check_grad("cross entropy", &f, &z, &grad, 55, FD_TOL);
}

#[test]
fn predict_matches_reference_softmax() {
    let gpu = gpu();
    let mut seed = 2000;
    for rows in [1usize, 37, 257] {
        for classes in [2usize, 10, 11] {
            seed += 10;
            let n = rows * classes;
            let z = logits(rows, classes, seed);
            let (tz, tprobs) = (gpu.tensor(&[n], &z), gpu.tensor(&[n], &random(n, seed + 1)));
            let mut p = Plan::new(&gpu);
            ops::cross_entropy::predict(&mut p, [rows, classes], &tz, &tprobs);
            p.run();
            // Any labels: the probabilities do not depend on them.
            let (_, _, want) = reference::cross_entropy::forward_backward(&to_f64(&z), &vec![0; rows], classes);
            assert_close(
                &format!("predict rows={rows} classes={classes}"),
                &gpu.read(&tprobs),
                &want,
                TOL,
            );
        }
    }
}

#[test]
#[should_panic(expected = "pooled tensor of 4 values for 3 rows")]
fn global_avg_pool_rejects_a_wrong_output_length() {
    let gpu = gpu();
    let mut p = Plan::new(&gpu);
    ops::pool::global_avg_forward(&mut p, 3, 5, &gpu.zeros(&[15]), &gpu.zeros(&[4]));
}

#[test]
#[should_panic(expected = "2 labels for 3 rows")]
fn cross_entropy_rejects_a_wrong_label_count() {
    let gpu = gpu();
    let mut p = Plan::new(&gpu);
    let (z, labels, loss) = (gpu.zeros(&[30]), gpu.zeros(&[2]), gpu.zeros(&[1]));
    let (probs, dlogits) = (gpu.zeros(&[30]), gpu.zeros(&[30]));
    let out = Outputs {
        probs: &probs,
        loss: &loss,
        dlogits: &dlogits,
    };
    ops::cross_entropy::forward_backward(&mut p, [3, 10], &z, &labels, out);
}
