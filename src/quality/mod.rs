//! Sample quality, as FID measures it (Heusel et al. 2017), with a feature network of our own:
//! the Fréchet distance between the features of generated images and of real ones, plus the
//! classifier's mean confidence and the entropy of its predicted class distribution.
//!
//! Inception weights are not available offline, so the features are the pooled activations of a
//! small classifier ([`classifier`]) that ddpm-gpu trains on the labelled data set once and keeps
//! in its cache folder. The numbers are therefore comparable between runs scored against the same
//! data set, not with published FIDs. A Fréchet distance estimated from few images is biased
//! upward, so every score comes with its floor: the same measures for as many held-out real
//! images, which a perfect generator would match.
//!
//! The data set is split once: the last tenth (at most 1000 images) is held out; the classifier
//! trains on the rest, and the features of the rest are the reference statistics.

pub mod classifier;
pub mod frechet;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::data::{self, Dataset};
use crate::gpu::Gpu;
use classifier::{Classifier, Labelled, Outputs, Shape, TrainOptions, FEATURES};
use frechet::{frechet_distance, Gaussian};

/// Quality measures of one set of images.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    pub images: usize,
    /// Fréchet distance of their features to the reference features.
    pub fd: f64,
    /// Mean over images of the classifier's largest class probability.
    pub confidence: f64,
    /// Entropy (nats) of the mean predicted class distribution: ln(classes) when the classes are
    /// equally represented, 0 when every image is the same class.
    pub class_entropy: f64,
}

/// Samples against real held-out images of the same count.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    pub samples: Stats,
    /// The same measures for real held-out images (as many as the samples, or all held-out ones).
    pub floor: Stats,
    /// The classifier's accuracy on all held-out images.
    pub accuracy: f64,
    /// Real images behind the reference statistics.
    pub reference_images: usize,
}

impl Score {
    /// FD of the samples less FD of as many real images: the part of the distance a better model
    /// could remove.
    pub fn fd_excess(&self) -> f64 {
        self.samples.fd - self.floor.fd
    }

    /// A few lines for people.
    pub fn report(&self) -> String {
        let s = &self.samples;
        let f = &self.floor;
        let mut text = format!(
            "                 images    FD     confidence  class entropy\n\
             samples        {:>7}  {:>8.2}    {:.3}       {:.3}\n\
             real held-out  {:>7}  {:>8.2}    {:.3}       {:.3}   (the floor)\n",
            s.images, s.fd, s.confidence, s.class_entropy, f.images, f.fd, f.confidence, f.class_entropy
        );
        if f.images < s.images {
            text += &format!(
                "note: only {} held-out images exist, so the floor is measured on fewer images than the samples\n",
                f.images
            );
        }
        text += &format!(
            "FD above the floor: {:.2}; classifier held-out accuracy {:.2}%; reference: {} real images\n",
            self.fd_excess(),
            100.0 * self.accuracy,
            self.reference_images
        );
        text
    }
}

/// Where a data set is cut: images `0..train` train the classifier and give the reference
/// statistics; `train..n` are held out.
pub fn split(n: usize) -> usize {
    n - (n / 10).min(1000)
}

/// Smallest labelled data set a classifier is trained on.
pub const MIN_IMAGES: usize = 20;

/// A 64-bit FNV-1a fingerprint of a data set as the classifier sees it (pixels at 8 bits, labels,
/// shape) and of the classifier's version: the cache key of its classifier.
pub fn fingerprint(data: &Dataset) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    for v in [
        classifier::VERSION as usize,
        data.n,
        data.channels,
        data.height,
        data.width,
    ] {
        v.to_le_bytes().into_iter().for_each(&mut eat);
    }
    data.images.iter().for_each(|&v| eat(crate::viz::to_byte(v)));
    data.labels.iter().flatten().for_each(|&l| eat(l));
    format!("{h:016x}")
}

/// A trained classifier and the statistics of the real data it scores against.
pub struct Scorer {
    pub classifier: Classifier,
    reference: Gaussian,
    held_out: Outputs,
}

/// Measures of `out` against `reference`.
fn stats(out: &Outputs, reference: &Gaussian) -> Stats {
    let k = out.probs.len() / out.n.max(1);
    let mut mean = vec![0.0f64; k];
    let mut confidence = 0.0;
    for row in out.probs.chunks_exact(k) {
        confidence += row.iter().fold(0.0f32, |m, &p| m.max(p)) as f64;
        for (m, &p) in mean.iter_mut().zip(row) {
            *m += p as f64 / out.n as f64;
        }
    }
    Stats {
        images: out.n,
        fd: frechet_distance(&Gaussian::fit(&out.features, FEATURES), reference),
        confidence: confidence / out.n as f64,
        class_entropy: -mean.iter().filter(|&&p| p > 0.0).map(|p| p * p.ln()).sum::<f64>(),
    }
}

