//! Autotuning: which variant of each op runs fastest on this adapter, measured at the shapes of
//! the model being run.
//!
//! Ops with several kernels for the same math (conv2d's tiles, packings and batch splits, the
//! matmul kernels, the group norm mappings) ask [`Gpu::tuned`] for their case when they record
//! and fall back on their heuristic when it has no answer; while tuning is enabled such a case
//! is remembered as missing. [`tune_missing`] then times every candidate of each missing case
//! on synthetic tensors of its shape, with the dispatch timer the profiler uses
//! ([`Plan::time`]), and stores the fastest. [`load`] and [`save`] keep the choices in the user's
//! cache folder, one readable JSON file per adapter, driver, backend and ddpm-gpu version.
//!
//! Every variant computes the same math (each is tested against the CPU reference); they differ
//! in the order of their sums, so a tuned run matches a heuristic one to rounding, not bit for
//! bit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::concat;
use super::conv2d::{self, Conv2d, Pass};
use super::elementwise::{self, BiasMapping};
use super::group_norm::{self, GroupNorm, Mapping};
use super::linear::{self, BiasSum};
use super::matmul::{self, Extra, Matmul};
use crate::gpu::{Gpu, Plan, Timer};

/// One op at one shape: what the tuner measures and the choice is kept for.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Case {
    Conv2d {
        pass: Pass,
        shape: Conv2d,
    },
    Matmul {
        shape: Matmul,
        /// Element offsets of A, B, C; summing over the batch; the bias (`Some(per_row)`).
        offsets: [usize; 3],
        sum_batch: bool,
        bias: Option<bool>,
        /// Lengths of the bound A, B, C (they decide whether vec4 loads apply).
        lens: [usize; 3],
    },
    GroupNorm {
        backward: bool,
        silu: bool,
        shape: GroupNorm,
    },
    /// A channel-bias gradient: db[c] += Σ dy[o, c, i] over dy (outer, channels, inner).
    BiasSum {
        outer: usize,
        channels: usize,
        inner: usize,
    },
    /// The channel concatenation of (n, c1, hw) and (n, c2, hw), or its backward.
    Concat {
        backward: bool,
        n: usize,
        c1: usize,
        c2: usize,
        hw: usize,
    },
    /// y = x + v[n, c] over (n, c, hw).
    ChannelBias {
        n: usize,
        c: usize,
        hw: usize,
    },
}

impl Case {
    pub fn matmul(s: &Matmul, e: &Extra, lens: [usize; 3]) -> Case {
        Case::Matmul {
            shape: *s,
            offsets: [e.offset_a, e.offset_b, e.offset_c],
            sum_batch: e.sum_batch,
            bias: e.bias.map(|_| e.bias_per_row),
            lens,
        }
    }

    /// A short description for tables.
    pub fn describe(&self) -> String {
        match self {
            Case::Conv2d { pass, shape: s } => format!(
                "conv2d {pass:?} n{} {}→{} {}×{} k{} s{}",
                s.n, s.c_in, s.c_out, s.h, s.w, s.k, s.stride
            ),
            Case::Matmul { shape: s, .. } => format!(
                "matmul {}×({}×{}·{}×{}){}{}",
                s.batch,
                s.m,
                s.k,
                s.k,
                s.n,
                if s.trans_a { " Aᵀ" } else { "" },
                if s.trans_b { " Bᵀ" } else { "" }
            ),
            Case::BiasSum { outer, channels, inner } => format!("bias gradient {outer}×{channels}×{inner}"),
            Case::Concat {
                backward,
                n,
                c1,
                c2,
                hw,
            } => format!(
                "concat {} n{n} {c1}+{c2} hw{hw}",
                if *backward { "backward" } else { "forward" }
            ),
            Case::ChannelBias { n, c, hw } => format!("channel bias n{n} c{c} hw{hw}"),
            Case::GroupNorm {
                backward,
                silu,
                shape: s,
            } => format!(
                "group_norm{} {} n{} c{} hw{} g{}",
                if *silu { "+silu" } else { "" },
                if *backward { "backward" } else { "forward" },
                s.n,
                s.c,
                s.hw,
                s.groups
            ),
        }
    }

