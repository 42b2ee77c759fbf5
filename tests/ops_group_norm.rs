//! Fused group norm + SiLU (`group_norm::forward` / `backward` with `Options::silu`): GPU kernels (every
//! mapping) vs the CPU reference on awkward shapes, the backward accumulating into prefilled
//! gradients; the reference backward vs finite differences. The plain group norm is tested in
//! `tests/ops_norm.rs`.

mod common;
use common::*;
use ddpm_gpu::ops::group_norm::{self, Grads, GroupNorm, Mapping, Options, Tensors};
use ddpm_gpu::ops::silu;
use ddpm_gpu::reference;

const FWD_TOL: f64 = 2e-6;
// 1e-5, not 5e-6: on an NVIDIA H200 the serial mapping's dx of a group of one value (n 1, c 7,
// hw 1, 7 groups: pure cancellation, g − mean(g) times rstd = 1/√eps ≈ 316) measured 5.45e-6.
const BWD_TOL: f64 = 1e-5;
const FD_TOL: f64 = 1e-6;
const EPS: f32 = 1e-5;

const MAPPINGS: [Mapping; 3] = [Mapping::Workgroup, Mapping::Serial, Mapping::Subgroup];

struct Data {
    x: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    da: Vec<f32>,
    dx0: Vec<f32>,
    dgamma0: Vec<f32>,
    dbeta0: Vec<f32>,
}

fn data(s: &GroupNorm, seed: u64) -> Data {
    let numel = s.n * s.c * s.hw;
    // Per-channel scale so groups differ in spread; γ spread around 1.5 and β over ±1 so that the
    // normalized values reach well into both the negative and positive sides of the SiLU.
    let x = random(numel, seed)
        .iter()
        .enumerate()
        .map(|(i, v)| v * (1.0 + ((i / s.hw) % 5) as f32) + 0.3)
        .collect();
    Data {
        x,
        gamma: random(s.c, seed + 1).iter().map(|v| 1.5 + v).collect(),
        beta: random(s.c, seed + 2),
        da: random(numel, seed + 3),
        dx0: random(numel, seed + 4),
        dgamma0: random(s.c, seed + 5),
        dbeta0: random(s.c, seed + 6),
    }
}

fn gn(n: usize, c: usize, hw: usize, groups: usize) -> GroupNorm {
    GroupNorm {
        n,
        c,
        hw,
        groups,
        eps: EPS,
    }
}

/// GPU buffers of one test case, gradients prefilled.
struct Bufs {
    x: Tensor,
    gamma: Tensor,
    beta: Tensor,
    a: Tensor,
    mean: Tensor,
    rstd: Tensor,
    da: Tensor,
    dx: Tensor,
    dgamma: Tensor,
    dbeta: Tensor,
}

impl Bufs {
    fn tensors(&self) -> Tensors<'_> {
        Tensors {
            x: &self.x,
            gamma: &self.gamma,
            beta: &self.beta,
            mean: &self.mean,
            rstd: &self.rstd,
        }
    }

    fn grads(&self) -> Grads<'_> {
        Grads {
            dy: &self.da,
            dx: &self.dx,
            dgamma: &self.dgamma,
            dbeta: &self.dbeta,
        }
    }
}

fn upload(gpu: &Gpu, s: &GroupNorm, d: &Data) -> Bufs {
    let (numel, stats) = (s.n * s.c * s.hw, s.n * s.groups);
    Bufs {
        x: gpu.tensor(&[s.n, s.c, s.hw], &d.x),
        gamma: gpu.tensor(&[s.c], &d.gamma),
        beta: gpu.tensor(&[s.c], &d.beta),
        a: gpu.zeros(&[s.n, s.c, s.hw]),
        mean: gpu.zeros(&[stats]),
        rstd: gpu.zeros(&[stats]),
        da: gpu.tensor(&[numel], &d.da),
        dx: gpu.tensor(&[numel], &d.dx0),
        dgamma: gpu.tensor(&[s.c], &d.dgamma0),
        dbeta: gpu.tensor(&[s.c], &d.dbeta0),
    }
}

/// Compare a, mean, rstd and the accumulated gradients with the reference.
fn compare(what: &str, gpu: &Gpu, s: &GroupNorm, d: &Data, b: &Bufs) {
    let (x64, g64, b64) = (to_f64(&d.x), to_f64(&d.gamma), to_f64(&d.beta));
    let f = reference::group_norm::forward_silu(s, &x64, &g64, &b64);
    let r = reference::group_norm::backward_silu(s, &x64, &g64, &b64, &f.mean, &f.rstd, &to_f64(&d.da));
    assert_close(&format!("{what} a"), &gpu.read(&b.a), &f.y, FWD_TOL);
    let e = max_rel(&gpu.read(&b.mean), &f.mean, 1.0);
    println!("{what} mean: max error {e:.3e} relative to |mean| + 1 (tolerance {FWD_TOL:.1e})");
    assert!(e <= FWD_TOL, "{what} mean: error {e:.3e}");
    assert_close(&format!("{what} rstd"), &gpu.read(&b.rstd), &f.rstd, FWD_TOL);
    assert_close(&format!("{what} dx"), &gpu.read(&b.dx), &plus(&d.dx0, &r.dx), BWD_TOL);
    assert_close(
        &format!("{what} dgamma"),
        &gpu.read(&b.dgamma),
        &plus(&d.dgamma0, &r.dgamma),
        BWD_TOL,
    );
    assert_close(
        &format!("{what} dbeta"),
        &gpu.read(&b.dbeta),
        &plus(&d.dbeta0, &r.dbeta),
        BWD_TOL,
    );
}

