//! Every kernel of a training step at the shapes it really runs at: `cargo bench --bench kernels`.
//!
//! The launch sites (kernel, shape, how many times per training step) are derived from the
//! `UNetConfig` presets by [`training_step`], a walk over the configuration that mirrors
//! `UNet::new`/`forward`/`zero_grads`/`backward` and `Trainer::new`; its forward FLOPs are checked
//! against `UNet::forward_flops` of the real network, so the table and the network agree. Two
//! settings: the `mnist` preset at batch 32 and the paper's `ddpm-cifar10` (see below); an op
//! whose largest tensor exceeds one storage binding (128 MiB on lavapipe) is measured at the
//! largest halved batch that fits and marked, its time scaled linearly to the full batch in the
//! per-step estimate.
//!
//! Per kernel: median wall time (`ops::peak::time_plan`; tiny kernels are recorded several times
//! into one plan so that the submission overhead is amortised, the time is per kernel), GFLOP/s
//! for the products (conv2d, linear, attention, matmul: % of the peak-FMA probe of this run) or
//! GB/s of algorithmic traffic for everything else (every tensor read or written once; % of the
//! copy probe at the nearest power-of-two size between 1 and 64 MiB), and the naive or alternative
//! variant's time and the speed-up where one exists (conv2d `*_naive`, matmul `Variant::Naive`,
//! group norm `Mapping::Workgroup` against the default `Serial` mapping on CPU adapters, the
//! `elementwise::fill` kernel against `Plan::clear`, the buffer clear that zeroes gradients, the
//! flat concat and channel-bias mappings against the run and plane mappings).
//! Traffic counted (bytes per element): group norm (plain or fused with SiLU) fwd 8, bwd 16 (x,
//! dy, dx read, dx written); silu fwd 8, bwd 16; add 12; axpy 12; add_channel_bias 8, its
//! backward 4; conv bias grad 4; clear 4; dropout fwd 8, bwd 12; concat fwd 8, bwd 12 per output
//! element; upsample fwd 20, bwd 24 per input element; q_sample 12; mse 12; sum_squares 4; adam
//! 28; ema 12; p_sample/ddim 16.
//!
//! At the end, for each setting, the estimated share of the step of every kernel family
//! (Σ time × launches per step), to see which kernel to optimise next.
//!
//! The paper's batch of 128 takes about 20 minutes here (each 3×3 conv pass at 128×128×32×32 is
//! 39 GFLOP), so the default run measures `ddpm-cifar10` at batch 16 (about 4 minutes in all);
//! `DDPM_BENCH_CIFAR_BATCH=128` measures the paper's batch. Kernel times scale linearly with the
//! batch at these sizes, so the shares of the step do not depend on it.
//!
//! `DDPM_BENCH_QUICK=1`: only the mnist setting and no naive variants (about a minute).

use std::collections::BTreeMap;
use std::fmt;

use ddpm_gpu::diffusion::ddim::{self, DdimOptions};
use ddpm_gpu::diffusion::schedule::{Schedule, SchedulerConfig, VarianceType};
use ddpm_gpu::diffusion::trainer::chunks;
use ddpm_gpu::gpu::{Gpu, Plan, Tensor};
use ddpm_gpu::model::config::BlockKind;
use ddpm_gpu::model::{ParamTable, UNet, UNetConfig};
use ddpm_gpu::ops::adam::{self, AdamParams};
use ddpm_gpu::ops::attention::{self, Attention, AttentionBuffers, AttentionWeights};
use ddpm_gpu::ops::conv2d::{self, Conv2d};
use ddpm_gpu::ops::group_norm::{self, Grads, GroupNorm, Mapping, Options, Tensors};
use ddpm_gpu::ops::matmul::{matmul_ext, Extra, Matmul, Variant};
use ddpm_gpu::ops::peak::{copy_gbps, peak_gflops, time_plan};
use ddpm_gpu::ops::q_sample::{self, QSample};
use ddpm_gpu::ops::{
    concat, dropout, elementwise, ema, linear, loss, p_sample, reduce, silu, timestep_embedding, upsample,
};

/// A kernel taking at least this long (warm-up + one run) is timed once more; shorter ones get
/// the median of `REPS` runs.
const LONG_SECS: f64 = 0.5;
const REPS: usize = 5;
/// Kernels faster than this are recorded several times into one plan (at most `MAX_COPIES`).
const TARGET_SECS: f64 = 0.02;
const MAX_COPIES: usize = 64;
/// Naive variants are timed only up to this many GFLOP (they run at 1-3 GFLOP/s on lavapipe).
const NAIVE_MAX_GFLOP: f64 = 3.0;

// ---- the launch sites of a training step ------------------------------------------------------

/// An activation-shaped tensor (N, C, side, side), or (N, C) when `side` is 0.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Act {
    n: usize,
    c: usize,
    side: usize,
}

impl Act {
    fn len(&self) -> usize {
        self.n * self.c * self.hw()
    }
    fn hw(&self) -> usize {
        self.side.max(1) * self.side.max(1)
    }
    fn shape(&self) -> Vec<usize> {
        if self.side == 0 {
            vec![self.n, self.c]
        } else {
            vec![self.n, self.c, self.side, self.side]
        }
    }
}

impl fmt::Display for Act {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{:?}", self.shape())
    }
}

/// One launch site: an op (forward and, in training, its backward) at one shape.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    TimestepEmbedding {
        n: usize,
        dim: usize,
    },
    Linear {
        rows: usize,
        inp: usize,
        out: usize,
        dx: bool,
    },
    Silu(Act),
    Conv {
        s: Conv2d,
        dx: bool,
    },
    /// Group norm, fused with the SiLU after it when `silu` (`group_norm::Options::silu`).
    Norm {
        a: Act,
        groups: usize,
        silu: bool,
    },
    AddChannelBias(Act),
    /// Residual add (forward) and, for identity shortcuts, the residual's axpy (backward).
    Add(Act),
    Axpy(Act),
    Dropout(Act),
    Attention {
        a: Act,
        heads: usize,
    },
    Concat {
        n: usize,
        c1: usize,
        c2: usize,
        side: usize,
    },
    /// Nearest 2× upsampling of the input `Act`.
    Upsample(Act),
    /// Zeroing an activation gradient (`UNet::zero_grads`).
    Fill(Act),
    /// Zeroing a chunk of the parameter gradients (`Trainer`).
    GradFill(usize),
    QSample(Act),
    Mse(Act),
    SumSquares(usize),
    Adam(usize),
    Ema(usize),
    PSample(Act),
    Ddim(Act),
}

