//! Class conditioning ops: the class embedding (forward, backward) and classifier-free guidance
//! (duplicate, combine), GPU kernels vs CPU references, reference backward vs finite differences.

mod common;
use common::*;
use ddpm_gpu::{ops, reference};

const TOL: f64 = 1e-6;
const FD_TOL: f64 = 1e-7;

fn labels_f32(labels: &[usize]) -> Vec<f32> {
    labels.iter().map(|&l| l as f32).collect()
}

#[test]
fn class_embedding_matches_reference() {
    let gpu = gpu();
    // Batch 1; a batch with repeated labels (the backward sums them) and rows no label uses;
    // a width that is not a multiple of the workgroup.
    let cases: [(&[usize], usize, usize); 3] = [(&[0], 1, 3), (&[2, 4, 2, 2, 0, 4, 1], 6, 37), (&[10; 3], 11, 64)];
    for (seed, (labels, rows, dim)) in cases.into_iter().enumerate() {
        let seed = seed as u64 * 10;
        let n = labels.len();
        let table = random(rows * dim, seed);
        let dy = random(n * dim, seed + 1);
        let (y0, dtable0) = (random(n * dim, seed + 2), random(rows * dim, seed + 3));
        let tl = gpu.tensor(&[n], &labels_f32(labels));
        let tt = gpu.tensor(&[rows, dim], &table);
        let (ty, tacc) = (gpu.zeros(&[n, dim]), gpu.tensor(&[n, dim], &y0));
        let (tdy, tdt) = (gpu.tensor(&[n, dim], &dy), gpu.tensor(&[rows, dim], &dtable0));
        let mut p = Plan::new(&gpu);
        ops::class_embedding::forward(&mut p, &tl, &tt, &ty, false);
        ops::class_embedding::forward(&mut p, &tl, &tt, &tacc, true);
        ops::class_embedding::backward(&mut p, &tl, &tdy, &tdt);
        p.run();
        let want = reference::class_embedding::forward(labels, &to_f64(&table), dim);
        let what = format!("class embedding n={n} rows={rows} dim={dim}");
        assert_close(&format!("{what} forward"), &gpu.read(&ty), &want, TOL);
        let want_acc: Vec<f64> = want.iter().zip(&y0).map(|(w, &a)| w + a as f64).collect();
        assert_close(&format!("{what} forward +="), &gpu.read(&tacc), &want_acc, TOL);
        let want_dt: Vec<f64> = reference::class_embedding::backward(labels, &to_f64(&dy), rows, dim)
            .iter()
            .zip(&dtable0)
            .map(|(g, &a)| g + a as f64)
            .collect();
        assert_close(&format!("{what} backward"), &gpu.read(&tdt), &want_dt, TOL);
    }
}

#[test]
fn class_embedding_backward_matches_finite_differences() {
    let (labels, rows, dim) = ([3usize, 0, 3, 1], 5, 6);
    let table = to_f64(&random(rows * dim, 1));
    let w = to_f64(&random(labels.len() * dim, 2));
    let f = |t: &[f64]| dot(&reference::class_embedding::forward(&labels, t, dim), &w);
    let grad = reference::class_embedding::backward(&labels, &w, rows, dim);
    check_grad("class embedding", &f, &table, &grad, rows * dim, FD_TOL);
}

#[test]
fn guidance_matches_reference() {
    let gpu = gpu();
    for (len, scale) in [(1usize, 2.0f32), (3 * 784 + 5, 0.0), (1000, 1.0), (77, -0.5)] {
        let x = random(len, len as u64);
        let eps2 = random(2 * len, len as u64 + 1);
        let (tx, ty) = (gpu.tensor(&[len], &x), gpu.zeros(&[2 * len]));
        let (te2, te) = (gpu.tensor(&[2 * len], &eps2), gpu.zeros(&[len]));
        let mut p = Plan::new(&gpu);
        ops::guidance::duplicate(&mut p, &tx, &ty);
        // Recorded with another scale, then changed: the uniform rewrite must take effect.
        let k = ops::guidance::combine(&mut p, &te2, &te, 7.0);
        ops::guidance::set_scale(&p, k, len, scale);
        p.run();
        let x64 = to_f64(&x);
        let want_y: Vec<f64> = x64.iter().chain(&x64).copied().collect();
        assert_close(&format!("guidance duplicate len={len}"), &gpu.read(&ty), &want_y, 0.0);
        let want = reference::guidance::combine(&to_f64(&eps2), scale as f64);
        assert_close(
            &format!("guidance combine len={len} s={scale}"),
            &gpu.read(&te),
            &want,
            TOL,
        );
    }
}