#[test]
fn group_norm_silu_matches_reference_on_awkward_shapes() {
    let gpu = gpu();
    let shapes = [
        gn(1, 6, 5 * 7, 2),    // batch 1, odd H·W, 3 channels per group
        gn(3, 9, 5 * 7, 3),    // 3 channels per group, C odd
        gn(2, 5, 3, 5),        // one channel per group
        gn(1, 7, 1, 7),        // one value per group: σ² = 0, a = silu(β)
        gn(2, 12, 17 * 19, 3), // groups longer than a workgroup (1292 values)
        gn(3, 64, 7 * 7, 32),  // the mnist preset's 7×7 level, 2 channels per group
    ];
    for (i, s) in shapes.into_iter().enumerate() {
        for m in MAPPINGS.into_iter().filter(|&m| runs_here(&gpu, m)) {
            let d = data(&s, 10 * i as u64);
            let b = upload(&gpu, &s, &d);
            let mut p = Plan::new(&gpu);
            let o = Options {
                silu: true,
                mapping: Some(m),
            };
            group_norm::forward(&mut p, &s, o, b.tensors(), &b.a);
            group_norm::backward(&mut p, &s, o, b.tensors(), b.grads());
            p.run();
            compare(&format!("group_norm_silu {m:?} {s:?}"), &gpu, &s, &d, &b);
        }
    }
}

#[test]
fn group_norm_silu_default_mapping_runs() {
    // `forward` / `backward` pick the mapping from the adapter when `Options` names none.
    let gpu = gpu();
    let s = gn(1, 6, 5 * 3, 2);
    let d = data(&s, 5);
    let b = upload(&gpu, &s, &d);
    let mut p = Plan::new(&gpu);
    group_norm::forward(&mut p, &s, Options::SILU, b.tensors(), &b.a);
    group_norm::backward(&mut p, &s, Options::SILU, b.tensors(), b.grads());
    p.run();
    println!("default mapping on this adapter: {:?}", Mapping::for_adapter(&gpu));
    compare("group_norm_silu default", &gpu, &s, &d, &b);
}

#[test]
fn group_norm_silu_equals_the_unfused_kernels() {
    // The fused kernels against the readable path they replace: group_norm then silu forward,
    // silu backward into a zeroed dn then group_norm backward.
    let gpu = gpu();
    let s = gn(2, 6, 5 * 7, 3);
    let d = data(&s, 42);
    let fused = upload(&gpu, &s, &d);
    let plain = upload(&gpu, &s, &d);
    let n = gpu.zeros(&[s.n, s.c, s.hw]);
    let dn = gpu.zeros(&[s.n, s.c, s.hw]);
    let mut p = Plan::new(&gpu);
    let f = &fused;
    group_norm::forward(&mut p, &s, Options::SILU, f.tensors(), &f.a);
    group_norm::backward(&mut p, &s, Options::SILU, f.tensors(), f.grads());
    let u = &plain;
    let plain_opts = Options::default();
    group_norm::forward(&mut p, &s, plain_opts, u.tensors(), &n);
    silu::forward(&mut p, &n, &u.a);
    silu::backward(&mut p, &n, &u.da, &dn);
    let g = Grads { dy: &dn, ..u.grads() };
    group_norm::backward(&mut p, &s, plain_opts, u.tensors(), g);
    p.run();
    for (what, a, b, tol) in [
        ("a", &f.a, &u.a, FWD_TOL),
        ("dx", &f.dx, &u.dx, BWD_TOL),
        ("dgamma", &f.dgamma, &u.dgamma, BWD_TOL),
        ("dbeta", &f.dbeta, &u.dbeta, BWD_TOL),
    ] {
        assert_close(
            &format!("fused vs unfused {what}"),
            &gpu.read(a),
            &to_f64(&gpu.read(b)),
            tol,
        );
    }
}

#[test]
fn group_norm_silu_reference_backward_matches_finite_differences() {
    for s in [gn(2, 6, 5, 3), gn(1, 3, 7, 3)] {
        let d = data(&s, 3);
        let (x, gamma, beta) = (to_f64(&d.x), to_f64(&d.gamma), to_f64(&d.beta));
        let w = to_f64(&d.da);
        let f = reference::group_norm::forward_silu(&s, &x, &gamma, &beta);
        let b = reference::group_norm::backward_silu(&s, &x, &gamma, &beta, &f.mean, &f.rstd, &w);
        let loss = |x: &[f64], gamma: &[f64], beta: &[f64]| {
            dot(&reference::group_norm::forward_silu(&s, x, gamma, beta).y, &w)
        };
        let what = format!("group_norm_silu {s:?}");
        check_grad(
            &format!("{what} dx"),
            &|v| loss(v, &gamma, &beta),
            &x,
            &b.dx,
            60,
            FD_TOL,
        );
        check_grad(
            &format!("{what} dgamma"),
            &|v| loss(&x, v, &beta),
            &gamma,
            &b.dgamma,
            60,
            FD_TOL,
        );
        check_grad(
            &format!("{what} dbeta"),
            &|v| loss(&x, &gamma, v),
            &beta,
            &b.dbeta,
            60,
            FD_TOL,
        );
    }
}
