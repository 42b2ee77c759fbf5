//! Roofline probes for benchmarks (`shaders/peak.wgsl`): a peak-FMA kernel and a copy kernel.
//! Benchmarks divide each kernel's GFLOP/s (or GB/s) by these, measured in the same run.

use std::time::Instant;

use crate::gpu::{grid_1d, Gpu, Plan};
use crate::shader;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    iters: u32,
}

/// Median seconds per run of `plan` over `reps` runs, after one warm-up run.
pub fn time_plan(gpu: &Gpu, plan: &Plan, reps: usize) -> f64 {
    plan.run();
    gpu.sync();
    let mut times: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            plan.run();
            gpu.sync();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    times[times.len() / 2]
}

/// GFLOP/s of the FMA probe: `n` invocations × `iters` rounds × 4 vec4 FMAs (16 FMAs = 32 FLOPs).
pub fn peak_gflops(gpu: &Gpu) -> f64 {
    let (n, iters) = (64 * 1024usize, 2048u32);
    let out = gpu.zeros(&[n * 4]);
    let mut p = Plan::new(gpu);
    p.kernel(
        &shader!("peak"),
        "fma_peak",
        &Params { n: n as u32, iters },
        &[(1, &out)],
        grid_1d(n, 64),
    );
    let secs = time_plan(gpu, &p, 5);
    (n as f64 * iters as f64 * 16.0 * 2.0) / secs / 1e9
}

/// GB/s (read + write) of the copy probe over `bytes` bytes.
pub fn copy_gbps(gpu: &Gpu, bytes: usize) -> f64 {
    let n4 = bytes / 16;
    let (src, dst) = (gpu.zeros(&[n4 * 4]), gpu.zeros(&[n4 * 4]));
    let mut p = Plan::new(gpu);
    p.kernel(
        &shader!("peak"),
        "copy",
        &Params { n: n4 as u32, iters: 0 },
        &[(2, &src), (3, &dst)],
        grid_1d(n4, 64),
    );
    let secs = time_plan(gpu, &p, 5);
    (2.0 * 16.0 * n4 as f64) / secs / 1e9
}
