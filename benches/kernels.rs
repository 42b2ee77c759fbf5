//! Where a step's time goes, kernel by kernel, and how each kernel choice compares with its
//! alternatives at the shapes the step really runs: `cargo bench --bench kernels`.
//!
//! Nothing here describes the network: each setting builds the real training step
//! (`Trainer::synthetic`, on zero images) and the real sampling step (`Sampler::step_plan`) and
//! times every dispatch they record with the profiler `ddpm-gpu profile` uses
//! (`gpu::Profile::measure`: a warm-up run, then `reps` runs timed dispatch by dispatch, each
//! dispatch keeping its median, and `reps` whole runs). The kernels are the heuristics'
//! (`Gpu::for_tests` leaves tuning off, as `--no-tune`), so the bench does not depend on a tuning
//! cache and runs the same kernels every time. Two settings: the `mnist` preset at batch 32
//! (3 reps) and the paper's `ddpm-cifar10` at batch `DDPM_BENCH_CIFAR_BATCH` (1 rep; default 4,
//! the step bench's batch). Whole steps are run, not one launch per shape as the bench did before
//! 2026-11-30: a `ddpm-cifar10` training step takes 12–13.5 s at batch 4 on idle lavapipe, about
//! 50 s at 16, about 7 minutes at the paper's 128. Kernel times scale about linearly with the
//! batch at these sizes, so the shares of the step barely depend on it.
//!
//! Per setting and step:
//! - a table by kernel (`shader::entry`): launches, ms, share of the dispatches' total, and
//!   GFLOP/s with % of the peak-FMA probe where the kernel states its FLOPs (conv2d, matmul), else
//!   GB/s of the bytes it binds with % of the copy probe at the nearest power-of-two size
//!   (`gpu::Probes`). Buffer clears (zeroed gradients) are not dispatches: they count only in the
//!   whole step's time, run in one submission;
//! - the same by kernel family (the shader: `conv2d`, `matmul`, `group_norm`, ...), to see which
//!   kernel to optimise next;
//! - the variants, from the autotuner (`ops::tune`): while the steps are recorded the ops remember
//!   every case (op × shape) that has variants, and `tune::tune_missing` times each candidate on
//!   zero tensors of that shape with the same dispatch timer (one run each; the heuristic and the
//!   two fastest twice, keeping their best). Per case, slowest first: the heuristic's variant and
//!   time, the fastest candidate and time, their ratio, and the readable naive kernel (conv2d
//!   `*_naive`, matmul `Variant::Naive`, recorded with `Case::record`) up to `NAIVE_MAX_GFLOP`.
//!   The tuner's choices are thrown away (never saved: the user's tuning cache is not touched),
//!   and on CPU adapters the tuner leaves out the workgroup-memory kernels (see `ops::tune`).
//!   The group norm mappings, the flat concat and channel-bias mappings and the naive products
//!   inside linear layers and attention, which the old bench compared by hand, are cases here; its
//!   one other comparison, the fill kernel against `Plan::clear`, is not a kernel case and is
//!   gone (its figures stay in docs/PERFORMANCE.md).
//!
//! Then, outside the quick run, the shapes the performance issue quotes burn's figures at: a 3×3
//! conv 64→64 at [32, 64, 28, 28] (each pass, and the naive kernels), a group norm there, and
//! square products of 512 and 1024 against the naive matmul (`ops::peak::time_plan`).
//!
//! On lavapipe, with two other sessions building on the same 2 cores (FMA probe 13–33 GFLOP/s
//! against 42–64 idle), the default run took 9.4 minutes (155 s of it timing the candidates of
//! `ddpm-cifar10`'s 154 cases) and `DDPM_BENCH_QUICK=1` (only `mnist`, no naive kernels, no
//! reference shapes) 80 s.

use std::time::{Duration, Instant};