    /// The variants to time, as JSON (the form the choices are kept in).
    ///
    /// On CPU adapters the workgroup-memory kernels (conv2d `Shared`/`SharedSplit`, matmul
    /// `Shared`) are left out: lavapipe emulates their barriers and ran them 1.7–9.8× slower than
    /// the heuristic's variants on every `mnist` shape measured, and timing them took more than
    /// half of the tuning time (32 s with them for `mnist` b32, against the 10–20 s aimed at).
    fn candidates(&self, gpu: &Gpu) -> Vec<String> {
        let cpu = gpu.info.device_type == wgpu::DeviceType::Cpu;
        match self {
            Case::Conv2d { pass, shape } => conv2d::candidates(*pass, shape)
                .into_iter()
                .filter(|v| !(cpu && matches!(v, conv2d::Variant::Shared | conv2d::Variant::SharedSplit { .. })))
                .map(|v| json(&v))
                .collect(),
            Case::Matmul { .. } => matmul::Variant::candidates(self.vec4_ok())
                .into_iter()
                .filter(|v| !(cpu && *v == matmul::Variant::Shared))
                .map(|v| json(&v))
                .collect(),
            Case::GroupNorm { .. } => Mapping::candidates(gpu).iter().map(json).collect(),
            Case::BiasSum { .. } => [BiasSum::Serial, BiasSum::Workgroup].iter().map(json).collect(),
            Case::Concat { .. } => [concat::Mapping::Run, concat::Mapping::Flat].iter().map(json).collect(),
            Case::ChannelBias { .. } => [BiasMapping::Plane, BiasMapping::Flat].iter().map(json).collect(),
        }
    }

    /// The variant the op's heuristic picks on `gpu` (JSON).
    fn heuristic(&self, gpu: &Gpu) -> String {
        match self {
            Case::Conv2d { pass, shape } => {
                let c = conv2d::Choice::for_adapter(gpu, shape);
                json(&match pass {
                    Pass::Forward => c.forward,
                    Pass::BackwardInput => c.backward_input,
                    Pass::BackwardWeight => c.backward_weight,
                })
            }
            Case::Matmul { .. } => json(&matmul::Variant::choose(gpu.info.device_type, self.vec4_ok())),
            Case::GroupNorm { .. } => json(&Mapping::for_adapter(gpu)),
            Case::BiasSum { .. } => json(&BiasSum::for_adapter(gpu)),
            Case::Concat { .. } => json(&concat::Mapping::Run),
            Case::ChannelBias { hw, .. } => json(&BiasMapping::for_shape(*hw)),
        }
    }

    /// Whether a matmul case's layout allows vec4 loads (see [`matmul::vec4_ok`]).
    fn vec4_ok(&self) -> bool {
        match self {
            Case::Matmul {
                shape: s,
                offsets,
                lens,
                ..
            } => [s.lda, s.ldb, s.ldc, s.stride_a, s.stride_b, s.stride_c]
                .iter()
                .chain(offsets)
                .chain(lens)
                .all(|v| v.is_multiple_of(4)),
            _ => false,
        }
    }

