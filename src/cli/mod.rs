//! The subcommands of `ddpm-gpu`.

pub mod eval;
pub mod info;
pub mod interpolate;
pub mod sample;
pub mod score;
pub mod train;

use std::path::Path;

use anyhow::Result;
use ddpm_gpu::model::UNetConfig;

/// A command stopped by Ctrl-C or a termination signal after saving what it had: `main` exits
/// with status 130 (128 + SIGINT), so `train && sample` does not go on as if it had finished.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted")
    }
}

impl std::error::Error for Interrupted {}

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
