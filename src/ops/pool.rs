//! Global average pooling over the H·W plane of each (n, c): `shaders/pool.wgsl`, reference in
//! `src/reference/pool.rs`.

use crate::gpu::{grid_1d, Plan, Tensor};
use crate::shader;

/// Mirrors `Params` in the shader.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    hw: u32,
    inv_hw: f32,
}

const WG_ROW: u32 = 64;
const WG: u32 = 256;

fn params(what: &str, rows: usize, hw: usize, plane: &Tensor, pooled: &Tensor) -> Params {
    assert!(hw > 0, "{what}: planes of zero elements (hw = 0)");
    assert_eq!(
        plane.len(),
        rows * hw,
        "{what}: input/gradient of {} values is not ({rows} rows, {hw} per row)",
        plane.len()
    );
    assert_eq!(
        pooled.len(),
        rows,
        "{what}: pooled tensor of {} values for {rows} rows",
        pooled.len()
    );
    Params {
        rows: rows as u32,
        hw: hw as u32,
        inv_hw: (1.0 / hw as f64) as f32,
    }
}

/// y[r] = mean of x[r·hw .. (r+1)·hw] (written). `x`: (rows, hw) flat, e.g. an (N, C, H, W) tensor
/// with rows = N·C, hw = H·W; `y`: (rows).
pub fn global_avg_forward(p: &mut Plan, rows: usize, hw: usize, x: &Tensor, y: &Tensor) {
    let q = params("global_avg_forward", rows, hw, x, y);
    p.kernel(
        &shader!("pool"),
        "global_avg_forward",
        &q,
        &[(1, x), (2, y)],
        grid_1d(rows, WG_ROW),
    );
}

/// dx[r·hw + i] += dy[r] / hw (accumulated). `dy`: (rows); `dx`: (rows, hw) flat.
pub fn global_avg_backward(p: &mut Plan, rows: usize, hw: usize, dy: &Tensor, dx: &Tensor) {
    let q = params("global_avg_backward", rows, hw, dx, dy);
    p.kernel(
        &shader!("pool"),
        "global_avg_backward",
        &q,
        &[(3, dy), (4, dx)],
        grid_1d(rows * hw, WG),
    );
}
