//! MNIST IDX files (http://yann.lecun.com/exdb/mnist/ layout), raw or gzip-compressed.
//!
//! Images (IDX3): big-endian u32 magic 0x00000803 (unsigned bytes, 3 dimensions), count, rows, cols, then
//! count·rows·cols bytes, row-major, 0 = background. Labels (IDX1): magic 0x00000801, count, then one byte
//! per image.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use flate2::read::MultiGzDecoder;

use super::Raw;

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

/// Decompress gzip `bytes` read from `path` (named in the error).
pub(crate) fn gunzip(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .with_context(|| format!("cannot decompress {} (expected a valid gzip file)", path.display()))?;
    Ok(out)
}

/// Read a file, gunzipping it when it starts with the gzip magic bytes 1f 8b.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        gunzip(&bytes, path)
    } else {
        Ok(bytes)
    }
}

fn be_u32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

/// Check that `bytes` hold exactly `header` bytes then `body` bytes.
fn check_len(bytes: &[u8], path: &Path, what: &str, header: usize, body: usize) -> Result<()> {
    let expected = header + body;
    if bytes.len() < expected {
        bail!(
            "{} is truncated: expected {expected} bytes for {what}, found {}",
            path.display(),
            bytes.len()
        );
    }
    if bytes.len() > expected {
        bail!(
            "{} has trailing data: expected {expected} bytes for {what}, found {}",
            path.display(),
            bytes.len()
        );
    }
    Ok(())
}

fn check_magic(bytes: &[u8], path: &Path, header: usize, magic: u32, kind: &str) -> Result<()> {
    if bytes.len() < header {
        bail!(
            "{} is truncated: expected at least {header} bytes of {kind} header, found {}",
            path.display(),
            bytes.len()
        );
    }
    let found = be_u32(bytes, 0);
    if found != magic {
        bail!(
            "{} is not an {kind} file: expected magic number 0x{magic:08x}, found 0x{found:08x}",
            path.display()
        );
    }
    Ok(())
}

/// Parse a decompressed IDX3 images file (named `path` in errors) into 1-channel 8-bit images.
pub(crate) fn parse_images(bytes: &[u8], path: &Path) -> Result<Raw> {
    check_magic(bytes, path, 16, IMAGES_MAGIC, "MNIST IDX3 images")?;
    let (n, h, w) = (
        be_u32(bytes, 1) as usize,
        be_u32(bytes, 2) as usize,
        be_u32(bytes, 3) as usize,
    );
    if n == 0 || h == 0 || w == 0 {
        bail!("{} holds no images (header says {n} images of {h}×{w})", path.display());
    }
    let body = n
        .checked_mul(h)
        .and_then(|x| x.checked_mul(w))
        .with_context(|| format!("{} has an impossible header: {n} images of {h}×{w}", path.display()))?;
    check_len(bytes, path, &format!("{n} images of {h}×{w}"), 16, body)?;
    Ok(Raw {
        pixels: bytes[16..].to_vec(),
        labels: None,
        n,
        c: 1,
        h,
        w,
    })
}

/// Parse a decompressed IDX1 labels file that must hold `n` labels.
pub(crate) fn parse_labels(bytes: &[u8], path: &Path, n: usize) -> Result<Vec<u8>> {
    check_magic(bytes, path, 8, LABELS_MAGIC, "MNIST IDX1 labels")?;
    let count = be_u32(bytes, 1) as usize;
    if count != n {
        bail!("{} holds {count} labels, expected {n} (one per image)", path.display());
    }
    check_len(bytes, path, &format!("{n} labels"), 8, n)?;
    Ok(bytes[8..].to_vec())
}

/// The labels file next to an images file: "images-idx3" replaced by "labels-idx1" in the file name, with
/// or without ".gz"; the first that exists.
fn labels_sibling(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    if !name.contains("images-idx3") {
        return None;
    }
    let labels = name.replace("images-idx3", "labels-idx1");
    let stem = labels.strip_suffix(".gz").unwrap_or(&labels).to_string();
    [labels.clone(), format!("{stem}.gz"), stem]
        .into_iter()
        .map(|n| path.with_file_name(n))
        .find(|p| p.exists())
}

/// Load an IDX images file and, when present, its sibling labels file.
pub(crate) fn load_images_file(path: &Path) -> Result<Raw> {
    let mut raw = parse_images(&read_maybe_gz(path)?, path)?;
    if let Some(lp) = labels_sibling(path) {
        raw.labels = Some(parse_labels(&read_maybe_gz(&lp)?, &lp, raw.n)?);
    }
    Ok(raw)
}