impl Scorer {
    /// The scorer for `data` (labelled): its classifier is read from `cache` when one trained on
    /// exactly this data is there, else trained (and saved there). `log` hears what happens.
    pub fn new(gpu: &Gpu, data: &Dataset, cache: Option<&Path>, log: &mut dyn FnMut(&str)) -> Result<Scorer> {
        let Some(labels) = &data.labels else {
            bail!(
                "scoring needs a labelled data set (the bundled MNIST, MNIST IDX files with a labels-idx1 \
                 sibling, or CIFAR-10 .bin files): its classifier learns the labels"
            );
        };
        if data.n < MIN_IMAGES {
            bail!(
                "scoring needs at least {MIN_IMAGES} labelled images, the data set has {}",
                data.n
            );
        }
        let shape = Shape {
            channels: data.channels,
            size: data.height,
            classes: labels.iter().map(|&l| l as usize + 1).max().unwrap_or(1).max(2),
        };
        let cut = split(data.n);
        let per = data.image_len();
        let (train_x, held_x) = data.images.split_at(cut * per);
        let (train_y, held_y) = labels.split_at(cut);
        let key = fingerprint(data);
        let path: Option<PathBuf> = cache.map(|d| d.join("classifiers").join(format!("{key}.safetensors")));
        let cached = match &path {
            Some(p) if p.exists() => match Classifier::load(p) {
                Ok(c) if c.data_key == key && c.shape == shape => Some(c),
                Ok(_) => {
                    log(&format!("ignoring {}: made for other data", p.display()));
                    None
                }
                Err(e) => {
                    log(&format!("ignoring unreadable cached classifier: {e:#}"));
                    None
                }
            },
            _ => None,
        };
        let classifier = match cached {
            Some(c) => {
                log(&format!(
                    "feature classifier: {} (held-out accuracy {:.2}%)",
                    path.as_ref().expect("cached implies a path").display(),
                    100.0 * c.accuracy
                ));
                c
            }
            None => {
                let opts = TrainOptions::default();
                log(&format!(
                    "training the feature classifier on {cut} images ({} epochs; once per data set)",
                    opts.epochs
                ));
                let start = std::time::Instant::now();
                let c = Classifier::train(
                    gpu,
                    shape,
                    Labelled {
                        images: train_x,
                        labels: train_y,
                    },
                    Labelled {
                        images: held_x,
                        labels: held_y,
                    },
                    &opts,
                    &key,
                    &mut |epoch, loss| log(&format!("  epoch {epoch}: loss {loss:.4}")),
                )?;
                log(&format!(
                    "feature classifier trained in {:.0} s: held-out accuracy {:.2}% on {} images",
                    start.elapsed().as_secs_f64(),
                    100.0 * c.accuracy,
                    held_y.len()
                ));
                if let Some(p) = &path {
                    match c.save(p) {
                        Ok(()) => log(&format!("saved to {}", p.display())),
                        Err(e) => log(&format!("could not cache the classifier: {e:#}")),
                    }
                }
                c
            }
        };
        let reference = Gaussian::fit(&classifier.run(gpu, train_x, cut)?.features, FEATURES);
        let held_out = classifier.run(gpu, held_x, data.n - cut)?;
        Ok(Scorer {
            classifier,
            reference,
            held_out,
        })
    }

    /// The shape of the images this scorer takes.
    pub fn shape(&self) -> Shape {
        self.classifier.shape
    }

    /// Score `n` images (NCHW in [−1, 1], the data set's channels and size); needs n ≥ 2.
    pub fn score(&self, gpu: &Gpu, images: &[f32], n: usize) -> Result<Score> {
        if n < 2 {
            bail!("scoring needs at least 2 images (a covariance of their features), got {n}");
        }
        let out = self.classifier.run(gpu, images, n)?;
        let m = n.min(self.held_out.n);
        let k = self.shape().classes;
        let floor = Outputs {
            n: m,
            features: self.held_out.features[..m * FEATURES].to_vec(),
            probs: self.held_out.probs[..m * k].to_vec(),
        };
        Ok(Score {
            samples: stats(&out, &self.reference),
            floor: stats(&floor, &self.reference),
            accuracy: self.classifier.accuracy,
            reference_images: self.reference.n,
        })
    }
}

/// Images to score from `path`: a folder of PNG/JPEG images (as `sample --each` writes), or one
/// PNG grid (as `sample --out` writes), converted to `channels` planes of `size × size` in [−1, 1].
pub fn load_images(path: &Path, channels: usize, size: usize) -> Result<(Vec<f32>, usize)> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("--samples {}: no such file or folder", path.display()))?;
    if meta.is_dir() {
        let d = data::load(&data::Source::Path(path.to_path_buf()), channels, size)
            .with_context(|| format!("--samples {}", path.display()))?;
        return Ok((d.images, d.n));
    }
    let (px, n, c) = crate::viz::read_grid(path, size).with_context(|| format!("--samples {}", path.display()))?;
    let per = c * size * size;
    let mut images = Vec::with_capacity(n * channels * size * size);
    for i in 0..n {
        data::convert_image(&px[i * per..(i + 1) * per], c, size, size, channels, size, &mut images);
    }
    Ok((images, n))
}
