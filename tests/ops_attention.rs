//! Self-attention block: GPU forward/backward vs the CPU reference, reference backward vs
//! central finite differences for x and all eight parameters.

mod common;
use common::*;
use ddpm_gpu::ops::attention::{self, Attention, AttentionBuffers, AttentionGrads, AttentionWeights};
use ddpm_gpu::reference::attention::{self as reference, Weights};

/// f32 products and softmax through ~6 chained ops against f64.
const TOL: f64 = 2e-6;
const FD_TOL: f64 = 1e-6;

/// Random weights of scale 1/√C (unsaturated softmax), reproducible from `seed`.
fn weights(c: usize, seed: u64) -> Vec<Vec<f32>> {
    let scale = 1.0 / (c as f32).sqrt();
    (0..8)
        .map(|i| {
            let n = if i % 2 == 0 { c * c } else { c };
            random(n, seed + i as u64).iter().map(|v| v * scale).collect()
        })
        .collect()
}

fn to_reference(w: &[Vec<f32>]) -> Weights {
    let mut r = Weights::zeros(0);
    for (dst, src) in r.parts_mut().into_iter().zip(w) {
        *dst = to_f64(src);
    }
    r
}

const NAMES: [&str; 8] = ["wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo"];

fn tensors_as_weights(t: &[Tensor]) -> AttentionWeights<'_> {
    AttentionWeights {
        wq: &t[0],
        bq: &t[1],
        wk: &t[2],
        bk: &t[3],
        wv: &t[4],
        bv: &t[5],
        wo: &t[6],
        bo: &t[7],
    }
}

#[test]
fn attention_forward_and_backward_match_reference() {
    let gpu = gpu();
    // Odd shapes (scalar kernels), and one whose strides are multiples of 4 (vec4 kernels).
    let shapes = [
        Attention {
            batch: 2,
            channels: 6,
            tokens: 5,
            heads: 1,
        },
        Attention {
            batch: 2,
            channels: 12,
            tokens: 9,
            heads: 3,
        },
        Attention {
            batch: 1,
            channels: 6,
            tokens: 9,
            heads: 2,
        },
        Attention {
            batch: 2,
            channels: 8,
            tokens: 8,
            heads: 2,
        },
        Attention {
            batch: 2,
            channels: 16,
            tokens: 12,
            heads: 1,
        },
    ];
    for (si, s) in shapes.iter().enumerate() {
        let seed = 100 * si as u64;
        let n = s.batch * s.channels * s.tokens;
        let x = random(n, seed);
        let w = weights(s.channels, seed + 10);
        let dy = random(n, seed + 20);
        let dx0 = random(n, seed + 21);
        let dw0 = weights(s.channels, seed + 30);
        let t = |v: &[f32]| gpu.tensor(&[v.len()], v);
        let (tx, tdy, tdx, ty) = (t(&x), t(&dy), t(&dx0), gpu.zeros(&[n]));
        let tw: Vec<Tensor> = w.iter().map(|v| t(v)).collect();
        let tdw: Vec<Tensor> = dw0.iter().map(|v| t(v)).collect();
        let buf = AttentionBuffers::new(&gpu, s);
        let mut p = Plan::new(&gpu);
        let (ww, gw) = (tensors_as_weights(&tw), tensors_as_weights(&tdw));
        attention::forward(&mut p, s, &tx, &ww, &buf, &ty);
        attention::backward(&mut p, s, &tx, &ww, &buf, &tdy, AttentionGrads { dx: &tdx, dw: gw });
        p.run();

        let (xf, wf) = (to_f64(&x), to_reference(&w));
        let want_y = reference::forward(s, &xf, &wf);
        let (gx, g) = reference::backward(s, &xf, &wf, &to_f64(&dy));
        let plus = |g: &[f64], a: &[f32]| g.iter().zip(a).map(|(g, &a)| g + a as f64).collect::<Vec<_>>();
        assert_close(&format!("attention forward {s:?}"), &gpu.read(&ty), &want_y, TOL);
        assert_close(&format!("attention dx {s:?}"), &gpu.read(&tdx), &plus(&gx, &dx0), TOL);
        for (i, want) in g.parts().into_iter().enumerate() {
            let what = format!("attention d{} {s:?}", NAMES[i]);
            assert_close(&what, &gpu.read(&tdw[i]), &plus(want, &dw0[i]), TOL);
        }
    }
}

