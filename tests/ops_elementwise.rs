//! Elementwise plumbing, channel-bias broadcast, nearest 2× upsampling, channel concatenation and the
//! timestep embedding: GPU kernels vs CPU references; reference backwards vs finite differences.

mod common;
use common::*;
use ddpm_gpu::{ops, reference};

/// One f32 rounding per element (or none: copies must be exact).
const TOL: f64 = 1e-6;
/// Sums of up to a few hundred f32 values.
const SUM_TOL: f64 = 1e-6;
/// sin/cos of f32 arguments up to ~1000: the argument itself carries ~ulp(1000)/2 = 3e-5.
const EMB_MAX_ABS: f64 = 2e-4;
const FD_TOL: f64 = 1e-7;

/// `Plan::clear` zeroes exactly its view, in order with the kernels around it: a copy before
/// the clear is wiped, an axpy after it accumulates onto zero, a clear between two compute
/// passes splits the pass without losing a kernel.
#[test]
fn plan_clear_zeroes_its_view_in_order() {
    let gpu = gpu();
    let n = 300;
    let (a, c) = (random(n, 7), random(n, 8));
    let ta = gpu.tensor(&[n], &a);
    let t = gpu.tensor(&[n], &c);
    let (lo, len) = (64, 129); // a 256-byte aligned view with an odd length
    let view = t.view(lo, &[len]);
    let mut p = Plan::new(&gpu);
    ops::elementwise::copy(&mut p, &ta.view(lo, &[len]), &view);
    p.clear(&view);
    ops::elementwise::axpy(&mut p, 2.0, &ta.view(lo, &[len]), &view);
    p.clear(&view.view(0, &[1]));
    p.clear(&view.view(0, &[0])); // an empty clear is skipped
    p.run();
    let want: Vec<f64> = (0..n)
        .map(|i| match i {
            i if i == lo => 0.0,
            i if (lo..lo + len).contains(&i) => 2.0 * a[i] as f64,
            i => c[i] as f64,
        })
        .collect();
    assert_close("clear", &gpu.read(&t), &want, TOL);
}

#[test]
fn fill_copy_add_scale_axpy_match_reference() {
    let gpu = gpu();
    for (n, seed) in [(1usize, 1u64), (255, 2), (3 * 5 * 7 * 11 * 13, 3)] {
        let (a, b, c) = (random(n, seed), random(n, seed + 1), random(n, seed + 2));
        let (ta, tb) = (gpu.tensor(&[n], &a), gpu.tensor(&[n], &b));
        let (filled, copied, sum, scaled) = (gpu.zeros(&[n]), gpu.zeros(&[n]), gpu.zeros(&[n]), gpu.zeros(&[n]));
        let acc = gpu.tensor(&[n], &c);
        let in_place = gpu.tensor(&[n], &c);
        let mut p = Plan::new(&gpu);
        ops::elementwise::fill(&mut p, &filled, 0.75);
        ops::elementwise::copy(&mut p, &ta, &copied);
        ops::elementwise::add(&mut p, &ta, &tb, &sum);
        ops::elementwise::scale(&mut p, -1.5, &ta, &scaled);
        ops::elementwise::axpy(&mut p, 0.3, &ta, &acc);
        ops::elementwise::scale(&mut p, 2.5, &in_place, &in_place);
        p.run();
        let (a64, b64, c64) = (to_f64(&a), to_f64(&b), to_f64(&c));
        assert!(gpu.read(&filled).iter().all(|&v| v == 0.75), "fill n={n}");
        assert_eq!(gpu.read(&copied), a, "copy n={n}");
        assert_close(
            &format!("add n={n}"),
            &gpu.read(&sum),
            &reference::elementwise::add(&a64, &b64),
            TOL,
        );
        assert_close(
            &format!("scale n={n}"),
            &gpu.read(&scaled),
            &reference::elementwise::scale(-1.5, &a64),
            TOL,
        );
        assert_close(
            &format!("axpy n={n}"),
            &gpu.read(&acc),
            &reference::elementwise::axpy(0.3f32 as f64, &a64, &c64),
            TOL,
        );
        assert_close(
            &format!("scale in place n={n}"),
            &gpu.read(&in_place),
            &reference::elementwise::scale(2.5, &c64),
            TOL,
        );
    }
}

