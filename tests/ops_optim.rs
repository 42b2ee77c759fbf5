//! Reductions, the DDPM loss, Adam/AdamW with global-norm clipping and the parameter EMA:
//! GPU kernels vs the f64 CPU references, the loss gradient vs finite differences, and bit-for-bit
//! repeatability (needed for resuming a run).

mod common;
use common::*;
use ddpm_gpu::ops::adam::AdamParams;
use ddpm_gpu::ops::ema::EmaParams;
use ddpm_gpu::{ops, reference};

/// Reductions: |got − want| / Σ|terms|, the error measure a floating-point sum can be held to
/// (relative to the result itself it is unbounded when terms cancel). The hierarchical f32 sum
/// has a worst case of about levels · 17 · 2⁻²⁴ ≈ 4e-6 for 3M elements (4 levels) and a typical
/// error ~1e-7; a single running f32 sum of 3M values of mean 0.5 is off by ~1e-2.
const SUM_TOL: f64 = 1e-6;
/// Loss value (relative) and dpred (relative L2): a few roundings per element plus the sum.
const LOSS_TOL: f64 = 1e-6;
const FD_TOL: f64 = 1e-6;
/// Adam: moments m, v (relative L2) after 5 steps; the parameters are compared through their
/// change p − p₀ (relative L2), which is ~5·lr while p is rounded to f32 (ulp(1) = 1.2e-7) each
/// step, hence the looser bound.
const MOMENT_TOL: f64 = 1e-5;
const DELTA_TOL: f64 = 1e-4;
/// EMA values (relative L2) after 3 updates.
const EMA_TOL: f64 = 1e-6;
/// Clip factor read back from the GPU vs the f64 clip: sqrt and a division in f32.
const CLIP_TOL: f64 = 1e-6;

/// The reduction variants this adapter runs: `Subgroup` is skipped, with a note, on an adapter
/// without subgroup operations (the GL backend).
fn reduce_variants(gpu: &Gpu) -> Vec<ops::reduce::Variant> {
    use ops::reduce::Variant;
    if gpu.features.contains(wgpu::Features::SUBGROUP) {
        vec![Variant::Levels, Variant::Subgroup]
    } else {
        println!(
            "note: {} has no subgroup operations; reduce Variant::Subgroup not tested",
            gpu.describe()
        );
        vec![Variant::Levels]
    }
}

fn read1(t: &Tensor) -> f64 {
    gpu().read(t)[0] as f64
}

// ---- reductions -------------------------------------------------------------------------------

#[test]
fn sum_and_sum_squares_match_f64_reference() {
    let gpu = gpu();
    // 1: a single level of one term; 64/65/4096/4097: level boundaries (Levels: 64 and 64²
    // values per partial, Subgroup: 4096 per workgroup); 3_000_001: 4 levels (Subgroup: 3).
    for (n, seed) in [
        (1usize, 1u64),
        (64, 2),
        (65, 3),
        (1000, 4),
        (4096, 8),
        (4097, 5),
        (65537, 6),
        (3_000_001, 7),
    ] {
        let zero_mean = random(n, seed);
        let positive_mean: Vec<f32> = zero_mean.iter().map(|v| v + 0.5).collect();
        for ((kind, x), v) in [("zero-mean", &zero_mean), ("mean 0.5", &positive_mean)]
            .into_iter()
            .flat_map(|k| reduce_variants(&gpu).into_iter().map(move |v| (k, v)))
        {
            let kind = format!("{v:?} {kind}");
            let tx = gpu.tensor(&[n], x);
            // Three slots prefilled: the ops must write (=) slot 0 and leave the others alone.
            let (s, ss) = (gpu.tensor(&[3], &[7.0, 8.0, 9.0]), gpu.tensor(&[3], &[7.0, 8.0, 9.0]));
            let mut p = Plan::new(&gpu);
            ops::reduce::sum_with(&mut p, v, &tx, &s);
            ops::reduce::sum_squares_with(&mut p, v, &tx, &ss);
            p.run();
            let x64 = to_f64(x);
            let abs_sum: f64 = x64.iter().map(|v| v.abs()).sum();
            let (got_s, got_ss) = (gpu.read(&s), gpu.read(&ss));
            let e_s = (got_s[0] as f64 - reference::reduce::sum(&x64)).abs() / abs_sum;
            let want_ss = reference::reduce::sum_squares(&x64);
            let e_ss = (got_ss[0] as f64 - want_ss).abs() / want_ss;
            println!("n={n} {kind}: sum error {e_s:.2e}, sum_squares error {e_ss:.2e} (of Σ|terms|)");
            assert!(e_s <= SUM_TOL, "sum n={n} {kind}: error {e_s:.3e} > {SUM_TOL:.0e}");
            assert!(
                e_ss <= SUM_TOL,
                "sum_squares n={n} {kind}: error {e_ss:.3e} > {SUM_TOL:.0e}"
            );
            assert_eq!(&got_s[1..], &[8.0, 9.0], "sum wrote past out[0]");
            assert_eq!(&got_ss[1..], &[8.0, 9.0], "sum_squares wrote past out[0]");
        }
    }
}

