//! Where a step's time goes: every dispatch of a recorded [`Plan`] timed on its own (see
//! [`Plan::time`]), labelled by kernel and by the network layer that recorded it, and summed into
//! the tables `ddpm-gpu profile` and `cargo bench --bench kernels` print.

use std::collections::BTreeMap;

use super::plan::{Plan, Timer};
use super::Gpu;

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

/// What a table's rates are compared with: the roofline probes of `ops::peak`, measured in the
/// same run.
#[derive(Clone, Debug, Default)]
pub struct Probes {
    /// GFLOP/s of the peak-FMA probe.
    pub gflops: f64,
    /// GB/s of the copy probe by buffer bytes (see [`Probes::copy_size`]); empty: GB/s rows get
    /// no "% of copy".
    pub copy_gbps: BTreeMap<usize, f64>,
}

impl Probes {
    /// The copy-probe buffer a kernel binding `bytes` per launch is compared with: the power of
    /// two nearest to half of them (a copy reads one buffer and writes another), between 1 and
    /// 64 MiB.
    pub fn copy_size(bytes: f64) -> usize {
        1 << ((bytes / 2.0).max(1.0).log2().round() as u32).clamp(20, 26)
    }

    /// "peak-FMA probe … GFLOP/s; copy probe … GB/s at 1 MiB, …" for a report's header.
    pub fn describe(&self) -> String {
        let copy: Vec<String> = self
            .copy_gbps
            .iter()
            .map(|(size, gbs)| format!("{gbs:.2} GB/s at {} MiB", size >> 20))
            .collect();
        format!(
            "peak-FMA probe {:.1} GFLOP/s; copy probe {}",
            self.gflops,
            if copy.is_empty() {
                "not run".into()
            } else {
                copy.join(", ")
            }
        )
    }

    /// GB/s of the measured copy probe nearest (in log scale) to [`Probes::copy_size`] of
    /// `bytes`.
    pub fn copy_for(&self, bytes: f64) -> Option<f64> {
        let want = Probes::copy_size(bytes) as f64;
        let off = |size: usize| (size as f64 / want).log2().abs();
        self.copy_gbps
            .iter()
            .min_by(|a, b| off(*a.0).total_cmp(&off(*b.0)))
            .map(|(_, gbs)| *gbs)
    }

    /// The peak-FMA probe, and the copy probe at every size a dispatch of `profiles` that moves
    /// bytes without stated FLOPs is compared with.
    pub fn measure(gpu: &Gpu, profiles: &[&Profile]) -> Probes {
        let sizes: std::collections::BTreeSet<usize> = profiles
            .iter()
            .flat_map(|p| &p.dispatches)
            .filter(|d| d.flops == 0.0 && d.bytes > 0.0)
            .map(|d| Probes::copy_size(d.bytes))
            .collect();
        Probes {
            gflops: crate::ops::peak::peak_gflops(gpu),
            copy_gbps: sizes
                .into_iter()
                .map(|s| (s, crate::ops::peak::copy_gbps(gpu, s)))
                .collect(),
        }
    }
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
    /// ms, share of the dispatches' total, and GFLOP/s with its share of the peak-FMA probe where
    /// the kernels state their FLOPs, else GB/s of the bytes they bind with its share of the copy
    /// probe for the row's bytes per launch ([`Probes::copy_for`]).
    pub fn table(&self, title: &str, rows: &[Row], limit: usize, probes: &Probes) -> String {
        let total = self.total();
        let mut out = format!(
            "| {title} | launches | ms | share | GFLOP/s | % of FMA peak | GB/s | % of copy |\n|---|---:|---:|---:|---:|---:|---:|---:|\n"
        );
        let line = |r: &Row| {
            let rate = |per_s: f64, peak: Option<f64>| {
                let pct = peak.map(|p| format!("{:.1}", 100.0 * per_s / p)).unwrap_or_default();
                [format!("{per_s:.2}"), pct]
            };
            let [gflops, flop_pct, gbs, copy_pct] = if r.flops > 0.0 {
                let [g, p] = rate(r.flops / r.seconds / 1e9, Some(probes.gflops));
                [g, p, String::new(), String::new()]
            } else if r.bytes > 0.0 {
                let copy = probes.copy_for(r.bytes / r.launches as f64);
                let [g, p] = rate(r.bytes / r.seconds / 1e9, copy);
                [String::new(), String::new(), g, p]
            } else {
                Default::default()
            };
            format!(
                "| {} | {} | {:.3} | {:.1}% | {gflops} | {flop_pct} | {gbs} | {copy_pct} |\n",
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
