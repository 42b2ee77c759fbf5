//! Datasets: the built-in MNIST digits, MNIST IDX files, CIFAR-10 binary batches, image folders.
//!
//! Every source is decoded to 8-bit planes (`C, H, W` per image), then converted to the model's channel
//! count and square size and scaled to [−1, 1] (x/127.5 − 1, as in the DDPM paper, section 4).
//! Bad input is reported as one error that names the path and what was expected, never a panic.

mod cifar;
mod folder;
mod idx;

pub use folder::load_files;

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::imageops::{self, FilterType};
use image::{ImageBuffer, Luma};

/// Images scaled to [−1, 1], NCHW f32, all of one size and channel count, plus optional labels.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub images: Vec<f32>,
    pub labels: Option<Vec<u8>>,
    pub n: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

/// Where the training images come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The 10,000 MNIST digits compiled into the binary (`assets/mnist-10k-*`).
    BuiltinMnist,
    /// An MNIST IDX images file (raw or `.gz`), a CIFAR-10 `.bin` file or a directory of `data_batch_*.bin`,
    /// or a directory of PNG/JPEG images.
    Path(PathBuf),
}

impl Source {
    /// `"mnist"` (any case) names the built-in digits; anything else is a path.
    pub fn parse(s: &str) -> Source {
        if s.eq_ignore_ascii_case("mnist") {
            Source::BuiltinMnist
        } else {
            Source::Path(PathBuf::from(s))
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::BuiltinMnist => write!(f, "built-in MNIST (10,000 digits)"),
            Source::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

const BUILTIN_IMAGES: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/mnist-10k-images-idx3-ubyte.gz"
));
const BUILTIN_LABELS: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/mnist-10k-labels-idx1-ubyte.gz"
));

/// What every source decodes to before conversion: `n` images of `c` 8-bit planes of `h × w`.
pub(crate) struct Raw {
    pub pixels: Vec<u8>,
    pub labels: Option<Vec<u8>>,
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

/// Load `source`, converted to the model's `channels` (1 = grayscale via ITU-R 601 luma, 3 = RGB, grayscale
/// replicated) and `size` (square side): MNIST 28×28 is kept as is when size==28, otherwise resized;
/// image folders are resized (shorter side to size, bilinear/triangle filter) and center-cropped.
pub fn load(source: &Source, channels: usize, size: usize) -> Result<Dataset> {
    if channels != 1 && channels != 3 {
        bail!("cannot load {source}: the model must have 1 or 3 image channels, not {channels}");
    }
    if size == 0 || size > u32::MAX as usize {
        bail!("cannot load {source}: image size must be at least 1 pixel, not {size}");
    }
    match source {
        Source::BuiltinMnist => {
            let name = Path::new("<built-in>/mnist-10k-images-idx3-ubyte.gz");
            let mut raw = idx::parse_images(&idx::gunzip(BUILTIN_IMAGES, name)?, name)?;
            let name = Path::new("<built-in>/mnist-10k-labels-idx1-ubyte.gz");
            raw.labels = Some(idx::parse_labels(&idx::gunzip(BUILTIN_LABELS, name)?, name, raw.n)?);
            convert_raw(raw, channels, size)
        }
        Source::Path(path) => load_path(path, channels, size),
    }
}

fn load_path(path: &Path, channels: usize, size: usize) -> Result<Dataset> {
    let meta = std::fs::metadata(path).with_context(|| {
        format!(
            "dataset path {} does not exist or cannot be accessed (expected an MNIST IDX images file, \
             a CIFAR-10 .bin file or directory of data_batch_*.bin, or a folder of PNG/JPEG images)",
            path.display()
        )
    })?;
    if meta.is_dir() {
        let batches = cifar::batch_files(path)?;
        if !batches.is_empty() {
            return convert_raw(cifar::load_files(&batches)?, channels, size);
        }
        return folder::load(path, channels, size);
    }
    let is_bin = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("bin"));
    if is_bin {
        convert_raw(cifar::load_files(&[path.to_path_buf()])?, channels, size)
    } else {
        convert_raw(idx::load_images_file(path)?, channels, size)
    }
}

/// Room for `n` images of `channels` × `size` × `size` floats, or a clear error when they would
/// not fit in this machine's available memory: a model far larger than its data (a config's
/// `sample_size` of 512 for 28×28 digits) would otherwise end in the OOM killer or an abort.
pub(crate) fn image_buffer(n: usize, channels: usize, size: usize, native: Option<(usize, usize)>) -> Result<Vec<f32>> {
    let floats = n
        .checked_mul(channels)
        .and_then(|v| v.checked_mul(size))
        .and_then(|v| v.checked_mul(size));
    let gib = |bytes: f64| bytes / (1u64 << 30) as f64;
    let needed = floats.map_or(f64::INFINITY, |f| f as f64 * 4.0);
    let available = crate::files::available_memory();
    let mut images = Vec::new();
    let reserved = match (floats, available) {
        (Some(f), Some(a)) if needed <= a as f64 => images.try_reserve_exact(f).is_ok(),
        (Some(f), None) => images.try_reserve_exact(f).is_ok(),
        _ => false,
    };
    if !reserved {
        let have = available.map_or(String::new(), |a| format!(" ({:.1} GiB available)", gib(a as f64)));
        let hint = match native {
            Some((h, w)) => format!("the images are {h}×{w}"),
            None => "see the images' own size".into(),
        };
        bail!(
            "{n} training images at the model's size {channels}×{size}×{size} need {:.1} GiB of memory{have}; \
             use a model whose sample_size is nearer the data's ({hint})",
            gib(needed)
        );
    }
    Ok(images)
}