#[test]
fn add_channel_bias_forward_and_backward_match_reference() {
    let gpu = gpu();
    // Both mappings: `add_channel_bias` runs the plane mapping from 128 pixels per plane.
    for (flat, n, c, hw, seed) in [
        (false, 1usize, 6usize, 35usize, 1u64),
        (false, 3, 7, 1, 2),
        (false, 3, 64, 5 * 7, 3),
        (false, 2, 3, 300, 4),
        (false, 1, 2, 520, 5),      // three pixel blocks per plane
        (false, 1, 65_600, 128, 6), // more planes than one grid dimension holds
        (true, 1, 6, 35, 7),
        (true, 2, 3, 300, 8),
    ] {
        let (x, v) = (random(n * c * hw, seed), random(n * c, seed + 1));
        let (dy, dv0) = (random(n * c * hw, seed + 2), random(n * c, seed + 3));
        let (tx, tv, ty) = (
            gpu.tensor(&[n, c, hw], &x),
            gpu.tensor(&[n, c], &v),
            gpu.zeros(&[n, c, hw]),
        );
        let (tdy, tdv) = (gpu.tensor(&[n, c, hw], &dy), gpu.tensor(&[n, c], &dv0));
        let mut p = Plan::new(&gpu);
        let m = flat.then_some(ops::elementwise::BiasMapping::Flat);
        ops::elementwise::add_channel_bias(&mut p, [n, c, hw], m, &tx, &tv, &ty);
        ops::elementwise::add_channel_bias_backward(&mut p, [n, c, hw], &tdy, &tdv);
        p.run();
        let want_y = reference::elementwise::add_channel_bias(n, c, hw, &to_f64(&x), &to_f64(&v));
        let want_dv = plus(
            &dv0,
            &reference::elementwise::add_channel_bias_backward(n, c, hw, &to_f64(&dy)),
        );
        assert_close(
            &format!("add_channel_bias{} ({n},{c},{hw})", if flat { " flat" } else { "" }),
            &gpu.read(&ty),
            &want_y,
            TOL,
        );
        assert_close(
            &format!("add_channel_bias backward ({n},{c},{hw})"),
            &gpu.read(&tdv),
            &want_dv,
            SUM_TOL,
        );
    }
}

#[test]
fn upsample_forward_and_backward_match_reference() {
    let gpu = gpu();
    for (n, c, h, w, seed) in [
        (1usize, 1usize, 1usize, 1usize, 1u64),
        (3, 6, 5, 7, 2),
        (2, 5, 4, 4, 3),
        (1, 3, 9, 1, 4),
    ] {
        let x = random(n * c * h * w, seed);
        let (dy, dx0) = (random(n * c * 4 * h * w, seed + 1), random(n * c * h * w, seed + 2));
        let (tx, ty) = (gpu.tensor(&[n, c, h, w], &x), gpu.zeros(&[n, c, 2 * h, 2 * w]));
        let (tdy, tdx) = (gpu.tensor(&[n, c, 2 * h, 2 * w], &dy), gpu.tensor(&[n, c, h, w], &dx0));
        let mut p = Plan::new(&gpu);
        ops::upsample::forward(&mut p, n, c, h, w, &tx, &ty);
        ops::upsample::backward(&mut p, n, c, h, w, &tdy, &tdx);
        p.run();
        let what = format!("upsample ({n},{c},{h},{w})");
        let want_y = reference::upsample::forward(n, c, h, w, &to_f64(&x));
        assert_close(&format!("{what} forward"), &gpu.read(&ty), &want_y, 0.0);
        let want_dx = plus(&dx0, &reference::upsample::backward(n, c, h, w, &to_f64(&dy)));
        assert_close(&format!("{what} backward"), &gpu.read(&tdx), &want_dx, TOL);
    }
}