impl Op {
    /// Elements of the op's largest tensor.
    fn largest(&self) -> usize {
        match *self {
            Op::TimestepEmbedding { n, dim } => n * dim,
            Op::Linear { rows, inp, out, .. } => rows * inp.max(out),
            Op::Conv { s, .. } => (s.n * s.c_in * s.h * s.w).max(s.n * s.c_out * s.out_h() * s.out_w()),
            Op::Attention { a, .. } => a.len().max(a.n * a.hw() * a.hw()),
            Op::Concat { n, c1, c2, side } => n * (c1 + c2) * side * side,
            Op::Upsample(a) => 4 * a.len(),
            Op::Silu(a)
            | Op::Norm { a, .. }
            | Op::AddChannelBias(a)
            | Op::Add(a)
            | Op::Axpy(a)
            | Op::Dropout(a)
            | Op::Fill(a)
            | Op::QSample(a)
            | Op::Mse(a)
            | Op::PSample(a)
            | Op::Ddim(a) => a.len(),
            Op::SumSquares(n) | Op::Adam(n) | Op::Ema(n) | Op::GradFill(n) => n,
        }
    }

    /// The same op at half the batch (None for ops without a batch).
    fn halved(&self) -> Option<Op> {
        let h = |a: Act| Act { n: a.n / 2, ..a };
        let op = match *self {
            Op::TimestepEmbedding { n, dim } => Op::TimestepEmbedding { n: n / 2, dim },
            Op::Linear { rows, inp, out, dx } => Op::Linear {
                rows: rows / 2,
                inp,
                out,
                dx,
            },
            Op::Silu(a) => Op::Silu(h(a)),
            Op::Conv { s, dx } => Op::Conv {
                s: Conv2d { n: s.n / 2, ..s },
                dx,
            },
            Op::Norm { a, groups, silu } => Op::Norm { a: h(a), groups, silu },
            Op::AddChannelBias(a) => Op::AddChannelBias(h(a)),
            Op::Add(a) => Op::Add(h(a)),
            Op::Axpy(a) => Op::Axpy(h(a)),
            Op::Dropout(a) => Op::Dropout(h(a)),
            Op::Attention { a, heads } => Op::Attention { a: h(a), heads },
            Op::Concat { n, c1, c2, side } => Op::Concat { n: n / 2, c1, c2, side },
            Op::Upsample(a) => Op::Upsample(h(a)),
            Op::Fill(a) => Op::Fill(h(a)),
            Op::QSample(a) => Op::QSample(h(a)),
            Op::Mse(a) => Op::Mse(h(a)),
            Op::PSample(a) => Op::PSample(h(a)),
            Op::Ddim(a) => Op::Ddim(h(a)),
            Op::SumSquares(_) | Op::Adam(_) | Op::Ema(_) | Op::GradFill(_) => return None,
        };
        Some(op)
    }
}

/// The launch sites of one step, deduplicated with their counts, and the forward FLOPs.
#[derive(Default)]
struct Step {
    ops: Vec<(Op, usize)>,
    forward_flops: f64,
}

impl Step {
    fn push(&mut self, op: Op) {
        self.forward_flops += match op {
            Op::Conv { s, .. } => s.flops(),
            Op::Linear { rows, inp, out, .. } => 2.0 * (rows * inp * out) as f64,
            Op::Attention { a, heads } => attention_spec(a, heads).flops(),
            _ => 0.0,
        };
        match self.ops.iter_mut().find(|(o, _)| *o == op) {
            Some((_, count)) => *count += 1,
            None => self.ops.push((op, 1)),
        }
    }

    fn fill(&mut self, a: Act, times: usize) {
        for _ in 0..times {
            self.push(Op::Fill(a));
        }
    }

    /// diffusers `ResnetBlock2D` as `ResBlock` records it (forward, backward, zeroed gradients).
    fn resblock(&mut self, cfg: &UNetConfig, n: usize, c_in: usize, c_out: usize, side: usize) {
        let (x, y) = (Act { n, c: c_in, side }, Act { n, c: c_out, side });
        let conv3 = |c_in, c_out| Conv2d {
            n,
            c_in,
            h: side,
            w: side,
            c_out,
            k: 3,
            stride: 1,
            pad: [1; 4],
        };
        let groups = cfg.norm_num_groups;
        self.push(Op::Norm {
            a: x,
            groups,
            silu: true,
        });
        self.push(Op::Conv {
            s: conv3(c_in, c_out),
            dx: true,
        });
        self.push(Op::Linear {
            rows: n,
            inp: cfg.time_embed_dim(),
            out: c_out,
            dx: true,
        });
        self.push(Op::AddChannelBias(y));
        self.push(Op::Norm {
            a: y,
            groups,
            silu: true,
        });
        if cfg.dropout > 0.0 {
            self.push(Op::Dropout(y));
            self.fill(y, 1);
        }
        self.push(Op::Conv {
            s: conv3(c_out, c_out),
            dx: true,
        });
        if c_in != c_out {
            let s = Conv2d {
                k: 1,
                pad: [0; 4],
                ..conv3(c_in, c_out)
            };
            self.push(Op::Conv { s, dx: true });
        } else {
            self.push(Op::Axpy(y));
        }
        self.push(Op::Add(y));
        self.fill(x, 1); // a1
        self.fill(Act { n, c: c_out, side: 0 }, 1); // tp
        self.fill(y, 3); // h1b, a2, out
    }

    /// diffusers `Attention` as `AttnBlock` records it.
    fn attention(&mut self, cfg: &UNetConfig, n: usize, c: usize, side: usize) {
        let a = Act { n, c, side };
        self.push(Op::Norm {
            a,
            groups: cfg.norm_num_groups,
            silu: false,
        });
        self.push(Op::Attention { a, heads: cfg.heads(c) });
        self.push(Op::Add(a));
        self.push(Op::Axpy(a));
        self.fill(a, 2); // nx, out
    }
}

fn attention_spec(a: Act, heads: usize) -> Attention {
    Attention {
        batch: a.n,
        channels: a.c,
        tokens: a.hw(),
        heads,
    }
}

