//! Pictures: grid layout and value mapping, one PNG per image, the loss plot, atomic writes.
//! Set DDPM_GPU_KEEP_PICTURES=1 to keep the written files (their directory is printed) for a look.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use ddpm_gpu::files::write_atomic;
use ddpm_gpu::viz::{
    save_each, save_grid, save_loss_curve, save_loss_curve_with, to_byte, PlotOptions, YScale, GRID_GAP_VALUE,
};
use image::{ColorType, DynamicImage};

fn temp_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("ddpm-gpu-viz-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn done(dir: &Path) {
    if std::env::var_os("DDPM_GPU_KEEP_PICTURES").is_some() {
        println!("pictures kept in {}", dir.display());
    } else {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

fn open(p: &Path) -> DynamicImage {
    image::open(p).unwrap_or_else(|e| panic!("{} is not a readable PNG: {e}", p.display()))
}

fn no_tmp_files(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name();
        assert!(!name.to_string_lossy().ends_with(".tmp"), "left behind: {name:?}");
    }
}

#[test]
fn byte_mapping() {
    assert_eq!(to_byte(-1.0), 0);
    assert_eq!(to_byte(1.0), 255);
    assert_eq!(to_byte(0.0), 128);
    assert_eq!(to_byte(-7.0), 0);
    assert_eq!(to_byte(3.5), 255);
    assert_eq!(to_byte(f32::NAN), 0);
    assert_eq!(to_byte(2.0 * 100.0 / 255.0 - 1.0), 100);
}

#[test]
fn gray_grid_layout_and_values() {
    let dir = temp_dir("gray");
    let (b, h, w, cols, scale) = (5, 3, 4, 2, 2u32);
    let mut imgs = vec![-1.0f32; b * h * w];
    imgs[h * w..2 * h * w].fill(1.0); // image 1 white
    imgs[2 * h * w + w + 2] = 1.0; // image 2: one white pixel at (y 1, x 2)
    imgs[3 * h * w] = 9.0; // image 3: clamped above
    imgs[3 * h * w + 1] = 0.0; // mid grey
    imgs[4 * h * w..].fill(-5.0); // image 4: clamped below
    let p = dir.join("grid.png");
    save_grid(&p, &imgs, [b, 1, h, w], cols, scale).unwrap();
    no_tmp_files(&dir);
    let img = open(&p);
    assert_eq!(img.color(), ColorType::L8);
    // 2 columns of 8 px + one 2 px gap; 3 rows of 6 px + two gaps.
    assert_eq!((img.width(), img.height()), (2 * 8 + 2, 3 * 6 + 2 * 2));
    let g = img.to_luma8();
    let at = |x: u32, y: u32| g.get_pixel(x, y).0[0];
    assert_eq!(at(0, 0), 0, "−1 → 0");
    assert_eq!(at(7, 5), 0);
    assert_eq!(at(8, 0), GRID_GAP_VALUE, "gap between columns");
    assert_eq!(at(9, 3), GRID_GAP_VALUE);
    assert_eq!(at(0, 6), GRID_GAP_VALUE, "gap between rows");
    assert_eq!(at(10, 0), 255, "1 → 255");
    assert_eq!(at(17, 5), 255);
    // Image 2 at row 1, column 0 (origin y 8): its white pixel covers the 2×2 block x 4..6, y 10..12.
    for (x, y, v) in [
        (4, 10, 255),
        (5, 11, 255),
        (3, 10, 0),
        (6, 10, 0),
        (4, 9, 0),
        (4, 12, 0),
    ] {
        assert_eq!(at(x, y), v, "pixel ({x}, {y})");
    }
    // Image 3 at row 1, column 1 (origin x 10, y 8).
    assert_eq!(at(10, 8), 255, "clamped 9 → 255");
    assert_eq!(at(12, 9), 128, "0 → 128");
    // Image 4 at row 2, column 0 (origin y 16); the empty cell next to it is gap-coloured.
    assert_eq!(at(0, 16), 0, "clamped −5 → 0");
    assert_eq!(at(12, 18), GRID_GAP_VALUE, "empty cell");
    done(&dir);
}

#[test]
fn rgb_grid_and_fewer_images_than_columns() {
    let dir = temp_dir("rgb");
    let (h, w) = (2, 3);
    // One image: R = 1, G = −1, B = 0 everywhere except pixel (1, 2), which is R −1, G 1, B 1.
    let mut img = [vec![1.0f32; h * w], vec![-1.0; h * w], vec![0.0; h * w]].concat();
    img[w + 2] = -1.0;
    img[h * w + w + 2] = 1.0;
    img[2 * h * w + w + 2] = 1.0;
    let p = dir.join("sub/rgb.png");
    save_grid(&p, &img, [1, 3, h, w], 8, 1).unwrap();
    let png = open(&p);
    assert_eq!(png.color(), ColorType::Rgb8);
    assert_eq!(
        (png.width(), png.height()),
        (3, 2),
        "one column when there is one image"
    );
    let rgb = png.to_rgb8();
    assert_eq!(rgb.get_pixel(0, 0).0, [255, 0, 128]);
    assert_eq!(rgb.get_pixel(2, 1).0, [0, 255, 255]);
    done(&dir);
}

#[test]
fn grid_rejects_bad_shapes() {
    let dir = temp_dir("badgrid");
    let p = dir.join("g.png");
    let e = format!("{:#}", save_grid(&p, &[0.0; 10], [2, 1, 2, 2], 2, 1).unwrap_err());
    println!("{e}");
    assert!(e.contains("g.png") && e.contains("expected 8 values"), "{e}");
    let e = format!("{:#}", save_grid(&p, &[0.0; 8], [1, 2, 2, 2], 2, 1).unwrap_err());
    assert!(e.contains("1 (gray) or 3 (RGB) channels"), "{e}");
    let e = format!("{:#}", save_grid(&p, &[0.0; 4], [1, 1, 2, 2], 0, 1).unwrap_err());
    assert!(e.contains("at least 1"), "{e}");
    assert!(!p.exists());
    done(&dir);
}

#[test]
fn each_image_its_own_png() {
    let dir = temp_dir("each");
    let out = dir.join("samples");
    let (b, h, w) = (3, 5, 7);
    let imgs: Vec<f32> = (0..b * h * w)
        .map(|i| if i / (h * w) == 1 { 1.0 } else { -1.0 })
        .collect();
    save_each(&out, &imgs, [b, 1, h, w]).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["00000.png", "00001.png", "00002.png"]);
    for (i, v) in [0u8, 255, 0].into_iter().enumerate() {
        let g = open(&out.join(&names[i])).to_luma8();
        assert_eq!(g.dimensions(), (w as u32, h as u32));
        assert!(g.pixels().all(|p| p.0[0] == v));
    }
    done(&dir);
}

