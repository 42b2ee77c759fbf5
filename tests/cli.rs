//! The command line on bad input (one clear error naming what is wrong, exit code 1, never a
//! panic, nothing saved damaged) and a whole tiny train → resume → sample round trip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary, with kernel tuning off: these tests check behaviour, and tuning (its own test
/// below) would add its measurements to every run.
fn ddpm_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ddpm-gpu"));
    c.env("DDPM_GPU_TUNE", "off");
    c
}

fn ddpm(args: &[&str]) -> Output {
    ddpm_command().args(args).output().expect("running ddpm-gpu")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ddpm-gpu-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The command fails with exit code 1 and an error mentioning every one of `needles`.
fn fails_with(args: &[&str], needles: &[&str]) {
    let out = ddpm(args);
    let err = String::from_utf8_lossy(&out.stderr);
    println!("{args:?} → {}", err.trim());
    assert_eq!(out.status.code(), Some(1), "{args:?} should fail cleanly: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: error should mention '{n}': {err}");
    }
}

const TINY: &[&str] = &["train", "--model", "tiny", "--sample-images", "0"];

fn with<'a>(base: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
    base.iter().chain(more).copied().collect()
}

#[test]
fn bad_training_input_gets_one_clear_error() {
    let dir = tmp("bad");
    let out = dir.join("run");
    let out = out.to_str().unwrap();
    fails_with(
        &with(TINY, &["--data", "/no/such/data", "--out", out]),
        &["/no/such/data"],
    );
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    fails_with(
        &with(TINY, &["--data", empty.to_str().unwrap(), "--out", out]),
        &["no .png/.jpg/.jpeg images"],
    );
    let bad_img = dir.join("imgs");
    std::fs::create_dir_all(&bad_img).unwrap();
    std::fs::write(bad_img.join("broken.png"), b"not a png").unwrap();
    fails_with(
        &with(TINY, &["--data", bad_img.to_str().unwrap(), "--out", out]),
        &["broken.png"],
    );
    // Class conditioning needs labels, which a folder of images does not have.
    let plain = dir.join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    image::GrayImage::from_pixel(8, 8, image::Luma([200]))
        .save(plain.join("a.png"))
        .unwrap();
    fails_with(
        &with(TINY, &["--classes", "--data", plain.to_str().unwrap(), "--out", out]),
        &["--classes", "no labels"],
    );
    // Labels that are not the classes 0..K−1 (all 200) are refused, not made a 201-class model.
    let idx = dir.join("x-images-idx3-ubyte");
    let mut images = vec![0, 0, 8, 3, 0, 0, 0, 4, 0, 0, 0, 8, 0, 0, 0, 8];
    images.extend((0..4 * 64).map(|i| (i * 7 % 256) as u8));
    std::fs::write(&idx, images).unwrap();
    std::fs::write(
        dir.join("x-labels-idx1-ubyte"),
        [0, 0, 8, 1, 0, 0, 0, 4, 200, 200, 200, 200],
    )
    .unwrap();
    fails_with(
        &with(TINY, &["--classes", "--data", idx.to_str().unwrap(), "--out", out]),
        &["--classes", "0 to 200", "200 of those classes never occur"],
    );
    fails_with(&with(TINY, &["--class-dropout", "1.5"]), &["--class-dropout"]);
    // Like --dropout, 1 is refused (the class embedding would never train).
    fails_with(&with(TINY, &["--class-dropout", "1"]), &["--class-dropout", "[0, 1)"]);
    fails_with(&with(TINY, &["--dropout", "1"]), &["dropout", "[0, 1)"]);
    fails_with(&["train", "--model", "no-such-preset"], &["no-such-preset"]);
    fails_with(&with(TINY, &["--batch-size", "0"]), &["--batch-size"]);
    fails_with(
        &with(TINY, &["--batch-size", "6", "--micro-batch", "4"]),
        &["--micro-batch"],
    );
    fails_with(&with(TINY, &["--schedule", "quadratic"]), &["--schedule"]);
    fails_with(&["train", "--resume", "/no/such/run"], &["/no/such/run"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn write_model(dir: &Path, preset: &str) {
    let cfg = ddpm_gpu::model::UNetConfig::preset(preset).unwrap();
    let table = ddpm_gpu::model::ParamTable::new(&cfg);
    ddpm_gpu::model::save_folder(dir, &cfg, &table, &table.init(0)).unwrap();
}

#[test]
fn bad_model_folders_get_one_clear_error() {
    let dir = tmp("models");
    fails_with(&["sample", "--model", "/no/such/model"], &["/no/such/model"]);
    // A truncated weights file.
    let trunc = dir.join("trunc");
    write_model(&trunc, "tiny");
    let w = trunc.join("diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() - 100]).unwrap();
    fails_with(
        &["sample", "--model", trunc.to_str().unwrap()],
        &["diffusion_pytorch_model.safetensors"],
    );
    // A config that does not match the weights.
    let mismatch = dir.join("mismatch");
    write_model(&mismatch, "tiny");
    let other = dir.join("other");
    write_model(&other, "mnist");
    std::fs::copy(other.join("config.json"), mismatch.join("config.json")).unwrap();
    fails_with(&["sample", "--model", mismatch.to_str().unwrap()], &["do not match"]);
    // A config with an unsupported value.
    let cfg_path = other.join("config.json");
    let text = std::fs::read_to_string(&cfg_path)
        .unwrap()
        .replace("\"silu\"", "\"gelu\"");
    std::fs::write(&cfg_path, text).unwrap();
    fails_with(&["sample", "--model", other.to_str().unwrap()], &["act_fn"]);
    fails_with(
        &["sample", "--model", trunc.to_str().unwrap(), "--variance", "huge"],
        &["--variance"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn diverging_training_stops_and_keeps_the_last_good_checkpoint() {
    let dir = tmp("nan");
    let run = dir.join("run");
    let run_s = run.to_str().unwrap();
    // A learning rate of 1e30 makes the weights overflow within a few steps.
    let args = with(
        TINY,
        &[
            "--out",
            run_s,
            "--lr",
            "1e30",
            "--warmup",
            "0",
            "--steps",
            "30",
            "--batch-size",
            "4",
        ],
    );
    let args = with(
        &args,
        &["--log-every", "1", "--checkpoint-every", "1", "--grad-clip", "0"],
    );
    fails_with(&args, &["loss became", "last good checkpoint"]);
    // The saved state is a finite one.
    let (_, _, flat) = ddpm_gpu::model::load_folder(&run.join("unet")).unwrap();
    assert!(flat.iter().all(|v| v.is_finite()), "the kept checkpoint must be finite");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn train_resume_and_sample_from_the_command_line() {
    let dir = tmp("ok");
    let run = dir.join("run");
    let run_s = run.to_str().unwrap();
    let train = with(
        TINY,
        &["--out", run_s, "--steps", "3", "--batch-size", "4", "--log-every", "1"],
    );
    let out = ddpm(&train);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for f in [
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
    ] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    for f in [
        "train_state.safetensors",
        "train_config.json",
        "model_index.json",
        "metrics.jsonl",
        "loss.png",
    ] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    let out = ddpm(&["train", "--resume", run_s, "--steps", "5", "--sample-images", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = metrics
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, vec![1, 2, 3, 4, 5], "metrics continue where the run stopped");
    let png = dir.join("grid.png");
    let each = dir.join("each");
    let out = ddpm(&[
        "sample",
        "--model",
        run_s,
        "--images",
        "2",
        "--out",
        png.to_str().unwrap(),
        "--each",
        each.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let img = image::open(&png).unwrap();
    assert_eq!(
        (img.width(), img.height()),
        (2 * 8 * 2 + 2, 8 * 2),
        "2 images of 8×8 at scale 2 in one row"
    );
    assert!(each.join("00001.png").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ctrl_c_saves_a_checkpoint_that_resumes() {
    interrupt_saves_a_checkpoint_that_resumes("INT");
}

#[test]
fn sigterm_saves_a_checkpoint_that_resumes() {
    interrupt_saves_a_checkpoint_that_resumes("TERM");
}

/// The exit status of a command stopped by `signal` after saving: 128 + the signal's number.
fn interrupted_status(signal: &str) -> i32 {
    128 + match signal {
        "HUP" => 1,
        "INT" => 2,
        "TERM" => 15,
        _ => panic!("no status for SIG{signal}"),
    }
}

/// Interrupt a training with `signal`: it saves, says how to resume, and exits with 128 + the
/// signal's number.
fn interrupt_saves_a_checkpoint_that_resumes(signal: &str) {
    let dir = tmp(&format!("sig{signal}"));
    let run = dir.join("run");
    let run_s = run.to_str().unwrap();
    let args = with(
        TINY,
        &[
            "--out",
            run_s,
            "--steps",
            "100000",
            "--batch-size",
            "2",
            "--log-every",
            "1",
        ],
    );
    let child = ddpm_command()
        .args(&args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until training is under way, then interrupt it as Ctrl-C does.
    let metrics = run.join("metrics.jsonl");
    let start = std::time::Instant::now();
    while std::fs::read_to_string(&metrics)
        .map(|s| s.lines().count())
        .unwrap_or(0)
        < 2
    {
        assert!(start.elapsed().as_secs() < 60, "training did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(interrupted_status(signal)),
        "SIG{signal}: saved, then exit status 128 + the signal: {err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("error:"),
        "SIG{signal}: {err}"
    );
    assert!(err.contains("--resume"), "says how to resume: {err}");
    let state = std::fs::read(run.join("train_state.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&state).unwrap();
    let step: usize = meta.metadata().as_ref().unwrap()["step"].parse().unwrap();
    assert!(step >= 2, "the checkpoint holds the steps done ({step})");
    let out = ddpm(&[
        "train",
        "--resume",
        run_s,
        "--steps",
        &(step + 1).to_string(),
        "--sample-images",
        "0",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_score_input_gets_one_clear_error() {
    let dir = tmp("score");
    fails_with(&["score", "--samples", "/no/such/grid.png"], &["/no/such/grid.png"]);
    // A picture that is no grid of 28×28 digits.
    let odd = dir.join("odd.png");
    ddpm_gpu::viz::save_grid(&odd, &vec![0.5; 3 * 10 * 10], [3, 1, 10, 10], 3, 1).unwrap();
    fails_with(&["score", "--samples", odd.to_str().unwrap()], &["odd.png", "28×28"]);
    // One digit is not enough for a covariance.
    let one = dir.join("one.png");
    ddpm_gpu::viz::save_grid(&one, &vec![0.5; 28 * 28], [1, 1, 28, 28], 1, 2).unwrap();
    fails_with(
        &["score", "--samples", one.to_str().unwrap()],
        &["one.png", "at least 2"],
    );
    fails_with(
        &["score", "--samples", one.to_str().unwrap(), "--data", "/no/such/data"],
        &["--data", "/no/such/data"],
    );
    fails_with(
        &[
            "score",
            "--samples",
            one.to_str().unwrap(),
            "--channels",
            "2",
            "--size",
            "28",
        ],
        &["--channels 2"],
    );
    // Unlabelled data (a folder of images) cannot train the classifier.
    let imgs = dir.join("imgs");
    ddpm_gpu::viz::save_each(&imgs, &vec![0.1; 4 * 28 * 28], [4, 1, 28, 28]).unwrap();
    let grid = dir.join("grid.png");
    ddpm_gpu::viz::save_grid(&grid, &vec![0.1; 4 * 28 * 28], [4, 1, 28, 28], 2, 2).unwrap();
    fails_with(
        &[
            "score",
            "--samples",
            grid.to_str().unwrap(),
            "--data",
            imgs.to_str().unwrap(),
            "--size",
            "28",
            "--channels",
            "1",
        ],
        &["labelled"],
    );
    fails_with(
        &[
            "score",
            "--samples",
            grid.to_str().unwrap(),
            "--data",
            imgs.to_str().unwrap(),
        ],
        &["--size"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn score_trains_its_classifier_once_and_then_reads_it_from_the_cache() {
    // 8×8 digits keep the classifier's training short (the bundled digits are 28×28).
    let dir = tmp("score-ok");
    let cache = dir.join("cache");
    let digits = ddpm_gpu::data::load(&ddpm_gpu::data::Source::BuiltinMnist, 1, 8).unwrap();
    let grid = dir.join("real.png");
    ddpm_gpu::viz::save_grid(&grid, &digits.images[..64 * 64], [64, 1, 8, 8], 8, 2).unwrap();
    // A corrupt cached classifier is ignored with a notice, never an error.
    let cached = cache
        .join("classifiers")
        .join(format!("{}.safetensors", ddpm_gpu::quality::fingerprint(&digits)));
    std::fs::create_dir_all(cached.parent().unwrap()).unwrap();
    std::fs::write(&cached, b"not a classifier").unwrap();
    let score = || {
        ddpm_command()
            .args(["score", "--samples", grid.to_str().unwrap(), "--size", "8", "--json"])
            .env("DDPM_GPU_CACHE", &cache)
            .output()
            .unwrap()
    };
    let first = score();
    let err = String::from_utf8_lossy(&first.stderr);
    println!("{err}");
    assert!(first.status.success(), "{err}");
    assert!(err.contains("ignoring unreadable cached classifier"), "{err}");
    assert!(err.contains("training the feature classifier"), "{err}");
    let second = score();
    let err2 = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{err2}");
    assert!(!err2.contains("training"), "the second run reads the cache: {err2}");
    assert_eq!(first.stdout, second.stdout, "the cached classifier scores the same");
    let v: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    println!("{v}");
    for key in ["fd", "fd_floor", "confidence", "class_entropy", "classifier_accuracy"] {
        assert!(v[key].as_f64().is_some_and(f64::is_finite), "{key} in {v}");
    }
    // Real digits: within a few times the floor (one draw of 64 scored 4.5 against a floor of
    // 1.7; uniform noise scores about 100 times the floor, see tests/quality.rs).
    assert_eq!(v["score_images"], 64);
    assert!(v["classifier_accuracy"].as_f64().unwrap() > 0.9);
    assert!(v["fd"].as_f64().unwrap() < 5.0 * v["fd_floor"].as_f64().unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_run_folder_is_never_overwritten_or_shared() {
    let dir = tmp("claim");
    let run = dir.join("run");
    let run_s = run.to_str().unwrap();
    let out = ddpm(&with(TINY, &["--out", run_s, "--steps", "2", "--batch-size", "4"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let state = std::fs::read(run.join("train_state.safetensors")).unwrap();
    let metrics = std::fs::read(run.join("metrics.jsonl")).unwrap();
    // A second training into the same folder is refused, naming --resume, and changes nothing.
    fails_with(
        &with(TINY, &["--out", run_s, "--steps", "3", "--batch-size", "4"]),
        &["already holds a training run", "--resume"],
    );
    assert_eq!(std::fs::read(run.join("train_state.safetensors")).unwrap(), state);
    assert_eq!(std::fs::read(run.join("metrics.jsonl")).unwrap(), metrics);
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("notes.txt"), b"mine").unwrap();
    fails_with(
        &with(TINY, &["--out", other.to_str().unwrap(), "--steps", "1"]),
        &["not empty"],
    );

    // While one process trains in a folder, another cannot train in it.
    let mut child = ddpm_command()
        .args(["train", "--resume", run_s, "--steps", "100000", "--sample-images", "0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    // Wait until the first one has taken the lock (it says "resumed" right after).
    let mut stderr = child.stderr.take().unwrap();
    let mut seen = String::new();
    while !seen.contains("resumed") && start.elapsed().as_secs() < 120 {
        let mut buf = [0u8; 256];
        let n = std::io::Read::read(&mut stderr, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        seen += &String::from_utf8_lossy(&buf[..n]);
    }
    assert!(seen.contains("resumed"), "the first training started: {seen}");
    fails_with(
        &["train", "--resume", run_s, "--steps", "5", "--sample-images", "0"],
        &["in use"],
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // The lock dies with its process: now the folder can be trained in again.
    let out = ddpm(&["train", "--resume", run_s, "--steps", "3", "--sample-images", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn run_folders_made_at_the_same_moment_differ() {
    let dir = tmp("unique");
    let a = ddpm_gpu::files::create_unique_dir(&dir, "2026-01-01_00-00-00").unwrap();
    let b = ddpm_gpu::files::create_unique_dir(&dir, "2026-01-01_00-00-00").unwrap();
    let c = ddpm_gpu::files::create_unique_dir(&dir, "2026-01-01_00-00-00").unwrap();
    assert_eq!(a, dir.join("2026-01-01_00-00-00"));
    assert_eq!(b, dir.join("2026-01-01_00-00-00-2"));
    assert_eq!(c, dir.join("2026-01-01_00-00-00-3"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_numbers_and_configs_are_refused_by_name() {
    let dir = tmp("numbers");
    let out = dir.join("run");
    let out = out.to_str().unwrap();
    for bad in ["nan", "inf", "-1"] {
        fails_with(
            &with(TINY, &["--out", out, "--steps", "1", &format!("--grad-clip={bad}")]),
            &["--grad-clip"],
        );
    }
    fails_with(
        &with(TINY, &["--out", out, "--steps", "1", "--ema-warmup-power", "nan"]),
        &["--ema-warmup-power"],
    );
    let mut cfg = ddpm_gpu::model::UNetConfig::preset("tiny").unwrap();
    cfg.block_out_channels = vec![0, 16];
    let path = dir.join("config.json");
    std::fs::write(&path, cfg.to_json()).unwrap();
    let path = path.to_str().unwrap();
    fails_with(
        &["train", "--model", path, "--out", out, "--sample-images", "0"],
        &["block_out_channels"],
    );
    fails_with(&["info", "--model", path], &["block_out_channels"]);
    assert!(!Path::new(out).exists(), "nothing is created for refused input");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A folder of `n` different 8×8 grey PNG images.
fn image_folder(dir: &Path, n: u8) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        image::GrayImage::from_fn(8, 8, |x, y| image::Luma([(x * 30 + y * 3 + i as u32 * 20) as u8]))
            .save(dir.join(format!("{i}.png")))
            .unwrap();
    }
    dir.to_path_buf()
}

fn train_config(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("train_config.json")).unwrap()).unwrap()
}

#[test]
fn resume_keeps_the_data_and_applies_or_refuses_each_flag() {
    let dir = tmp("resume-flags");
    let data = image_folder(&dir.join("data"), 6);
    let run = dir.join("run");
    let run_s = run.to_str().unwrap();
    // A relative --data path, stored absolute.
    let out = ddpm_command()
        .current_dir(&dir)
        .args(with(
            TINY,
            &["--data", "data", "--out", "run", "--steps", "2", "--batch-size", "2"],
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        train_config(&run)["data"].as_str().map(PathBuf::from),
        Some(std::path::absolute(&data).unwrap())
    );

    // Resumed from another directory: the run's own data, a lower --lr applied and said so.
    let out = ddpm(&["train", "--resume", run_s, "--steps", "3", "--lr", "0.0005"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("data: 6 images"), "trains on the run's data: {err}");
    assert!(err.contains("--lr: 0.001 → 0.0005"), "says what it applies: {err}");
    let cfg = train_config(&run);
    assert_eq!((cfg["steps"].as_u64(), cfg["lr"].as_f64()), (Some(3), Some(0.0005)));

    // What would no longer continue the same run is refused by name, and nothing changes.
    let other = image_folder(&dir.join("other"), 3);
    for (flag, value) in [
        ("--batch-size", "4"),
        ("--seed", "7"),
        ("--init", "pytorch"),
        ("--data", other.to_str().unwrap()),
        ("--dropout", "0.3"),
        ("--schedule", "cosine"),
    ] {
        fails_with(
            &["train", "--resume", run_s, "--steps", "5", flag, value],
            &[flag, "a resumed run keeps it", run_s],
        );
    }
    assert_eq!(train_config(&run), cfg, "a refused resume changes nothing");
    // Given unchanged, they are fine; a step count the run has reached is not.
    fails_with(
        &["train", "--resume", run_s, "--steps", "3", "--batch-size", "2"],
        &["at step 3", "--steps above 3"],
    );
    fails_with(&with(TINY, &["--steps", "0"]), &["--steps must be at least 1"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A tiny run of one step, for the sampling commands.
fn tiny_run(dir: &Path) -> PathBuf {
    let run = dir.join("run");
    let out = ddpm(&with(
        TINY,
        &["--out", run.to_str().unwrap(), "--steps", "1", "--batch-size", "2"],
    ));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    run
}

#[test]
fn sampling_commands_check_their_input_and_report_progress() {
    let dir = tmp("sample-input");
    let run = tiny_run(&dir);
    let run_s = run.to_str().unwrap();
    // Grids are PNG: another extension is refused before any sampling.
    let jpg = dir.join("x.jpg");
    fails_with(
        &["sample", "--model", run_s, "--out", jpg.to_str().unwrap()],
        &["x.jpg", ".png"],
    );
    fails_with(
        &["interpolate", "--model", run_s, "--out", jpg.to_str().unwrap()],
        &["x.jpg", ".png"],
    );
    assert!(!jpg.exists());
    // A broken image is named as the user gave it.
    let good = image_folder(&dir.join("imgs"), 1).join("0.png");
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.join("truncated.png");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    fails_with(
        &[
            "interpolate",
            "--model",
            run_s,
            "--image-a",
            cut.to_str().unwrap(),
            "--image-b",
            good.to_str().unwrap(),
        ],
        &[cut.to_str().unwrap()],
    );
    // NaN weights are refused on load, not sampled into black images.
    let unet = run.join("unet");
    let (cfg, table, mut flat) = ddpm_gpu::model::load_folder(&unet).unwrap();
    flat[7] = f32::NAN;
    let broken = dir.join("broken");
    ddpm_gpu::model::save_folder(&broken, &cfg, &table, &flat).unwrap();
    fails_with(
        &["sample", "--model", broken.to_str().unwrap()],
        &["diffusion_pytorch_model.safetensors", "1 of", "NaN"],
    );
    // Into a pipe, where no bar draws, progress comes as plain lines.
    let png = dir.join("grid.png");
    let out = ddpm(&[
        "sample",
        "--model",
        run_s,
        "--images",
        "2",
        "--sampler",
        "ddim",
        "--steps",
        "5",
        "--out",
        png.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("5/5 denoising steps"), "a progress line: {err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Run `args`, send `signal` once stderr shows `ready`, and return what the command did.
fn interrupt_when(args: &[&str], ready: &str, signal: &str) -> Output {
    use std::io::{BufRead, BufReader, Read};
    let mut child = ddpm_command()
        .args(args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains(ready) {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "{args:?} ended before '{ready}': {seen}"
        );
        seen += &line;
    }
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    stderr.read_to_string(&mut seen).unwrap();
    let mut out = child.wait_with_output().unwrap();
    out.stderr = seen.into_bytes();
    out
}

#[test]
fn ctrl_c_stops_sampling_and_writes_nothing() {
    let dir = tmp("sample-int");
    let run = tiny_run(&dir);
    let run_s = run.to_str().unwrap();
    let png = dir.join("grid.png");
    let strip = dir.join("strip.png");
    let sample = [
        "sample",
        "--model",
        run_s,
        "--images",
        "64",
        "--out",
        png.to_str().unwrap(),
    ];
    let interpolate = [
        "interpolate",
        "--model",
        run_s,
        "--lambdas",
        "64",
        "--out",
        strip.to_str().unwrap(),
    ];
    let eval = ["eval", "--model", run_s, "--images", "64", "--all-timesteps"];
    for (args, signal) in [(&sample[..], "INT"), (&interpolate[..], "TERM"), (&eval[..], "INT")] {
        let out = interrupt_when(args, "adapter:", signal);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(interrupted_status(signal)),
            "{args:?} stops on SIG{signal}: {err}"
        );
        assert!(err.contains("interrupted: nothing written"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(!png.exists() && !strip.exists(), "no partial output");

    // Training's end-of-run sampling: the run is saved, no grid is written.
    let run2 = dir.join("run2");
    let out = interrupt_when(
        &[
            "train",
            "--model",
            "tiny",
            "--out",
            run2.to_str().unwrap(),
            "--steps",
            "1",
            "--batch-size",
            "2",
            "--sample-images",
            "64",
        ],
        "run folder:",
        "INT",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(interrupted_status("INT")), "{err}");
    assert!(run2.join("train_state.safetensors").exists(), "{err}");
    assert!(!run2.join("samples").join("step_0000001.png").exists(), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_backend_this_machine_lacks_is_named() {
    if cfg!(target_os = "macos") {
        println!("skipped: this machine has Metal");
        return;
    }
    let out = ddpm_command()
        .env("WGPU_BACKEND", "metal")
        .args(["info"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    println!("{err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("WGPU_BACKEND=metal"),
        "names the variable, not a driver to install: {err}"
    );
    assert!(!err.contains("apt-get"), "{err}");
}

#[test]
fn memory_and_cost_are_told_before_the_run() {
    let dir = tmp("cost");
    // A model far larger than its data: refused with the numbers, not aborted or OOM-killed.
    let mut cfg = ddpm_gpu::model::UNetConfig::preset("tiny").unwrap();
    cfg.sample_size = Some(100_000);
    let path = dir.join("huge.json");
    std::fs::write(&path, cfg.to_json()).unwrap();
    fails_with(
        &[
            "train",
            "--model",
            path.to_str().unwrap(),
            "--sample-images",
            "0",
            "--out",
            dir.join("r1").to_str().unwrap(),
        ],
        &["10000 training images", "GiB", "sample_size", "28×28"],
    );
    // A batch larger than the data is said to be one; the first step is timed into an estimate.
    let data = image_folder(&dir.join("data"), 3);
    let out = ddpm(&with(
        TINY,
        &[
            "--data",
            data.to_str().unwrap(),
            "--batch-size",
            "6",
            "--steps",
            "3",
            "--out",
            dir.join("r2").to_str().unwrap(),
        ],
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("--batch-size 6 is larger than the data (3 images)"),
        "{err}"
    );
    assert!(
        err.contains("the first step took") && err.contains("the 2 steps left will take about"),
        "{err}"
    );
    // What the run holds on the GPU (wgpu cannot tell a device's size; the user can compare).
    assert!(
        err.contains("GPU memory: ") && err.contains("activations of 6 images per pass"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sample_draws_more_images_than_one_pass_holds_in_passes() {
    let dir = tmp("passes");
    let run = tiny_run(&dir);
    let run_s = run.to_str().unwrap();
    let grid = |name: &str, extra: &[&str]| -> Vec<u8> {
        let png = dir.join(name);
        let mut args = vec!["sample", "--model", run_s, "--sampler", "ddim", "--steps", "4"];
        args.extend(extra);
        args.extend(["--out", png.to_str().unwrap()]);
        let out = ddpm(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        ddpm_gpu::viz::read_grid(&png, 8).unwrap().0
    };
    let one_pass = grid("one.png", &["--images", "2"]);
    let three = grid("three.png", &["--images", "5", "--batch-size", "2"]);
    assert_eq!(three.len(), 5 * 64, "5 images of 8×8");
    assert_eq!(&three[..2 * 64], &one_pass[..], "the first pass is what one pass draws");
    let img = |v: &[u8], i: usize| v[i * 64..(i + 1) * 64].to_vec();
    assert_ne!(img(&three, 2), img(&three, 0), "later passes start from other noise");
    assert_ne!(img(&three, 4), img(&three, 2));
    fails_with(&["sample", "--model", run_s, "--batch-size", "0"], &["--batch-size"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_device_without_the_limits_the_kernels_need_is_refused_up_front() {
    // wgpu's downlevel defaults allow 4 storage buffers per stage; some kernels bind 8.
    for (value, needles) in [
        (
            "downlevel",
            &["max_storage_buffers_per_shader_stage = 4", "need 8", ".wgsl"][..],
        ),
        ("bogus", &["DDPM_GPU_LIMITS=bogus"][..]),
    ] {
        let out = ddpm_command()
            .env("DDPM_GPU_LIMITS", value)
            .args(["info"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        println!("{err}");
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        for n in needles {
            assert!(err.contains(n), "should mention '{n}': {err}");
        }
    }
}

#[test]
fn profile_prints_the_step_by_kernel_and_by_layer() {
    for extra in [&[][..], &["--sample"][..]] {
        let args = with(
            &[
                "profile", "--model", "tiny", "--batch", "2", "--reps", "1", "--rows", "1000",
            ],
            extra,
        );
        let out = ddpm(&args);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for needle in ["| kernel |", "| layer |", "conv2d", "_blocks.", "peak-FMA probe"] {
            assert!(text.contains(needle), "{args:?}: no '{needle}' in\n{text}");
        }
        // The training step has the optimizer; sampling has none.
        assert_eq!(text.contains("adam::adam_step"), extra.is_empty(), "{text}");
    }
    fails_with(&["profile", "--model", "tiny", "--batch", "0"], &["--batch"]);
    fails_with(&["profile", "--model", "nosuch"], &["nosuch"]);
}

#[test]
fn tuning_measures_caches_and_is_reused() {
    let dir = tmp("tune");
    let cache = dir.join("cache");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ddpm-gpu"))
            .env("DDPM_GPU_CACHE", &cache)
            .env_remove("DDPM_GPU_TUNE")
            .args(args)
            .output()
            .expect("running ddpm-gpu")
    };
    let out = run(&["tune", "--model", "tiny", "--batch", "2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for needle in ["conv2d Forward", "group_norm", "matmul", "cached in", "heuristic"] {
        assert!(text.contains(needle), "no '{needle}' in\n{text}");
    }
    let files: Vec<_> = std::fs::read_dir(cache.join("tuning")).unwrap().collect();
    assert_eq!(files.len(), 1, "one cache file for the adapter");
    let file = files[0].as_ref().unwrap().path();
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let cases = json["cases"].as_array().unwrap();
    assert!(cases.len() > 10, "every case of the tiny model: {}", cases.len());
    let out = run(&["info"]);
    let info = String::from_utf8_lossy(&out.stdout);
    assert!(
        info.contains(&format!("tuning cache: {} ({} cases)", file.display(), cases.len())),
        "info names the cache: {info}"
    );

    // Training at the tuned batch finds every case cached: no tuning.
    let out_dir = dir.join("run");
    let train = [
        "train",
        "--model",
        "tiny",
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--sample-images",
        "0",
        "--out",
        out_dir.to_str().unwrap(),
    ];
    let out = run(&train);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("tuning kernels"), "the cache answers every case: {err}");

    // A corrupt cache is ignored with a notice; the run tunes again and rewrites it.
    std::fs::write(&file, "{ not json").unwrap();
    std::fs::remove_dir_all(&out_dir).unwrap();
    let out = run(&train);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("ignoring the tuning cache"), "{err}");
    assert!(err.contains("tuning kernels for this adapter"), "{err}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert!(!json["cases"].as_array().unwrap().is_empty(), "the cache is rewritten");

    // --no-tune: the heuristics, no tuning, the cache untouched.
    std::fs::remove_dir_all(&out_dir).unwrap();
    std::fs::remove_file(&file).unwrap();
    let no_tune: Vec<&str> = train.iter().copied().chain(["--no-tune"]).collect();
    let out = run(&no_tune);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("tuning kernels") && !file.exists(), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