    /// Record the case with `variant` (JSON; any of the op's variants, not only the candidates)
    /// into a plan, on zero tensors of its shape.
    pub fn record(&self, gpu: &Gpu, variant: &str) -> Result<Plan> {
        let mut p = Plan::new(gpu);
        let zeros = |n: usize| gpu.zeros(&[n.max(1)]);
        match self {
            Case::Conv2d { pass, shape: s } => {
                let v: conv2d::Variant = serde_json::from_str(variant)?;
                let x = zeros(s.n * s.c_in * s.h * s.w);
                let w = zeros(s.c_out * s.c_in * s.k * s.k);
                let y = zeros(s.n * s.c_out * s.out_h() * s.out_w());
                match pass {
                    Pass::Forward => conv2d::forward(&mut p, s, Some(v), &x, &w, Some(&zeros(s.c_out)), &y),
                    Pass::BackwardInput => conv2d::backward_input(&mut p, s, Some(v), &y, &w, &x),
                    Pass::BackwardWeight => conv2d::backward_weight(&mut p, s, Some(v), &x, &y, &w),
                }
            }
            Case::Matmul {
                shape,
                offsets,
                sum_batch,
                bias,
                lens,
            } => {
                let v: matmul::Variant = serde_json::from_str(variant)?;
                let (a, b, c) = (zeros(lens[0]), zeros(lens[1]), zeros(lens[2]));
                let bias_t = bias.map(|per_row| zeros(if per_row { shape.m } else { shape.n }));
                let e = Extra {
                    offset_a: offsets[0],
                    offset_b: offsets[1],
                    offset_c: offsets[2],
                    sum_batch: *sum_batch,
                    bias: bias_t.as_ref(),
                    bias_per_row: bias.unwrap_or(false),
                };
                matmul::matmul_ext(&mut p, shape, &e, Some(v), &a, &b, &c);
            }
            Case::GroupNorm {
                backward,
                silu,
                shape: s,
            } => {
                let o = group_norm::Options {
                    silu: *silu,
                    mapping: Some(serde_json::from_str(variant)?),
                };
                let (x, y, dx) = (
                    zeros(s.n * s.c * s.hw),
                    zeros(s.n * s.c * s.hw),
                    zeros(s.n * s.c * s.hw),
                );
                let (gamma, beta, dgamma, dbeta) = (zeros(s.c), zeros(s.c), zeros(s.c), zeros(s.c));
                let (mean, rstd) = (zeros(s.n * s.groups), zeros(s.n * s.groups));
                let t = group_norm::Tensors {
                    x: &x,
                    gamma: &gamma,
                    beta: &beta,
                    mean: &mean,
                    rstd: &rstd,
                };
                if *backward {
                    let g = group_norm::Grads {
                        dy: &y,
                        dx: &dx,
                        dgamma: &dgamma,
                        dbeta: &dbeta,
                    };
                    group_norm::backward(&mut p, s, o, t, g);
                } else {
                    group_norm::forward(&mut p, s, o, t, &y);
                }
            }
            Case::BiasSum { outer, channels, inner } => {
                let m: BiasSum = serde_json::from_str(variant)?;
                let (dy, db) = (zeros(outer * channels * inner), zeros(*channels));
                linear::bias_backward(&mut p, [*outer, *channels, *inner], Some(m), &dy, &db);
            }
            Case::Concat {
                backward,
                n,
                c1,
                c2,
                hw,
            } => {
                let m = Some(serde_json::from_str(variant)?);
                let s = concat::Concat {
                    n: *n,
                    c1: *c1,
                    c2: *c2,
                    hw: *hw,
                };
                let (a, b, y) = (zeros(n * c1 * hw), zeros(n * c2 * hw), zeros(n * (c1 + c2) * hw));
                if *backward {
                    concat::backward(&mut p, &s, m, &y, &a, &b);
                } else {
                    concat::forward(&mut p, &s, m, &a, &b, &y);
                }
            }
            Case::ChannelBias { n, c, hw } => {
                let m: BiasMapping = serde_json::from_str(variant)?;
                let (x, v, y) = (zeros(n * c * hw), zeros(n * c), zeros(n * c * hw));
                elementwise::add_channel_bias(&mut p, [*n, *c, *hw], Some(m), &x, &v, &y);
            }
        }
        Ok(p)
    }
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("a variant serialises")
}

/// How much faster than the heuristic's variant (its time × this) a candidate must be to win.
pub const MARGIN: f64 = 1.05;

/// What tuning found for one case.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tuned {
    pub case: Case,
    /// The fastest variant (JSON).
    pub variant: String,
    /// The op's heuristic choice (JSON), which a candidate must beat by [`MARGIN`].
    pub heuristic: String,
    /// Milliseconds of every candidate (JSON variant → ms).
    pub times_ms: BTreeMap<String, f64>,
}

