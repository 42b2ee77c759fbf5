//! Group norm (both mappings), group norm fused with SiLU against the two unfused kernels, SiLU
//! and add: `cargo bench --bench group_norm`.
//!
//! All of these are memory-bound, so each is reported in GB/s of its algorithmic traffic (every
//! tensor read or written once; the statistics and γ/β are negligible) and as a percentage of the
//! GB/s of the copy kernel on one tensor of the same shape, measured just before (a 6 MB tensor
//! stays in the CPU's caches on lavapipe, a 67 MB one does not):
//!   group norm forward:  read x, write y                     → 8 bytes per element
//!   group norm backward: read x, dy; read and write dx       → 16 bytes per element
//!   silu forward: read x, write y → 8;   add: read a, b, write y → 12.
//! The fused group norm + SiLU counts as much traffic as the group norm alone (x in, a out;
//! backward x, da, dx); the unfused pair is timed as one plan (group norm then SiLU, SiLU
//! backward then group norm backward) on the same work, so its GB/s is directly comparable.
//! The kernels actually read x two (serial forward) or three times; that extra traffic is the
//! kernels' cost, not counted as useful bandwidth.

use ddpm_gpu::gpu::{Gpu, Plan, Tensor};
use ddpm_gpu::ops::group_norm::{self, Grads, GroupNorm, Mapping, Options, Tensors};
use ddpm_gpu::ops::{elementwise, peak, silu};

const REPS: usize = 5;

fn random(gpu: &Gpu, shape: &[usize], seed: u32) -> Tensor {
    let n: usize = shape.iter().product();
    // A cheap deterministic pattern in [-1, 1): benchmarks only need non-degenerate values.
    let data: Vec<f32> = (0..n)
        .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / (1u32 << 23) as f32 - 1.0)
        .collect();
    gpu.tensor(shape, &data)
}

fn report(what: &str, bytes: f64, secs: f64, copy: f64) {
    let gbps = bytes / secs / 1e9;
    println!(
        "  {what:<34} {:>9.3} ms  {gbps:>7.2} GB/s  {:>5.1}% of copy",
        secs * 1e3,
        100.0 * gbps / copy
    );
}

fn main() {
    let gpu = Gpu::for_tests();
    println!("adapter: {}", gpu.describe());
    println!("default group norm mapping: {:?}", Mapping::for_adapter(&gpu));
    println!("copy kernel: {:.2} GB/s (64 MiB)", peak::copy_gbps(&gpu, 64 << 20));

    // The mnist preset's largest group norm at batch 32, then a paper-sized one.
    for (n, c, h, w, groups) in [(32usize, 32usize, 28usize, 28usize, 8usize), (128, 128, 32, 32, 32)] {
        let s = GroupNorm {
            n,
            c,
            hw: h * w,
            groups,
            eps: 1e-5,
        };
        let numel = n * c * h * w;
        let copy = peak::copy_gbps(&gpu, numel * 4);
        println!(
            "[{n}, {c}, {h}, {w}] groups {groups} ({:.1} MB per tensor; copy of one tensor {copy:.2} GB/s)",
            numel as f64 * 4e-6
        );
        let x = random(&gpu, &[n, c, h * w], 1);
        let gamma = random(&gpu, &[c], 2);
        let beta = random(&gpu, &[c], 3);
        let y = gpu.zeros(&[n, c, h * w]);
        let (mean, rstd) = (gpu.zeros(&[n * groups]), gpu.zeros(&[n * groups]));
        let dy = random(&gpu, &[n, c, h * w], 4);
        let dx = gpu.zeros(&[n, c, h * w]);
        let (dgamma, dbeta) = (gpu.zeros(&[c]), gpu.zeros(&[c]));
        let t = Tensors {
            x: &x,
            gamma: &gamma,
            beta: &beta,
            mean: &mean,
            rstd: &rstd,
        };
        let g = Grads {
            dy: &dy,
            dx: &dx,
            dgamma: &dgamma,
            dbeta: &dbeta,
        };
        let plain = |m| Options {
            silu: false,
            mapping: Some(m),
        };
        let fused = |m| Options {
            silu: true,
            mapping: Some(m),
        };
        for m in [Mapping::Workgroup, Mapping::Serial] {
            let mut p = Plan::new(&gpu);
            group_norm::forward(&mut p, &s, plain(m), t, &y);
            let secs = peak::time_plan(&gpu, &p, REPS);
            report(&format!("group norm forward ({m:?})"), 8.0 * numel as f64, secs, copy);
            let mut p = Plan::new(&gpu);
            group_norm::backward(&mut p, &s, plain(m), t, g);
            let secs = peak::time_plan(&gpu, &p, REPS);
            report(&format!("group norm backward ({m:?})"), 16.0 * numel as f64, secs, copy);
        }
        let m = Mapping::for_adapter(&gpu);
        // The unfused pair's intermediate n = group_norm(x) and its gradient.
        let (n_tmp, dn_tmp) = (gpu.zeros(&[n, c, h * w]), gpu.zeros(&[n, c, h * w]));
        let mut p = Plan::new(&gpu);
        group_norm::forward(&mut p, &s, plain(m), t, &n_tmp);
        silu::forward(&mut p, &n_tmp, &y);
        let secs = peak::time_plan(&gpu, &p, REPS);
        report(&format!("gn, silu forward ({m:?})"), 8.0 * numel as f64, secs, copy);
        let mut p = Plan::new(&gpu);
        group_norm::forward(&mut p, &s, fused(m), t, &y);
        let secs = peak::time_plan(&gpu, &p, REPS);
        report(
            &format!("gn+silu fused forward ({m:?})"),
            8.0 * numel as f64,
            secs,
            copy,
        );
        let mut p = Plan::new(&gpu);
        silu::backward(&mut p, &n_tmp, &dy, &dn_tmp);
        group_norm::backward(&mut p, &s, plain(m), t, Grads { dy: &dn_tmp, ..g });
        let secs = peak::time_plan(&gpu, &p, REPS);
        report(&format!("silu, gn backward ({m:?})"), 16.0 * numel as f64, secs, copy);
        let mut p = Plan::new(&gpu);
        group_norm::backward(&mut p, &s, fused(m), t, g);
        let secs = peak::time_plan(&gpu, &p, REPS);
        report(
            &format!("gn+silu fused backward ({m:?})"),
            16.0 * numel as f64,
            secs,
            copy,
        );
        let mut p = Plan::new(&gpu);
        silu::forward(&mut p, &x, &y);
        report(
            "silu forward",
            8.0 * numel as f64,
            peak::time_plan(&gpu, &p, REPS),
            copy,
        );
        let mut p = Plan::new(&gpu);
        elementwise::add(&mut p, &x, &dy, &y);
        report("add", 12.0 * numel as f64, peak::time_plan(&gpu, &p, REPS), copy);
    }
}
