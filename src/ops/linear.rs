//! Linear layer, PyTorch `nn.Linear`: y (rows, out) = x (rows, in) · wᵀ + b, w (out, in), b (out).
//! The products are [`crate::ops::matmul`] (the bias is its epilogue); the bias gradient kernel is
//! `shaders/linear.wgsl` (for any channel bias, see [`bias_backward`]). Reference:
//! `src/reference/linear.rs`.

use crate::gpu::{grid_1d, Gpu, Plan, Tensor};
use crate::ops::matmul::{matmul, matmul_ext, Extra, Matmul};
use crate::shader;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    outer: u32,
    channels: u32,
    inner: u32,
}

const WG: u32 = 64;

/// How [`bias_backward`] sums (see `shaders/linear.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BiasSum {
    /// One invocation per channel, a serial loop: CPU adapters (no barriers to emulate).
    Serial,
    /// A workgroup of 64 invocations per channel and a tree reduction: GPUs.
    Workgroup,
}

impl BiasSum {
    pub fn for_adapter(gpu: &Gpu) -> BiasSum {
        if gpu.info.device_type == wgpu::DeviceType::Cpu {
            BiasSum::Serial
        } else {
            BiasSum::Workgroup
        }
    }
}

/// db[c] += Σ_{o,i} dy[o, c, i] for dy (outer, channels, inner) = `shape`, summed by `m`, else the
/// way measured fastest for the shape on this adapter (see [`crate::ops::tune`]), else as
/// [`BiasSum::for_adapter`] says.
pub fn bias_backward(p: &mut Plan, shape: [usize; 3], m: Option<BiasSum>, dy: &Tensor, db: &Tensor) {
    let [outer, channels, inner] = shape;
    assert_eq!(
        db.len(),
        channels,
        "bias_backward: db of {} values for {channels} channels",
        db.len()
    );
    assert_eq!(
        dy.len(),
        outer * channels * inner,
        "bias_backward: dy has {} values",
        dy.len()
    );
    let params = Params {
        outer: outer as u32,
        channels: channels as u32,
        inner: inner as u32,
    };
    let case = crate::ops::tune::Case::BiasSum { outer, channels, inner };
    let m = m
        .or_else(|| p.gpu.tuned(&case))
        .unwrap_or_else(|| BiasSum::for_adapter(&p.gpu));
    let (entry, grid) = match m {
        BiasSum::Serial => ("bias_grad", grid_1d(channels, WG)),
        BiasSum::Workgroup => ("bias_grad_workgroup", grid_1d(channels, 1)),
    };
    p.kernel(&shader!("linear"), entry, &params, &[(3, dy), (4, db)], grid);
}

/// The shape of a linear layer: x (rows, inp), w (out, inp), b and y's rows (out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Linear {
    pub rows: usize,
    pub inp: usize,
    pub out: usize,
}

/// A linear layer's input and parameters.
#[derive(Clone, Copy)]
pub struct Tensors<'a> {
    pub x: &'a Tensor,
    pub w: &'a Tensor,
    pub b: Option<&'a Tensor>,
}

/// The gradients the backward accumulates: dx (when wanted), dw, db (when there is a bias).
#[derive(Clone, Copy)]
pub struct Grads<'a> {
    pub dx: Option<&'a Tensor>,
    pub dw: &'a Tensor,
    pub db: Option<&'a Tensor>,
}

/// y = x · wᵀ + b (written).
pub fn forward(p: &mut Plan, s: &Linear, t: Tensors, y: &Tensor) {
    let Linear { rows, inp, out } = *s;
    assert_eq!(t.x.len(), rows * inp, "linear {s:?}: x has {} values", t.x.len());
    assert_eq!(t.w.len(), out * inp, "linear {s:?}: w has {} values", t.w.len());
    assert_eq!(y.len(), rows * out, "linear {s:?}: y has {} values", y.len());
    let m = Matmul {
        trans_b: true,
        ldb: inp,
        ..Matmul::new(1, rows, inp, out)
    };
    let e = Extra {
        bias: t.b,
        ..Extra::default()
    };
    matmul_ext(p, &m, &e, None, t.x, t.w, y);
}

/// dx += dy · w, dw += dyᵀ · x, db += Σ_rows dy.
pub fn backward(p: &mut Plan, s: &Linear, t: Tensors, dy: &Tensor, g: Grads) {
    let Linear { rows, inp, out } = *s;
    assert_eq!(
        dy.len(),
        rows * out,
        "linear backward {s:?}: dy has {} values",
        dy.len()
    );
    if let Some(dx) = g.dx {
        let m = Matmul {
            accumulate: true,
            ..Matmul::new(1, rows, out, inp)
        };
        matmul(p, &m, dy, t.w, dx);
    }
    let m = Matmul {
        trans_a: true,
        lda: out,
        accumulate: true,
        ..Matmul::new(1, out, rows, inp)
    };
    matmul(p, &m, dy, t.x, g.dw);
    if let Some(db) = g.db {
        bias_backward(p, [rows, out, 1], None, dy, db);
    }
}