#[test]
fn sum_of_empty_tensor_is_zero() {
    let gpu = gpu();
    for v in reduce_variants(&gpu) {
        let (x, out) = (gpu.zeros(&[0]), gpu.tensor(&[1], &[5.0]));
        let mut p = Plan::new(&gpu);
        ops::reduce::sum_with(&mut p, v, &x, &out);
        p.run();
        assert_eq!(read1(&out), 0.0, "{v:?}");
    }
}

#[test]
fn reduce_candidates_follow_the_adapter() {
    let gpu = gpu();
    let c = ops::reduce::Variant::candidates(&gpu);
    println!("{}: reduce candidates {c:?}", gpu.describe());
    assert!(c.contains(&ops::reduce::Variant::Levels));
    assert_eq!(
        c.contains(&ops::reduce::Variant::Subgroup),
        gpu.features.contains(wgpu::Features::SUBGROUP)
    );
}

// ---- loss -------------------------------------------------------------------------------------

#[test]
fn mse_loss_and_gradient_match_reference() {
    let gpu = gpu();
    // numel 1 (the loss kernel writes loss[0] itself), 105 (2 partials), 2907, 6930 (3 levels).
    for (shape, seed) in [
        (vec![1usize], 10u64),
        (vec![1, 3, 5, 7], 11),
        (vec![3, 3, 17, 19], 12),
        (vec![2, 3, 33, 35], 13),
    ] {
        let n: usize = shape.iter().product();
        let pred = random(n, seed);
        let target: Vec<f32> = random(n, seed + 50).iter().map(|v| v * 2.0).collect();
        let (tp, tt) = (gpu.tensor(&shape, &pred), gpu.tensor(&shape, &target));
        let loss = gpu.tensor(&[1], &[3.0]); // prefilled: both outputs are written, not accumulated
        let dpred = gpu.tensor(&shape, &random(n, seed + 99));
        let mut p = Plan::new(&gpu);
        ops::loss::mse_forward_backward(&mut p, &tp, &tt, &loss, &dpred);
        p.run();
        let (want_loss, want_d) = reference::loss::mse(&to_f64(&pred), &to_f64(&target));
        let e = (read1(&loss) - want_loss).abs() / want_loss;
        println!("mse {shape:?}: loss {want_loss:.6}, relative error {e:.2e} (tolerance {LOSS_TOL:.0e})");
        assert!(e <= LOSS_TOL, "mse {shape:?}: loss error {e:.3e}");
        assert_close(&format!("mse dpred {shape:?}"), &gpu.read(&dpred), &want_d, LOSS_TOL);
    }
}

