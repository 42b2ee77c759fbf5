//! The `ddpm-gpu` command line.

use anyhow::Result;
use clap::{Parser, Subcommand};

use ddpm_gpu::gpu::{Gpu, GpuOptions};

#[derive(Parser)]
#[command(
    name = "ddpm-gpu",
    version,
    about = "Train and sample DDPM U-Nets on any GPU through wgpu"
)]
struct Cli {
    /// Adapter to use: a case-insensitive substring of its name (see `ddpm-gpu info`).
    /// Defaults to WGPU_ADAPTER_NAME, else the best adapter found. WGPU_BACKEND limits backends.
    #[arg(long, global = true)]
    adapter: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the adapters wgpu sees and the limits and features of the chosen one.
    Info,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let opts = GpuOptions { adapter: cli.adapter };
    match cli.command {
        Command::Info => info(&opts),
    }
}

fn info(opts: &GpuOptions) -> Result<()> {
    println!("adapters:");
    for a in ddpm_gpu::gpu::enumerate_adapters() {
        let i = a.get_info();
        println!(
            "  {} | {:?} | {:?} | driver: {} {}",
            i.name, i.backend, i.device_type, i.driver, i.driver_info
        );
    }
    let gpu = Gpu::new(opts)?;
    let l = &gpu.limits;
    println!("chosen: {}", gpu.describe());
    println!(
        "  max_storage_buffer_binding_size: {} MiB",
        l.max_storage_buffer_binding_size / (1 << 20)
    );
    println!("  max_buffer_size: {} MiB", l.max_buffer_size / (1 << 20));
    println!(
        "  max_storage_buffers_per_shader_stage: {}",
        l.max_storage_buffers_per_shader_stage
    );
    println!(
        "  max_compute_workgroup_size: {} x {} x {}",
        l.max_compute_workgroup_size_x, l.max_compute_workgroup_size_y, l.max_compute_workgroup_size_z
    );
    println!(
        "  max_compute_invocations_per_workgroup: {}",
        l.max_compute_invocations_per_workgroup
    );
    println!(
        "  max_compute_workgroup_storage_size: {} bytes",
        l.max_compute_workgroup_storage_size
    );
    println!(
        "  max_compute_workgroups_per_dimension: {}",
        l.max_compute_workgroups_per_dimension
    );
    println!(
        "  min_storage_buffer_offset_alignment: {}",
        l.min_storage_buffer_offset_alignment
    );
    let f = gpu.device.features();
    let all = ddpm_gpu::gpu::adapter_features(opts)?;
    println!("  shader-f16: {}", all.contains(wgpu::Features::SHADER_F16));
    println!("  subgroups: {}", all.contains(wgpu::Features::SUBGROUP));
    println!("  enabled features: {f:?}");
    Ok(())
}
