//! The gradient all-reduce alone: `mpirun -np N target/release/examples/allreduce` (built by
//! `cargo build --release --features mpi --example allreduce`; `scripts/mpi-bench.sh` runs it).
//!
//! Times [`Collective::sum`] (chunked `MPI_Allreduce` of f32) on buffers the size of the `mnist`
//! and `ddpm-cifar10` gradients, after a barrier so that one rank arriving late is not counted,
//! and prints the median of 5 on rank 0.

use ddpm_gpu::dist;
use ddpm_gpu::model::{ParamTable, UNetConfig};

fn main() {
    let comm = dist::init();
    for preset in ["mnist", "ddpm-cifar10"] {
        let n = ParamTable::new(&UNetConfig::preset(preset).unwrap()).total;
        let mut grads: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
        let mut times: Vec<f64> = (0..5)
            .map(|_| {
                comm.barrier();
                let start = std::time::Instant::now();
                comm.sum(&mut grads);
                start.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        // Every element summed 5 times over the ranks: element i holds (i mod 7) · ranks⁵.
        let expect = 3.0 * (comm.size() as f64).powi(5);
        assert_eq!(grads[3] as f64, expect, "the sums are wrong");
        if comm.rank() == 0 {
            let mib = (4 * n) as f64 / (1 << 20) as f64;
            println!(
                "{preset}: {n} parameters, {mib:.1} MiB per all-reduce over {} ranks: median {:.2} ms ({:.0} MiB/s)",
                comm.size(),
                times[2] * 1e3,
                mib / times[2]
            );
        }
    }
}
