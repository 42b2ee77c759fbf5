//! Channel concatenation `torch.cat([a, b], dim=1)`: `shaders/concat.wgsl`, reference in
//! `src/reference/concat.rs`.

use crate::gpu::{grid_1d, Plan, Tensor};
use crate::shader;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    c1: u32,
    c2: u32,
    hw: u32,
}

/// Workgroup size and elements per invocation of `shaders/concat.wgsl`.
const WG: u32 = 64;
const RUN: usize = 4;

#[allow(clippy::too_many_arguments)]
fn check(n: usize, c1: usize, c2: usize, hw: usize, a: &Tensor, b: &Tensor, y: &Tensor) -> Params {
    assert_eq!(
        a.len(),
        n * c1 * hw,
        "concat: a is {:?}, not ({n}, {c1}, {hw})",
        a.shape()
    );
    assert_eq!(
        b.len(),
        n * c2 * hw,
        "concat: b is {:?}, not ({n}, {c2}, {hw})",
        b.shape()
    );
    assert_eq!(
        y.len(),
        n * (c1 + c2) * hw,
        "concat: y is {:?}, not ({n}, {}, {hw})",
        y.shape(),
        c1 + c2
    );
    Params {
        n: n as u32,
        c1: c1 as u32,
        c2: c2 as u32,
        hw: hw as u32,
    }
}

/// The grid of the run mapping: blocks of RUN·WG elements of the longer run, samples, 2 parts.
fn run_grid(n: usize, c1: usize, c2: usize, hw: usize) -> [u32; 3] {
    assert!(n <= 65535, "concat: batch {n} exceeds 65535 workgroups");
    [
        ((c1.max(c2) * hw).div_ceil(RUN * WG as usize)).max(1) as u32,
        n as u32,
        2,
    ]
}

/// The two mappings of the concatenation (see `shaders/concat.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Mapping {
    /// Runs of 4 elements of one part per invocation: no division, uniform branches (the
    /// heuristic, everywhere).
    Run,
    /// One invocation per element (the readable mapping).
    Flat,
}

/// The mapping measured fastest for this shape on this adapter (see [`crate::ops::tune`]),
/// else [`Mapping::Run`].
fn chosen(p: &Plan, backward: bool, n: usize, c1: usize, c2: usize, hw: usize) -> Mapping {
    let case = crate::ops::tune::Case::Concat {
        backward,
        n,
        c1,
        c2,
        hw,
    };
    p.gpu.tuned(&case).unwrap_or(Mapping::Run)
}

/// y (n, c1+c2, hw) = [a (n, c1, hw), b (n, c2, hw)] along channels.
#[allow(clippy::too_many_arguments)]
pub fn forward(p: &mut Plan, n: usize, c1: usize, c2: usize, hw: usize, a: &Tensor, b: &Tensor, y: &Tensor) {
    match chosen(p, false, n, c1, c2, hw) {
        Mapping::Run => forward_run(p, n, c1, c2, hw, a, b, y),
        Mapping::Flat => forward_flat(p, n, c1, c2, hw, a, b, y),
    }
}

/// [`forward`] with the run mapping.
#[allow(clippy::too_many_arguments)]
pub fn forward_run(p: &mut Plan, n: usize, c1: usize, c2: usize, hw: usize, a: &Tensor, b: &Tensor, y: &Tensor) {
    let params = check(n, c1, c2, hw, a, b, y);
    let grid = run_grid(n, c1, c2, hw);
    p.kernel(&shader!("concat"), "forward", &params, &[(1, a), (2, b), (3, y)], grid);
}

/// da += dy[:, ..c1], db += dy[:, c1..].
#[allow(clippy::too_many_arguments)]
pub fn backward(p: &mut Plan, n: usize, c1: usize, c2: usize, hw: usize, dy: &Tensor, da: &Tensor, db: &Tensor) {
    match chosen(p, true, n, c1, c2, hw) {
        Mapping::Run => backward_run(p, n, c1, c2, hw, dy, da, db),
        Mapping::Flat => backward_flat(p, n, c1, c2, hw, dy, da, db),
    }
}

/// [`backward`] with the run mapping.
#[allow(clippy::too_many_arguments)]
pub fn backward_run(p: &mut Plan, n: usize, c1: usize, c2: usize, hw: usize, dy: &Tensor, da: &Tensor, db: &Tensor) {
    let params = check(n, c1, c2, hw, da, db, dy);
    let grid = run_grid(n, c1, c2, hw);
    p.kernel(
        &shader!("concat"),
        "backward",
        &params,
        &[(4, dy), (5, da), (6, db)],
        grid,
    );
}

/// [`forward`] with one invocation per element (the readable mapping).
#[allow(clippy::too_many_arguments)]
pub fn forward_flat(p: &mut Plan, n: usize, c1: usize, c2: usize, hw: usize, a: &Tensor, b: &Tensor, y: &Tensor) {
    let params = check(n, c1, c2, hw, a, b, y);
    p.kernel(
        &shader!("concat"),
        "forward_flat",
        &params,
        &[(1, a), (2, b), (3, y)],
        grid_1d(y.len(), WG),
    );
}

/// [`backward`] with one invocation per element (the readable mapping).
#[allow(clippy::too_many_arguments)]
pub fn backward_flat(p: &mut Plan, n: usize, c1: usize, c2: usize, hw: usize, dy: &Tensor, da: &Tensor, db: &Tensor) {
    let params = check(n, c1, c2, hw, da, db, dy);
    p.kernel(
        &shader!("concat"),
        "backward_flat",
        &params,
        &[(4, dy), (5, da), (6, db)],
        grid_1d(dy.len(), WG),
    );
}
