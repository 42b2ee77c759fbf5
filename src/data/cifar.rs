//! CIFAR-10 binary batches (https://www.cs.toronto.edu/~kriz/cifar.html, "binary version").
//!
//! A file is a sequence of 3073-byte records: 1 label byte (0–9), then a 32×32 image as three 1024-byte
//! planes R, G, B, each row-major. That is already the CHW layout the loader wants.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::Raw;

const SIDE: usize = 32;
const IMAGE_BYTES: usize = 3 * SIDE * SIDE;
const RECORD: usize = 1 + IMAGE_BYTES;

/// The `data_batch_*.bin` files directly in `dir`, sorted by name (empty if there are none).
pub(crate) fn batch_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list directory {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot list directory {}", dir.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("data_batch_") && name.ends_with(".bin") {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Read CIFAR-10 binary batch files, in order, into one set of 3-channel 32×32 images with labels.
pub(crate) fn load_files(files: &[PathBuf]) -> Result<Raw> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for path in files {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        if bytes.is_empty() || bytes.len() % RECORD != 0 {
            bail!(
                "{} is not a CIFAR-10 binary batch: its size, {} bytes, is not a positive multiple of {RECORD} \
                 (1 label byte + 3072 image bytes per record)",
                path.display(),
                bytes.len()
            );
        }
        pixels.reserve(bytes.len() / RECORD * IMAGE_BYTES);
        for record in bytes.chunks_exact(RECORD) {
            labels.push(record[0]);
            pixels.extend_from_slice(&record[1..]);
        }
    }
    Ok(Raw {
        pixels,
        n: labels.len(),
        labels: Some(labels),
        c: 3,
        h: SIDE,
        w: SIDE,
    })
}
