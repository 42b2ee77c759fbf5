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

/// db[c] += Σ_{o,i} dy[o, c, i] for dy (outer, channels, inner), summed the way measured fastest
/// for the shape on this adapter (see [`crate::ops::tune`]), else as [`BiasSum::for_adapter`] says.
pub fn bias_backward(p: &mut Plan, outer: usize, channels: usize, inner: usize, dy: &Tensor, db: &Tensor) {
    let case = crate::ops::tune::Case::BiasSum { outer, channels, inner };
    let m = p.gpu.tuned(&case).unwrap_or_else(|| BiasSum::for_adapter(&p.gpu));
    bias_backward_with(p, m, outer, channels, inner, dy, db);
}

/// [`bias_backward`] summed by `m`.
pub fn bias_backward_with(
    p: &mut Plan,
    m: BiasSum,
    outer: usize,
    channels: usize,
    inner: usize,
    dy: &Tensor,
    db: &Tensor,
) {
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
    let (entry, grid) = match m {
        BiasSum::Serial => ("bias_grad", grid_1d(channels, WG)),
        BiasSum::Workgroup => ("bias_grad_workgroup", grid_1d(channels, 1)),
    };
    p.kernel(&shader!("linear"), entry, &params, &[(3, dy), (4, db)], grid);
}

/// y = x · wᵀ + b (written).
#[allow(clippy::too_many_arguments)]
pub fn forward(
    p: &mut Plan,
    rows: usize,
    in_f: usize,
    out_f: usize,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    y: &Tensor,
) {
    assert_eq!(x.len(), rows * in_f, "linear: x has {} values", x.len());
    assert_eq!(w.len(), out_f * in_f, "linear: w has {} values", w.len());
    assert_eq!(y.len(), rows * out_f, "linear: y has {} values", y.len());
    let s = Matmul {
        trans_b: true,
        ldb: in_f,
        ..Matmul::new(1, rows, in_f, out_f)
    };
    let e = Extra {
        bias: b,
        ..Extra::default()
    };
    matmul_ext(p, &s, &e, None, x, w, y);
}

/// dx += dy · w, dw += dyᵀ · x, db += Σ_rows dy.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    p: &mut Plan,
    rows: usize,
    in_f: usize,
    out_f: usize,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    dx: Option<&Tensor>,
    dw: &Tensor,
    db: Option<&Tensor>,
) {
    assert_eq!(dy.len(), rows * out_f, "linear backward: dy has {} values", dy.len());
    if let Some(dx) = dx {
        let s = Matmul {
            accumulate: true,
            ..Matmul::new(1, rows, out_f, in_f)
        };
        matmul(p, &s, dy, w, dx);
    }
    let s = Matmul {
        trans_a: true,
        lda: out_f,
        accumulate: true,
        ..Matmul::new(1, out_f, rows, in_f)
    };
    matmul(p, &s, dy, x, dw);
    if let Some(db) = db {
        bias_backward(p, rows, out_f, 1, dy, db);
    }
}