/// Pixels that are clearly blue (the curves), as opposed to white, grey or black.
fn bluish(img: &image::RgbImage) -> usize {
    img.pixels().filter(|p| p.0[2] as i32 > p.0[0] as i32 + 40).count()
}

#[test]
fn loss_curve_png() {
    let dir = temp_dir("loss");
    // A DDPM-like loss: fast decay from ~1 to ~0.03 with noise, over 2,000 steps.
    let steps: Vec<usize> = (0..2000).map(|i| i * 10).collect();
    let losses: Vec<f64> = steps
        .iter()
        .map(|&s| 0.03 + 0.97 * (-(s as f64) / 1500.0).exp() + 0.01 * ((s as f64 * 0.37).sin() + 1.0))
        .collect();
    let p = dir.join("loss.png");
    save_loss_curve(&p, &steps, &losses, "training loss (MNIST)").unwrap();
    let img = open(&p);
    assert_eq!(
        (img.width(), img.height()),
        (PlotOptions::default().width, PlotOptions::default().height)
    );
    let rgb = img.to_rgb8();
    println!("default plot: {} curve pixels", bluish(&rgb));
    assert!(bluish(&rgb) > 500, "the curves are drawn");
    assert!(
        rgb.pixels().filter(|p| p.0 == [0, 0, 0]).count() > 500,
        "axes and labels are drawn"
    );

    let opts = PlotOptions {
        width: 400,
        height: 300,
        y_scale: YScale::Linear,
        smooth: 9,
        y_label: "FD",
    };
    let p2 = dir.join("loss-linear.png");
    save_loss_curve_with(&p2, &steps, &losses, "linear", &opts).unwrap();
    assert_eq!(open(&p2).to_rgb8().dimensions(), (400, 300));

    // Edge cases still give a picture: one point, no points, non-finite and non-positive values on log axes.
    let log = PlotOptions {
        y_scale: YScale::Log,
        ..PlotOptions::default()
    };
    for (name, s, l) in [
        ("one.png", vec![5usize], vec![0.5f64]),
        ("none.png", vec![], vec![]),
        ("nan.png", vec![1, 2, 3, 4], vec![1.0, f64::NAN, f64::INFINITY, 0.5]),
        ("negative.png", vec![1, 2, 3], vec![1.0, -0.5, 0.25]),
        ("flat.png", vec![1, 2, 3], vec![0.1, 0.1, 0.1]),
    ] {
        save_loss_curve_with(&dir.join(name), &s, &l, name, &log).unwrap();
        assert_eq!(open(&dir.join(name)).width(), 800);
    }
    let e = save_loss_curve(&dir.join("bad.png"), &[1, 2], &[1.0], "x").unwrap_err();
    assert!(format!("{e:#}").contains("2 steps but 1 losses"), "{e:#}");
    no_tmp_files(&dir);
    done(&dir);
}

#[test]
fn atomic_write() {
    let dir = temp_dir("atomic");
    let p = dir.join("f.bin");
    write_atomic(&p, b"first").unwrap();
    write_atomic(&p, b"second, longer").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"second, longer");
    no_tmp_files(&dir);
    // Parent directories are created.
    let nested = dir.join("a/b/c.txt");
    write_atomic(&nested, b"x").unwrap();
    assert_eq!(std::fs::read(&nested).unwrap(), b"x");
    // A failed rename (the target is a non-empty directory) reports the path and leaves no temp file.
    let blocker = dir.join("blocked");
    std::fs::create_dir_all(blocker.join("inside")).unwrap();
    let e = format!("{:#}", write_atomic(&blocker, b"y").unwrap_err());
    println!("{e}");
    assert!(e.contains("blocked"), "{e}");
    no_tmp_files(&dir);
    done(&dir);
}

#[test]
fn mnist_sample_grid() {
    let d = ddpm_gpu::data::load(&ddpm_gpu::data::Source::BuiltinMnist, 1, 28).unwrap();
    let dir = temp_dir("mnist");
    let p = dir.join("mnist.png");
    save_grid(&p, &d.batch(&(0..64).collect::<Vec<_>>()), [64, 1, 28, 28], 8, 2).unwrap();
    let g = open(&p).to_luma8();
    assert_eq!(g.dimensions(), (8 * 56 + 7 * 2, 8 * 56 + 7 * 2));
    // The byte written for each pixel is exactly the dataset's byte: MNIST stores k/255 as 2k/255 − 1.
    let first = d.batch(&[0]);
    for y in 0..28 {
        for x in 0..28 {
            assert_eq!(
                g.get_pixel(2 * x + 1, 2 * y).0[0],
                to_byte(first[(y * 28 + x) as usize])
            );
        }
    }
    done(&dir);
}
