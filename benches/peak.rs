//! The roofline probes alone: `cargo bench --bench peak`. Prints the adapter's peak-FMA GFLOP/s
//! and copy GB/s, the denominators of every other benchmark's "% of peak".

use ddpm_gpu::gpu::Gpu;
use ddpm_gpu::ops::peak;

fn main() {
    let gpu = Gpu::for_tests();
    println!("adapter: {}", gpu.describe());
    println!("peak FMA: {:.2} GFLOP/s", peak::peak_gflops(&gpu));
    println!("copy:     {:.2} GB/s (64 MiB)", peak::copy_gbps(&gpu, 64 << 20));
}
