//! Large reductions of a whole tensor into one value: `shaders/reduce.wgsl`, reference in
//! `src/reference/reduce.rs`.
//!
//! Hierarchical: each level sums groups of at most [`CHUNK`] values into `⌈n / CHUNK⌉` partials
//! (scratch tensors allocated once, when the op is recorded), until one value is left, which the
//! last level writes to `out[0]`. 35.7M elements take 5 levels; see the shader for the error bound.

use crate::gpu::{grid_1d, Plan, Tensor};
use crate::shader;

/// Values summed by one invocation of one level.
pub(crate) const CHUNK: usize = 64;
const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    m: u32,
    square: u32,
    scale: f32,
}

/// Number of partials one level makes of `n` values (at least 1).
pub(crate) fn partial_count(n: usize) -> usize {
    n.div_ceil(CHUNK).max(1)
}

/// Panics with a clear message when a tensor of `n` floats cannot be bound as one storage binding
/// (lavapipe: 128 MiB = 33.5M floats) or indexed with u32 arithmetic in the shaders.
pub(crate) fn check_bindable(p: &Plan, what: &str, n: usize) {
    let limit = p.gpu.limits.max_storage_buffer_binding_size;
    assert!(
        (n as u64) * 4 <= limit && n < (1 << 30),
        "{what}: {n} floats ({} MiB) exceed this adapter's max_storage_buffer_binding_size ({} MiB); \
         split the buffer",
        (n as u64 * 4) >> 20,
        limit >> 20
    );
}

/// Record one level: `dst[j] = scale · Σ_k f(src[j + k·m])` with `m = dst.len()`.
fn level(p: &mut Plan, src: &Tensor, dst: &Tensor, square: bool, scale: f32) {
    let m = dst.len();
    p.kernel(
        &shader!("reduce"),
        "partial_sums",
        &Params {
            n: src.len() as u32,
            m: m as u32,
            square: square as u32,
            scale,
        },
        &[(1, src), (2, dst)],
        grid_1d(m, WG),
    );
}

/// Reduce `partials` to `out[0] = scale · Σ partials` (used after a fused first level, as in
/// `ops::loss`). Records nothing but the levels; `partials` must not alias `out`.
pub(crate) fn finish(p: &mut Plan, partials: &Tensor, out: &Tensor, scale: f32) {
    let mut src = partials.clone();
    loop {
        let m = partial_count(src.len());
        let dst = if m == 1 { out.view(0, &[1]) } else { p.gpu.zeros(&[m]) };
        level(p, &src, &dst, false, if m == 1 { scale } else { 1.0 });
        if m == 1 {
            return;
        }
        src = dst;
    }
}

fn reduce(p: &mut Plan, x: &Tensor, out: &Tensor, square: bool) {
    check_bindable(p, "reduce", x.len());
    assert!(!out.is_empty(), "reduce: out must hold at least one element");
    let m = partial_count(x.len());
    if m == 1 {
        level(p, x, &out.view(0, &[1]), square, 1.0);
    } else {
        let partials = p.gpu.zeros(&[m]);
        level(p, x, &partials, square, 1.0);
        finish(p, &partials, out, 1.0);
    }
}

/// out[0] = Σ x (written). Deterministic; an empty `x` gives 0.
pub fn sum(p: &mut Plan, x: &Tensor, out: &Tensor) {
    reduce(p, x, out, false);
}

/// out[0] = Σ x² (written): the squared global norm used for gradient clipping.
pub fn sum_squares(p: &mut Plan, x: &Tensor, out: &Tensor) {
    reduce(p, x, out, true);
}
