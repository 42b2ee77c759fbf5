//! Matrix product benchmark: `cargo bench --bench matmul`. Prints the adapter, its peak-FMA
//! GFLOP/s (`ops::peak`), then GFLOP/s and % of peak of each kernel (naive, blocked, vec4, wide,
//! shared) on square products and on the products of the attention block of a 28×28 MNIST U-Net
//! (B = 64, C = 64, T = 196 at 14×14 and T = 49 at 7×7), and the whole attention block.
//! Times are medians of wall-clock runs (`ops::peak::time_plan`); other processes on the machine
//! inflate them.

use ddpm_gpu::gpu::{Gpu, Plan, Tensor};
use ddpm_gpu::ops::attention::{self, Attention, AttentionBuffers, AttentionWeights};
use ddpm_gpu::ops::matmul::{matmul_ext, vec4_ok, Extra, Matmul, Variant};
use ddpm_gpu::ops::peak;

fn bench(gpu: &Gpu, peak: f64, name: &str, s: &Matmul) {
    let len = |rows: usize, ld: usize, stride: usize| (s.batch - 1) * stride + rows * ld;
    let na = len(if s.trans_a { s.k } else { s.m }, s.lda, s.stride_a).div_ceil(4) * 4;
    let nb = len(if s.trans_b { s.n } else { s.k }, s.ldb, s.stride_b).div_ceil(4) * 4;
    let nc = len(s.m, s.ldc, s.stride_c);
    let (a, b, c) = (gpu.zeros(&[na]), gpu.zeros(&[nb]), gpu.zeros(&[nc]));
    let e = Extra::default();
    let mut line = format!("{name:<34}");
    for v in [
        Variant::Naive,
        Variant::Blocked,
        Variant::Vec4,
        Variant::Wide,
        Variant::Shared,
    ] {
        if v == Variant::Vec4 && !vec4_ok(s, &e, &a, &b, &c) {
            line += "   vec4: (layout not aligned)";
            continue;
        }
        let mut p = Plan::new(gpu);
        matmul_ext(&mut p, s, &e, Some(v), &a, &b, &c);
        let reps = if s.flops() > 1e9 && v == Variant::Naive { 1 } else { 3 };
        let g = s.flops() / peak::time_plan(gpu, &p, reps) / 1e9;
        line += &format!("   {v:?}: {g:6.2} GFLOP/s ({:4.1}%)", 100.0 * g / peak);
    }
    println!("{line}");
}

fn attention_block(gpu: &Gpu, peak: f64, s: &Attention) {
    let c = s.channels;
    let n = s.batch * c * s.tokens;
    let w: Vec<_> = (0..8)
        .map(|i| gpu.zeros(&[if i % 2 == 0 { c * c } else { c }]))
        .collect();
    let g: Vec<_> = (0..8)
        .map(|i| gpu.zeros(&[if i % 2 == 0 { c * c } else { c }]))
        .collect();
    fn as_w(t: &[Tensor]) -> AttentionWeights<'_> {
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
    let (x, y, dy, dx) = (gpu.zeros(&[n]), gpu.zeros(&[n]), gpu.zeros(&[n]), gpu.zeros(&[n]));
    let buf = AttentionBuffers::new(gpu, s);
    let mut fwd = Plan::new(gpu);
    attention::forward(&mut fwd, s, &x, &as_w(&w), &buf, &y);
    let mut bwd = Plan::new(gpu);
    let grads = attention::AttentionGrads { dx: &dx, dw: as_w(&g) };
    attention::backward(&mut bwd, s, &x, &as_w(&w), &buf, &dy, grads);
    let (tf, tb) = (peak::time_plan(gpu, &fwd, 3), peak::time_plan(gpu, &bwd, 3));
    let gf = s.flops() / tf / 1e9;
    let gb = 2.0 * s.flops() / tb / 1e9;
    println!(
        "attention block {s:?}: forward {:.1} ms ({gf:.2} GFLOP/s, {:.1}%), backward {:.1} ms ({gb:.2} GFLOP/s, {:.1}%)",
        tf * 1e3,
        100.0 * gf / peak,
        tb * 1e3,
        100.0 * gb / peak
    );
}

fn main() {
    let gpu = Gpu::for_tests();
    println!("adapter: {}", gpu.describe());
    let peak = peak::peak_gflops(&gpu);
    println!("peak FMA: {peak:.2} GFLOP/s");
    for size in [512, 1024] {
        bench(&gpu, peak, &format!("{size}³"), &Matmul::new(1, size, size, size));
    }
    let (b, c) = (64, 64);
    for t in [196, 49] {
        let proj = Matmul {
            trans_a: true,
            trans_b: true,
            lda: t,
            ldb: c,
            stride_a: c * t,
            stride_b: 0,
            ..Matmul::new(b, t, c, c)
        };
        let scores = Matmul {
            trans_b: true,
            ldb: c,
            stride_b: t * c,
            ..Matmul::new(b, t, c, t)
        };
        let pv = Matmul::new(b, t, t, c);
        let out = Matmul {
            trans_b: true,
            lda: c,
            ldb: c,
            stride_a: 0,
            stride_b: t * c,
            ..Matmul::new(b, c, c, t)
        };
        bench(&gpu, peak, &format!("T={t} q = xᵀWᵀ ({b}×{t}×{c}×{c})"), &proj);
        bench(&gpu, peak, &format!("T={t} S = qkᵀ ({b}×{t}×{c}×{t})"), &scores);
        bench(&gpu, peak, &format!("T={t} o = Pv ({b}×{t}×{t}×{c})"), &pv);
        bench(&gpu, peak, &format!("T={t} y = Wo·oᵀ ({b}×{c}×{c}×{t})"), &out);
    }
    for t in [196, 49] {
        attention_block(
            &gpu,
            peak,
            &Attention {
                batch: b,
                channels: c,
                tokens: t,
                heads: 1,
            },
        );
    }
}
