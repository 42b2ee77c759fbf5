//! A run survives what stops it without asking: SIGKILL at any moment (also while a checkpoint is
//! being written) and a full disk. Either way the last checkpoint stays intact and resumes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_ddpm-gpu");

fn ddpm(args: &[&str]) -> Output {
    Command::new(BIN)
        .env("DDPM_GPU_TUNE", "off")
        .args(args)
        .output()
        .expect("running ddpm-gpu")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ddpm-gpu-crash-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The step a run's training state holds; panics when the file is not a whole, valid state.
fn checkpoint_step(run: &Path) -> usize {
    let bytes = std::fs::read(run.join("train_state.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("an intact training state");
    assert_eq!(st.names().len(), 4, "params, Adam moments and EMA");
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    meta.metadata().as_ref().unwrap()["step"].parse().unwrap()
}

fn resume(run: &Path, steps: usize) -> Output {
    ddpm(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--steps",
        &steps.to_string(),
    ])
}

#[test]
fn sigkill_at_any_moment_leaves_a_run_that_resumes() {
    let dir = tmp("kill");
    // Kill moments spread over start-up, training and checkpoint writing (a checkpoint every step,
    // so most moments fall into one), drawn once from a fixed seed.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut resumed = 0;
    let tries = 8;
    for k in 0..tries {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let delay = 500 + (x >> 33) % 3500;
        let run = dir.join(format!("run{k}"));
        let mut child = Command::new(BIN)
            .env("DDPM_GPU_TUNE", "off")
            .args([
                "train",
                "--model",
                "tiny",
                "--out",
                run.to_str().unwrap(),
                "--steps",
                "100000",
                "--batch-size",
                "2",
                "--checkpoint-every",
                "1",
                "--sample-images",
                "0",
            ])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap(); // SIGKILL: no handler runs
        child.wait().unwrap();
        if !run.join("train_state.safetensors").exists() {
            println!("killed after {delay} ms: before the first checkpoint, nothing to resume");
            continue;
        }
        let step = checkpoint_step(&run);
        let out = resume(&run, step + 2);
        assert!(
            out.status.success(),
            "killed after {delay} ms at checkpoint {step}: the run must resume: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(checkpoint_step(&run), step + 2);
        println!("killed after {delay} ms at checkpoint {step}: resumed to {}", step + 2);
        resumed += 1;
    }
    assert!(
        resumed * 2 >= tries,
        "most kills land after the first checkpoint ({resumed} of {tries})"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A small tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                dir.to_str().unwrap(),
            ])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_gives_a_clear_error_and_keeps_the_last_checkpoint() {
    let dir = tmp("full");
    let Some(disk) = Tmpfs::mount(&dir.join("disk"), "8M") else {
        println!("skipped: cannot mount a small tmpfs here (needs root)");
        return;
    };
    let run = disk.0.join("run");
    let run_s = run.to_str().unwrap();
    let out = ddpm(&[
        "train",
        "--model",
        "tiny",
        "--out",
        run_s,
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--sample-images",
        "0",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Fill the disk: 256 KiB files until one no longer fits (it is removed again).
    let mut fillers = Vec::new();
    loop {
        let f = disk.0.join(format!("filler{}", fillers.len()));
        match std::fs::write(&f, vec![7u8; 256 << 10]) {
            Ok(()) => fillers.push(f),
            Err(_) => {
                let _ = std::fs::remove_file(&f);
                break;
            }
        }
    }
    assert!(!fillers.is_empty());
    let out = resume(&run, 3);
    let err = String::from_utf8_lossy(&out.stderr);
    println!("{err}");
    assert_eq!(out.status.code(), Some(1), "a clear error: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("No space left") || err.contains("os error 28"),
        "says why: {err}"
    );
    assert_eq!(checkpoint_step(&run), 1, "the previous checkpoint is intact");
    // With room again, the run goes on from it.
    for f in &fillers {
        std::fs::remove_file(f).unwrap();
    }
    let out = resume(&run, 3);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(checkpoint_step(&run), 3);
    drop(disk);
    std::fs::remove_dir_all(&dir).unwrap();
}