/// The launch sites of one training step of `cfg` at batch `n` with `params` parameters
/// (`Trainer` chunks the parameter buffer by `max_floats`), mirroring `UNet` and `Trainer`.
fn training_step(cfg: &UNetConfig, n: usize, params: usize, max_floats: usize) -> Step {
    assert_eq!(
        cfg.mid_block_scale_factor, 1.0,
        "the walk assumes mid_block_scale_factor 1 (no scale kernels)"
    );
    let mut st = Step::default();
    let ch = &cfg.block_out_channels;
    let (size, levels, temb) = (cfg.sample_size(), ch.len(), cfg.time_embed_dim());
    let conv3 = |c_in, c_out, side| Conv2d {
        n,
        c_in,
        h: side,
        w: side,
        c_out,
        k: 3,
        stride: 1,
        pad: [1; 4],
    };
    let image = Act {
        n,
        c: cfg.in_channels,
        side: size,
    };
    st.push(Op::QSample(image));
    st.push(Op::TimestepEmbedding { n, dim: ch[0] });
    st.push(Op::Linear {
        rows: n,
        inp: ch[0],
        out: temb,
        dx: false,
    });
    let e = Act { n, c: temb, side: 0 };
    st.push(Op::Silu(e));
    st.push(Op::Linear {
        rows: n,
        inp: temb,
        out: temb,
        dx: true,
    });
    st.push(Op::Silu(e));
    st.fill(e, 4);
    st.push(Op::Conv {
        s: conv3(cfg.in_channels, ch[0], size),
        dx: false,
    });
    st.fill(
        Act {
            n,
            c: ch[0],
            side: size,
        },
        1,
    );

    let mut skips = vec![ch[0]];
    let (mut c_prev, mut side) = (ch[0], size);
    for (i, &c) in ch.iter().enumerate() {
        for j in 0..cfg.layers_per_block {
            st.resblock(cfg, n, if j == 0 { c_prev } else { c }, c, side);
            if cfg.down_kind(i) == BlockKind::Attn {
                st.attention(cfg, n, c, side);
            }
            skips.push(c);
        }
        if i + 1 < levels {
            let pad = if cfg.downsample_padding == 0 {
                [0, 1, 0, 1]
            } else {
                [1; 4]
            };
            let s = Conv2d {
                stride: 2,
                pad,
                ..conv3(c, c, side)
            };
            st.push(Op::Conv { s, dx: true });
            side = s.out_h();
            st.fill(Act { n, c, side }, 1);
            skips.push(c);
        }
        c_prev = c;
    }
    let last = ch[levels - 1];
    st.resblock(cfg, n, last, last, side);
    if cfg.add_attention {
        st.attention(cfg, n, last, side);
    }
    st.resblock(cfg, n, last, last, side);

    let mut c_h = last;
    for (i, &c) in ch.iter().rev().enumerate() {
        for _ in 0..=cfg.layers_per_block {
            let c_skip = skips.pop().expect("one skip per up layer");
            st.push(Op::Concat {
                n,
                c1: c_h,
                c2: c_skip,
                side,
            });
            st.fill(
                Act {
                    n,
                    c: c_h + c_skip,
                    side,
                },
                1,
            );
            st.resblock(cfg, n, c_h + c_skip, c, side);
            if cfg.up_kind(i) == BlockKind::Attn {
                st.attention(cfg, n, c, side);
            }
            c_h = c;
        }
        if i + 1 < levels {
            st.push(Op::Upsample(Act { n, c, side }));
            st.push(Op::Conv {
                s: conv3(c, c, 2 * side),
                dx: true,
            });
            side *= 2;
            st.fill(Act { n, c, side }, 2);
        }
    }
    assert!(skips.is_empty(), "every skip consumed");
    let top = Act {
        n,
        c: ch[0],
        side: size,
    };
    st.push(Op::Norm {
        a: top,
        groups: cfg.norm_num_groups,
        silu: true,
    });
    st.push(Op::Conv {
        s: conv3(ch[0], cfg.out_channels, size),
        dx: true,
    });
    st.fill(top, 1);
    st.fill(image, 1);
    st.push(Op::Mse(image));
    for (_, len) in chunks(params, max_floats) {
        st.push(Op::GradFill(len));
        st.push(Op::SumSquares(len));
        st.push(Op::Adam(len));
        st.push(Op::Ema(len));
    }
    st
}

// ---- measuring ---------------------------------------------------------------------------------

/// A deterministic pattern in [-0.5, 0.5): benchmarks only need non-degenerate values.
fn fill(gpu: &Gpu, shape: &[usize], seed: u32) -> Tensor {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
        .collect();
    gpu.tensor(shape, &data)
}

#[derive(Clone, Copy)]
enum Work {
    Flops(f64),
    Bytes(f64),
}

struct Row {
    kernel: &'static str,
    /// Launches per training step (0: not part of the training step).
    per_step: usize,
    /// Seconds per launch at the setting's batch (scaled when measured at a smaller one).
    step_secs: f64,
}

type Record<'a> = &'a dyn Fn(&mut Plan);

struct Bench {
    gpu: Gpu,
    peak: f64,
    copy: BTreeMap<usize, f64>,
    rows: Vec<Row>,
    /// Time of a kernel measured at a smaller batch is multiplied by this for the step estimate.
    scale: f64,
    /// Time the naive / alternative variants too.
    alts: bool,
}

impl Bench {
    /// Seconds per run of the kernels `record` records.
    fn time(&self, record: Record) -> f64 {
        let mut p = Plan::new(&self.gpu);
        record(&mut p);
        let first = time_plan(&self.gpu, &p, 1);
        if first >= LONG_SECS {
            return first;
        }
        if first >= TARGET_SECS {
            return time_plan(&self.gpu, &p, REPS);
        }
        let copies = ((TARGET_SECS / first.max(1e-6)).ceil() as usize).clamp(2, MAX_COPIES);
        let mut p = Plan::new(&self.gpu);
        for _ in 0..copies {
            record(&mut p);
        }
        time_plan(&self.gpu, &p, REPS) / copies as f64
    }

    /// GB/s of the copy probe on a buffer of the power of two nearest to `traffic / 2` bytes,
    /// between 1 and 64 MiB.
    fn copy_ref(&mut self, traffic: f64) -> f64 {
        let bytes = ((traffic / 2.0).max(1.0).log2().round() as u32).clamp(20, 26);
        let gpu = self.gpu.clone();
        *self
            .copy
            .entry(1 << bytes)
            .or_insert_with(|| copy_gbps(&gpu, 1 << bytes))
    }