fn convert_raw(raw: Raw, channels: usize, size: usize) -> Result<Dataset> {
    let per = raw.c * raw.h * raw.w;
    let mut images = image_buffer(raw.n, channels, size, Some((raw.h, raw.w)))?;
    for i in 0..raw.n {
        convert_image(
            &raw.pixels[i * per..(i + 1) * per],
            raw.c,
            raw.h,
            raw.w,
            channels,
            size,
            &mut images,
        );
    }
    Ok(Dataset {
        images,
        labels: raw.labels,
        n: raw.n,
        channels,
        height: size,
        width: size,
    })
}

/// Append one image (`c` 8-bit planes of `h × w`, c = 1 or 3) to `out` as `channels` planes of `size × size`
/// in [−1, 1]. Channel conversion first (luma Y = 0.299 R + 0.587 G + 0.114 B, ITU-R BT.601; gray replicated
/// to RGB), then, unless already `size × size`, resize with the shorter side to `size` (triangle filter)
/// and crop the centre.
pub(crate) fn convert_image(px: &[u8], c: usize, h: usize, w: usize, channels: usize, size: usize, out: &mut Vec<f32>) {
    let plane = h * w;
    let unit = |v: u8| v as f32 / 255.0;
    let planes: Vec<Vec<f32>> = match (c, channels) {
        (1, 1) | (3, 3) => (0..c)
            .map(|k| px[k * plane..(k + 1) * plane].iter().map(|&v| unit(v)).collect())
            .collect(),
        (1, 3) => {
            let g: Vec<f32> = px[..plane].iter().map(|&v| unit(v)).collect();
            vec![g.clone(), g.clone(), g]
        }
        (3, 1) => {
            let luma = (0..plane)
                .map(|i| {
                    let (r, g, b) = (px[i] as f32, px[plane + i] as f32, px[2 * plane + i] as f32);
                    (0.299 * r + 0.587 * g + 0.114 * b) / 255.0
                })
                .collect();
            vec![luma]
        }
        _ => unreachable!("sources decode to 1 or 3 channels and load() checks the model's"),
    };
    for p in planes {
        let p = if h == size && w == size {
            p
        } else {
            resize_crop(p, h, w, size)
        };
        out.extend(p.iter().map(|&v| v.clamp(0.0, 1.0) * 2.0 - 1.0));
    }
}

/// Resize a plane of values in [0, 1] so its shorter side is `size` (the longer side rounded to keep the
/// aspect ratio), then cut the centred `size × size` square.
fn resize_crop(plane: Vec<f32>, h: usize, w: usize, size: usize) -> Vec<f32> {
    let (nh, nw) = if h <= w {
        (size, ((w as f64 * size as f64 / h as f64).round() as usize).max(size))
    } else {
        (((h as f64 * size as f64 / w as f64).round() as usize).max(size), size)
    };
    let img: ImageBuffer<Luma<f32>, Vec<f32>> =
        ImageBuffer::from_raw(w as u32, h as u32, plane).expect("plane length is h*w");
    let resized = imageops::resize(&img, nw as u32, nh as u32, FilterType::Triangle);
    let (y0, x0) = ((nh - size) / 2, (nw - size) / 2);
    let data = resized.as_raw();
    let mut out = Vec::with_capacity(size * size);
    for y in y0..y0 + size {
        out.extend_from_slice(&data[y * nw + x0..y * nw + x0 + size]);
    }
    out
}

impl Dataset {
    /// Number of f32 values in one image: channels × height × width.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The images at `indices`, concatenated in that order (NCHW). Panics on an index ≥ `n`.
    pub fn batch(&self, indices: &[usize]) -> Vec<f32> {
        let len = self.image_len();
        let mut out = Vec::with_capacity(indices.len() * len);
        for &i in indices {
            assert!(
                i < self.n,
                "image index {i} out of range for a dataset of {} images",
                self.n
            );
            out.extend_from_slice(&self.images[i * len..(i + 1) * len]);
        }
        out
    }
}

/// The channels and square side a source's images come in, for a command that takes the data
/// as it is (`ddpm-gpu score`). Image folders have no single size: they need it given.
pub fn native_shape(source: &Source) -> Result<(usize, usize)> {
    let raw = match source {
        Source::BuiltinMnist => return Ok((1, 28)),
        Source::Path(path) => {
            let meta = std::fs::metadata(path)
                .with_context(|| format!("dataset path {} does not exist or cannot be accessed", path.display()))?;
            if meta.is_dir() {
                let batches = cifar::batch_files(path)?;
                if batches.is_empty() {
                    bail!(
                        "{}: a folder of images has no single image size; give the size (and channels) to use",
                        path.display()
                    );
                }
                cifar::load_files(&batches[..1])?
            } else if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("bin")) {
                cifar::load_files(&[path.to_path_buf()])?
            } else {
                idx::load_images_file(path)?
            }
        }
    };
    if raw.h != raw.w {
        bail!("{source}: images are {}×{}, not square", raw.h, raw.w);
    }
    Ok((raw.c, raw.h))
}
