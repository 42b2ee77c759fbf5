//! The dispatch timer shared by the profiler and the tuner: a timed run computes exactly what a
//! normal run does, under both timers; the times are per kernel and follow the work; layer labels
//! and FLOPs reach the profile, whose tables add up.

mod common;
use common::*;
use ddpm_gpu::gpu::{Dispatch, Plan, Probes, Profile, Row, Timer};
use ddpm_gpu::ops::conv2d::{self, Conv2d};
use ddpm_gpu::ops::elementwise;

fn conv(n: usize, c: usize, hw: usize) -> Conv2d {
    Conv2d {
        n,
        c_in: c,
        h: hw,
        w: hw,
        c_out: c,
        k: 3,
        stride: 1,
        pad: [1, 1, 1, 1],
    }
}

/// A small plan: a tiny convolution, a clear, a large convolution, an add; returns it with its
/// output tensors.
fn plan(gpu: &ddpm_gpu::gpu::Gpu) -> (Plan, Vec<ddpm_gpu::gpu::Tensor>) {
    let (small, big) = (conv(1, 1, 4), conv(8, 64, 32));
    let tensor = |n: usize, seed| gpu.tensor(&[n], &random(n, seed));
    let (xs, ws, ys) = (tensor(16, 1), tensor(9, 2), gpu.zeros(&[16]));
    let (xb, wb, yb) = (
        tensor(8 * 64 * 1024, 3),
        tensor(64 * 64 * 9, 4),
        gpu.zeros(&[8 * 64 * 1024]),
    );
    let sum = tensor(16, 5);
    let mut p = Plan::new(gpu);
    p.within("small", |p| conv2d::forward(p, &small, None, &xs, &ws, None, &ys));
    p.clear(&sum);
    p.within("outer", |p| {
        p.within(".big", |p| conv2d::forward(p, &big, None, &xb, &wb, None, &yb));
        elementwise::add(p, &ys, &ys, &sum);
    });
    (p, vec![ys, yb, sum])
}

#[test]
fn timed_runs_compute_what_a_run_computes_and_time_each_kernel() {
    let gpu = gpu();
    let (p, outs) = plan(&gpu);
    p.run();
    let want: Vec<Vec<f32>> = outs.iter().map(|t| gpu.read(t)).collect();
    let mut timers = vec![Timer::Submissions];
    if gpu.features.contains(wgpu::Features::TIMESTAMP_QUERY) {
        timers.push(Timer::Timestamps);
    } else {
        println!("no timestamp queries on this adapter: Timer::Timestamps not tested");
    }
    let kernels = p.kernels();
    let index = |layer: &str| kernels.iter().rposition(|k| k.layer == layer).unwrap();
    let (small, big) = (index("small"), index("outer.big"));
    assert_eq!(kernels.last().unwrap().layer, "outer", "nested layer names");
    assert_eq!(
        kernels[big].flops,
        conv(8, 64, 32).flops(),
        "the convolution states its FLOPs"
    );
    for timer in timers {
        for t in &outs {
            gpu.write(t, &vec![0.0; t.len()]);
        }
        let times = p.time(timer);
        for (t, want) in outs.iter().zip(&want) {
            assert_eq!(&gpu.read(t), want, "{timer:?}: a timed run computes what a run does");
        }
        assert_eq!(times.len(), kernels.len(), "{timer:?}: one time per kernel");
        assert!(times.iter().all(|t| t.is_finite() && *t >= 0.0), "{timer:?}: {times:?}");
        // 8·64·64·9·1024·2 = 604 MFLOP against 288 FLOP: the time follows the work. A
        // submission's time includes its submission and wake-up (on an NVIDIA H200 0.24 ms for
        // the tiny one, 0.51 ms for a 302 MFLOP one), a timestamp's only the GPU's work. Each
        // kernel's best of five runs: on a machine whose cores other processes hold, a single
        // wake-up of lavapipe's threads was measured at 110 ms.
        let runs: Vec<Vec<f64>> = (0..5).map(|_| p.time(timer)).collect();
        let best = |i: usize| runs.iter().map(|r| r[i]).fold(times[i], f64::min);
        let (t_big, t_small) = (best(big), best(small));
        let ratio = if timer == Timer::Timestamps { 10.0 } else { 2.0 };
        assert!(
            t_big > ratio * t_small,
            "{timer:?}: the large convolution ({t_big} s) vs the tiny one ({t_small} s)"
        );
    }
}

