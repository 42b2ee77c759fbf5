//! Matrix product, linear layer and softmax: GPU kernels vs CPU references, reference backward
//! passes vs finite differences.

mod common;
use common::*;
use ddpm_gpu::ops::matmul::{matmul, matmul_ext, vec4_ok, Extra, Matmul, Variant};
use ddpm_gpu::{ops, reference};

/// f32 products of length ≤ 130 against the f64 reference.
const TOL: f64 = 1e-6;
const FD_TOL: f64 = 1e-6;

/// Pad a row width: + 3 (odd strides) for the scalar kernels, up to a multiple of 4 plus 4 for
/// the vec4 kernel (whose layouts need multiples of 4). Always > width.
fn padded(width: usize, vec4: bool) -> usize {
    if vec4 {
        width.div_ceil(4) * 4 + 4
    } else {
        width + 3
    }
}

struct Case {
    s: Matmul,
    /// Offsets and batch summation (the bias tensor is made by `check`).
    e: Extra<'static>,
    /// 0: no bias, 1: per column (n values), 2: per row (m values).
    bias: usize,
}

/// A product of the given shape and transposes with padded row strides; `variety` picks
/// broadcasting, offsets, accumulation, alpha and bias.
fn case((batch, m, k, n): (usize, usize, usize, usize), ta: bool, tb: bool, vec4: bool, variety: usize) -> Case {
    let (rows_a, cols_a) = if ta { (k, m) } else { (m, k) };
    let (rows_b, cols_b) = if tb { (n, k) } else { (k, n) };
    let (lda, ldb, ldc) = (padded(cols_a, vec4), padded(cols_b, vec4), padded(n, vec4));
    let off = 4 * (variety % 3);
    let s = Matmul {
        batch,
        m,
        k,
        n,
        trans_a: ta,
        trans_b: tb,
        lda,
        ldb,
        ldc,
        stride_a: if variety % 3 == 1 { 0 } else { rows_a * lda + 4 },
        stride_b: if variety % 3 == 2 { 0 } else { rows_b * ldb + 8 },
        stride_c: m * ldc + 4,
        alpha: if variety % 2 == 1 { 0.5 } else { 1.0 },
        accumulate: variety % 2 == 1,
    };
    let e = Extra {
        offset_a: off,
        offset_b: 2 * off,
        offset_c: off,
        ..Extra::default()
    };
    Case {
        s,
        e,
        bias: (variety / 2) % 3,
    }
}

/// Elements needed by each operand, rounded up to a multiple of 4.
fn sizes(c: &Case) -> (usize, usize, usize) {
    let s = &c.s;
    let (rows_a, rows_b) = (if s.trans_a { s.k } else { s.m }, if s.trans_b { s.n } else { s.k });
    let outs = if c.e.sum_batch { 1 } else { s.batch };
    let r4 = |v: usize| v.div_ceil(4) * 4;
    (
        r4(c.e.offset_a + s.stride_a * (s.batch - 1) + rows_a * s.lda),
        r4(c.e.offset_b + s.stride_b * (s.batch - 1) + rows_b * s.ldb),
        r4(c.e.offset_c + s.stride_c * (outs - 1) + s.m * s.ldc),
    )
}

/// Run one product on the GPU (C prefilled with random values) and compare with the reference.
fn check(c: &Case, variant: Option<Variant>, seed: u64) -> f64 {
    let gpu = gpu();
    let (na, nb, nc) = sizes(c);
    let (a, b, c0) = (random(na, seed), random(nb, seed + 1), random(nc, seed + 2));
    let (ta, tb, tc) = (gpu.tensor(&[na], &a), gpu.tensor(&[nb], &b), gpu.tensor(&[nc], &c0));
    let bias = random(if c.bias == 2 { c.s.m } else { c.s.n }, seed + 3);
    let tbias = gpu.tensor(&[bias.len()], &bias);
    let e = Extra {
        bias: (c.bias > 0).then_some(&tbias),
        bias_per_row: c.bias == 2,
        ..c.e
    };
    if variant == Some(Variant::Vec4) {
        assert!(
            vec4_ok(&c.s, &e, &ta, &tb, &tc),
            "test layout not vec4-aligned: {:?}",
            c.s
        );
    }
    let mut p = Plan::new(&gpu);
    matmul_ext(&mut p, &c.s, &e, variant, &ta, &tb, &tc);
    p.run();
    let mut want = to_f64(&c0);
    let bias64 = to_f64(&bias);
    let bias_ref = (c.bias > 0).then_some(&bias64[..]);
    reference::matmul::matmul_ext(&c.s, &e, bias_ref, &to_f64(&a), &to_f64(&b), &mut want);
    let got = gpu.read(&tc);
    let what = format!("matmul {variant:?} {:?} {:?} bias mode {}", c.s, c.e, c.bias);
    assert_close(&what, &got, &want, TOL);
    rel_l2(&got, &want)
}

