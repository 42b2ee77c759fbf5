//! Dataset loading: the built-in MNIST, IDX files (raw and gzip), CIFAR-10 binary batches, image folders,
//! channel/size conversion, and one clear error for every kind of bad input.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use ddpm_gpu::data::{load, Dataset, Source};
use flate2::write::GzEncoder;
use flate2::Compression;

/// Largest difference allowed between a loaded value and the exact byte/127.5 − 1 (f32 rounding only).
const EXACT_TOL: f32 = 1e-6;
/// Tolerance after a resize of a uniform region (the filter's weights sum to one up to f32 rounding).
const RESIZE_TOL: f32 = 1e-4;

/// A fresh, empty directory under the system temp dir, unique per process and call.
fn temp_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("ddpm-gpu-data-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn unit(b: u8) -> f32 {
    b as f32 / 127.5 - 1.0
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn idx_images(n: usize, h: usize, w: usize, pixels: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [0x803u32, n as u32, h as u32, w as u32] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v.extend_from_slice(pixels);
    v
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [0x801u32, labels.len() as u32] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v.extend_from_slice(labels);
    v
}

/// The full error chain, as the command line prints it.
fn err_text(r: anyhow::Result<Dataset>) -> String {
    match r {
        Ok(d) => panic!("expected an error, loaded {} images", d.n),
        Err(e) => format!("{e:#}"),
    }
}

fn assert_mentions(msg: &str, parts: &[&str]) {
    println!("error: {msg}");
    for p in parts {
        assert!(msg.contains(p), "error message {msg:?} should mention {p:?}");
    }
}

fn path_of(p: &Path) -> Source {
    Source::Path(p.to_path_buf())
}

#[test]
fn builtin_mnist() {
    let d = load(&Source::BuiltinMnist, 1, 28).unwrap();
    assert_eq!((d.n, d.channels, d.height, d.width), (10000, 1, 28, 28));
    assert_eq!(d.image_len(), 784);
    assert_eq!(d.images.len(), 10000 * 784);
    let (lo, hi) = d
        .images
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    assert_eq!((lo, hi), (-1.0, 1.0), "MNIST uses the whole byte range");
    // MNIST's mean pixel is about 0.13 of full scale, i.e. about −0.74 in [−1, 1].
    let mean = d.images.iter().map(|&x| x as f64).sum::<f64>() / d.images.len() as f64;
    println!("built-in MNIST mean {mean:.4}");
    assert!((-0.80..-0.68).contains(&mean), "mean {mean}");
    // Background is the majority: the corner pixel of every image is −1.
    assert!((0..d.n).all(|i| d.images[i * 784] == -1.0));
    let labels = d.labels.as_ref().expect("built-in MNIST has labels");
    assert_eq!(labels.len(), 10000);
    let mut counts = [0usize; 10];
    for &l in labels {
        assert!(l < 10, "label {l}");
        counts[l as usize] += 1;
    }
    println!("label counts {counts:?}");
    assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
    // Shuffled, not sorted by label.
    assert!(labels[..100].iter().any(|&l| l != labels[0]));
}

#[test]
fn builtin_mnist_resized_to_rgb() {
    let d = load(&Source::BuiltinMnist, 3, 32).unwrap();
    assert_eq!((d.n, d.channels, d.height, d.width), (10000, 3, 32, 32));
    let plane = 32 * 32;
    for i in [0, 4321, 9999] {
        let img = &d.batch(&[i]);
        assert_eq!(&img[..plane], &img[plane..2 * plane], "gray replicated to G");
        assert_eq!(&img[..plane], &img[2 * plane..], "gray replicated to B");
    }
    assert!(d.images.iter().all(|x| (-1.0..=1.0).contains(x)));
    let mean = d.images.iter().map(|&x| x as f64).sum::<f64>() / d.images.len() as f64;
    println!("built-in MNIST at 32×32 mean {mean:.4}");
    assert!((-0.82..-0.68).contains(&mean), "mean {mean}");
}

#[test]
fn batch_and_image_len() {
    let dir = temp_dir("batch");
    let pixels: Vec<u8> = (0..3 * 4).map(|i| (i * 20) as u8).collect();
    let p = dir.join("x-images-idx3-ubyte");
    std::fs::write(&p, idx_images(3, 2, 2, &pixels)).unwrap();
    let d = load(&path_of(&p), 1, 2).unwrap();
    assert_eq!(d.image_len(), 4);
    let b = d.batch(&[2, 0, 2]);
    let want: Vec<f32> = [8, 9, 10, 11, 0, 1, 2, 3, 8, 9, 10, 11]
        .iter()
        .map(|&i| unit(i * 20))
        .collect();
    assert_eq!(b, want);
    assert!(d.labels.is_none(), "no labels file next to it");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn idx_raw_and_gz_round_trip() {
    let (n, h, w) = (5, 4, 4);
    let pixels: Vec<u8> = (0..n * h * w).map(|i| (i * 37 % 256) as u8).collect();
    let labels = [3u8, 1, 4, 1, 5];
    let dir = temp_dir("idx");
    let raw = dir.join("train-images-idx3-ubyte");
    std::fs::write(&raw, idx_images(n, h, w, &pixels)).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), idx_labels(&labels)).unwrap();
    let zipped = dir.join("t10k-images-idx3-ubyte.gz");
    std::fs::write(&zipped, gz(&idx_images(n, h, w, &pixels))).unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte.gz"), gz(&idx_labels(&labels))).unwrap();

    for p in [&raw, &zipped] {
        let d = load(&path_of(p), 1, 4).unwrap();
        assert_eq!((d.n, d.channels, d.height, d.width), (n, 1, h, w));
        let worst = d
            .images
            .iter()
            .zip(&pixels)
            .map(|(&g, &b)| (g - unit(b)).abs())
            .fold(0.0, f32::max);
        println!("{}: worst |loaded − byte/127.5 − 1| = {worst:e}", p.display());
        assert!(worst <= EXACT_TOL);
        assert_eq!(d.labels.as_deref(), Some(&labels[..]));
    }

    // A gzipped images file with a raw labels file next to it also finds its labels.
    let mixed = dir.join("mix-images-idx3-ubyte.gz");
    std::fs::write(&mixed, gz(&idx_images(n, h, w, &pixels))).unwrap();
    std::fs::write(dir.join("mix-labels-idx1-ubyte"), idx_labels(&labels)).unwrap();
    assert_eq!(
        load(&path_of(&mixed), 1, 4).unwrap().labels.as_deref(),
        Some(&labels[..])
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn cifar_binary() {
    const REC: usize = 3073;
    // Record r: label r % 10; pixel i of plane k holds (r * 50 + k * 70 + i) mod 256.
    let record = |r: usize| {
        let mut v = vec![(r % 10) as u8];
        for k in 0..3 {
            v.extend((0..1024).map(|i| ((r * 50 + k * 70 + i) % 256) as u8));
        }
        v
    };
    let dir = temp_dir("cifar");
    let b1: Vec<u8> = (0..3).flat_map(record).collect();
    let b2: Vec<u8> = (3..5).flat_map(record).collect();
    assert_eq!(b1.len(), 3 * REC);
    // Written out of order: the loader sorts by name. Other files are ignored.
    std::fs::write(dir.join("data_batch_2.bin"), &b2).unwrap();
    std::fs::write(dir.join("data_batch_1.bin"), &b1).unwrap();
    std::fs::write(dir.join("batches.meta.txt"), "airplane\n").unwrap();

    let d = load(&path_of(&dir), 3, 32).unwrap();
    assert_eq!((d.n, d.channels, d.height, d.width), (5, 3, 32, 32));
    assert_eq!(d.labels.as_deref(), Some(&[0u8, 1, 2, 3, 4][..]));
    let want: Vec<f32> = (0..5).flat_map(|r| record(r)[1..].to_vec()).map(unit).collect();
    let worst = d
        .images
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    println!("CIFAR RGB worst error {worst:e}");
    assert!(worst <= EXACT_TOL);

    // One file on its own, converted to luma.
    let single = load(&path_of(&dir.join("data_batch_1.bin")), 1, 32).unwrap();
    assert_eq!((single.n, single.channels), (3, 1));
    let mut worst = 0.0f32;
    for r in 0..3 {
        let rec = record(r);
        for i in 0..1024 {
            let (red, g, b) = (rec[1 + i] as f32, rec[1 + 1024 + i] as f32, rec[1 + 2048 + i] as f32);
            let y = (0.299 * red + 0.587 * g + 0.114 * b) / 127.5 - 1.0;
            worst = worst.max((single.images[r * 1024 + i] - y).abs());
        }
    }
    println!("CIFAR luma worst error {worst:e}");
    assert!(worst <= 1e-5);

    // Resized to 16×16: a record whose planes are constant stays constant.
    let flat: Vec<u8> = [7u8]
        .into_iter()
        .chain([10u8; 1024])
        .chain([20u8; 1024])
        .chain([30u8; 1024])
        .collect();
    let fp = dir.join("flat.bin");
    std::fs::write(&fp, &flat).unwrap();
    let small = load(&path_of(&fp), 3, 16).unwrap();
    assert_eq!((small.n, small.height, small.width), (1, 16, 16));
    for (k, v) in [10u8, 20, 30].into_iter().enumerate() {
        assert!(small.images[k * 256..(k + 1) * 256]
            .iter()
            .all(|&x| (x - unit(v)).abs() <= RESIZE_TOL));
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn image_folder_resize_crop_and_channels() {
    let dir = temp_dir("folder");
    // a.png: 40 wide × 20 high RGB, outer 5 columns on each side red, the rest green-ish (200, 100, 50).
    let a = image::RgbImage::from_fn(40, 20, |x, _| {
        if !(5..35).contains(&x) {
            image::Rgb([255, 0, 0])
        } else {
            image::Rgb([200, 100, 50])
        }
    });
    a.save(dir.join("a.png")).unwrap();
    // b.png: 10 wide × 30 high gray, top and bottom 5 rows white, middle 77.
    let b = image::GrayImage::from_fn(10, 30, |_, y| {
        image::Luma([if (5..25).contains(&y) { 77 } else { 255 }])
    });
    b.save(dir.join("b.png")).unwrap();
    // Not images: ignored.
    std::fs::write(dir.join("notes.txt"), "hello").unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();

    // Shorter side to 8, then the centre 8×8: a.png → 16×8, columns 4..12 (source columns 10..30, no red);
    // b.png → 8×24, rows 8..16 (source rows 10..20, all 77).
    let rgb = load(&path_of(&dir), 3, 8).unwrap();
    assert_eq!((rgb.n, rgb.channels, rgb.height, rgb.width), (2, 3, 8, 8));
    assert!(rgb.labels.is_none());
    let (img_a, img_b) = (rgb.batch(&[0]), rgb.batch(&[1]));
    let mut worst = 0.0f32;
    for (k, v) in [200u8, 100, 50].into_iter().enumerate() {
        for &x in &img_a[k * 64..(k + 1) * 64] {
            worst = worst.max((x - unit(v)).abs());
        }
    }
    for &x in &img_b {
        worst = worst.max((x - unit(77)).abs());
    }
    println!("folder RGB worst error {worst:e}");
    assert!(worst <= RESIZE_TOL, "crop must keep only the centre (no red, no white)");

    let gray = load(&path_of(&dir), 1, 8).unwrap();
    assert_eq!((gray.n, gray.channels), (2, 1));
    let luma = (0.299 * 200.0 + 0.587 * 100.0 + 0.114 * 50.0) / 127.5 - 1.0;
    let worst_a = gray.batch(&[0]).iter().map(|x| (x - luma).abs()).fold(0.0, f32::max);
    let worst_b = gray
        .batch(&[1])
        .iter()
        .map(|x| (x - unit(77)).abs())
        .fold(0.0, f32::max);
    println!("folder gray worst errors {worst_a:e} {worst_b:e}");
    assert!(worst_a <= RESIZE_TOL && worst_b <= RESIZE_TOL);

    // Upscaling works too (shorter side 20 → 24).
    let big = load(&path_of(&dir), 1, 24).unwrap();
    assert_eq!(big.images.len(), 2 * 24 * 24);
    assert!(big.images.iter().all(|x| (-1.0..=1.0).contains(x)));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn source_parse() {
    assert_eq!(Source::parse("mnist"), Source::BuiltinMnist);
    assert_eq!(Source::parse("MNIST"), Source::BuiltinMnist);
    assert_eq!(Source::parse("data/cifar"), Source::Path(PathBuf::from("data/cifar")));
}

#[test]
fn bad_inputs_give_one_clear_error() {
    let dir = temp_dir("bad");
    let pixels = vec![9u8; 5 * 16];

    let missing = dir.join("nope-images-idx3-ubyte");
    assert_mentions(
        &err_text(load(&path_of(&missing), 1, 28)),
        &[&missing.display().to_string(), "does not exist"],
    );

    let magic = dir.join("wrong-magic");
    std::fs::write(&magic, idx_labels(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])).unwrap();
    assert_mentions(
        &err_text(load(&path_of(&magic), 1, 4)),
        &[
            &magic.display().to_string(),
            "expected magic number 0x00000803",
            "found 0x00000801",
        ],
    );

    let png = dir.join("picture.png.idx");
    std::fs::write(&png, b"\x89PNG\r\n\x1a\n0000000000").unwrap();
    assert_mentions(
        &err_text(load(&path_of(&png), 1, 4)),
        &["expected magic number 0x00000803", "found 0x89504e47"],
    );

    let short = dir.join("short-images-idx3-ubyte");
    std::fs::write(&short, &idx_images(5, 4, 4, &pixels)[..90]).unwrap();
    assert_mentions(
        &err_text(load(&path_of(&short), 1, 4)),
        &[
            &short.display().to_string(),
            "truncated",
            "expected 96 bytes",
            "found 90",
        ],
    );

    let short_gz = dir.join("shortgz-images-idx3-ubyte.gz");
    std::fs::write(&short_gz, gz(&idx_images(5, 4, 4, &pixels)[..50])).unwrap();
    assert_mentions(
        &err_text(load(&path_of(&short_gz), 1, 4)),
        &[
            &short_gz.display().to_string(),
            "truncated",
            "expected 96 bytes",
            "found 50",
        ],
    );

    let header_only = dir.join("tiny");
    std::fs::write(&header_only, [0u8, 0, 8]).unwrap();
    assert_mentions(
        &err_text(load(&path_of(&header_only), 1, 4)),
        &[&header_only.display().to_string(), "truncated", "16 bytes", "found 3"],
    );

    let corrupt = dir.join("corrupt-images-idx3-ubyte.gz");
    let mut bytes = gz(&idx_images(5, 4, 4, &pixels));
    let mid = bytes.len() / 2;
    bytes.truncate(mid);
    std::fs::write(&corrupt, &bytes).unwrap();
    assert_mentions(
        &err_text(load(&path_of(&corrupt), 1, 4)),
        &[&corrupt.display().to_string(), "gzip"],
    );

    // Labels file with the wrong count: the labels file is named.
    let img = dir.join("lab-images-idx3-ubyte");
    let lab = dir.join("lab-labels-idx1-ubyte");
    std::fs::write(&img, idx_images(5, 4, 4, &pixels)).unwrap();
    std::fs::write(&lab, idx_labels(&[1, 2, 3])).unwrap();
    assert_mentions(
        &err_text(load(&path_of(&img), 1, 4)),
        &[&lab.display().to_string(), "holds 3 labels, expected 5"],
    );

    let cifar = dir.join("odd.bin");
    std::fs::write(&cifar, vec![0u8; 3073 * 2 + 100]).unwrap();
    assert_mentions(
        &err_text(load(&path_of(&cifar), 3, 32)),
        &[&cifar.display().to_string(), "6246 bytes", "multiple of 3073"],
    );

    // A CIFAR batch that cannot be read (a directory with a batch file's name).
    let unreadable = temp_dir("bad-cifar-dir");
    let batch = unreadable.join("data_batch_1.bin");
    std::fs::create_dir(&batch).unwrap();
    assert_mentions(
        &err_text(load(&path_of(&unreadable), 3, 32)),
        &["cannot read", &batch.display().to_string()],
    );

    let empty = temp_dir("empty");
    std::fs::write(empty.join("readme.txt"), "no pictures here").unwrap();
    assert_mentions(
        &err_text(load(&path_of(&empty), 1, 8)),
        &[&format!("no .png/.jpg/.jpeg images in {}", empty.display())],
    );

    let broken = temp_dir("broken");
    image::GrayImage::new(4, 4).save(broken.join("a.png")).unwrap();
    std::fs::write(broken.join("b.jpg"), b"this is not a jpeg").unwrap();
    let b_jpg = broken.join("b.jpg");
    assert_mentions(
        &err_text(load(&path_of(&broken), 1, 8)),
        &["cannot decode image", &b_jpg.display().to_string()],
    );

    assert_mentions(
        &err_text(load(&Source::BuiltinMnist, 2, 28)),
        &["1 or 3 image channels, not 2"],
    );
    assert_mentions(&err_text(load(&Source::BuiltinMnist, 1, 0)), &["at least 1 pixel"]);

    for d in [dir, unreadable, empty, broken] {
        std::fs::remove_dir_all(d).unwrap();
    }
}
