//! Data-parallel training over MPI (the feature `mpi`; needs Open MPI's `mpirun`):
//! `cargo test --release --features mpi --test mpi`.
//!
//! Two ranks that each train on half of every batch must end with the weights one process gets
//! from the whole batch; a run must resume with another number of ranks; a stop asked of one
//! rank must stop both after the same step, with one checkpoint.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Largest differences allowed between the 2-rank and the 1-process training state after a few
/// steps. The two compute the same numbers except for the order of additions: one process
/// accumulates micro-batch 1's gradient onto micro-batch 0's inside the backward kernels (some of
/// which add their contribution in several parts), two ranks add the two micro-batches' complete
/// gradients in `MPI_Allreduce`. That is a few f32 roundings (2⁻²⁴ ≈ 6e-8 relative) of each
/// gradient, which Adam's moments m and v keep at that relative size: measured up to 2.6e-7 of
/// the tensor's largest value (4 ulp; printed), allowed 1e-6.
const MOMENT_TOLERANCE: f32 = 1e-6;
/// A weight moves by lr · m̂/(√v̂ + ε) per step, a direction of size ≤ ~1 that the roundings
/// above perturb most where the gradient is near ε: measured up to 3e-4 of lr × steps (8.3e-7
/// after 3 steps at lr 1e-3), allowed 1% of lr × steps for the weights and their EMA. Two more
/// training steps change the state far beyond both (checked).
const STEP_TOLERANCE: f32 = 0.01;
const LR: f32 = 1e-3;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ddpm-gpu")
}

/// `ddpm-gpu` alone, with kernel tuning off (both runs must use the same kernels).
fn single(args: &[&str]) -> Output {
    let out = Command::new(bin())
        .args(args)
        .env("DDPM_GPU_TUNE", "off")
        .output()
        .expect("running ddpm-gpu");
    report(args, &out);
    out
}

/// `mpirun -np N ddpm-gpu ...` (Open MPI; as root and with more ranks than cores, as in CI).
fn mpirun_command(ranks: usize, args: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    c.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "-np",
        &ranks.to_string(),
        bin(),
    ])
    .args(args)
    .env("DDPM_GPU_TUNE", "off");
    c
}

fn mpirun(ranks: usize, args: &[&str]) -> Output {
    let out = mpirun_command(ranks, args)
        .output()
        .expect("running mpirun (install Open MPI)");
    report(args, &out);
    out
}

