//! The DDPM U-Net in diffusers' `UNet2DModel` layout: configuration, parameter table and
//! initialisation, checkpoint files, and the network itself (forward and backward).

pub mod checkpoint;
pub mod config;
pub mod params;
pub mod unet;

use std::path::Path;

use anyhow::{Context, Result};

pub use config::UNetConfig;
pub use params::ParamTable;
pub use unet::{DropoutKernel, UNet};

/// A model folder as diffusers writes it: `config.json` + `diffusion_pytorch_model.safetensors`.
/// Returns the config, its parameter table and the weights laid out flat.
pub fn load_folder(dir: &Path) -> Result<(UNetConfig, ParamTable, Vec<f32>)> {
    if !dir.is_dir() {
        anyhow::bail!(
            "model folder {} does not exist (expected a folder with config.json and {})",
            dir.display(),
            checkpoint::WEIGHTS_FILE
        );
    }
    let cfg = UNetConfig::load(&dir.join(checkpoint::CONFIG_FILE))?;
    let table = ParamTable::new(&cfg);
    let weights = dir.join(checkpoint::WEIGHTS_FILE);
    let flat = checkpoint::load_weights(&weights, &table)?;
    // NaN weights would sample black images and give a NaN bits/dim without a word.
    let bad = flat.iter().filter(|w| !w.is_finite()).count();
    if bad > 0 {
        anyhow::bail!(
            "{}: {bad} of {} weights are NaN or infinite (saved from a diverged run?); nothing to sample from",
            weights.display(),
            flat.len()
        );
    }
    Ok((cfg, table, flat))
}

/// Write a diffusers model folder (each file atomically: temp file, then rename).
pub fn save_folder(dir: &Path, cfg: &UNetConfig, table: &ParamTable, flat: &[f32]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::files::write_atomic(
        &dir.join(checkpoint::WEIGHTS_FILE),
        &checkpoint::weights_bytes(table, flat)?,
    )?;
    crate::files::write_atomic(&dir.join(checkpoint::CONFIG_FILE), cfg.to_json().as_bytes())?;
    Ok(())
}