#[test]
fn mse_reference_gradient_matches_finite_differences() {
    let pred = to_f64(&random(51, 20));
    let target = to_f64(&random(51, 21));
    let f = |x: &[f64]| reference::loss::mse(x, &target).0;
    check_grad("mse", &f, &pred, &reference::loss::mse(&pred, &target).1, 51, FD_TOL);
}

// ---- Adam / AdamW -----------------------------------------------------------------------------

/// Learning rate of step t: a linear warm-up, so that every step rewrites the uniform.
fn lr_at(base: f32, t: u32) -> f32 {
    base * (t as f32 / 4.0).min(1.0)
}

/// Gradients of step t: random, scaled.
fn grads_at(n: usize, t: u32, scale: f32) -> Vec<f32> {
    random(n, 1000 + t as u64).iter().map(|v| v * scale).collect()
}

struct AdamRun {
    params: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
}

/// `steps` updates on the GPU, from `params0` and zero moments, with one plan
/// (sum_squares + adam) whose uniform is rewritten every step, as the trainer does.
fn gpu_adam(params0: &[f32], hp: &AdamParams, steps: u32, grad_scale: f32) -> AdamRun {
    let gpu = gpu();
    let n = params0.len();
    let (params, grads, m, v) = (
        gpu.tensor(&[n], params0),
        gpu.zeros(&[n]),
        gpu.zeros(&[n]),
        gpu.zeros(&[n]),
    );
    let sumsq = gpu.zeros(&[1]);
    let mut p = Plan::new(&gpu);
    ops::reduce::sum_squares(&mut p, &grads, &sumsq);
    let idx = ops::adam::step(&mut p, &params, &grads, &m, &v, &sumsq, &hp.at_step(1));
    for t in 1..=steps {
        gpu.write(&grads, &grads_at(n, t, grad_scale));
        p.set_params(
            idx,
            &AdamParams {
                lr: lr_at(hp.lr, t),
                ..*hp
            }
            .at_step(t),
        );
        p.run();
    }
    AdamRun {
        params: gpu.read(&params),
        m: gpu.read(&m),
        v: gpu.read(&v),
    }
}

#[test]
fn adam_and_adamw_match_reference_over_several_steps() {
    let n = 10_007; // odd, 40 workgroups; the gradient norm is ≈ √(n/3)·scale ≈ 58·scale
    let params0: Vec<f32> = random(n, 30).iter().map(|v| v * 2.0).collect();
    let base = AdamParams::new(n, 1e-2);
    let cases = [
        (
            "Adam, L2 decay, clip active",
            AdamParams {
                weight_decay: 0.01,
                max_norm: 1.0,
                ..base
            },
            1.0,
        ),
        (
            "AdamW, clip active",
            AdamParams {
                weight_decay: 0.1,
                decoupled: 1,
                max_norm: 1.0,
                ..base
            },
            1.0,
        ),
        (
            "Adam, clip inactive (norm < max_norm)",
            AdamParams {
                max_norm: 100.0,
                ..base
            },
            1.0,
        ),
        (
            "AdamW, clip disabled, eps ~ |g|",
            AdamParams {
                weight_decay: 0.05,
                decoupled: 1,
                eps: 1e-3,
                beta1: 0.8,
                beta2: 0.99,
                ..base
            },
            1e-3,
        ),
    ];
    for (what, hp, scale) in cases {
        let steps = 5;
        let got = gpu_adam(&params0, &hp, steps, scale);
        let (mut p, mut m, mut v) = (to_f64(&params0), vec![0.0; n], vec![0.0; n]);
        let mut clipped = false;
        for t in 1..=steps {
            let g = to_f64(&grads_at(n, t, scale));
            clipped |= hp.max_norm > 0.0 && reference::reduce::sum_squares(&g).sqrt() > hp.max_norm as f64;
            let hp_t = AdamParams {
                lr: lr_at(hp.lr, t),
                ..hp
            }
            .at_step(t);
            reference::adam::step(&mut p, &g, &mut m, &mut v, &hp_t);
        }
        assert_eq!(
            clipped,
            what.contains("clip active"),
            "{what}: test data does not exercise the case"
        );
        let delta = |q: &[f32]| -> Vec<f32> { q.iter().zip(&params0).map(|(a, b)| a - b).collect() };
        let want_delta: Vec<f64> = p.iter().zip(&params0).map(|(a, &b)| a - b as f64).collect();
        assert_close(&format!("{what}: m"), &got.m, &m, MOMENT_TOL);
        assert_close(&format!("{what}: v"), &got.v, &v, MOMENT_TOL);
        assert_close(&format!("{what}: p − p₀"), &delta(&got.params), &want_delta, DELTA_TOL);
    }
}