const SHAPES: [(usize, usize, usize, usize); 7] = [
    (1, 1, 1, 1),
    (1, 7, 13, 33),
    (3, 13, 7, 65),
    (3, 33, 65, 7),
    (1, 65, 33, 13),
    (3, 1, 5, 9),
    (2, 40, 70, 100),
];

/// Every transpose combination on every shape of `SHAPES`, with row strides padded to multiples
/// of 4 (`vec4`) or odd.
fn all_layouts(variant: Variant, vec4: bool) {
    let mut worst = 0.0f64;
    let mut variety = 0;
    for (batch, m, k, n) in SHAPES {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let c = case((batch, m, k, n), ta, tb, vec4, variety);
            worst = worst.max(check(&c, Some(variant), variety as u64 * 10));
            variety += 1;
        }
    }
    println!("{variant:?} (vec4 layouts: {vec4}): worst rel L2 error {worst:.3e} over {variety} products");
}

#[test]
fn naive_matches_reference_for_all_layouts() {
    all_layouts(Variant::Naive, false);
}

#[test]
fn blocked_matches_reference_for_all_layouts() {
    all_layouts(Variant::Blocked, false);
}

#[test]
fn vec4_matches_reference_for_all_layouts() {
    all_layouts(Variant::Vec4, true);
}

/// Both the scalar loads (odd strides) and the vec4 loads of op(B) rows and op(A) columns
/// (aligned strides) of the wide kernel; m = 33, 65 leave partial 16-row blocks.
#[test]
fn wide_matches_reference_for_all_layouts() {
    all_layouts(Variant::Wide, false);
    all_layouts(Variant::Wide, true);
}

/// Odd strides (scattered loads) and aligned ones; m = 65 and n = 65, 100 leave partial 64×64
/// tiles, K = 13, 33, 65, 70 several 8-deep slabs with a partial last one, K = 1, 5, 7 a single
/// partial one.
#[test]
fn shared_matches_reference_for_all_layouts() {
    all_layouts(Variant::Shared, false);
    all_layouts(Variant::Shared, true);
}

#[test]
fn sum_over_batch_matches_reference() {
    for variant in [
        Variant::Naive,
        Variant::Blocked,
        Variant::Vec4,
        Variant::Wide,
        Variant::Shared,
    ] {
        for (ta, tb) in [(false, false), (true, true), (true, false)] {
            let mut c = case((3, 9, 11, 6), ta, tb, true, 0);
            c.e.sum_batch = true;
            c.s.accumulate = true;
            check(&c, Some(variant), 77);
        }
    }
}

#[test]
fn default_kernel_choice_matches_reference() {
    let gpu = gpu();
    // Contiguous (vec4 path) and odd strides (blocked path), through the plain `matmul`.
    for (m, k, n) in [(8, 12, 16), (5, 7, 3)] {
        let s = Matmul::new(2, m, k, n);
        let (a, b) = (random(2 * m * k, 1), random(2 * k * n, 2));
        let (ta, tb, tc) = (
            gpu.tensor(&[a.len()], &a),
            gpu.tensor(&[b.len()], &b),
            gpu.zeros(&[2 * m * n]),
        );
        let mut p = Plan::new(&gpu);
        matmul(&mut p, &s, &ta, &tb, &tc);
        p.run();
        let mut want = vec![0.0; 2 * m * n];
        reference::matmul::matmul(&s, &to_f64(&a), &to_f64(&b), &mut want);
        assert_close(&format!("matmul ({m}, {k}, {n})"), &gpu.read(&tc), &want, TOL);
    }
}

