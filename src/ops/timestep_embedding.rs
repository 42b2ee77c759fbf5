//! Sinusoidal timestep embedding (diffusers `get_timestep_embedding`):
//! `shaders/timestep_embedding.wgsl`, reference in `src/reference/timestep_embedding.rs`.

use crate::gpu::{grid_1d, Plan, Tensor};
use crate::shader;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    dim: u32,
    flip: u32,
    freq_shift: f32,
}

const WG: u32 = 256;

/// y (n, dim) = embedding of the timesteps t (n, as f32): [sin, cos] of t·exp(−ln(10⁴)·j/(dim/2 −
/// freq_shift)), j < dim/2 ([cos, sin] when `flip_sin_to_cos`), a zero column last for odd dim.
pub fn forward(p: &mut Plan, n: usize, dim: usize, flip_sin_to_cos: bool, freq_shift: f32, t: &Tensor, y: &Tensor) {
    assert_eq!(t.len(), n, "timestep_embedding: t is {:?}, not ({n})", t.shape());
    assert_eq!(
        y.len(),
        n * dim,
        "timestep_embedding: y is {:?}, not ({n}, {dim})",
        y.shape()
    );
    assert!(
        dim < 2 || (dim / 2) as f32 != freq_shift,
        "timestep_embedding: dim/2 = freq_shift divides by zero"
    );
    let params = Params {
        n: n as u32,
        dim: dim as u32,
        flip: flip_sin_to_cos as u32,
        freq_shift,
    };
    p.kernel(
        &shader!("timestep_embedding"),
        "forward",
        &params,
        &[(1, t), (2, y)],
        grid_1d(n * dim, WG),
    );
}