/// Both mappings (runs and flat); shapes whose runs span several blocks of 256 elements, runs
/// of different lengths, batch 1, single channels and single pixels.
#[test]
fn concat_forward_and_backward_match_reference() {
    let gpu = gpu();
    for (flat, n, c1, c2, hw, seed) in [
        (false, 1usize, 1usize, 1usize, 1usize, 1u64),
        (false, 3, 6, 5, 35, 2),
        (false, 2, 64, 3, 5, 3),
        (false, 3, 2, 7, 1, 4),
        (false, 2, 3, 40, 29, 5),
        (true, 1, 1, 1, 1, 6),
        (true, 3, 6, 5, 35, 7),
        (true, 2, 3, 40, 29, 8),
    ] {
        let (a, b) = (random(n * c1 * hw, seed), random(n * c2 * hw, seed + 1));
        let dy = random(n * (c1 + c2) * hw, seed + 2);
        let (da0, db0) = (random(n * c1 * hw, seed + 3), random(n * c2 * hw, seed + 4));
        let (ta, tb, ty) = (
            gpu.tensor(&[n, c1, hw], &a),
            gpu.tensor(&[n, c2, hw], &b),
            gpu.zeros(&[n, c1 + c2, hw]),
        );
        let (tdy, tda, tdb) = (
            gpu.tensor(&[n, c1 + c2, hw], &dy),
            gpu.tensor(&[n, c1, hw], &da0),
            gpu.tensor(&[n, c2, hw], &db0),
        );
        let mut p = Plan::new(&gpu);
        // The flat mapping, or the default (the run mapping: tests leave tuning off).
        let m = flat.then_some(ops::concat::Mapping::Flat);
        let s = ops::concat::Concat { n, c1, c2, hw };
        ops::concat::forward(&mut p, &s, m, &ta, &tb, &ty);
        ops::concat::backward(&mut p, &s, m, &tdy, &tda, &tdb);
        p.run();
        let what = format!("concat{} ({n},{c1}+{c2},{hw})", if flat { " flat" } else { "" });
        let want_y = reference::concat::forward(n, c1, c2, hw, &to_f64(&a), &to_f64(&b));
        assert_close(&format!("{what} forward"), &gpu.read(&ty), &want_y, 0.0);
        let (want_da, want_db) = reference::concat::backward(n, c1, c2, hw, &to_f64(&dy));
        assert_close(
            &format!("{what} backward a"),
            &gpu.read(&tda),
            &plus(&da0, &want_da),
            TOL,
        );
        assert_close(
            &format!("{what} backward b"),
            &gpu.read(&tdb),
            &plus(&db0, &want_db),
            TOL,
        );
    }
}

#[test]
fn timestep_embedding_matches_reference() {
    let gpu = gpu();
    // Timesteps 0, 1, 999 and a few in between (fractional too).
    let t: Vec<f32> = vec![0.0, 1.0, 999.0, 500.0, 37.0, 123.5, 998.0];
    let n = t.len();
    let tt = gpu.tensor(&[n], &t);
    for dim in [1usize, 8, 9, 32, 33, 128] {
        for flip in [false, true] {
            for shift in [0.0f32, 1.0] {
                if dim / 2 == 1 && shift == 1.0 || dim < 2 && shift == 0.0 {
                    continue; // half − shift = 0 divides by zero (as in diffusers); dim 1 once
                }
                let y = gpu.zeros(&[n, dim]);
                let mut p = Plan::new(&gpu);
                ops::timestep_embedding::forward(&mut p, n, dim, flip, shift, &tt, &y);
                p.run();
                let want = reference::timestep_embedding::forward(n, dim, flip, shift as f64, &to_f64(&t));
                let got = gpu.read(&y);
                let err = got
                    .iter()
                    .zip(&want)
                    .map(|(&g, w)| (g as f64 - w).abs())
                    .fold(0.0, f64::max);
                println!(
                    "timestep_embedding dim={dim} flip={flip} shift={shift}: max abs error {err:.3e} (tolerance {EMB_MAX_ABS:.1e})"
                );
                assert!(
                    err <= EMB_MAX_ABS,
                    "timestep_embedding dim={dim} flip={flip} shift={shift}: {err:.3e}"
                );
                if dim % 2 == 1 {
                    assert!(
                        (0..n).all(|r| got[r * dim + dim - 1] == 0.0),
                        "odd dim: last column not zero"
                    );
                }
            }
        }
    }
}