    /// Time `opt` (and `alt`, the naive or alternative variant), print a table row.
    fn row(
        &mut self,
        kernel: &'static str,
        shape: &str,
        per_step: usize,
        work: Work,
        opt: Record,
        alt: Option<Record>,
    ) {
        let secs = self.time(opt);
        let alt_secs = alt.filter(|_| self.alts).map(|a| self.time(a));
        let (rate, unit, pct) = match work {
            Work::Flops(f) => {
                let g = f / secs / 1e9;
                (g, "GFLOP/s", 100.0 * g / self.peak)
            }
            Work::Bytes(b) => {
                let g = b / secs / 1e9;
                (g, "GB/s", 100.0 * g / self.copy_ref(b))
            }
        };
        let (alt_col, speedup) = match alt_secs {
            Some(a) => (format!("{:.3}", a * 1e3), format!("{:.1}×", a / secs)),
            None => ("".into(), "".into()),
        };
        let count = if per_step > 0 {
            per_step.to_string()
        } else {
            "–".into()
        };
        println!(
            "| {kernel} | {shape} | {count} | {:.3} | {rate:.2} {unit} | {pct:.1}% | {alt_col} | {speedup} |",
            secs * 1e3
        );
        self.rows.push(Row {
            kernel,
            per_step,
            step_secs: secs * self.scale,
        });
    }