#[test]
fn adam_clip_factor_is_the_same_for_every_element() {
    let gpu = gpu();
    let n = 70_001; // 274 workgroups
                    // Gradients ±2^k: then clip·g is exact in f32 and m / g recovers the clip factor exactly.
    let grads: Vec<f32> = random(n, 40)
        .iter()
        .zip(random(n, 41))
        .map(|(s, k)| s.signum() * 2f32.powi((k * 3.5).round() as i32))
        .collect();
    // β1 = 0 so that m = clip·g after the first step.
    let hp = AdamParams {
        beta1: 0.0,
        max_norm: 1.0,
        ..AdamParams::new(n, 1e-3)
    }
    .at_step(1);
    let (params, tg, m, v, sumsq) = (
        gpu.tensor(&[n], &random(n, 42)),
        gpu.tensor(&[n], &grads),
        gpu.zeros(&[n]),
        gpu.zeros(&[n]),
        gpu.zeros(&[1]),
    );
    let mut p = Plan::new(&gpu);
    ops::reduce::sum_squares(&mut p, &tg, &sumsq);
    ops::adam::step(&mut p, &params, &tg, &m, &v, &sumsq, &hp);
    p.run();
    let clips: Vec<f32> = gpu.read(&m).iter().zip(&grads).map(|(m, g)| m / g).collect();
    let norm = reference::reduce::sum_squares(&to_f64(&grads)).sqrt();
    let want = 1.0 / (norm + 1e-6);
    let e = (clips[0] as f64 - want).abs() / want;
    println!("clip factor {:.8e} (norm {norm:.3}), relative error {e:.2e}", clips[0]);
    assert!(e <= CLIP_TOL, "clip factor {} vs {want}", clips[0]);
    let odd = clips.iter().position(|&c| c.to_bits() != clips[0].to_bits());
    assert!(odd.is_none(), "element {odd:?} got another clip factor than element 0");
    assert_eq!(gpu.read(&tg), grads, "adam modified the gradients");
}

#[test]
#[should_panic(expected = "at_step")]
fn adam_rejects_bias_corrections_of_another_step() {
    let gpu = gpu();
    let t = gpu.zeros(&[8]);
    let hp = AdamParams {
        step: 3,
        ..AdamParams::new(8, 1e-3)
    };
    ops::adam::step(&mut Plan::new(&gpu), &t, &t, &t, &t, &t, &hp);
}

// ---- EMA --------------------------------------------------------------------------------------

#[test]
fn ema_matches_reference_with_changing_decay() {
    let gpu = gpu();
    let n = 4099;
    let ema0 = random(n, 50);
    let (ema, params) = (gpu.tensor(&[n], &ema0), gpu.zeros(&[n]));
    let mut p = Plan::new(&gpu);
    let idx = ops::ema::update(&mut p, &ema, &params, 0.5);
    let mut want = to_f64(&ema0);
    for (step, decay) in [0.9f32, 0.99, 0.9999].into_iter().enumerate() {
        let x = random(n, 51 + step as u64);
        gpu.write(&params, &x);
        p.set_params(idx, &EmaParams::new(n, decay));
        p.run();
        reference::ema::update(&mut want, &to_f64(&x), decay as f64);
    }
    assert_close("ema after 3 updates", &gpu.read(&ema), &want, EMA_TOL);
}