fn report(args: &[&str], out: &Output) {
    println!(
        "{args:?} → {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ddpm-gpu-mpi-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The training state of a run folder: (name, values) of the weights, Adam moments and EMA, and
/// the step.
fn state(run: &Path) -> (Vec<(String, Vec<f32>)>, usize) {
    let bytes = std::fs::read(run.join("train_state.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let step = meta.metadata().as_ref().unwrap()["step"].parse().unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors = ["params", "adam_m", "adam_v", "ema"]
        .iter()
        .map(|&name| {
            let data = st.tensor(name).unwrap().data().to_vec();
            let values = data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (name.to_string(), values)
        })
        .collect();
    (tensors, step)
}

/// Two runs' states (at the same step) agree within the tolerances above: returns the worst
/// (weight difference / (lr × steps), moment difference / largest moment).
fn assert_close(a: &Path, b: &Path) -> (f32, f32) {
    let ((_, step_a), (_, step_b)) = (state(a), state(b));
    assert_eq!(
        step_a,
        step_b,
        "{} and {} are at different steps",
        a.display(),
        b.display()
    );
    let (weights, moments) = difference(a, b, step_a);
    assert!(weights <= STEP_TOLERANCE, "weights differ by {weights:e} of lr × steps");
    assert!(
        moments <= MOMENT_TOLERANCE,
        "Adam moments differ by {moments:e} of their largest"
    );
    (weights, moments)
}

/// The worst difference between two runs' states: of the weights and EMA in units of
/// lr × `steps`, of the Adam moments relative to each one's largest value.
fn difference(a: &Path, b: &Path, steps: usize) -> (f32, f32) {
    let ((sa, _), (sb, _)) = (state(a), state(b));
    let (mut weights, mut moments) = (0.0f32, 0.0f32);
    for ((name, x), (_, y)) in sa.iter().zip(&sb) {
        assert_eq!(x.len(), y.len());
        assert!(x.iter().chain(y).all(|v| v.is_finite()));
        let d = x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
        let scale = x.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
        let moment = name.starts_with("adam_");
        let rel = if moment { d / scale } else { d / (LR * steps as f32) };
        let what = if moment {
            "of the largest value"
        } else {
            "of lr × steps"
        };
        println!(
            "{} vs {}: {name}: max |difference| {d:.3e}, {rel:.3e} {what}",
            a.display(),
            b.display()
        );
        if moment {
            moments = moments.max(rel);
        } else {
            weights = weights.max(rel);
        }
    }
    (weights, moments)
}

/// The loss of each step in a run's metrics.
fn losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64())
        .collect()
}

/// The tiny preset at batch 8 in micro-batches of 4 (so one process and each of two ranks split
/// the batch alike: dropout masks are drawn per micro-batch), with dropout and random flips on,
/// so that every random draw of a step is exercised.
fn tiny(out: &Path, steps: usize) -> Vec<String> {
    [
        "train",
        "--model",
        "tiny",
        "--batch-size",
        "8",
        "--micro-batch",
        "4",
        "--dropout",
        "0.1",
        "--flip",
        "true",
        "--sample-images",
        "0",
        "--log-every",
        "1",
        // Full steps of lr 1e-3 from the first (not 1e-5 of a warm-up), so differences show.
        "--warmup",
        "0",
        "--seed",
        "5",
        "--steps",
        &steps.to_string(),
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(|s| s.as_str()).collect()
}

#[test]
fn two_ranks_train_the_weights_of_one_process_and_resume_with_either() {
    let dir = tmp("equal");
    let (one, two, straight) = (dir.join("one"), dir.join("two"), dir.join("straight"));

    let out = single(&strs(&tiny(&one, 3)));
    assert!(out.status.success());
    let out = mpirun(2, &strs(&tiny(&two, 3)));
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rank 1 of 2"), "both ranks report their adapter: {err}");
    assert!(
        err.contains("gradient all-reduce:"),
        "rank 0 reports the all-reduce: {err}"
    );
    // Only rank 0 wrote, once: one metrics line per step.
    assert_eq!(losses(&two).len(), 3, "one metrics line per step");

    let worst = assert_close(&one, &two);
    println!(
        "2 ranks × 4 images vs 1 process × 8 images, 3 steps: weights {:.3e} of lr × steps, moments {:.3e}",
        worst.0, worst.1
    );
    let before_resume = dir.join("one-at-3");
    copy_state(&one, &before_resume);
    // The logged loss is the mean over the ranks' halves: the batch's.
    for (a, b) in losses(&one).iter().zip(losses(&two)) {
        assert!((a - b).abs() <= 1e-5 * a.abs(), "losses {a} vs {b}");
    }

    // Resume: the 2-rank run with 1 process, the 1-process run with 2 ranks; both to step 5,
    // as a run of 5 steps straight.
    let out = single(&strs(&tiny(&straight, 5)));
    assert!(out.status.success());
    let resume = |run: &Path| -> Vec<String> {
        ["train", "--resume", run.to_str().unwrap(), "--steps", "5"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let out = single(&strs(&resume(&two)));
    assert!(out.status.success());
    let out = mpirun(2, &strs(&resume(&one)));
    assert!(out.status.success());
    for resumed in [&two, &one] {
        let worst = assert_close(&straight, resumed);
        println!(
            "resumed with another number of ranks vs 5 straight steps: weights {:.3e} of lr × steps, moments {:.3e}",
            worst.0, worst.1
        );
    }
    // The comparison can fail: two more steps change the state far beyond the tolerances.
    let (weights, moments) = difference(&before_resume, &straight, 5);
    println!("what steps 4 and 5 change: weights {weights:.3e} of lr × 5 steps, moments {moments:.3e}");
    assert!(weights > 10.0 * STEP_TOLERANCE && moments > 1e4 * MOMENT_TOLERANCE);
    assert_eq!(losses(&two).len(), 5, "the resumed run's metrics continue");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_stop_asked_of_one_rank_stops_every_rank_after_one_checkpoint() {
    let dir = tmp("stop");
    let run = dir.join("run");
    let mut args = tiny(&run, 100_000);
    args.extend(["--checkpoint-every".to_string(), "100000".to_string()]);
    let mut child = mpirun_command(2, &strs(&args))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    // Wait for training to run (metrics lines are rank 0's), then find rank 1's process.
    while losses_or_none(&run).is_none_or(|l| l.len() < 2) {
        assert!(start.elapsed().as_secs() < 300, "training did not start");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let rank1 = rank_pid(child.id(), 1).expect("rank 1's process");
    assert_eq!(unsafe { libc::kill(rank1, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    println!("{err}");
    assert_eq!(status.code(), Some(143), "128 + SIGTERM from mpirun: {err}");
    assert_eq!(
        err.matches("resume with:").count(),
        1,
        "rank 0 alone says how to resume"
    );
    let (_, step) = state(&run);
    assert!(step >= 2, "the checkpoint is at the step the ranks stopped after");
    assert_eq!(losses(&run).len(), step, "metrics up to the stop");
    // And it resumes.
    let next = (step + 1).to_string();
    let out = single(&["train", "--resume", run.to_str().unwrap(), "--steps", &next]);
    assert!(out.status.success());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn info_reports_each_rank_and_a_batch_that_does_not_divide_is_refused() {
    let out = mpirun(2, &["info"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2 ranks:"), "{text}");
    assert!(text.contains("rank 0 (") && text.contains("rank 1 ("), "{text}");
    assert_eq!(text.matches("adapters:").count(), 1, "rank 0 alone prints the report");

    let dir = tmp("odd");
    let mut args = tiny(&dir.join("run"), 1);
    args[4] = "7".into(); // --batch-size 7 over 2 ranks
    args[6] = "1".into(); // --micro-batch 1
    let out = mpirun(2, &strs(&args));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--batch-size 7") && err.contains("must divide by 2"),
        "{err}"
    );
    assert!(!dir.join("run").exists(), "nothing written");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn copy_state(run: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    let f = "train_state.safetensors";
    std::fs::copy(run.join(f), to.join(f)).unwrap();
}

fn losses_or_none(run: &Path) -> Option<Vec<f64>> {
    std::fs::read_to_string(run.join("metrics.jsonl")).ok().map(|text| {
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["loss"].as_f64())
            .collect()
    })
}

/// The process of rank `rank` among the descendants of `root` (Open MPI gives each its rank in
/// `OMPI_COMM_WORLD_RANK`).
fn rank_pid(root: u32, rank: usize) -> Option<i32> {
    let want = format!("OMPI_COMM_WORLD_RANK={rank}");
    let mut frontier = vec![root as i32];
    while let Some(pid) = frontier.pop() {
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Ok(child) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
                continue;
            };
            // The parent pid is the 2nd field after the parenthesised command name.
            let ppid = stat
                .rsplit(')')
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse::<i32>()
                .ok()?;
            if ppid != pid {
                continue;
            }
            let env = std::fs::read(format!("/proc/{child}/environ")).unwrap_or_default();
            if env.split(|&b| b == 0).any(|v| v == want.as_bytes()) {
                return Some(child);
            }
            frontier.push(child);
        }
    }
    None
}