#[test]
fn linear_forward_and_backward_match_reference() {
    let gpu = gpu();
    for (rows, in_f, out_f, bias, seed) in [(5, 7, 13, true, 1u64), (1, 4, 8, true, 2), (6, 33, 3, false, 3)] {
        let (x, w, b) = (
            random(rows * in_f, seed),
            random(out_f * in_f, seed + 1),
            random(out_f, seed + 2),
        );
        let dy = random(rows * out_f, seed + 3);
        let (dx0, dw0, db0) = (
            random(rows * in_f, seed + 4),
            random(out_f * in_f, seed + 5),
            random(out_f, seed + 6),
        );
        let t = |v: &[f32]| gpu.tensor(&[v.len()], v);
        let (tx, tw, tb, tdy) = (t(&x), t(&w), t(&b), t(&dy));
        let (tdx, tdw, tdb, ty) = (t(&dx0), t(&dw0), t(&db0), gpu.zeros(&[rows * out_f]));
        let mut p = Plan::new(&gpu);
        let tb_opt = bias.then_some(&tb);
        let s = ops::linear::Linear {
            rows,
            inp: in_f,
            out: out_f,
        };
        let tensors = ops::linear::Tensors {
            x: &tx,
            w: &tw,
            b: tb_opt,
        };
        ops::linear::forward(&mut p, &s, tensors, &ty);
        let g = ops::linear::Grads {
            dx: Some(&tdx),
            dw: &tdw,
            db: Some(&tdb),
        };
        ops::linear::backward(&mut p, &s, tensors, &tdy, g);
        p.run();
        let (xf, wf, bf) = (to_f64(&x), to_f64(&w), to_f64(&b));
        let want_y = reference::linear::forward(rows, in_f, out_f, &xf, &wf, bias.then_some(&bf[..]));
        let (gx, gw, gb) = reference::linear::backward(rows, in_f, out_f, &xf, &wf, &to_f64(&dy));
        let plus = |g: Vec<f64>, a: &[f32]| g.iter().zip(a).map(|(g, &a)| g + a as f64).collect::<Vec<_>>();
        let shape = format!("rows={rows} in={in_f} out={out_f}");
        assert_close(&format!("linear forward {shape}"), &gpu.read(&ty), &want_y, TOL);
        assert_close(&format!("linear dx {shape}"), &gpu.read(&tdx), &plus(gx, &dx0), TOL);
        assert_close(&format!("linear dw {shape}"), &gpu.read(&tdw), &plus(gw, &dw0), TOL);
        assert_close(&format!("linear db {shape}"), &gpu.read(&tdb), &plus(gb, &db0), TOL);
    }
}

/// Both ways of summing a bias gradient (`BiasSum`), on the layouts it serves: a linear layer
/// (inner 1, rows below and above the workgroup's 64), attention's (outer, channels, tokens), and
/// awkward sizes; accumulating into a prefilled db.
#[test]
fn bias_gradient_mappings_match_reference() {
    use ops::linear::BiasSum;
    let gpu = gpu();
    for (outer, channels, inner) in [(5, 13, 1), (130, 7, 1), (1, 1, 1), (3, 9, 49), (2, 5, 131), (4, 64, 16)] {
        let dy = random(outer * channels * inner, 7);
        let db0 = random(channels, 8);
        let want: Vec<f64> = (0..channels)
            .map(|c| {
                let sum: f64 = (0..outer)
                    .flat_map(|o| (0..inner).map(move |i| (o * channels + c) * inner + i))
                    .map(|j| dy[j] as f64)
                    .sum();
                sum + db0[c] as f64
            })
            .collect();
        for m in [BiasSum::Serial, BiasSum::Workgroup] {
            let (tdy, tdb) = (gpu.tensor(&[dy.len()], &dy), gpu.tensor(&[channels], &db0));
            let mut p = Plan::new(&gpu);
            ops::linear::bias_backward(&mut p, [outer, channels, inner], Some(m), &tdy, &tdb);
            p.run();
            assert_close(
                &format!("{m:?} db ({outer}, {channels}, {inner})"),
                &gpu.read(&tdb),
                &want,
                TOL,
            );
        }
    }
}

