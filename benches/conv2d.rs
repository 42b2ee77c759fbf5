//! conv2d throughput on the convolutions of a `mnist` training step (batch 32, block_out_channels
//! [16, 32, 32]): `cargo bench --bench conv2d`. For each shape and pass (forward, backward input,
//! backward weight) the GFLOP/s of one fixed variant for every shape (`Tiled { tile_c: 16 }`: 16
//! channels per invocation, weights read in place, no batch split) and of the variant
//! `Choice::for_adapter` picks, and the ms per training step of each (launches per step × time). Each pass costs the forward's
//! FLOPs, 2·N·Cout·OH·OW·Cin·k·k. `DDPM_BENCH_NAIVE=1` adds the naive kernels,
//! `DDPM_BENCH_SHARED=1` the workgroup-memory tiles (`Variant::Shared`).

use ddpm_gpu::gpu::{Gpu, Plan, Tensor};
use ddpm_gpu::ops::conv2d::{self, Choice, Conv2d, Variant};
use ddpm_gpu::ops::peak::{peak_gflops, time_plan};

/// Samples per measurement; the fastest is reported, because on a shared CPU (lavapipe) other
/// processes only ever make a run slower. Variants are timed in turn within each sample.
const SAMPLES: usize = 5;

fn fill(gpu: &Gpu, shape: &[usize], seed: u32) -> Tensor {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
        .collect();
    gpu.tensor(shape, &data)
}

/// (Cin, Cout, side, k, stride, launches per step, backward_input needed) of the `mnist` preset's
/// training step (its conv2d cases are listed by `cargo bench --bench kernels` and `ddpm-gpu tune`).
const MNIST: [(usize, usize, usize, usize, usize, usize, bool); 20] = [
    (1, 16, 28, 3, 1, 1, false),
    (16, 16, 28, 3, 1, 4, true),
    (16, 16, 28, 3, 2, 1, true),
    (16, 32, 14, 3, 1, 1, true),
    (32, 32, 14, 3, 1, 4, true),
    (16, 32, 14, 1, 1, 1, true),
    (32, 32, 14, 3, 2, 1, true),
    (32, 32, 7, 3, 1, 8, true),
    (64, 32, 7, 3, 1, 2, true),
    (64, 32, 7, 1, 1, 2, true),
    (64, 32, 14, 3, 1, 1, true),
    (64, 32, 14, 1, 1, 1, true),
    (48, 32, 14, 3, 1, 1, true),
    (48, 32, 14, 1, 1, 1, true),
    (32, 32, 28, 3, 1, 1, true),
    (48, 16, 28, 3, 1, 1, true),
    (48, 16, 28, 1, 1, 1, true),
    (32, 16, 28, 3, 1, 1, true),
    (32, 16, 28, 1, 1, 1, true),
    (16, 1, 28, 3, 1, 1, true),
];

