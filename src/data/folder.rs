//! A folder of PNG/JPEG images: the files directly inside it (no recursion), sorted by name so the order is
//! the same on every machine. Images may differ in size and colour type; each is converted on its own.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{convert_image, Dataset};

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list directory {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("cannot list directory {}", dir.display()))?
            .path();
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        if ext.is_some_and(|e| EXTENSIONS.contains(&e.as_str())) && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Decode one image file to 8-bit CHW planes: (pixels, channels, height, width), channels 1 or 3.
/// Alpha is dropped; 16-bit images are reduced to 8 bits.
fn decode(path: &Path) -> Result<(Vec<u8>, usize, usize, usize)> {
    let img = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .with_context(|| format!("cannot read {}", path.display()))?
        .decode()
        .with_context(|| format!("cannot decode image {} (expected a valid PNG or JPEG)", path.display()))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    if img.color().has_color() {
        let rgb = img.to_rgb8();
        let hwc = rgb.as_raw();
        let mut chw = vec![0u8; 3 * h * w];
        for (i, px) in hwc.chunks_exact(3).enumerate() {
            for k in 0..3 {
                chw[k * h * w + i] = px[k];
            }
        }
        Ok((chw, 3, h, w))
    } else {
        Ok((img.to_luma8().into_raw(), 1, h, w))
    }
}

/// Load every PNG/JPEG directly in `dir`, converted to `channels` × `size` × `size`.
pub(crate) fn load(dir: &Path, channels: usize, size: usize) -> Result<Dataset> {
    let files = image_files(dir)?;
    if files.is_empty() {
        bail!(
            "no .png/.jpg/.jpeg images in {} (and no CIFAR-10 data_batch_*.bin files)",
            dir.display()
        );
    }
    load_files(&files, channels, size)
}

/// Load the given PNG/JPEG files, in order, converted to `channels` × `size` × `size`; errors
/// name the file.
pub fn load_files(files: &[PathBuf], channels: usize, size: usize) -> Result<Dataset> {
    let mut images = super::image_buffer(files.len(), channels, size, None)?;
    for path in files {
        let (px, c, h, w) = decode(path)?;
        if h == 0 || w == 0 {
            bail!("image {} is empty ({w}×{h} pixels)", path.display());
        }
        convert_image(&px, c, h, w, channels, size, &mut images);
    }
    Ok(Dataset {
        images,
        labels: None,
        n: files.len(),
        channels,
        height: size,
        width: size,
    })
}