use ddpm_gpu::diffusion::sampler::Sampler;
use ddpm_gpu::diffusion::trainer::{TrainConfig, Trainer};
use ddpm_gpu::gpu::{Gpu, Plan, Probes, Profile, Timer, Tuning};
use ddpm_gpu::model::{ParamTable, UNetConfig};
use ddpm_gpu::ops::conv2d::{self, Conv2d};
use ddpm_gpu::ops::group_norm::{self, GroupNorm};
use ddpm_gpu::ops::matmul::{self, matmul_ext, Extra, Matmul};
use ddpm_gpu::ops::peak::{peak_gflops, time_plan};
use ddpm_gpu::ops::tune::{self, Case};

/// Naive kernels are timed only up to this many GFLOP (they run at 1-3 GFLOP/s on lavapipe).
const NAIVE_MAX_GFLOP: f64 = 3.0;
/// Rows of the per-kernel tables (the rest are summed into one line).
const ROWS: usize = 30;

fn main() {
    let quick = std::env::var("DDPM_BENCH_QUICK").is_ok_and(|v| v == "1");
    let cifar_batch: usize = std::env::var("DDPM_BENCH_CIFAR_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let gpu = Gpu::for_tests();
    let start = Instant::now();
    println!(
        "# ddpm-gpu kernel benchmark{}\n",
        if quick { " (DDPM_BENCH_QUICK=1)" } else { "" }
    );
    println!("- adapter: {}", gpu.describe());
    println!(
        "- LP_NUM_THREADS: {}; dispatch timer: {:?}",
        std::env::var("LP_NUM_THREADS").unwrap_or_else(|_| "unset".into()),
        Timer::for_gpu(&gpu)
    );
    setting(&gpu, "mnist", 32, 3, !quick);
    if !quick {
        setting(&gpu, "ddpm-cifar10", cifar_batch, 1, true);
        issue_shapes(&gpu);
    }
    println!("\nThe bench took {:.0} s.", start.elapsed().as_secs_f64());
}

/// `conv2d_tile8::conv_packed` → `conv2d`: the shader, its specialisations merged.
fn family(kernel: &str) -> String {
    let shader = kernel.split("::").next().unwrap_or(kernel);
    shader.split("_tile").next().unwrap_or(shader).to_string()
}

/// Profile one preset's training and sampling steps at batch `n` (`reps` timed runs), then
/// compare the variants of every case they recorded.
fn setting(gpu: &Gpu, preset: &str, n: usize, reps: usize, naive: bool) {
    let model = UNetConfig::preset(preset).expect("preset");
    let table = ParamTable::new(&model);
    let weights = table.init(0);
    let cfg = TrainConfig {
        batch_size: n,
        ..TrainConfig::for_preset(preset)
    };
    // Tuning on without choices: every op still takes its heuristic, and remembers its case.
    gpu.tuning.lock().unwrap().enabled = true;
    let timer = Timer::for_gpu(gpu);
    let train = {
        let trainer = Trainer::synthetic(gpu, &model, &cfg, &weights).expect("training step");
        Profile::measure(trainer.plan(), timer, reps)
    };
    let sample = {
        let params = gpu.tensor(&[table.total], &weights);
        let sampler = Sampler::new(gpu, &model, &table, &params, n).expect("sampling step");
        Profile::measure(sampler.step_plan(), timer, reps)
    };
    let probes = Probes::measure(gpu, &[&train, &sample]);
    println!(
        "\n## `{preset}` at batch {n}: {} parameters\n\n{}",
        table.count(),
        probes.describe()
    );
    for (what, profile) in [("training", &train), ("sampling", &sample)] {
        let flops: f64 = profile.dispatches.iter().map(|d| d.flops).sum();
        println!(
            "\n### {what} step: {} dispatches timed one by one (median of {reps}), {:.1} ms in all ({:.2} GFLOP/s of the \
             convolutions' and products' {:.2} GFLOP); the whole step in one submission {:.1} ms\n",
            profile.dispatches.len(),
            profile.total() * 1e3,
            flops / profile.total() / 1e9,
            flops / 1e9,
            profile.step_seconds * 1e3
        );
        let by_kernel = profile.rows(|d| d.kernel.clone());
        println!("{}", profile.table("kernel", &by_kernel, ROWS, &probes));
        let by_family = profile.rows(|d| family(&d.kernel));
        println!("{}", profile.table("kernel family", &by_family, ROWS, &probes));
    }
    variants(gpu, naive);
    *gpu.tuning.lock().unwrap() = Tuning::default();
}

/// `{"Tiled":{"tile_c":16}}` → `Tiled:{tile_c:16}`.
fn show(variant: &str) -> String {
    let v = variant.replace('"', "");
    match v.strip_prefix('{').and_then(|v| v.strip_suffix('}')) {
        Some(inner) => inner.to_string(),
        None => v,
    }
}

/// Time the candidates of every case recorded since tuning was enabled; print each case's
/// heuristic against the fastest candidate (and the naive kernel when `naive`).
fn variants(gpu: &Gpu, naive: bool) {
    let start = Instant::now();
    let mut tuned = tune::tune_missing(gpu, Duration::MAX, |_, _| {}).expect("timing the candidates");
    let secs = start.elapsed().as_secs_f64();
    let ms = |t: &tune::Tuned, v: &str| t.times_ms[v];
    tuned.sort_by(|a, b| ms(b, &b.heuristic).total_cmp(&ms(a, &a.heuristic)));
    println!(
        "### Variants at the steps' shapes: {} cases (timed in {secs:.0} s), slowest first\n",
        tuned.len()
    );
    println!(
        "| case | heuristic | ms | fastest | ms | heuristic / fastest | naive ms | naive / heuristic |\n\
         |---|---|--:|---|--:|--:|--:|--:|"
    );
    let (mut sum_heuristic, mut sum_fastest, mut slower) = (0.0, 0.0, 0);
    for t in &tuned {
        let (fastest, fast_ms) = t
            .times_ms
            .iter()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .expect("a case has candidates");
        let h = ms(t, &t.heuristic);
        sum_heuristic += h;
        sum_fastest += fast_ms;
        if *fast_ms * tune::MARGIN < h {
            slower += 1;
        }
        let naive = naive.then(|| naive_ms(gpu, &t.case)).flatten();
        let (naive_col, naive_ratio) = match naive {
            Some(n) => (format!("{n:.3}"), format!("{:.1}×", n / h)),
            None => Default::default(),
        };
        println!(
            "| {} | {} | {h:.3} | {} | {fast_ms:.3} | {:.2} | {naive_col} | {naive_ratio} |",
            t.case.describe(),
            show(&t.heuristic),
            show(fastest),
            h / fast_ms
        );
    }
    println!(
        "\nΣ over the cases (one launch each): heuristic {sum_heuristic:.1} ms, fastest {sum_fastest:.1} ms \
         ({:.2}×); in {slower} of {} cases a candidate beat the heuristic by the tuner's margin ({:.0}%)",
        sum_heuristic / sum_fastest,
        tuned.len(),
        (tune::MARGIN - 1.0) * 100.0
    );
}

/// Milliseconds of the case's naive kernel (conv2d, matmul) up to `NAIVE_MAX_GFLOP`.
fn naive_ms(gpu: &Gpu, case: &Case) -> Option<f64> {
    let (flops, variant) = match case {
        Case::Conv2d { shape, .. } => (shape.flops(), serde_json::to_string(&conv2d::Variant::Naive)),
        Case::Matmul { shape, .. } => (shape.flops(), serde_json::to_string(&matmul::Variant::Naive)),
        _ => return None,
    };
    if flops > NAIVE_MAX_GFLOP * 1e9 {
        return None;
    }
    let plan = case
        .record(gpu, &variant.expect("a variant serialises"))
        .expect("the naive kernel records");
    Some(plan.time(Timer::for_gpu(gpu)).iter().sum::<f64>() * 1e3)
}

/// The shapes the performance issue quotes burn's figures at (docs/PERFORMANCE.md compares).
fn issue_shapes(gpu: &Gpu) {
    let peak = peak_gflops(gpu);
    println!("\n## Reference shapes of the issue (burn's figures); peak-FMA probe {peak:.2} GFLOP/s\n");
    println!("| kernel | shape | ms | rate | naive ms | speed-up |\n|---|---|--:|--:|--:|--:|");
    type Record<'a> = &'a dyn Fn(&mut Plan);
    // Seconds per run (warm-up, then the median of `reps`).
    let time = |reps: usize, record: Record| {
        let mut p = Plan::new(gpu);
        record(&mut p);
        time_plan(gpu, &p, reps)
    };
    // One row: `work` FLOPs (or bytes when `gbs`); the naive kernel once, it is slow.
    let row = |kernel: &str, shape: &str, work: f64, gbs: bool, fast: Record, naive: Option<Record>| {
        let secs = time(3, fast);
        let rate = match gbs {
            true => format!("{:.2} GB/s", work / secs / 1e9),
            false => format!("{:.2} GFLOP/s", work / secs / 1e9),
        };
        let (n, speedup) = match naive.map(|r| time(1, r)) {
            Some(n) => (format!("{:.3}", n * 1e3), format!("{:.1}×", n / secs)),
            None => Default::default(),
        };
        println!("| {kernel} | {shape} | {:.3} | {rate} | {n} | {speedup} |", secs * 1e3);
        secs
    };
    let s = Conv2d {
        n: 32,
        c_in: 64,
        h: 28,
        w: 28,
        c_out: 64,
        k: 3,
        stride: 1,
        pad: [1; 4],
    };
    let z = |n: usize| gpu.zeros(&[n]);
    let (x, w, b, y) = (z(32 * 64 * 784), z(64 * 64 * 9), z(64), z(32 * 64 * 784));
    let (dx, dw, db) = (z(x.len()), z(w.len()), z(64));
    let shape = "3×3 64→64 @ [32, 64, 28, 28]";
    let f = s.flops();
    let iteration = row(
        "conv2d forward",
        shape,
        f,
        false,
        &|p| conv2d::forward(p, &s, None, &x, &w, Some(&b), &y),
        Some(&|p| conv2d::forward_naive(p, &s, &x, &w, Some(&b), &y)),
    ) + row(
        "conv2d backward_input",
        shape,
        f,
        false,
        &|p| conv2d::backward_input(p, &s, None, &y, &w, &dx),
        Some(&|p| conv2d::backward_input_naive(p, &s, &y, &w, &dx)),
    ) + row(
        "conv2d backward_weight",
        shape,
        f,
        false,
        &|p| conv2d::backward_weight(p, &s, None, &x, &y, &dw),
        Some(&|p| conv2d::backward_weight_naive(p, &s, &x, &y, &dw)),
    ) + row(
        "conv2d backward_bias",
        shape,
        4.0 * y.len() as f64,
        true,
        &|p| conv2d::backward_bias(p, &s, None, &y, &db),
        None,
    );
    let g = GroupNorm {
        n: 32,
        c: 64,
        hw: 784,
        groups: 32,
        eps: 1e-5,
    };
    let (stats_a, stats_b) = (z(32 * 32), z(32 * 32));
    // Algorithmic traffic: x read, y written (8 bytes per element).
    row(
        "group norm forward",
        "[32, 64, 28, 28] g32",
        8.0 * x.len() as f64,
        true,
        &|p| {
            let t = group_norm::Tensors {
                x: &x,
                gamma: &b,
                beta: &db,
                mean: &stats_a,
                rstd: &stats_b,
            };
            group_norm::forward(p, &g, group_norm::Options::default(), t, &y)
        },
        None,
    );
    for size in [512, 1024] {
        let m = Matmul::new(1, size, size, size);
        let (a, bm, c) = (z(size * size), z(size * size), z(size * size));
        let e = Extra::default();
        row(
            "matmul square",
            &format!("{size}³"),
            m.flops(),
            false,
            &|p| matmul_ext(p, &m, &e, None, &a, &bm, &c),
            Some(&|p| matmul_ext(p, &m, &e, Some(matmul::Variant::Naive), &a, &bm, &c)),
        );
    }
    println!("\nconv2d 3×3 64→64 @ [32, 64, 28, 28] forward + backward (input, weight, bias): {iteration:.3} s per iteration");
}