#[test]
fn attention_forward_can_be_replayed() {
    // A plan is recorded once and run many times: the scratch it zeroes itself must not leak
    // from one run into the next (gradients accumulate exactly twice after two runs).
    let gpu = gpu();
    let s = Attention {
        batch: 1,
        channels: 4,
        tokens: 3,
        heads: 2,
    };
    let n = s.channels * s.tokens;
    let (x, w, dy) = (random(n, 1), weights(s.channels, 2), random(n, 3));
    let t = |v: &[f32]| gpu.tensor(&[v.len()], v);
    let (tx, tdy, tdx, ty) = (t(&x), t(&dy), gpu.zeros(&[n]), gpu.zeros(&[n]));
    let tw: Vec<Tensor> = w.iter().map(|v| t(v)).collect();
    let tdw: Vec<Tensor> = w.iter().map(|v| gpu.zeros(&[v.len()])).collect();
    let buf = AttentionBuffers::new(&gpu, &s);
    let mut p = Plan::new(&gpu);
    let (ww, gw) = (tensors_as_weights(&tw), tensors_as_weights(&tdw));
    attention::forward(&mut p, &s, &tx, &ww, &buf, &ty);
    attention::backward(&mut p, &s, &tx, &ww, &buf, &tdy, AttentionGrads { dx: &tdx, dw: gw });
    p.run();
    p.run();
    let (gx, g) = reference::backward(&s, &to_f64(&x), &to_reference(&w), &to_f64(&dy));
    let twice = |v: &[f64]| v.iter().map(|a| 2.0 * a).collect::<Vec<_>>();
    assert_close("attention dx after two runs", &gpu.read(&tdx), &twice(&gx), TOL);
    assert_close("attention dwq after two runs", &gpu.read(&tdw[0]), &twice(&g.wq), TOL);
}

#[test]
fn attention_reference_backward_matches_finite_differences() {
    for s in [
        Attention {
            batch: 2,
            channels: 6,
            tokens: 5,
            heads: 1,
        },
        Attention {
            batch: 2,
            channels: 6,
            tokens: 4,
            heads: 3,
        },
    ] {
        let n = s.batch * s.channels * s.tokens;
        let x = to_f64(&random(n, 1));
        let w = to_reference(&weights(s.channels, 2));
        let r = to_f64(&random(n, 3));
        let (gx, g) = reference::backward(&s, &x, &w, &r);
        let heads = s.heads;
        check_grad(
            &format!("attention dx heads={heads}"),
            &|v| dot(&reference::forward(&s, v, &w), &r),
            &x,
            &gx,
            40,
            FD_TOL,
        );
        for (i, grad) in g.parts().into_iter().enumerate() {
            let f = |v: &[f64]| {
                let mut w2 = w.clone();
                *w2.parts_mut()[i] = v.to_vec();
                dot(&reference::forward(&s, &x, &w2), &r)
            };
            let what = format!("attention d{} heads={heads}", NAMES[i]);
            if NAMES[i] == "bk" {
                // Adding bk shifts every score of a softmax row by the same q·bk: its gradient is
                // exactly zero, so a relative comparison would divide noise by noise.
                let idx: Vec<usize> = (0..grad.len()).collect();
                let num = finite_diff(&f, w.parts()[i], &idx, 1e-6);
                let worst = grad.iter().chain(&num).fold(0.0f64, |m, v| m.max(v.abs()));
                println!("{what}: analytic and numerical gradients ≤ {worst:.3e} (both must vanish)");
                assert!(worst < 1e-8, "{what}: gradient should vanish, got {worst:.3e}");
            } else {
                check_grad(&what, &f, w.parts()[i], grad, 40, FD_TOL);
            }
        }
    }
}
