//! Elementwise plumbing (fill, copy, add, scale, axpy, channel-bias broadcast):
//! `shaders/elementwise.wgsl`, reference in `src/reference/elementwise.rs`.
//!
//! Outputs bound `read_write` must not live in the same buffer as an input of the same call
//! (wgpu rejects a buffer bound both read-only and read-write in one dispatch); in-place updates
//! are `axpy` (y += αx) and `scale` with `x` and `y` the same view.

use crate::gpu::{grid_1d, Plan, Tensor};
use crate::shader;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    hw: u32,
    alpha: f32,
}

const WG: u32 = 256;

fn launch(p: &mut Plan, entry: &str, n: usize, hw: usize, alpha: f32, tensors: &[(u32, &Tensor)]) {
    let params = Params {
        n: n as u32,
        hw: hw as u32,
        alpha,
    };
    p.kernel(&shader!("elementwise"), entry, &params, tensors, grid_1d(n, WG));
}

fn same_len(what: &str, a: &Tensor, b: &Tensor) {
    assert_eq!(
        a.len(),
        b.len(),
        "{what}: lengths differ ({:?} vs {:?})",
        a.shape(),
        b.shape()
    );
}

/// t = value.
pub fn fill(p: &mut Plan, t: &Tensor, value: f32) {
    launch(p, "fill", t.len(), 1, value, &[(3, t)]);
}

/// y = x.
pub fn copy(p: &mut Plan, x: &Tensor, y: &Tensor) {
    same_len("copy", x, y);
    launch(p, "copy", x.len(), 1, 0.0, &[(1, x), (3, y)]);
}

/// y = a + b.
pub fn add(p: &mut Plan, a: &Tensor, b: &Tensor, y: &Tensor) {
    same_len("add", a, y);
    same_len("add", b, y);
    launch(p, "add", y.len(), 1, 0.0, &[(1, a), (2, b), (3, y)]);
}

/// y = alpha·x. `x` and `y` may be the same view (in-place scaling).
pub fn scale(p: &mut Plan, alpha: f32, x: &Tensor, y: &Tensor) {
    same_len("scale", x, y);
    if std::sync::Arc::ptr_eq(&x.buffer, &y.buffer) && x.offset == y.offset {
        launch(p, "scale_in_place", y.len(), 1, alpha, &[(3, y)]);
    } else {
        launch(p, "scale", y.len(), 1, alpha, &[(1, x), (3, y)]);
    }
}

/// y += alpha·x.
pub fn axpy(p: &mut Plan, alpha: f32, x: &Tensor, y: &Tensor) {
    same_len("axpy", x, y);
    launch(p, "axpy", y.len(), 1, alpha, &[(1, x), (3, y)]);
}

fn check_channel_bias(n: usize, c: usize, hw: usize, x: &Tensor, v: &Tensor, y: &Tensor) {
    assert_eq!(
        x.len(),
        n * c * hw,
        "add_channel_bias: x is {:?}, not ({n}, {c}, {hw})",
        x.shape()
    );
    assert_eq!(v.len(), n * c, "add_channel_bias: v is {:?}, not ({n}, {c})", v.shape());
    same_len("add_channel_bias", x, y);
}

/// The two mappings of [`add_channel_bias`] (see `shaders/elementwise.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BiasMapping {
    /// Runs of pixels of one (n, c) plane per invocation, the bias uniform per workgroup.
    Plane,
    /// One invocation per element.
    Flat,
}

impl BiasMapping {
    /// The heuristic: the plane mapping from `PLANE_MIN` pixels per plane.
    pub fn for_shape(hw: usize) -> BiasMapping {
        if hw < PLANE_MIN {
            BiasMapping::Flat
        } else {
            BiasMapping::Plane
        }
    }
}

/// y = x + v[n,c] broadcast over hw; x, y (n, c, hw), v (n, c), `shape` [n, c, hw]. Runs mapping
/// `m`, else the one measured fastest for the shape on this adapter (see [`crate::ops::tune`]),
/// else [`BiasMapping::for_shape`].
pub fn add_channel_bias(p: &mut Plan, shape: [usize; 3], m: Option<BiasMapping>, x: &Tensor, v: &Tensor, y: &Tensor) {
    let [n, c, hw] = shape;
    check_channel_bias(n, c, hw, x, v, y);
    let case = crate::ops::tune::Case::ChannelBias { n, c, hw };
    let m = m.or_else(|| p.gpu.tuned(&case)).unwrap_or(BiasMapping::for_shape(hw));
    let bindings = [(1, x), (2, v), (3, y)];
    match m {
        BiasMapping::Plane => {
            let params = Params {
                n: (n * c * hw) as u32,
                hw: hw as u32,
                alpha: 0.0,
            };
            // Blocks of PLANE_RUN·PLANE_WG = 4·64 pixels on x; the (n, c) planes on y and z.
            let planes = (n * c).max(1);
            let (y_groups, z_groups) = (planes.min(65535), planes.div_ceil(65535));
            let grid = [hw.div_ceil(4 * 64).max(1) as u32, y_groups as u32, z_groups as u32];
            p.kernel(&shader!("elementwise"), "add_channel_bias", &params, &bindings, grid);
        }
        // One invocation per element (the readable mapping).
        BiasMapping::Flat => launch(p, "add_channel_bias_flat", n * c * hw, hw, 0.0, &bindings),
    }
}

/// Planes smaller than this take the flat mapping of `add_channel_bias` (see the shader header).
const PLANE_MIN: usize = 128;

/// dv[n,c] += Σ_hw dy[n,c,hw], `shape` [n, c, hw].
pub fn add_channel_bias_backward(p: &mut Plan, shape: [usize; 3], dy: &Tensor, dv: &Tensor) {
    let [n, c, hw] = shape;
    assert_eq!(
        dy.len(),
        n * c * hw,
        "add_channel_bias_backward: dy is {:?}, not ({n}, {c}, {hw})",
        dy.shape()
    );
    assert_eq!(
        dv.len(),
        n * c,
        "add_channel_bias_backward: dv is {:?}, not ({n}, {c})",
        dv.shape()
    );
    launch(p, "add_channel_bias_backward", n * c, hw, 0.0, &[(1, dy), (3, dv)]);
}