    /// Time the forward and backward kernels of `op` (`count` launches per step).
    fn op(&mut self, op: Op, count: usize) {
        let gpu = self.gpu.clone();
        let zeros = |shape: &[usize]| gpu.zeros(shape);
        match op {
            Op::Conv { s, dx } => {
                let shape = format!(
                    "{k}×{k} s{} {}→{} @ [{}, {}, {}, {}]",
                    s.stride,
                    s.c_in,
                    s.c_out,
                    s.n,
                    s.c_in,
                    s.h,
                    s.w,
                    k = s.k
                );
                let x = fill(&gpu, &[s.n, s.c_in, s.h, s.w], 1);
                let w = fill(&gpu, &[s.c_out, s.c_in, s.k, s.k], 2);
                let b = fill(&gpu, &[s.c_out], 3);
                let y = zeros(&[s.n, s.c_out, s.out_h(), s.out_w()]);
                let dy = fill(&gpu, &[s.n, s.c_out, s.out_h(), s.out_w()], 4);
                let (dxt, dw, db) = (zeros(&[s.n, s.c_in, s.h, s.w]), zeros(&[w.len()]), zeros(&[s.c_out]));
                let dw = dw.reshape(w.shape());
                let naive = s.flops() <= NAIVE_MAX_GFLOP * 1e9;
                let f = Work::Flops(s.flops());
                let fwd_naive = |p: &mut Plan| conv2d::forward_naive(p, &s, &x, &w, Some(&b), &y);
                self.row(
                    "conv2d forward",
                    &shape,
                    count,
                    f,
                    &|p| conv2d::forward(p, &s, None, &x, &w, Some(&b), &y),
                    naive.then_some(&fwd_naive as Record),
                );
                if dx {
                    let bi_naive = |p: &mut Plan| conv2d::backward_input_naive(p, &s, &dy, &w, &dxt);
                    self.row(
                        "conv2d backward_input",
                        &shape,
                        count,
                        f,
                        &|p| conv2d::backward_input(p, &s, None, &dy, &w, &dxt),
                        naive.then_some(&bi_naive as Record),
                    );
                }
                let bw_naive = |p: &mut Plan| conv2d::backward_weight_naive(p, &s, &x, &dy, &dw);
                self.row(
                    "conv2d backward_weight",
                    &shape,
                    count,
                    f,
                    &|p| conv2d::backward_weight(p, &s, None, &x, &dy, &dw),
                    naive.then_some(&bw_naive as Record),
                );
                self.row(
                    "conv2d backward_bias",
                    &format!(
                        "{}",
                        Act {
                            n: s.n,
                            c: s.c_out,
                            side: s.out_h()
                        }
                    ),
                    count,
                    Work::Bytes(4.0 * dy.len() as f64),
                    &|p| conv2d::backward_bias(p, &s, None, &dy, &db),
                    None,
                );
            }
            Op::Linear { rows, inp, out, dx } => {
                let shape = format!("[{rows}, {inp}] → {out}");
                let x = fill(&gpu, &[rows, inp], 1);
                let w = fill(&gpu, &[out, inp], 2);
                let b = fill(&gpu, &[out], 3);
                let (y, dy) = (zeros(&[rows, out]), fill(&gpu, &[rows, out], 4));
                let (dxt, dw, db) = (zeros(&[rows, inp]), zeros(&[out, inp]), zeros(&[out]));
                let flops = 2.0 * (rows * inp * out) as f64;
                let fwd_spec = Matmul {
                    trans_b: true,
                    ldb: inp,
                    ..Matmul::new(1, rows, inp, out)
                };
                let bias = Extra {
                    bias: Some(&b),
                    ..Extra::default()
                };
                let fwd_naive = |p: &mut Plan| matmul_ext(p, &fwd_spec, &bias, Some(Variant::Naive), &x, &w, &y);
                let lin = linear::Linear { rows, inp, out };
                let tensors = linear::Tensors {
                    x: &x,
                    w: &w,
                    b: Some(&b),
                };
                let grads = linear::Grads {
                    dx: dx.then_some(&dxt),
                    dw: &dw,
                    db: Some(&db),
                };
                self.row(
                    "linear forward",
                    &shape,
                    count,
                    Work::Flops(flops),
                    &|p| linear::forward(p, &lin, tensors, &y),
                    Some(&fwd_naive),
                );
                // The products linear::backward records, with the naive kernel.
                let bwd_naive = |p: &mut Plan| {
                    let none = Extra::default();
                    if dx {
                        let s = Matmul {
                            accumulate: true,
                            ..Matmul::new(1, rows, out, inp)
                        };
                        matmul_ext(p, &s, &none, Some(Variant::Naive), &dy, &w, &dxt);
                    }
                    let s = Matmul {
                        trans_a: true,
                        lda: out,
                        accumulate: true,
                        ..Matmul::new(1, out, rows, inp)
                    };
                    matmul_ext(p, &s, &none, Some(Variant::Naive), &dy, &x, &dw);
                    linear::bias_backward(p, [rows, out, 1], None, &dy, &db);
                };
                self.row(
                    "linear backward",
                    &format!("{shape}{}", if dx { "" } else { " (no dx)" }),
                    count,
                    Work::Flops(flops * if dx { 2.0 } else { 1.0 }),
                    &|p| linear::backward(p, &lin, tensors, &dy, grads),
                    Some(&bwd_naive),
                );
            }
            Op::Norm { a, groups, silu } => {
                let s = GroupNorm {
                    n: a.n,
                    c: a.c,
                    hw: a.hw(),
                    groups,
                    eps: 1e-5,
                };
                let shape = format!("{a} g{groups}");
                let x = fill(&gpu, &a.shape(), 1);
                let (gamma, beta) = (fill(&gpu, &[a.c], 2), fill(&gpu, &[a.c], 3));
                let (y, dy, dx) = (zeros(&a.shape()), fill(&gpu, &a.shape(), 4), zeros(&a.shape()));
                let (mean, rstd) = (zeros(&[a.n * groups]), zeros(&[a.n * groups]));
                let (dg, db) = (zeros(&[a.c]), zeros(&[a.c]));
                let m = Mapping::for_adapter(&gpu);
                let other = if m == Mapping::Serial {
                    Mapping::Workgroup
                } else {
                    Mapping::Serial
                };
                let t = Tensors {
                    x: &x,
                    gamma: &gamma,
                    beta: &beta,
                    mean: &mean,
                    rstd: &rstd,
                };
                let g = Grads {
                    dy: &dy,
                    dx: &dx,
                    dgamma: &dg,
                    dbeta: &db,
                };
                let o = |m| Options { silu, mapping: Some(m) };
                let fwd = |p: &mut Plan, m| group_norm::forward(p, &s, o(m), t, &y);
                let bwd = |p: &mut Plan, m| group_norm::backward(p, &s, o(m), t, g);
                let bytes = 4.0 * a.len() as f64;
                let (fwd_name, bwd_name) = if silu {
                    ("group_norm+silu forward", "group_norm+silu backward")
                } else {
                    ("group_norm forward", "group_norm backward")
                };
                self.row(
                    fwd_name,
                    &shape,
                    count,
                    Work::Bytes(2.0 * bytes),
                    &|p| fwd(p, m),
                    Some(&|p| fwd(p, other)),
                );
                self.row(
                    bwd_name,
                    &shape,
                    count,
                    Work::Bytes(4.0 * bytes),
                    &|p| bwd(p, m),
                    Some(&|p| bwd(p, other)),
                );
            }
            Op::Silu(a) => {
                let (x, y, dy, dx) = (
                    fill(&gpu, &a.shape(), 1),
                    zeros(&a.shape()),
                    fill(&gpu, &a.shape(), 2),
                    zeros(&a.shape()),
                );
                let bytes = 4.0 * a.len() as f64;
                let shape = a.to_string();
                self.row(
                    "silu forward",
                    &shape,
                    count,
                    Work::Bytes(2.0 * bytes),
                    &|p| silu::forward(p, &x, &y),
                    None,
                );
                self.row(
                    "silu backward",
                    &shape,
                    count,
                    Work::Bytes(4.0 * bytes),
                    &|p| silu::backward(p, &x, &dy, &dx),
                    None,
                );
            }
            Op::AddChannelBias(a) => {
                let (x, v, y) = (fill(&gpu, &a.shape(), 1), fill(&gpu, &[a.n, a.c], 2), zeros(&a.shape()));
                let dv = zeros(&[a.n, a.c]);
                let bytes = 4.0 * a.len() as f64;
                let shape = a.to_string();
                self.row(
                    "add_channel_bias",
                    &shape,
                    count,
                    Work::Bytes(2.0 * bytes),
                    &|p| elementwise::add_channel_bias(p, [a.n, a.c, a.hw()], None, &x, &v, &y),
                    Some(&|p| {
                        let flat = Some(elementwise::BiasMapping::Flat);
                        elementwise::add_channel_bias(p, [a.n, a.c, a.hw()], flat, &x, &v, &y)
                    }),
                );
                self.row(
                    "add_channel_bias backward",
                    &shape,
                    count,
                    Work::Bytes(bytes),
                    &|p| elementwise::add_channel_bias_backward(p, [a.n, a.c, a.hw()], &x, &dv),
                    None,
                );
            }
            Op::Add(a) => {
                let (x, z, y) = (fill(&gpu, &a.shape(), 1), fill(&gpu, &a.shape(), 2), zeros(&a.shape()));
                let bytes = 12.0 * a.len() as f64;
                self.row(
                    "add",
                    &a.to_string(),
                    count,
                    Work::Bytes(bytes),
                    &|p| elementwise::add(p, &x, &z, &y),
                    None,
                );
            }
            Op::Axpy(a) => {
                let (x, y) = (fill(&gpu, &a.shape(), 1), zeros(&a.shape()));
                let bytes = 12.0 * a.len() as f64;
                self.row(
                    "axpy",
                    &a.to_string(),
                    count,
                    Work::Bytes(bytes),
                    &|p| elementwise::axpy(p, 1.0, &x, &y),
                    None,
                );
            }
            Op::Fill(a) => {
                let y = zeros(&a.shape());
                self.row(
                    "clear (zero grads)",
                    &a.to_string(),
                    count,
                    Work::Bytes(4.0 * a.len() as f64),
                    &|p| p.clear(&y),
                    Some(&|p| elementwise::fill(p, &y, 0.0)),
                );
            }
            Op::GradFill(n) => {
                let y = zeros(&[n]);
                self.row(
                    "clear (zero grads)",
                    &format!("[{n}] (parameter grads)"),
                    count,
                    Work::Bytes(4.0 * n as f64),
                    &|p| p.clear(&y),
                    Some(&|p| elementwise::fill(p, &y, 0.0)),
                );
            }
            Op::Dropout(a) => {
                let (x, y, dx) = (fill(&gpu, &a.shape(), 1), zeros(&a.shape()), zeros(&a.shape()));
                let bytes = 4.0 * a.len() as f64;
                let shape = a.to_string();
                self.row(
                    "dropout forward",
                    &shape,
                    count,
                    Work::Bytes(2.0 * bytes),
                    &|p| {
                        dropout::forward(p, 0.1, &x, &y, 7);
                    },
                    None,
                );
                self.row(
                    "dropout backward",
                    &shape,
                    count,
                    Work::Bytes(3.0 * bytes),
                    &|p| {
                        dropout::backward(p, 0.1, &x, &dx, 7);
                    },
                    None,
                );
            }
            Op::Attention { a, heads } => self.attention(a, heads, count),
            Op::Concat { n, c1, c2, side } => {
                let hw = side * side;
                let (x1, x2, y) = (
                    fill(&gpu, &[n, c1, hw], 1),
                    fill(&gpu, &[n, c2, hw], 2),
                    zeros(&[n, c1 + c2, hw]),
                );
                let (d1, d2) = (zeros(&[n, c1, hw]), zeros(&[n, c2, hw]));
                let shape = format!("[{n}, {c1}+{c2}, {side}, {side}]");
                let bytes = 4.0 * y.len() as f64;
                let s = concat::Concat { n, c1, c2, hw };
                use concat::Mapping;
                self.row(
                    "concat forward",
                    &shape,
                    count,
                    Work::Bytes(2.0 * bytes),
                    &|p| concat::forward(p, &s, None, &x1, &x2, &y),
                    Some(&|p| concat::forward(p, &s, Some(Mapping::Flat), &x1, &x2, &y)),
                );
                self.row(
                    "concat backward",
                    &shape,
                    count,
                    Work::Bytes(3.0 * bytes),
                    &|p| concat::backward(p, &s, None, &y, &d1, &d2),
                    Some(&|p| concat::backward(p, &s, Some(Mapping::Flat), &y, &d1, &d2)),
                );
            }
            Op::Upsample(a) => {
                let big = [a.n, a.c, 2 * a.side, 2 * a.side];
                let (x, y, dx) = (fill(&gpu, &a.shape(), 1), zeros(&big), zeros(&a.shape()));
                let bytes = 4.0 * a.len() as f64;
                let (n, c, s) = (a.n, a.c, a.side);
                self.row(
                    "upsample forward",
                    &a.to_string(),
                    count,
                    Work::Bytes(5.0 * bytes),
                    &|p| upsample::forward(p, n, c, s, s, &x, &y),
                    None,
                );
                self.row(
                    "upsample backward",
                    &a.to_string(),
                    count,
                    Work::Bytes(6.0 * bytes),
                    &|p| upsample::backward(p, n, c, s, s, &y, &dx),
                    None,
                );
            }
            Op::TimestepEmbedding { n, dim } => {
                let t = gpu.tensor(&[n], &(0..n).map(|i| (i * 37 % 1000) as f32).collect::<Vec<_>>());
                let y = zeros(&[n, dim]);
                self.row(
                    "timestep_embedding",
                    &format!("[{n}] → [{n}, {dim}]"),
                    count,
                    Work::Bytes(4.0 * (n * dim + n) as f64),
                    &|p| timestep_embedding::forward(p, n, dim, false, 1.0, &t, &y),
                    None,
                );
            }
            Op::QSample(a) => {
                let s = QSample {
                    batch: a.n,
                    channels: a.c,
                    h: a.side,
                    w: a.side,
                    flip: false,
                    first: 0,
                };
                let data = fill(&gpu, &a.shape(), 1);
                let index = gpu.tensor(&[a.n], &(0..a.n).map(|i| i as f32).collect::<Vec<_>>());
                let t = gpu.tensor(&[a.n], &(0..a.n).map(|i| (i * 37 % 1000) as f32).collect::<Vec<_>>());
                let table = gpu.tensor(&[1000, 2], &Schedule::new(&SchedulerConfig::paper()).q_sample_table());
                let (xt, eps) = (zeros(&a.shape()), zeros(&a.shape()));
                self.row(
                    "q_sample",
                    &a.to_string(),
                    count,
                    Work::Bytes(12.0 * a.len() as f64),
                    &|p| {
                        q_sample::forward(p, &s, &data, &index, &t, &table, &xt, &eps, 3);
                    },
                    None,
                );
            }
            Op::Mse(a) => {
                let (pred, target) = (fill(&gpu, &a.shape(), 1), fill(&gpu, &a.shape(), 2));
                let (l, dpred) = (zeros(&[1]), zeros(&a.shape()));
                self.row(
                    "mse loss (fwd+bwd)",
                    &a.to_string(),
                    count,
                    Work::Bytes(12.0 * a.len() as f64),
                    &|p| loss::mse_forward_backward(p, &pred, &target, &l, &dpred),
                    None,
                );
            }
            Op::SumSquares(n) => {
                let (x, out) = (fill(&gpu, &[n], 1), zeros(&[1]));
                self.row(
                    "sum_squares (grad norm)",
                    &format!("[{n}]"),
                    count,
                    Work::Bytes(4.0 * n as f64),
                    &|p| reduce::sum_squares(p, &x, &out),
                    None,
                );
            }
            Op::Adam(n) => {
                let (params, grads) = (fill(&gpu, &[n], 1), fill(&gpu, &[n], 2));
                let (m, v) = (zeros(&[n]), zeros(&[n]));
                let sumsq = gpu.tensor(&[1], &[4.0]);
                let hp = AdamParams {
                    max_norm: 1.0,
                    ..AdamParams::new(n, 1e-3)
                }
                .at_step(1);
                self.row(
                    "adam",
                    &format!("[{n}]"),
                    count,
                    Work::Bytes(28.0 * n as f64),
                    &|p| {
                        adam::step(p, &params, &grads, &m, &v, &sumsq, &hp);
                    },
                    None,
                );
            }
            Op::Ema(n) => {
                let (e, params) = (fill(&gpu, &[n], 1), fill(&gpu, &[n], 2));
                self.row(
                    "ema",
                    &format!("[{n}]"),
                    count,
                    Work::Bytes(12.0 * n as f64),
                    &|p| {
                        ema::update(p, &e, &params, 0.9999);
                    },
                    None,
                );
            }
            Op::PSample(a) => {
                let schedule = Schedule::new(&SchedulerConfig::paper());
                let hp = schedule
                    .p_sample_coefs(500, VarianceType::FixedSmall, true)
                    .with_seed(5);
                let (xt, eps) = (fill(&gpu, &a.shape(), 1), fill(&gpu, &a.shape(), 2));
                let (xp, x0) = (zeros(&a.shape()), zeros(&a.shape()));
                self.row(
                    "p_sample (sampling)",
                    &a.to_string(),
                    count,
                    Work::Bytes(16.0 * a.len() as f64),
                    &|p| {
                        p_sample::forward(p, &xt, &eps, &xp, &x0, &hp);
                    },
                    None,
                );
            }
            Op::Ddim(a) => {
                let schedule = Schedule::new(&SchedulerConfig::paper());
                let opts = DdimOptions {
                    eta: 1.0,
                    ..DdimOptions::default()
                };
                let hp = ddim::step_params(&schedule.alphas_cumprod, 500, Some(480), &opts, a.len(), 5);
                let (xt, eps) = (fill(&gpu, &a.shape(), 1), fill(&gpu, &a.shape(), 2));
                let (xp, x0) = (zeros(&a.shape()), zeros(&a.shape()));
                self.row(
                    "ddim step (sampling, η=1)",
                    &a.to_string(),
                    count,
                    Work::Bytes(16.0 * a.len() as f64),
                    &|p| {
                        ddpm_gpu::ops::ddim::forward(p, &xt, &eps, &xp, &x0, &hp);
                    },
                    None,
                );
            }
        }
    }