// ---- repeatability ----------------------------------------------------------------------------

#[test]
fn same_inputs_give_identical_bits() {
    let gpu = gpu();
    let n = 100_003;
    let x = random(n, 60);
    let tx = gpu.tensor(&[n], &x);
    for v in reduce_variants(&gpu) {
        let run_sum = || {
            let out = gpu.zeros(&[1]);
            let mut p = Plan::new(&gpu);
            ops::reduce::sum_squares_with(&mut p, v, &tx, &out);
            p.run();
            gpu.read(&out)[0].to_bits()
        };
        assert_eq!(run_sum(), run_sum(), "sum_squares {v:?} not repeatable");
    }

    let (target, loss, dpred) = (gpu.tensor(&[n], &random(n, 61)), gpu.zeros(&[1]), gpu.zeros(&[n]));
    let mut p = Plan::new(&gpu);
    ops::loss::mse_forward_backward(&mut p, &tx, &target, &loss, &dpred);
    p.run();
    let first = (gpu.read(&loss), gpu.read(&dpred));
    p.run();
    assert!(first == (gpu.read(&loss), gpu.read(&dpred)), "mse not repeatable");

    let hp = AdamParams {
        weight_decay: 0.1,
        decoupled: 1,
        max_norm: 1.0,
        ..AdamParams::new(n, 2e-4)
    };
    let (a, b) = (gpu_adam(&x, &hp, 3, 1.0), gpu_adam(&x, &hp, 3, 1.0));
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert!(bits(&a.params) == bits(&b.params), "adam params not repeatable");
    assert!(
        bits(&a.m) == bits(&b.m) && bits(&a.v) == bits(&b.v),
        "adam moments not repeatable"
    );
}

// ---- throughput note (no assertions) ----------------------------------------------------------

/// `cargo test --release --test ops_optim -- --ignored --nocapture adam_throughput`
#[test]
#[ignore]
fn adam_throughput() {
    let gpu = gpu();
    // The paper model has 35.7M parameters, but lavapipe binds at most 128 MiB = 2^25 floats.
    let limit = gpu.limits.max_storage_buffer_binding_size as usize / 4;
    let n = 35_700_000usize.min(limit);
    let (params, grads, m, v, sumsq) = (
        gpu.tensor(&[n], &vec![0.5; n]),
        gpu.tensor(&[n], &vec![1e-3; n]),
        gpu.zeros(&[n]),
        gpu.zeros(&[n]),
        gpu.zeros(&[1]),
    );
    let hp = AdamParams {
        max_norm: 1.0,
        ..AdamParams::new(n, 2e-4)
    };
    let mut adam = Plan::new(&gpu);
    ops::adam::step(&mut adam, &params, &grads, &m, &v, &sumsq, &hp);
    let mut norm = Plan::new(&gpu);
    ops::reduce::sum_squares(&mut norm, &grads, &sumsq);
    let mut ema = Plan::new(&gpu);
    ops::ema::update(&mut ema, &m, &params, 0.9999);
    let copy = ops::peak::copy_gbps(&gpu, n * 4);
    let report = |what: &str, plan: &Plan, bytes_per_elem: f64| {
        let secs = ops::peak::time_plan(&gpu, plan, 5);
        let gbps = bytes_per_elem * n as f64 / secs / 1e9;
        println!(
            "{what}: {:.1} ms, {gbps:.2} GB/s = {:.0}% of copy",
            secs * 1e3,
            100.0 * gbps / copy
        );
    };
    println!("adapter {}, n = {n}, copy {copy:.2} GB/s", gpu.describe());
    report("adam (4 reads + 3 writes)", &adam, 28.0);
    report("sum_squares (1 read)", &norm, 4.0);
    report("ema (2 reads + 1 write)", &ema, 12.0);
}