#[test]
fn linear_reference_backward_matches_finite_differences() {
    let (rows, in_f, out_f) = (3, 5, 4);
    let x = to_f64(&random(rows * in_f, 1));
    let w = to_f64(&random(out_f * in_f, 2));
    let b = to_f64(&random(out_f, 3));
    let r = to_f64(&random(rows * out_f, 4));
    let (gx, gw, gb) = reference::linear::backward(rows, in_f, out_f, &x, &w, &r);
    let loss = |x: &[f64], w: &[f64], b: &[f64]| dot(&reference::linear::forward(rows, in_f, out_f, x, w, Some(b)), &r);
    check_grad("linear dx", &|v| loss(v, &w, &b), &x, &gx, 100, FD_TOL);
    check_grad("linear dw", &|v| loss(&x, v, &b), &w, &gw, 100, FD_TOL);
    check_grad("linear db", &|v| loss(&x, &w, v), &b, &gb, 100, FD_TOL);
}

/// Rows `ld` ≥ cols apart (attention pads its score rows): the padding holds huge values the
/// softmax must not read, and sentinels in y and dx it must not write.
#[test]
fn softmax_forward_and_backward_match_reference() {
    let gpu = gpu();
    // Large magnitudes: exp(±1000·…) overflows unless the row maximum is subtracted.
    for (rows, cols, ld, scale, mag, seed) in [
        (7usize, 13usize, 13usize, 0.125f32, 1.0f32, 1u64),
        (1, 1, 1, 1.0, 1.0, 2),
        (70, 5, 5, 1.0, 1000.0, 3),
        (3, 200, 200, 0.5, 300.0, 4),
        (7, 13, 16, 0.125, 1.0, 5),
        (5, 49, 52, 0.3, 10.0, 6),
    ] {
        let pad = |v: Vec<f32>, fill: f32| -> Vec<f32> {
            (0..rows * ld)
                .map(|i| if i % ld < cols { v[i / ld * cols + i % ld] } else { fill })
                .collect()
        };
        let x: Vec<f32> = random(rows * cols, seed).iter().map(|v| v * mag).collect();
        let dy = random(rows * cols, seed + 1);
        let dx0 = random(rows * cols, seed + 2);
        const SENTINEL: f32 = 7.0;
        let t = |v: Vec<f32>, fill: f32| {
            let v = pad(v, fill);
            gpu.tensor(&[v.len()], &v)
        };
        let (tx, tdy) = (t(x.clone(), 1e30), t(dy.clone(), 1e30));
        let (tdx, ty) = (t(dx0.clone(), SENTINEL), t(vec![0.0; rows * cols], SENTINEL));
        let mut p = Plan::new(&gpu);
        let s = ops::softmax::Softmax { rows, cols, ld, scale };
        ops::softmax::forward(&mut p, &s, &tx, &ty);
        ops::softmax::backward(&mut p, &s, &ty, &tdy, &tdx);
        p.run();
        let want_y = reference::softmax::forward(rows, cols, scale, &to_f64(&x));
        let want_dx: Vec<f64> = reference::softmax::backward(rows, cols, scale, &want_y, &to_f64(&dy))
            .iter()
            .zip(&dx0)
            .map(|(g, &a)| g + a as f64)
            .collect();
        let padded = |v: &[f64]| -> Vec<f64> {
            (0..rows * ld)
                .map(|i| {
                    if i % ld < cols {
                        v[i / ld * cols + i % ld]
                    } else {
                        SENTINEL as f64
                    }
                })
                .collect()
        };
        let shape = format!("rows={rows} cols={cols} ld={ld} scale={scale} |x|≤{mag}");
        assert_close(
            &format!("softmax forward {shape}"),
            &gpu.read(&ty),
            &padded(&want_y),
            TOL,
        );
        assert_close(
            &format!("softmax backward {shape}"),
            &gpu.read(&tdx),
            &padded(&want_dx),
            TOL,
        );
    }
}

#[test]
fn softmax_reference_backward_matches_finite_differences() {
    let (rows, cols, scale) = (4, 6, 0.7);
    let x: Vec<f64> = to_f64(&random(rows * cols, 5)).iter().map(|v| v * 3.0).collect();
    let r = to_f64(&random(rows * cols, 6));
    let y = reference::softmax::forward(rows, cols, scale, &x);
    let g = reference::softmax::backward(rows, cols, scale, &y, &r);
    let f = |v: &[f64]| dot(&reference::softmax::forward(rows, cols, scale, v), &r);
    check_grad("softmax", &f, &x, &g, 100, FD_TOL);
}