    /// The attention block forward and backward, then the four products of its forward alone
    /// with the default and the naive matmul kernels (not counted again in the step estimate).
    fn attention(&mut self, a: Act, heads: usize, count: usize) {
        let gpu = self.gpu.clone();
        let s = attention_spec(a, heads);
        let (b, c, t) = (a.n, a.c, a.hw());
        let ws: Vec<Tensor> = (0..8)
            .map(|i| fill(&gpu, &[if i % 2 == 0 { c * c } else { c }], i))
            .collect();
        let gs: Vec<Tensor> = (0..8)
            .map(|i| gpu.zeros(&[if i % 2 == 0 { c * c } else { c }]))
            .collect();
        fn as_w(t: &[Tensor]) -> AttentionWeights<'_> {
            AttentionWeights {
                wq: &t[0],
                bq: &t[1],
                wk: &t[2],
                bk: &t[3],
                wv: &t[4],
                bv: &t[5],
                wo: &t[6],
                bo: &t[7],
            }
        }
        let (x, y, dy, dx) = (
            fill(&gpu, &a.shape(), 11),
            gpu.zeros(&a.shape()),
            fill(&gpu, &a.shape(), 12),
            gpu.zeros(&a.shape()),
        );
        let buf = AttentionBuffers::new(&gpu, &s);
        let shape = format!("{a} T={t} heads {heads}");
        self.row(
            "attention forward",
            &shape,
            count,
            Work::Flops(s.flops()),
            &|p| attention::forward(p, &s, &x, &as_w(&ws), &buf, &y),
            None,
        );
        self.row(
            "attention backward",
            &shape,
            count,
            Work::Flops(2.0 * s.flops()),
            &|p| attention::backward(p, &s, &x, &as_w(&ws), &buf, &dy, &dx, &as_w(&gs)),
            None,
        );
        if heads != 1 {
            return;
        }
        // The forward's products (one head), as `ops::attention` lays them out.
        let proj = Matmul {
            trans_a: true,
            trans_b: true,
            lda: t,
            ldb: c,
            stride_a: c * t,
            stride_b: 0,
            ..Matmul::new(b, t, c, c)
        };
        let scores = Matmul {
            trans_b: true,
            ldb: c,
            stride_b: t * c,
            ..Matmul::new(b, t, c, t)
        };
        let pv = Matmul::new(b, t, t, c);
        let out = Matmul {
            trans_b: true,
            lda: c,
            ldb: c,
            stride_a: 0,
            stride_b: t * c,
            ..Matmul::new(b, c, c, t)
        };
        let products: [(&'static str, Matmul, &Tensor, &Tensor, &Tensor); 4] = [
            ("matmul: attn q/k/v projection", proj, &x, &ws[0], &buf.q),
            ("matmul: attn scores q·kᵀ", scores, &buf.q, &buf.k, &buf.probs),
            ("matmul: attn P·v", pv, &buf.probs, &buf.v, &buf.o),
            ("matmul: attn output projection", out, &ws[6], &buf.o, &y),
        ];
        for (name, m, pa, pb, pc) in products {
            let e = Extra::default();
            let naive = |p: &mut Plan| matmul_ext(p, &m, &e, Some(Variant::Naive), pa, pb, pc);
            self.row(
                name,
                &format!("{}×({}×{}·{}×{})", m.batch, m.m, m.k, m.k, m.n),
                0,
                Work::Flops(m.flops()),
                &|p| matmul_ext(p, &m, &e, None, pa, pb, pc),
                Some(&naive),
            );
        }
    }
}