fn main() {
    let gpu = Gpu::for_tests();
    let flag = |name: &str| std::env::var(name).is_ok_and(|v| v == "1");
    // Optional variants timed beside tiled16 and the chosen one, with their column names.
    let extra: Vec<(Variant, &str)> = [
        (flag("DDPM_BENCH_NAIVE"), Variant::Naive, "naive"),
        (flag("DDPM_BENCH_SHARED"), Variant::Shared, "shared"),
    ]
    .into_iter()
    .filter_map(|(on, v, name)| on.then_some((v, name)))
    .collect();
    println!("adapter: {}", gpu.describe());
    println!("peak FMA: {:.2} GFLOP/s", peak_gflops(&gpu));
    println!(
        "\n| shape | ×/step | pass | tiled16 GF/s | chosen variant | chosen GF/s | speed-up |{}",
        extra
            .iter()
            .map(|(_, name)| format!(" {name} GF/s |"))
            .collect::<String>()
    );
    println!("|---|--:|---|--:|---|--:|--:|{}", "--:|".repeat(extra.len()));
    let mut totals = [0.0f64; 3];
    let mut per_pass = [[0.0f64; 2]; 3];
    for (c_in, c_out, side, k, stride, count, needs_dx) in MNIST {
        let s = Conv2d {
            n: 32,
            c_in,
            h: side,
            w: side,
            c_out,
            k,
            stride,
            pad: match (k, stride) {
                (1, _) => [0; 4],
                (_, 2) => [0, 1, 0, 1],
                _ => [1; 4],
            },
        };
        let x = fill(&gpu, &[s.n, s.c_in, s.h, s.w], 1);
        let w = fill(&gpu, &[s.c_out, s.c_in, s.k, s.k], 2);
        let b = fill(&gpu, &[s.c_out], 3);
        let y = gpu.zeros(&[s.n, s.c_out, s.out_h(), s.out_w()]);
        let dy = fill(&gpu, &[s.n, s.c_out, s.out_h(), s.out_w()], 4);
        let dx = gpu.zeros(&[s.n, s.c_in, s.h, s.w]);
        let dw = gpu.zeros(&[s.c_out, s.c_in, s.k, s.k]);
        let chosen = Choice::for_adapter(&gpu, &s);
        let fixed = Variant::Tiled { tile_c: 16 };
        let pass = |i: usize, v: Variant, p: &mut Plan| match i {
            0 => conv2d::forward(p, &s, Some(v), &x, &w, Some(&b), &y),
            1 => conv2d::backward_input(p, &s, Some(v), &dy, &w, &dx),
            _ => conv2d::backward_weight(p, &s, Some(v), &x, &dy, &dw),
        };
        for (i, name) in ["forward", "backward_input", "backward_weight"].into_iter().enumerate() {
            if i == 1 && !needs_dx {
                continue;
            }
            let v = [chosen.forward, chosen.backward_input, chosen.backward_weight][i];
            let mut variants = vec![fixed, v];
            variants.extend(extra.iter().map(|&(v, _)| v));
            let plans: Vec<Plan> = variants
                .iter()
                .map(|&v| {
                    let mut p = Plan::new(&gpu);
                    pass(i, v, &mut p);
                    p
                })
                .collect();
            let mut best = vec![f64::INFINITY; plans.len()];
            for _ in 0..SAMPLES {
                for (t, p) in best.iter_mut().zip(&plans) {
                    *t = t.min(time_plan(&gpu, p, 1));
                }
            }
            let gf = |t: f64| s.flops() / t / 1e9;
            print!(
                "| {k}×{k} s{stride} {c_in}→{c_out} @ {side}² | {count} | {name} | {:.2} | {v:?} | {:.2} | {:.2}× |",
                gf(best[0]),
                gf(best[1]),
                best[0] / best[1]
            );
            for &t in &best[2..] {
                print!(" {:.2} |", gf(t));
            }
            println!();
            per_pass[i][0] += count as f64 * best[0];
            per_pass[i][1] += count as f64 * best[1];
            totals[0] += count as f64 * best[0];
            totals[1] += count as f64 * best[1];
        }
        totals[2] += count as f64 * s.flops() * if needs_dx { 3.0 } else { 2.0 };
    }
    println!("\nms per mnist training step (launches × fastest time), tiled16 → chosen:");
    for (name, [a, b]) in ["forward", "backward_input", "backward_weight"].iter().zip(per_pass) {
        println!("  {name:<16} {:>8.1} → {:>8.1}  ({:.2}×)", a * 1e3, b * 1e3, a / b);
    }
    println!(
        "  all conv passes  {:>8.1} → {:>8.1}  ({:.2}×), {:.2} → {:.2} GFLOP/s",
        totals[0] * 1e3,
        totals[1] * 1e3,
        totals[0] / totals[1],
        totals[2] / totals[0] / 1e9,
        totals[2] / totals[1] / 1e9
    );
}
