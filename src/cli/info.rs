//! `ddpm-gpu info`: adapters, limits, features; with `--model`, a model's size and memory.

use anyhow::Result;
use clap::Args;
use ddpm_gpu::dist::Collective;
use ddpm_gpu::gpu::{adapter_features, enumerate_adapters, Gpu, GpuOptions};
use ddpm_gpu::model::{ParamTable, UNet};

#[derive(Args)]
pub struct InfoArgs {
    /// Also report a model (preset name or config.json): parameters, FLOPs and activation memory.
    #[arg(long)]
    model: Option<String>,
}

pub fn run(opts: &GpuOptions, args: &InfoArgs, comm: &dyn Collective) -> Result<()> {
    if comm.size() > 1 {
        // Under mpirun: which adapter each rank would train on, then rank 0's full report.
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        let mine = match Gpu::new(opts) {
            Ok(gpu) => gpu.describe(),
            Err(e) => format!("no adapter: {e:#}"),
        };
        let line = format!(
            "rank {} (host {}, local rank {}): {mine}",
            comm.rank(),
            host.trim(),
            comm.local_rank()
        );
        let lines = comm.gather_text(&line);
        if comm.rank() != 0 {
            return Ok(());
        }
        println!("{} ranks:", comm.size());
        for l in lines {
            println!("  {l}");
        }
    }
    println!("adapters:");
    for a in enumerate_adapters() {
        let i = a.get_info();
        println!(
            "  {} | {:?} | {:?} | driver: {} {}",
            i.name, i.backend, i.device_type, i.driver, i.driver_info
        );
    }
    let gpu = Gpu::new(opts)?;
    let l = &gpu.limits;
    println!("chosen: {}", gpu.describe());
    match ddpm_gpu::ops::tune::cache_file(&gpu) {
        Some(path) if path.exists() => {
            // Loading reports a corrupt or stale file; otherwise count what it holds.
            let before = gpu.tuning.lock().unwrap().choices.len();
            match ddpm_gpu::ops::tune::load(&gpu, &path) {
                Some(notice) => println!("  tuning cache: {notice}"),
                None => println!(
                    "  tuning cache: {} ({} cases)",
                    path.display(),
                    gpu.tuning.lock().unwrap().choices.len() - before
                ),
            }
        }
        Some(path) => println!(
            "  tuning cache: none yet ({} is written by the first train, sample or tune)",
            path.display()
        ),
        None => println!("  tuning cache: none (no cache folder: set DDPM_GPU_CACHE)"),
    }
    println!(
        "  max_storage_buffer_binding_size: {} MiB",
        l.max_storage_buffer_binding_size >> 20
    );
    println!("  max_buffer_size: {} MiB", l.max_buffer_size >> 20);
    let needs = ddpm_gpu::gpu::needs();
    println!(
        "  the kernels need: {} storage buffers per stage ({}), {} invocations per workgroup ({}), {} bytes of workgroup memory ({})",
        needs.storage_buffers.0,
        needs.storage_buffers.1,
        needs.invocations.0,
        needs.invocations.1,
        needs.workgroup_bytes.0,
        needs.workgroup_bytes.1
    );
    println!(
        "  max_storage_buffers_per_shader_stage: {}",
        l.max_storage_buffers_per_shader_stage
    );
    println!(
        "  max_compute_workgroup_size: {} x {} x {}, invocations {}",
        l.max_compute_workgroup_size_x,
        l.max_compute_workgroup_size_y,
        l.max_compute_workgroup_size_z,
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
    let all = adapter_features(opts)?;
    println!("  shader-f16: {}", all.contains(wgpu::Features::SHADER_F16));
    println!("  subgroups: {}", all.contains(wgpu::Features::SUBGROUP));
    println!("  timestamp queries: {}", all.contains(wgpu::Features::TIMESTAMP_QUERY));

    if let Some(spec) = &args.model {
        let cfg = super::model_config(spec)?;
        let table = ParamTable::new(&cfg);
        println!(
            "model {spec}: {} parameters ({:.1} MiB f32)",
            table.count(),
            table.count() as f64 * 4.0 / (1 << 20) as f64
        );
        // Measure activation memory and FLOPs at batch 1 and 2 (memory is linear in the batch).
        let params = gpu.zeros(&[table.total]);
        let grads = gpu.zeros(&[table.total]);
        let one = UNet::new(&gpu, &cfg, &table, &params, Some(&grads), 1)?;
        let infer = UNet::new(&gpu, &cfg, &table, &params, None, 1)?;
        println!(
            "  per image: {:.2} GFLOP forward, ~{:.2} GFLOP per training step (forward + backward ≈ 3×)",
            one.forward_flops / 1e9,
            3.0 * one.forward_flops / 1e9
        );
        println!(
            "  activation memory per image: {:.1} MiB training (values + gradients), {:.1} MiB sampling",
            one.activation_bytes as f64 / (1 << 20) as f64,
            infer.activation_bytes as f64 / (1 << 20) as f64
        );
        let per_pass = l.max_storage_buffer_binding_size as usize / one.largest_activation_bytes.max(1);
        println!(
            "  largest activation {:.2} MiB per image: at most {per_pass} images per pass within the {} MiB binding limit \
             (`train` splits larger batches into micro-batches)",
            one.largest_activation_bytes as f64 / (1 << 20) as f64,
            l.max_storage_buffer_binding_size >> 20
        );
    }
    Ok(())
}