#[test]
fn profile_tables_add_up() {
    let gpu = gpu();
    let (p, _) = plan(&gpu);
    let profile = Profile::measure(&p, Timer::for_gpu(&gpu), 2);
    assert_eq!(profile.dispatches.len(), p.kernels().len());
    assert!(profile.step_seconds > 0.0);
    for key in [
        |d: &ddpm_gpu::gpu::Dispatch| d.kernel.clone(),
        |d: &ddpm_gpu::gpu::Dispatch| d.layer.clone(),
    ] {
        let rows = profile.rows(key);
        assert_eq!(rows.iter().map(|r| r.launches).sum::<usize>(), p.kernels().len());
        let sum: f64 = rows.iter().map(|r| r.seconds).sum();
        assert!((sum - profile.total()).abs() <= 1e-9 * profile.total().max(1.0));
        assert!(rows.windows(2).all(|w| w[0].seconds >= w[1].seconds), "slowest first");
    }
    let layers = profile.rows(|d| d.layer.clone());
    assert_eq!(layers[0].name, "outer.big", "the large convolution dominates");
    let probes = Probes {
        gflops: 10.0,
        ..Probes::default()
    };
    let table = profile.table("layer", &layers, 1, &probes);
    assert!(
        table.contains("| outer.big | ") && table.contains("(2 more)"),
        "{table}"
    );
}

/// A row of `launches` dispatches moving `bytes` in all in `seconds`, alone in its profile.
fn copy_row(launches: usize, bytes: f64, seconds: f64) -> (Profile, Row) {
    let d = Dispatch {
        kernel: "k::copy".into(),
        layer: String::new(),
        seconds: seconds / launches as f64,
        flops: 0.0,
        bytes: bytes / launches as f64,
    };
    let profile = Profile {
        timer: Timer::Submissions,
        dispatches: vec![d; launches],
        step_seconds: seconds,
    };
    let row = profile.rows(|d| d.kernel.clone()).remove(0);
    (profile, row)
}

#[test]
fn memory_bound_rows_are_compared_with_the_copy_probe_of_their_size() {
    const MIB: usize = 1 << 20;
    // Half of the bytes a launch binds, to the nearest power of two, within 1..=64 MiB.
    assert_eq!(Probes::copy_size(8.0 * MIB as f64), 4 * MIB);
    assert_eq!(Probes::copy_size(5.0 * MIB as f64), 2 * MIB);
    assert_eq!(Probes::copy_size(6.2 * MIB as f64), 4 * MIB);
    assert_eq!(Probes::copy_size(100.0), MIB);
    assert_eq!(Probes::copy_size(1e12), 64 * MIB);
    let probes = Probes {
        gflops: 10.0,
        copy_gbps: [(MIB, 1.0), (4 * MIB, 8.0), (64 * MIB, 100.0)].into(),
    };
    assert_eq!(probes.copy_for(8.0 * MIB as f64), Some(8.0), "a measured size");
    assert_eq!(probes.copy_for(12.0 * MIB as f64), Some(8.0), "8 MiB: nearest is 4 MiB");
    assert_eq!(
        probes.copy_for(64.0 * MIB as f64),
        Some(100.0),
        "32 MiB: nearest is 64 MiB"
    );
    assert_eq!(Probes::default().copy_for(1.0), None);
    assert_eq!(
        probes.describe(),
        "peak-FMA probe 10.0 GFLOP/s; copy probe 1.00 GB/s at 1 MiB, 8.00 GB/s at 4 MiB, 100.00 GB/s at 64 MiB"
    );
    // Two launches of 8 MiB each in 4 ms: 4.19 GB/s, 52.4% of the 4 MiB probe's 8 GB/s.
    let (profile, row) = copy_row(2, 16.0 * MIB as f64, 4e-3);
    let table = profile.table("kernel", &[row], 10, &probes);
    assert!(
        table.contains("| k::copy | 2 | 4.000 | 100.0% |  |  | 4.19 | 52.4 |"),
        "{table}"
    );
    // Without copy probes the GB/s stays and the share is left blank.
    let (profile, row) = copy_row(1, 16.0 * MIB as f64, 4e-3);
    let table = profile.table("kernel", &[row], 10, &Probes::default());
    assert!(
        table.contains("| k::copy | 1 | 4.000 | 100.0% |  |  | 4.19 |  |"),
        "{table}"
    );
}
