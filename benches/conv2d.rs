//! conv2d throughput: `cargo bench --bench conv2d`. For each shape and pass (forward, backward
//! input, backward weight) the naive and tiled kernels' GFLOP/s, % of the peak-FMA probe, and the
//! tiled kernel's speed-up. Each pass costs the forward's FLOPs, 2·N·Cout·OH·OW·Cin·k·k.

use ddpm_gpu::gpu::{Gpu, Plan, Tensor};
use ddpm_gpu::ops::conv2d::{self, Conv2d};
use ddpm_gpu::ops::peak::{peak_gflops, time_plan};

/// Samples per measurement. Each sample is `time_plan` over one run; the fastest is reported,
/// because on a shared CPU (lavapipe) other processes only ever make a run slower.
const SAMPLES: usize = 3;

fn fill(gpu: &Gpu, shape: &[usize], seed: u32) -> Tensor {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
        .collect();
    gpu.tensor(shape, &data)
}

fn main() {
    let gpu = Gpu::for_tests();
    println!("adapter: {}", gpu.describe());
    let peak = peak_gflops(&gpu);
    println!("peak FMA: {peak:.2} GFLOP/s");
    let shapes = [
        (
            "3x3 s1 [N=32, 64->64, 28x28, pad 1]",
            Conv2d {
                n: 32,
                c_in: 64,
                h: 28,
                w: 28,
                c_out: 64,
                k: 3,
                stride: 1,
                pad: [1; 4],
            },
        ),
        (
            "3x3 s1 [N=8, 128->128, 32x32, pad 1]",
            Conv2d {
                n: 8,
                c_in: 128,
                h: 32,
                w: 32,
                c_out: 128,
                k: 3,
                stride: 1,
                pad: [1; 4],
            },
        ),
        (
            "3x3 s2 downsample [N=8, 128->128, 32x32 -> 16x16, pad 0,1,0,1]",
            Conv2d {
                n: 8,
                c_in: 128,
                h: 32,
                w: 32,
                c_out: 128,
                k: 3,
                stride: 2,
                pad: [0, 1, 0, 1],
            },
        ),
    ];
    for (name, s) in shapes {
        println!("\n{name}: {:.3} GFLOP per pass", s.flops() / 1e9);
        println!(
            "  {:<16} {:>10} {:>8} {:>10} {:>8} {:>9} {:>10}",
            "pass", "naive GF/s", "% peak", "tiled GF/s", "% peak", "speed-up", "tiled ms"
        );
        let x = fill(&gpu, &[s.n, s.c_in, s.h, s.w], 1);
        let w = fill(&gpu, &[s.c_out, s.c_in, s.k, s.k], 2);
        let b = fill(&gpu, &[s.c_out], 3);
        let y = gpu.zeros(&[s.n, s.c_out, s.out_h(), s.out_w()]);
        let dy = fill(&gpu, &[s.n, s.c_out, s.out_h(), s.out_w()], 4);
        let dx = gpu.zeros(&[s.n, s.c_in, s.h, s.w]);
        let dw = gpu.zeros(&[s.c_out, s.c_in, s.k, s.k]);
        let time = |record: &dyn Fn(&mut Plan)| {
            let mut p = Plan::new(&gpu);
            record(&mut p);
            (0..SAMPLES)
                .map(|_| time_plan(&gpu, &p, 1))
                .fold(f64::INFINITY, f64::min)
        };
        let passes: [(&str, f64, f64); 3] = [
            (
                "forward",
                time(&|p| conv2d::forward_naive(p, &s, &x, &w, Some(&b), &y)),
                time(&|p| conv2d::forward(p, &s, &x, &w, Some(&b), &y)),
            ),
            (
                "backward_input",
                time(&|p| conv2d::backward_input_naive(p, &s, &dy, &w, &dx)),
                time(&|p| conv2d::backward_input(p, &s, &dy, &w, &dx)),
            ),
            (
                "backward_weight",
                time(&|p| conv2d::backward_weight_naive(p, &s, &x, &dy, &dw)),
                time(&|p| conv2d::backward_weight(p, &s, &x, &dy, &dw)),
            ),
        ];
        let forward_secs = passes[0].2;
        for (pass, naive, tiled) in passes {
            let (gn, gt) = (s.flops() / naive / 1e9, s.flops() / tiled / 1e9);
            println!(
                "  {pass:<16} {gn:>10.2} {:>7.1}% {gt:>10.2} {:>7.1}% {:>8.1}x {:>10.1}  ({:.2}x forward time)",
                100.0 * gn / peak,
                100.0 * gt / peak,
                naive / tiled,
                tiled * 1e3,
                tiled / forward_secs
            );
        }
        let bias = time(&|p| conv2d::backward_bias(p, &s, &dy, &b));
        println!("  backward_bias: {:.2} ms", bias * 1e3);
    }
}
