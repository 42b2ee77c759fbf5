//! The subcommands of `ddpm-gpu`.

pub mod eval;
pub mod info;
pub mod interpolate;
pub mod profile;
pub mod sample;
pub mod score;
pub mod train;
pub mod tune;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::Result;
use ddpm_gpu::model::UNetConfig;
use indicatif::{ProgressBar, ProgressStyle};

/// A command stopped by Ctrl-C or a termination signal after saving what it had: `main` exits
/// with status 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP), so
/// `train && sample` does not go on as if it had finished.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// Set when Ctrl-C, SIGTERM (what `timeout`, schedulers and container stops send) or SIGHUP
/// arrives. The handler is installed on first use, once per process; commands check the flag
/// between steps, stop within one and return [`Interrupted`] without writing partial output.
/// A second signal while the command is still finishing its step ends the process at once
/// (the files it writes are replaced atomically, so the last checkpoint stays whole).
pub fn stop_flag() -> Result<&'static AtomicBool> {
    static INSTALLED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(signals::install)
        .as_ref()
        .map_err(|e| anyhow::anyhow!("installing the Ctrl-C handler: {e}"))?;
    Ok(&signals::STOP)
}

/// The exit status of a command stopped by [`stop_flag`]'s signal: 128 + the signal's number.
pub fn interrupted_status() -> i32 {
    128 + signals::SIGNAL.load(Ordering::SeqCst)
}

/// The number of the signal that asked this process to stop, 0 while none has.
pub fn stop_signal() -> i32 {
    if signals::STOP.load(Ordering::SeqCst) {
        signals::SIGNAL.load(Ordering::SeqCst)
    } else {
        0
    }
}

/// Exit, once interrupted, with 128 + `sig`: the signal that another rank of the run received.
pub fn set_stop_signal(sig: i32) {
    signals::SIGNAL.store(sig, Ordering::SeqCst);
}

#[cfg(unix)]
mod signals {
    use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

    pub static STOP: AtomicBool = AtomicBool::new(false);
    /// The first signal received (SIGINT until one arrives, so the status defaults to 130).
    pub static SIGNAL: AtomicI32 = AtomicI32::new(libc::SIGINT);

    /// Runs in signal context: only atomics, `write(2)`, `signal(2)` and `raise(3)`, all
    /// async-signal-safe.
    extern "C" fn on_signal(sig: libc::c_int) {
        if STOP.swap(true, Ordering::SeqCst) {
            // The second signal: die of it, as if no handler were installed.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
                libc::raise(sig);
            }
            return;
        }
        SIGNAL.store(sig, Ordering::SeqCst);
        let msg = b"\nstopping after the current step (send it again to quit at once)\n";
        unsafe {
            libc::write(2, msg.as_ptr().cast(), msg.len());
        }
    }

    pub fn install() -> Result<(), String> {
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SA_RESTART: a read or write the signal interrupts resumes instead of failing.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                if libc::sigaction(sig, &action, std::ptr::null_mut()) != 0 {
                    return Err(std::io::Error::last_os_error().to_string());
                }
            }
        }
        Ok(())
    }
}

#[cfg(not(unix))]
mod signals {
    use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

    pub static STOP: AtomicBool = AtomicBool::new(false);
    /// `ctrlc` does not say which signal came: reported as Ctrl-C (SIGINT's number, 2).
    pub static SIGNAL: AtomicI32 = AtomicI32::new(2);

    pub fn install() -> Result<(), String> {
        ctrlc::set_handler(|| STOP.store(true, Ordering::SeqCst)).map_err(|e| e.to_string())
    }
}

/// `--no-tune`, shared by the commands that run the network.
#[derive(clap::Args, Debug)]
pub struct TuneFlag {
    /// Use the built-in kernel heuristics instead of the kernels measured fastest on this
    /// adapter (see `ddpm-gpu tune`; also DDPM_GPU_TUNE=off).
    #[arg(long)]
    pub no_tune: bool,
}

/// Turn kernel tuning on for `gpu`, with the choices cached for its adapter loaded, unless
/// `no_tune` (`--no-tune`) or `DDPM_GPU_TUNE=off` asks for the built-in heuristics.
pub fn enable_tuning(gpu: &ddpm_gpu::gpu::Gpu, no_tune: bool) {
    if no_tune || std::env::var("DDPM_GPU_TUNE").is_ok_and(|v| v == "off") {
        return;
    }
    gpu.tuning.lock().unwrap().enabled = true;
    if let Some(path) = ddpm_gpu::ops::tune::cache_file(gpu) {
        if let Some(notice) = ddpm_gpu::ops::tune::load(gpu, &path) {
            eprintln!("{notice}");
        }
    }
}

