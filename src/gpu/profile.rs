//! Where a step's time goes: every dispatch of a recorded [`Plan`] timed on its own (see
//! [`Plan::time`]), labelled by kernel and by the network layer that recorded it, and summed into
//! the tables `ddpm-gpu profile` prints.

use super::plan::{Plan, Timer};

/// One dispatch of a profiled plan.
#[derive(Clone, Debug)]
pub struct Dispatch {
    /// `shader::entry`.
    pub kernel: String,
    /// The layer that recorded it (empty outside any layer).
    pub layer: String,
    /// Median seconds over the profile's repetitions.
    pub seconds: f64,
    pub flops: f64,
    pub bytes: f64,
}

/// Dispatches summed under one name (a kernel or a layer).
#[derive(Clone, Debug)]
pub struct Row {
    pub name: String,
    pub launches: usize,
    pub seconds: f64,
    pub flops: f64,
    pub bytes: f64,
}

/// The dispatches of one plan, timed.
pub struct Profile {
    pub timer: Timer,
    pub dispatches: Vec<Dispatch>,
    /// Median wall time of the whole plan run normally (one submission), waited for.
    pub step_seconds: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

impl Profile {
    /// Time `plan` `reps` times dispatch by dispatch and `reps` times whole, after one warm-up
    /// run; each dispatch keeps its median. The plan's buffers change as it runs, as in use.
    pub fn measure(plan: &Plan, timer: Timer, reps: usize) -> Profile {
        let reps = reps.max(1);
        let gpu = &plan.gpu;
        plan.run();
        gpu.sync();
        let runs: Vec<Vec<f64>> = (0..reps).map(|_| plan.time(timer)).collect();
        let step_seconds = median(
            (0..reps)
                .map(|_| {
                    let start = std::time::Instant::now();
                    plan.run();
                    gpu.sync();
                    start.elapsed().as_secs_f64()
                })
                .collect(),
        );
        let dispatches = plan
            .kernels()
            .iter()
            .enumerate()
            .map(|(i, k)| Dispatch {
                kernel: k.label.clone(),
                layer: k.layer.clone(),
                seconds: median(runs.iter().map(|r| r[i]).collect()),
                flops: k.flops,
                bytes: k.bytes,
            })
            .collect();
        Profile {
            timer,
            dispatches,
            step_seconds,
        }
    }

    /// Sum of the dispatches' times.
    pub fn total(&self) -> f64 {
        self.dispatches.iter().map(|d| d.seconds).sum()
    }

    /// Dispatches summed by `key`, slowest first.
    pub fn rows(&self, key: impl Fn(&Dispatch) -> String) -> Vec<Row> {
        let mut rows: Vec<Row> = Vec::new();
        for d in &self.dispatches {
            let name = key(d);
            let row = match rows.iter_mut().position(|r| r.name == name) {
                Some(i) => &mut rows[i],
                None => {
                    rows.push(Row {
                        name,
                        launches: 0,
                        seconds: 0.0,
                        flops: 0.0,
                        bytes: 0.0,
                    });
                    rows.last_mut().expect("just pushed")
                }
            };
            row.launches += 1;
            row.seconds += d.seconds;
            row.flops += d.flops;
            row.bytes += d.bytes;
        }
        rows.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        rows
    }

    /// A markdown table of `rows` (at most `limit`, the rest summed into one line): launches,
    /// ms, share of the dispatches' total, and GFLOP/s with its share of `peak_gflops` where the
    /// kernels state their FLOPs, else GB/s of the bytes they bind.
    pub fn table(&self, title: &str, rows: &[Row], limit: usize, peak_gflops: f64) -> String {
        let total = self.total();
        let mut out = format!(
            "| {title} | launches | ms | share | GFLOP/s | % of peak | GB/s |\n|---|---:|---:|---:|---:|---:|---:|\n"
        );
        let line = |r: &Row| {
            let (gflops, pct, gbs) = if r.flops == 0.0 && r.bytes == 0.0 {
                Default::default()
            } else if r.flops > 0.0 {
                let g = r.flops / r.seconds / 1e9;
                (
                    format!("{g:.2}"),
                    format!("{:.1}", 100.0 * g / peak_gflops),
                    String::new(),
                )
            } else {
                (
                    String::new(),
                    String::new(),
                    format!("{:.2}", r.bytes / r.seconds / 1e9),
                )
            };
            format!(
                "| {} | {} | {:.3} | {:.1}% | {gflops} | {pct} | {gbs} |\n",
                if r.name.is_empty() { "-" } else { &r.name },
                r.launches,
                r.seconds * 1e3,
                100.0 * r.seconds / total,
            )
        };
        for r in rows.iter().take(limit) {
            out += &line(r);
        }
        if rows.len() > limit {
            let rest = &rows[limit..];
            out += &line(&Row {
                name: format!("({} more)", rest.len()),
                launches: rest.iter().map(|r| r.launches).sum(),
                seconds: rest.iter().map(|r| r.seconds).sum(),
                flops: 0.0,
                bytes: 0.0,
            });
        }
        out
    }
}