/// Time every candidate of every case [`Gpu::tuned`] met without an answer and store the
/// winners in `gpu`'s choices. Each candidate runs once; the heuristic's variant and the two
/// fastest run a second time, keeping their best. The heuristic's variant stays unless another is
/// at least [`MARGIN`] faster: timings of a busy machine jitter by a few percent, and a choice
/// should not follow the noise. Cases left when `budget` is spent keep the heuristic (and stay missing). `progress` is
/// told (cases done, cases in all).
pub fn tune_missing(gpu: &Gpu, budget: Duration, mut progress: impl FnMut(usize, usize)) -> Result<Vec<Tuned>> {
    let missing: Vec<String> = gpu.tuning.lock().unwrap().missing.iter().cloned().collect();
    let timer = Timer::for_gpu(gpu);
    let start = Instant::now();
    let mut done = Vec::new();
    for (i, key) in missing.iter().enumerate() {
        if start.elapsed() > budget {
            break;
        }
        let case: Case = serde_json::from_str(key).with_context(|| format!("tuning case {key}"))?;
        let heuristic = case.heuristic(gpu);
        let mut candidates = case.candidates(gpu);
        candidates.retain(|v| *v != heuristic);
        candidates.insert(0, heuristic.clone());
        // One timed run each (a pipeline is compiled when its plan is recorded, so a first run
        // has nothing to warm up) ...
        let mut timed = Vec::new();
        for variant in candidates {
            let plan = case.record(gpu, &variant)?;
            let t: f64 = plan.time(timer).iter().sum();
            timed.push((variant, plan, t));
        }
        // ... then a second run of the heuristic and of the two fastest, keeping each one's best,
        // so that one slow run (another process on the machine) does not decide.
        let mut order: Vec<usize> = (0..timed.len()).collect();
        order.sort_by(|&a, &b| timed[a].2.total_cmp(&timed[b].2));
        for i in order.into_iter().take(2).chain([0]) {
            let again: f64 = timed[i].1.time(timer).iter().sum();
            timed[i].2 = timed[i].2.min(again);
        }
        let fastest = (0..timed.len())
            .min_by(|&a, &b| timed[a].2.total_cmp(&timed[b].2))
            .context("a tuning case without candidates")?;
        let winner = if timed[fastest].2 * MARGIN < timed[0].2 {
            fastest
        } else {
            0
        };
        let variant = timed[winner].0.clone();
        let times_ms = timed.into_iter().map(|(v, _, t)| (v, t * 1e3)).collect();
        let mut tuning = gpu.tuning.lock().unwrap();
        tuning.choices.insert(key.clone(), variant.clone());
        tuning.missing.remove(key);
        drop(tuning);
        done.push(Tuned {
            case,
            variant,
            heuristic,
            times_ms,
        });
        progress(i + 1, missing.len());
    }
    Ok(done)
}

/// The cache file of `gpu`'s adapter, driver, backend and this version of ddpm-gpu.
pub fn cache_file(gpu: &Gpu) -> Option<PathBuf> {
    let i = &gpu.info;
    let id = format!(
        "{}-{}-{:?}-{}",
        i.name,
        i.driver_info,
        i.backend,
        env!("CARGO_PKG_VERSION")
    );
    let name: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    crate::files::cache_dir().map(|d| d.join("tuning").join(format!("{name}.json")))
}

/// The cache file's contents.
#[derive(Serialize, Deserialize)]
struct CacheFile {
    adapter: String,
    driver: String,
    backend: String,
    version: String,
    cases: Vec<Tuned>,
}

fn identity(gpu: &Gpu) -> (String, String, String, String) {
    let i = &gpu.info;
    (
        i.name.clone(),
        format!("{} {}", i.driver, i.driver_info),
        format!("{:?}", i.backend),
        env!("CARGO_PKG_VERSION").to_string(),
    )
}

/// Load the choices cached for `gpu` into it. A missing file is not an error; a corrupt or stale
/// one (another adapter, driver or version) is ignored with the returned one-line notice.
pub fn load(gpu: &Gpu, path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let file: CacheFile = match serde_json::from_str(&text) {
        Ok(f) => f,
        Err(e) => return Some(format!("ignoring the tuning cache {}: {e}", path.display())),
    };
    if (file.adapter, file.driver, file.backend, file.version) != identity(gpu) {
        return Some(format!(
            "ignoring the tuning cache {}: made for another adapter, driver or version",
            path.display()
        ));
    }
    let mut tuning = gpu.tuning.lock().unwrap();
    for t in file.cases {
        let key = serde_json::to_string(&t.case).expect("a tuning case serialises");
        tuning.missing.remove(&key);
        tuning.choices.insert(key, t.variant);
    }
    None
}

/// Add `tuned` to the cache file at `path` (keeping the cases it holds for other shapes),
/// written atomically.
pub fn save(gpu: &Gpu, path: &Path, tuned: &[Tuned]) -> Result<()> {
    let (adapter, driver, backend, version) = identity(gpu);
    let mut cases: Vec<Tuned> = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<CacheFile>(&t).ok())
        .filter(|f| (&f.adapter, &f.driver, &f.backend, &f.version) == (&adapter, &driver, &backend, &version))
        .map(|f| f.cases)
        .unwrap_or_default();
    let key = |t: &Tuned| serde_json::to_string(&t.case).expect("a tuning case serialises");
    for t in tuned {
        cases.retain(|c| key(c) != key(t));
        cases.push(t.clone());
    }
    let file = CacheFile {
        adapter,
        driver,
        backend,
        version,
        cases,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::files::write_atomic(path, serde_json::to_string_pretty(&file)?.as_bytes())
}
