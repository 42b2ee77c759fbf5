//! The `sample --sampler ddim --progressive`, `interpolate` and `eval` commands end to end on a
//! tiny random model folder with T = 20, and their refusals of bad flags (a clear message naming
//! the flag, exit code 1 or clap's 2, never a panic).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary, with kernel tuning off: these tests check behaviour, and tuning (its own test in
/// tests/cli.rs) would add its measurements to every run.
fn ddpm_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ddpm-gpu"));
    c.env("DDPM_GPU_TUNE", "off");
    c
}

use ddpm_gpu::diffusion::schedule::SchedulerConfig;
use ddpm_gpu::model::{save_folder, ParamTable, UNetConfig};

/// A run-like folder: unet/ (the tiny preset, random weights; with `classes`, class-conditional on
/// that many classes) and scheduler/ with T = 20.
fn model_folder(classes: Option<usize>) -> PathBuf {
    let name = format!("ddpm-gpu-cli-sampling-{}-{classes:?}", std::process::id());
    let dir = std::env::temp_dir().join(name);
    let cfg = UNetConfig {
        num_class_embeds: classes.map(|c| c + 1),
        ..UNetConfig::preset("tiny").unwrap()
    };
    let table = ParamTable::new(&cfg);
    save_folder(&dir.join("unet"), &cfg, &table, &table.init(3)).unwrap();
    std::fs::create_dir_all(dir.join("scheduler")).unwrap();
    let sched = SchedulerConfig {
        num_train_timesteps: 20,
        ..SchedulerConfig::paper()
    };
    sched
        .save(&dir.join("scheduler").join("scheduler_config.json"))
        .unwrap();
    dir
}

fn run(args: &[&str]) -> Output {
    let out = ddpm_command().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    out
}

/// The command fails with a message containing every one of `needles`.
fn refused(args: &[&str], needles: &[&str]) {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    for n in needles {
        assert!(stderr.contains(n), "{args:?}: message lacks {n:?}: {stderr}");
    }
}