const HEADER: &str =
    "| kernel | shape | ×/step | ms | rate | % of peak | naive/alt ms | speed-up |\n|---|---|--:|--:|--:|--:|--:|--:|";

/// Check the walk against the real network (built at batch 1 with gradients): the forward FLOPs
/// and the number of dispatches of the kernels that map one-to-one to launch sites. Returns the
/// numbers of dispatches and of buffer clears of the network's forward + zero_grads + backward.
fn check_walk(gpu: &Gpu, cfg: &UNetConfig, table: &ParamTable, st: &Step, n: usize) -> (usize, usize) {
    let (params, grads) = (gpu.zeros(&[table.total]), gpu.zeros(&[table.total]));
    let net = UNet::new(gpu, cfg, table, &params, Some(&grads), 1).expect("U-Net at batch 1");
    let rel = (st.forward_flops / n as f64 - net.forward_flops).abs() / net.forward_flops;
    assert!(
        rel < 1e-9,
        "walk has {} forward FLOPs per image, the U-Net {}",
        st.forward_flops / n as f64,
        net.forward_flops
    );
    let mut p = Plan::new(gpu);
    net.forward(&mut p);
    net.zero_grads(&mut p);
    net.backward(&mut p);
    let real = |label: &str| p.kernels().iter().filter(|k| k.label.starts_with(label)).count();
    let walk = |pick: &dyn Fn(&Op) -> bool| -> usize { st.ops.iter().filter(|(o, _)| pick(o)).map(|(_, c)| c).sum() };
    let checks: [(&str, usize); 7] = [
        ("conv2d::backward_bias", walk(&|o| matches!(o, Op::Conv { .. }))),
        ("group_norm::forward", walk(&|o| matches!(o, Op::Norm { .. }))),
        ("silu::forward", walk(&|o| matches!(o, Op::Silu(_)))),
        (
            "elementwise::add_channel_bias_backward",
            walk(&|o| matches!(o, Op::AddChannelBias(_))),
        ),
        ("elementwise::axpy", walk(&|o| matches!(o, Op::Axpy(_)))),
        ("concat::forward", walk(&|o| matches!(o, Op::Concat { .. }))),
        ("dropout::forward", walk(&|o| matches!(o, Op::Dropout(_)))),
    ];
    for (label, want) in checks {
        assert_eq!(
            real(label),
            want,
            "{label}: the real network dispatches it {} times, the walk {want}",
            real(label)
        );
    }
    // Every gradient fill, and the score-gradient scratch inside each attention backward.
    let clears = walk(&|o| matches!(o, Op::Fill(_))) + walk(&|o| matches!(o, Op::Attention { .. }));
    assert_eq!(
        p.clear_count(),
        clears,
        "the real network clears {} gradients, the walk {clears}",
        p.clear_count()
    );
    (p.kernels().len(), clears)
}

