//! q_sample, the forward (noising) process of a training step fused with the batch gather:
//! `shaders/q_sample.wgsl`, reference in `src/reference/q_sample.rs`.

use crate::gpu::{grid_1d, KernelRef, Plan, Tensor};
use crate::shader;

/// Shape of one q_sample: `batch` images of (`channels`, `h`, `w`), random horizontal flips when
/// `flip`.
#[derive(Clone, Copy, Debug)]
pub struct QSample {
    pub batch: usize,
    pub channels: usize,
    pub h: usize,
    pub w: usize,
    pub flip: bool,
    /// Index of this batch's first image within a larger batch split into micro-batches: image
    /// b draws the noise and flip coin of image `first + b`, so splitting changes no number.
    pub first: usize,
}

impl QSample {
    /// Elements of the noised batch.
    pub fn len(&self) -> usize {
        self.batch * self.channels * self.h * self.w
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
/// The q_sample kernel's uniforms (see [`set_seed`]).
pub struct Params {
    n: u32,
    chw: u32,
    w: u32,
    flip: u32,
    seed: u32,
    first: u32,
}

fn params(s: &QSample, seed: u32) -> Params {
    Params {
        n: s.len() as u32,
        chw: (s.channels * s.h * s.w) as u32,
        w: s.w as u32,
        flip: s.flip as u32,
        seed,
        first: s.first as u32,
    }
}

/// What q_sample reads.
#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    /// The data set (N_data, C, H, W).
    pub data: &'a Tensor,
    /// Each image's row in `data` and its timestep, (B) each, as f32 integers.
    pub index: &'a Tensor,
    pub t: &'a Tensor,
    /// (T, 2) from `Schedule::q_sample_table`.
    pub table: &'a Tensor,
}

/// x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε and eps = ε for each image b, with x0 = data[index[b]]
/// (mirrored along W when `s.flip` and the coin of (seed, b) says so) and ε ~ N(0, I) drawn from
/// (seed, element); `x_t`, `eps` (B, C, H, W), written. Returns the kernel (see [`set_seed`]).
pub fn forward(p: &mut Plan, s: &QSample, i: Inputs, x_t: &Tensor, eps: &Tensor, seed: u32) -> KernelRef<Params> {
    let Inputs { data, index, t, table } = i;
    let chw = s.channels * s.h * s.w;
    assert!(
        chw > 0 && data.len() >= chw && data.len().is_multiple_of(chw),
        "q_sample: data of {} elements is not a stack of (C, H, W) = ({}, {}, {}) images",
        data.len(),
        s.channels,
        s.h,
        s.w
    );
    assert_eq!(index.len(), s.batch, "q_sample: index needs one row per image");
    assert_eq!(t.len(), s.batch, "q_sample: t needs one timestep per image");
    assert!(
        table.len() >= 2 && table.len().is_multiple_of(2),
        "q_sample: table must be (T, 2)"
    );
    assert_eq!(x_t.len(), s.len(), "q_sample: x_t must be (B, C, H, W)");
    assert_eq!(eps.len(), s.len(), "q_sample: eps must be (B, C, H, W)");
    assert!(
        s.len() <= u32::MAX as usize,
        "q_sample: batch too large for 32-bit counters"
    );
    p.kernel(
        &shader!("q_sample"),
        "forward",
        &params(s, seed),
        &[(1, data), (2, index), (3, t), (4, table), (5, x_t), (6, eps)],
        grid_1d(s.len(), 256),
    )
}

/// Rewrite the seed of the q_sample kernel `kernel` (recorded by [`forward`] with the same `s`)
/// for the next run of the plan.
pub fn set_seed(p: &Plan, kernel: KernelRef<Params>, s: &QSample, seed: u32) {
    p.set_params(kernel, &params(s, seed));
}
