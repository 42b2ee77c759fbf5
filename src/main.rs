//! The `ddpm-gpu` command line.

mod cli;

use anyhow::Result;
use clap::{Parser, Subcommand};

use ddpm_gpu::gpu::GpuOptions;

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
    /// List the adapters wgpu sees and the limits and features of the chosen one; with --model,
    /// the parameter count and activation memory of a model.
    Info(cli::info::InfoArgs),
    /// Train a DDPM (default: the `mnist` preset on the built-in MNIST digits).
    Train(Box<cli::train::TrainArgs>),
    /// Sample images from a trained model (a run folder or a diffusers UNet2DModel folder).
    Sample(cli::sample::SampleArgs),
    /// Interpolate between two images in the latent x_t and decode (paper §4.4, Figure 8).
    Interpolate(cli::interpolate::InterpolateArgs),
    /// The variational bound in bits/dim on held-out images (paper eq. 5, Table 2).
    Eval(cli::eval::EvalArgs),
    /// Sample quality: Fréchet distance of a classifier's features to the real data set (like
    /// FID, with a classifier ddpm-gpu trains on the data), confidence and class entropy, each
    /// beside the same measures for as many real held-out images.
    Score(cli::score::ScoreArgs),
    /// Where a training (or sampling) step's time goes on this adapter: every dispatch of the
    /// step's plan timed, summed by kernel and by layer, with GFLOP/s against a peak-FMA probe.
    Profile(cli::profile::ProfileArgs),
    /// Time every kernel variant at a model's shapes on this adapter and cache the fastest (train,
    /// sample and eval do this by themselves when the cache lacks a case, unless --no-tune).
    Tune(cli::tune::TuneArgs),
}

fn main() {
    let cli = Cli::parse();
    // Under `mpirun`/`srun` with the feature `mpi`: this process's rank of the run; else alone.
    let comm = ddpm_gpu::dist::init();
    let opts = GpuOptions {
        adapter: cli.adapter,
        nth: comm.local_rank(),
    };
    let result: Result<()> = match cli.command {
        Command::Info(args) => cli::info::run(&opts, &args, comm.as_ref()),
        Command::Train(args) => cli::train::run(&opts, &args, comm.as_ref()),
        Command::Sample(args) => cli::sample::run(&opts, &args),
        Command::Interpolate(args) => cli::interpolate::run(&opts, &args),
        Command::Eval(args) => cli::eval::run(&opts, &args),
        Command::Score(args) => cli::score::run(&opts, &args),
        Command::Profile(args) => cli::profile::run(&opts, &args),
        Command::Tune(args) => cli::tune::run(&opts, &args),
    };
    if let Err(e) = result {
        if e.downcast_ref::<cli::Interrupted>().is_some() {
            // Every rank of a run decided to stop at the same step: MPI finalizes cleanly.
            drop(comm);
            std::process::exit(cli::interrupted_status());
        }
        if comm.size() > 1 {
            // The other ranks would wait for this one in their next collective: stop them all.
            eprintln!("error on rank {}: {e:#}", comm.rank());
            comm.abort(1);
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