/// Bench every launch site of one preset's training step at batch `n`, then print the estimated
/// share of the step per kernel.
fn setting(b: &mut Bench, preset: &str, n: usize) {
    let gpu = b.gpu.clone();
    let cfg = UNetConfig::preset(preset).expect("preset");
    let table = ParamTable::new(&cfg);
    let max_floats = gpu.limits.max_storage_buffer_binding_size as usize / 4;
    let st = training_step(&cfg, n, table.total, max_floats);
    let (dispatches, clears) = check_walk(&gpu, &cfg, &table, &st, n);
    println!(
        "\n## `{preset}` at batch {n}: {} parameters, {:.3} GFLOP forward per image, {} launch sites \
         ({dispatches} dispatches and {clears} buffer clears in the U-Net's forward + zero_grads + backward)\n",
        table.count(),
        st.forward_flops / n as f64 / 1e9,
        st.ops.len()
    );
    println!("{HEADER}");
    b.rows.clear();
    for &(op, count) in &st.ops {
        let mut used = op;
        while used.largest() > max_floats {
            used = used.halved().expect("a batch-free op exceeds one binding");
        }
        b.scale = op.largest() as f64 / used.largest() as f64;
        if b.scale != 1.0 {
            println!(
                "| *(next rows at batch {n}/{}: {n} does not fit one storage binding)* | | | | | | | |",
                b.scale
            );
        }
        b.op(used, count);
    }
    b.scale = 1.0;
    let image = Act {
        n,
        c: cfg.in_channels,
        side: cfg.sample_size(),
    };
    b.op(Op::PSample(image), 0);
    b.op(Op::Ddim(image), 0);

    let mut by_kernel: BTreeMap<&str, (usize, f64)> = BTreeMap::new();
    for r in b.rows.iter().filter(|r| r.per_step > 0) {
        let e = by_kernel.entry(r.kernel).or_default();
        e.0 += r.per_step;
        e.1 += r.per_step as f64 * r.step_secs;
    }
    let total: f64 = by_kernel.values().map(|v| v.1).sum();
    let mut sorted: Vec<_> = by_kernel.into_iter().collect();
    sorted.sort_by(|a, b| b.1 .1.partial_cmp(&a.1 .1).unwrap());
    println!(
        "\nEstimated `{preset}` batch-{n} training step from the kernels alone: {:.1} ms \
         ({:.2} GFLOP/s of model FLOPs = 3 × forward)\n",
        total * 1e3,
        3.0 * st.forward_flops / total / 1e9
    );
    println!("| kernel | launches/step | ms/step | share |\n|---|--:|--:|--:|");
    for (k, (launches, secs)) in sorted {
        println!(
            "| {k} | {launches} | {:.2} | {:.1}% |",
            secs * 1e3,
            100.0 * secs / total
        );
    }
}

/// The shapes the issue quotes burn's figures at, and square products.
fn issue_shapes(b: &mut Bench) {
    println!("\n## Reference shapes of the issue (burn's figures)\n\n{HEADER}");
    let s = Conv2d {
        n: 32,
        c_in: 64,
        h: 28,
        w: 28,
        c_out: 64,
        k: 3,
        stride: 1,
        pad: [1; 4],
    };
    b.rows.clear();
    b.op(Op::Conv { s, dx: true }, 1);
    let conv_iter: f64 = b.rows.iter().map(|r| r.step_secs).sum();
    b.op(
        Op::Norm {
            a: Act { n: 32, c: 64, side: 28 },
            groups: 32,
            silu: false,
        },
        1,
    );
    for size in [512, 1024] {
        let m = Matmul::new(1, size, size, size);
        let (x, y, z) = (
            fill(&b.gpu, &[size, size], 1),
            fill(&b.gpu, &[size, size], 2),
            b.gpu.zeros(&[size, size]),
        );
        let e = Extra::default();
        let naive = |p: &mut Plan| matmul_ext(p, &m, &e, Some(Variant::Naive), &x, &y, &z);
        b.row(
            "matmul square",
            &format!("{size}³"),
            0,
            Work::Flops(m.flops()),
            &|p| matmul_ext(p, &m, &e, None, &x, &y, &z),
            Some(&naive),
        );
    }
    println!(
        "\nconv2d 3×3 64→64 @ [32, 64, 28, 28] forward + backward (input, weight, bias): {:.3} s per iteration",
        conv_iter
    );
}

fn main() {
    let quick = std::env::var("DDPM_BENCH_QUICK").is_ok_and(|v| v == "1");
    let cifar_batch: usize = std::env::var("DDPM_BENCH_CIFAR_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let gpu = Gpu::for_tests();
    println!(
        "# ddpm-gpu kernel benchmark{}\n",
        if quick { " (DDPM_BENCH_QUICK=1)" } else { "" }
    );
    println!("- adapter: {}", gpu.describe());
    println!(
        "- LP_NUM_THREADS: {}",
        std::env::var("LP_NUM_THREADS").unwrap_or_else(|_| "unset".into())
    );
    let peak = peak_gflops(&gpu);
    let copy = copy_gbps(&gpu, 64 << 20);
    println!("- peak FMA probe (`ops::peak::peak_gflops`): {peak:.2} GFLOP/s; copy probe: {copy:.2} GB/s (64 MiB)");
    println!("- time: median wall-clock ms per kernel; rate in GFLOP/s (% of the FMA probe) or GB/s (% of the copy probe at the nearest size)");
    let mut b = Bench {
        gpu: gpu.clone(),
        peak,
        copy: BTreeMap::from([(64 << 20, copy)]),
        rows: Vec::new(),
        scale: 1.0,
        alts: !quick,
    };
    setting(&mut b, "mnist", 32);
    if !quick {
        setting(&mut b, "ddpm-cifar10", cifar_batch);
        issue_shapes(&mut b);
    }
    println!(
        "\ncopy probe by size: {}",
        b.copy
            .iter()
            .map(|(k, v)| format!("{} MiB {v:.2} GB/s", k >> 20))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