#[test]
fn timestep_embedding_reference_follows_diffusers() {
    // Hand-computed row for t = 2, dim = 5 (half = 2), shift 1: freqs exp(0) = 1 and
    // exp(−ln(10⁴)·1/1) = 1e-4, so args (2, 2e-4): [sin 2, sin 2e-4, cos 2, cos 2e-4, 0].
    let y = reference::timestep_embedding::forward(1, 5, false, 1.0, &[2.0]);
    let want = [2f64.sin(), 2e-4f64.sin(), 2f64.cos(), 2e-4f64.cos(), 0.0];
    assert!(y.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-12), "{y:?}");
    // shift 0 (DDPM's U-Net in diffusers: flip_sin_to_cos=True, shift 0): freqs 1 and 1e-2.
    let y = reference::timestep_embedding::forward(1, 4, true, 0.0, &[2.0]);
    let want = [2f64.cos(), 0.02f64.cos(), 2f64.sin(), 0.02f64.sin()];
    assert!(y.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-12), "{y:?}");
}

#[test]
fn reference_backwards_match_finite_differences() {
    // add_channel_bias: gradient w.r.t. v (w.r.t. x it is the identity).
    let (n, c, hw) = (2, 3, 5);
    let x = to_f64(&random(n * c * hw, 1));
    let v = to_f64(&random(n * c, 2));
    let w = to_f64(&random(n * c * hw, 3));
    let f = |v: &[f64]| dot(&reference::elementwise::add_channel_bias(n, c, hw, &x, v), &w);
    let g = reference::elementwise::add_channel_bias_backward(n, c, hw, &w);
    check_grad("add_channel_bias dv", &f, &v, &g, 50, FD_TOL);

    let (n, c, h, w_) = (2, 3, 3, 5);
    let x = to_f64(&random(n * c * h * w_, 4));
    let w = to_f64(&random(n * c * 4 * h * w_, 5));
    let f = |x: &[f64]| dot(&reference::upsample::forward(n, c, h, w_, x), &w);
    let g = reference::upsample::backward(n, c, h, w_, &w);
    check_grad("upsample dx", &f, &x, &g, 60, FD_TOL);

    let (n, c1, c2, hw) = (2, 3, 2, 7);
    let a = to_f64(&random(n * c1 * hw, 6));
    let b = to_f64(&random(n * c2 * hw, 7));
    let w = to_f64(&random(n * (c1 + c2) * hw, 8));
    let (ga, gb) = reference::concat::backward(n, c1, c2, hw, &w);
    let fa = |a: &[f64]| dot(&reference::concat::forward(n, c1, c2, hw, a, &b), &w);
    let fb = |b: &[f64]| dot(&reference::concat::forward(n, c1, c2, hw, &a, b), &w);
    check_grad("concat da", &fa, &a, &ga, 60, FD_TOL);
    check_grad("concat db", &fb, &b, &gb, 60, FD_TOL);
}

#[test]
fn add_covers_a_two_dimensional_dispatch_grid() {
    // More than 65535 workgroups of 256: grid_1d spreads them over y; every element must be hit once.
    let gpu = gpu();
    let n = 65535 * 256 + 300;
    let a: Vec<f32> = (0..n).map(|i| (i % 1013) as f32).collect();
    let b: Vec<f32> = (0..n).map(|i| (i / 1013) as f32).collect();
    let (ta, tb, ty) = (gpu.tensor(&[n], &a), gpu.tensor(&[n], &b), gpu.zeros(&[n]));
    let mut p = Plan::new(&gpu);
    ops::elementwise::add(&mut p, &ta, &tb, &ty);
    assert!(p.kernels()[0].workgroups[1] > 1, "expected a 2D grid");
    p.run();
    let y = gpu.read(&ty);
    let bad = (0..n).filter(|&i| y[i] != a[i] + b[i]).count();
    println!("add over {n} elements with a 2D grid: {bad} wrong");
    assert_eq!(bad, 0);
}