/// The most time tuning spends before a command goes on (cases left keep the heuristic and
/// are tuned by the next command).
pub const TUNE_BUDGET: std::time::Duration = std::time::Duration::from_secs(60);

/// With tuning on: record with `build` (whose plans are dropped) and, when it met kernel cases
/// the cache lacks, tune them now (see [`tune_missing_now`]).
pub fn ensure_tuned(gpu: &ddpm_gpu::gpu::Gpu, build: impl FnOnce() -> Result<()>) -> Result<()> {
    if gpu.tuning.lock().unwrap().enabled {
        build()?;
        tune_missing_now(gpu)?;
    }
    Ok(())
}

/// Time the candidates of the kernel cases recorded since tuning was enabled that the cache
/// lacks, and add the winners to the cache. Returns whether any choice changed (plans recorded
/// before then still hold the heuristic's kernels: record them again).
pub fn tune_missing_now(gpu: &ddpm_gpu::gpu::Gpu) -> Result<bool> {
    let missing = gpu.tuning.lock().unwrap().missing.len();
    if missing == 0 {
        return Ok(false);
    }
    eprintln!("tuning kernels for this adapter: {missing} cases (once; `--no-tune` skips)");
    let start = Instant::now();
    let mut progress = Progress::new(missing, "cases");
    let tuned = ddpm_gpu::ops::tune::tune_missing(gpu, TUNE_BUDGET, |done, _| progress.set(done))?;
    progress.finish();
    let changed = tuned.iter().filter(|t| t.variant != t.heuristic).count();
    let saved = match ddpm_gpu::ops::tune::cache_file(gpu) {
        Some(path) => match ddpm_gpu::ops::tune::save(gpu, &path, &tuned) {
            Ok(()) => format!("cached in {}", path.display()),
            Err(e) => format!("not cached: {e:#}"),
        },
        None => "not cached: no cache folder (set DDPM_GPU_CACHE)".to_string(),
    };
    eprintln!(
        "tuned {} of {missing} cases ({changed} chose another kernel than the heuristic) in {:.1} s; {saved}",
        tuned.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(!tuned.is_empty())
}

/// Progress through `len` steps of something (denoising steps, network evaluations): a bar on a
/// terminal; into a file or pipe (CI, nohup, schedulers), where a bar would not draw, a plain
/// line every 30 s with the elapsed time and an estimate of the time left.
pub struct Progress {
    bar: ProgressBar,
    what: String,
    start: Instant,
    last_line: Instant,
}

impl Progress {
    pub fn new(len: usize, what: &str) -> Progress {
        let bar = ProgressBar::new(len as u64);
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{bar:30}} {{pos}}/{{len}} {what} [{{elapsed_precise}} < {{eta_precise}}]"
            ))
            .expect("progress template"),
        );
        Progress {
            bar,
            what: what.to_string(),
            start: Instant::now(),
            last_line: Instant::now(),
        }
    }

    /// `done` of the steps are done.
    pub fn set(&mut self, done: usize) {
        self.bar.set_position(done as u64);
        let len = self.bar.length().unwrap_or(0) as usize;
        if self.bar.is_hidden() && done > 0 && (self.last_line.elapsed().as_secs() >= 30 || done == len) {
            self.last_line = Instant::now();
            let elapsed = self.start.elapsed().as_secs_f64();
            let left = elapsed / done as f64 * len.saturating_sub(done) as f64;
            eprintln!(
                "{done}/{len} {}  elapsed {}  about {} left",
                self.what,
                duration(elapsed),
                duration(left)
            );
        }
    }

    /// Remove the bar (the plain lines stay).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// "0.4s", "42s", "3m07s", "1h05m".
pub fn duration(secs: f64) -> String {
    if secs < 9.95 {
        return format!("{:.1}s", secs.max(0.0));
    }
    let s = secs.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

/// `--model` for training: a preset name or a path to a diffusers `config.json`.
pub fn model_config(spec: &str) -> Result<UNetConfig> {
    let path = Path::new(spec);
    if path.is_file() {
        UNetConfig::load(path)
    } else if path.is_dir() {
        UNetConfig::load(&path.join("config.json"))
    } else {
        UNetConfig::preset(spec)
    }
}

/// "2026-11-22_08-15-03" in UTC, for run folder names.
pub fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}_{:02}-{:02}-{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}