fn dims(path: &Path) -> (u32, u32) {
    image::image_dimensions(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn sample_interpolate_and_eval_commands() {
    let dir = model_folder(None);
    let model = dir.to_str().unwrap();
    let out = dir.join("ddim.png");
    let o = run(&[
        "sample",
        "--model",
        model,
        "--images",
        "3",
        "--sampler",
        "ddim",
        "--steps",
        "5",
        "--spacing",
        "trailing",
        "--progressive",
        "4",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // 3 images of 8×8 at scale 2 in a 2×2 grid; progressive: 3 rows × 4 columns.
    assert_eq!(dims(&out), (2 * 16 + 2, 2 * 16 + 2));
    assert_eq!(
        dims(&dir.join("ddim_progressive.png")),
        (4 * 16 + 3 * 2, 3 * 16 + 2 * 2)
    );

    let strip = dir.join("interp.png");
    let o = run(&[
        "interpolate",
        "--model",
        model,
        "--a",
        "3",
        "--b",
        "7",
        "--t",
        "10",
        "--lambdas",
        "3",
        "--out",
        strip.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(dims(&strip), (5 * 16 + 4 * 2, 16));
    // Two PNG files of another size and colour as the sources.
    let (pa, pb) = (dir.join("a.png"), dir.join("b.png"));
    image::RgbImage::from_fn(12, 10, |x, _| image::Rgb([20 * x as u8, 0, 90]))
        .save(&pa)
        .unwrap();
    image::RgbImage::from_pixel(9, 9, image::Rgb([250, 250, 250]))
        .save(&pb)
        .unwrap();
    let o = run(&[
        "interpolate",
        "--model",
        model,
        "--image-a",
        pa.to_str().unwrap(),
        "--image-b",
        pb.to_str().unwrap(),
        "--t",
        "5",
        "--lambdas",
        "2",
        "--out",
        strip.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(dims(&strip), (4 * 16 + 3 * 2, 16));

    let csv = dir.join("rd.csv");
    let o = run(&[
        "eval",
        "--model",
        model,
        "--images",
        "3",
        "--batch-size",
        "2",
        "--timesteps-per-image",
        "4",
        "--rate-distortion",
        csv.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    println!("{stdout}");
    let bpd: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("bits/dim"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("a bits/dim line");
    assert!(bpd.is_finite() && bpd > 0.0);
    assert!(stdout.contains("ESTIMATE: 4 of the 19 middle timesteps"));
    let rows = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(
        rows.lines().count(),
        1 + 5,
        "header + 4 middle timesteps + t = 0:\n{rows}"
    );
    assert!(dir.join("rd_distortion.png").exists() && dir.join("rd_rate.png").exists());

    let m = ["--model", model];
    let with = |cmd: &str, extra: &[&'static str]| -> Vec<String> {
        let mut v = vec![cmd.to_string()];
        v.extend(m.iter().map(|s| s.to_string()));
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let refuse = |cmd: &str, extra: &[&'static str], needles: &[&str]| {
        let args = with(cmd, extra);
        refused(&args.iter().map(String::as_str).collect::<Vec<_>>(), needles);
    };
    refuse("sample", &["--steps", "5"], &["--steps 5", "ddim"]);
    refuse(
        "sample",
        &["--sampler", "ddim", "--steps", "21"],
        &["--steps 21", "T = 20"],
    );
    refuse("sample", &["--sampler", "ddim", "--eta", "1.5"], &["--eta 1.5"]);
    refuse(
        "sample",
        &["--sampler", "ddim", "--spacing", "sideways"],
        &["--spacing", "sideways"],
    );
    refuse("sample", &["--sampler", "ddpm", "--eta", "0.5"], &["--eta"]);
    refuse(
        "sample",
        &["--sampler", "ddim", "--variance", "fixed_large"],
        &["--variance"],
    );
    refuse("sample", &["--sampler", "plms"], &["--sampler", "plms"]);
    refuse("sample", &["--progressive", "1"], &["--progressive 1"]);
    refuse(
        "sample",
        &["--class", "1"],
        &["--class", "not class-conditional", "--classes"],
    );
    refuse(
        "sample",
        &["--sampler", "ddim", "--steps", "4", "--progressive", "5"],
        &["--progressive 5", "(4)"],
    );
    refuse("interpolate", &["--t", "20"], &["--t 20", "T = 20"]);
    refuse("interpolate", &["--lambdas", "1"], &["--lambdas 1"]);
    refuse("interpolate", &["--a", "10000"], &["--a 10000"]);
    refuse(
        "interpolate",
        &["--image-a", "x.gif", "--image-b", "y.png"],
        &["--image-a x.gif"],
    );
    refuse(
        "eval",
        &["--timesteps-per-image", "zero"],
        &["--timesteps-per-image zero"],
    );
    refuse("eval", &["--images", "0"], &["--images"]);
    refuse("eval", &["--offset", "9999", "--images", "2"], &["--offset 9999"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn class_conditional_sampling_with_guidance() {
    let dir = model_folder(Some(3));
    let model = dir.to_str().unwrap();
    let out = dir.join("guided.png");
    let out_s = out.to_str().unwrap();
    let ddim = ["--sampler", "ddim", "--steps", "3"];
    let sample = |extra: &[&str]| {
        let mut args = vec!["sample", "--model", model, "--out", out_s];
        args.extend(ddim);
        args.extend(extra);
        let o = run(&args);
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    // Six images cycle through the 3 classes: one class per column, 3 × 2.
    sample(&["--images", "6", "--guidance", "2"]);
    assert_eq!(dims(&out), (3 * 16 + 2 * 2, 2 * 16 + 2));
    // One class for all: the usual square-ish grid.
    sample(&["--images", "2", "--class", "2"]);
    assert_eq!(dims(&out), (2 * 16 + 2, 16));
    let mut args = vec!["sample", "--model", model];
    args.extend(ddim);
    refused(&[args.as_slice(), &["--class", "3"]].concat(), &["--class 3", "0 to 2"]);
    refused(&[args.as_slice(), &["--guidance", "nan"]].concat(), &["--guidance NaN"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
