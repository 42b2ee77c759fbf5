//! Large reductions of a whole tensor into one value: `shaders/reduce.wgsl`, reference in
//! `src/reference/reduce.rs`.
//!
//! Hierarchical: each level sums groups of at most [`CHUNK`] values into `⌈n / CHUNK⌉` partials
//! (scratch tensors allocated once, when the op is recorded), until one value is left, which the
//! last level writes to `out[0]`. 35.7M elements take 5 levels; see the shader for the error bound.
//!
//! [`Variant::Subgroup`] makes the levels with subgroup operations instead, one workgroup per
//! [`BLOCK`] values (adapters with `wgpu::Features::SUBGROUP` only, see [`Variant::candidates`]).
//! [`sum`] / [`sum_squares`] run [`Variant::Levels`]; `*_with` run a given variant.

use crate::gpu::{grid_1d, Gpu, Plan, Shader, Tensor};
use crate::shader;

/// Values summed by one invocation of one level.
pub(crate) const CHUNK: usize = 64;
const WG: u32 = 256;
/// Values summed by one workgroup of one level of [`Variant::Subgroup`] (`BLOCK` in the shader).
pub const BLOCK: usize = 16 * WG as usize;

/// How the levels of [`sum_with`] / [`sum_squares_with`] are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// One invocation per partial of ≤ [`CHUNK`] values, no workgroup memory.
    Levels,
    /// One workgroup per partial of ≤ [`BLOCK`] values: `subgroupAdd`, then one barrier across
    /// subgroups. Needs `wgpu::Features::SUBGROUP`.
    Subgroup,
}

impl Variant {
    /// Every variant that can run on `gpu`: `Subgroup` only where the device has subgroup
    /// operations.
    pub fn candidates(gpu: &Gpu) -> Vec<Variant> {
        let mut all = vec![Variant::Levels];
        if gpu.features.contains(wgpu::Features::SUBGROUP) {
            all.push(Variant::Subgroup);
        }
        all
    }
}

/// The last section of `shaders/reduce.wgsl`, which uses subgroup operations, starts here.
const SUBGROUP_SECTION: &str = "// ==== subgroup variant";

/// `shaders/reduce.wgsl` cut before its subgroup section, for every adapter (a module that uses
/// subgroup operations fails to create without them).
pub fn base_shader() -> Shader {
    let full = shader!("reduce");
    let end = full
        .source
        .find(SUBGROUP_SECTION)
        .expect("reduce.wgsl: the subgroup section's first line is missing");
    Shader {
        name: "reduce",
        source: &full.source[..end],
    }
}

/// The whole of `shaders/reduce.wgsl`, `partial_sums_subgroup` included: only for a device with
/// `wgpu::Features::SUBGROUP`.
pub fn subgroup_shader() -> Shader {
    Shader {
        name: "reduce_subgroup",
        ..shader!("reduce")
    }
}

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
    let q = level_params(src, dst, square, scale);
    let grid = grid_1d(dst.len(), WG);
    p.kernel(&base_shader(), "partial_sums", &q, &[(1, src), (2, dst)], grid);
}

/// Record one level of [`Variant::Subgroup`]: `dst[w] = scale · Σ_t f(src[w·BLOCK + t])`,
/// `t < BLOCK`, with `dst.len() = ⌈src.len() / BLOCK⌉`: one workgroup per block.
fn subgroup_level(p: &mut Plan, src: &Tensor, dst: &Tensor, square: bool, scale: f32) {
    let q = level_params(src, dst, square, scale);
    let grid = grid_1d(dst.len(), 1);
    p.kernel(
        &subgroup_shader(),
        "partial_sums_subgroup",
        &q,
        &[(1, src), (2, dst)],
        grid,
    );
}

fn level_params(src: &Tensor, dst: &Tensor, square: bool, scale: f32) -> Params {
    Params {
        n: src.len() as u32,
        m: dst.len() as u32,
        square: square as u32,
        scale,
    }
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

fn reduce(p: &mut Plan, v: Variant, x: &Tensor, out: &Tensor, square: bool) {
    check_bindable(p, "reduce", x.len());
    assert!(!out.is_empty(), "reduce: out must hold at least one element");
    match v {
        Variant::Levels => {
            let m = partial_count(x.len());
            if m == 1 {
                level(p, x, &out.view(0, &[1]), square, 1.0);
            } else {
                let partials = p.gpu.zeros(&[m]);
                level(p, x, &partials, square, 1.0);
                finish(p, &partials, out, 1.0);
            }
        }
        Variant::Subgroup => {
            assert!(
                p.gpu.features.contains(wgpu::Features::SUBGROUP),
                "reduce: Variant::Subgroup on adapter '{}', which lacks subgroup operations \
                 (see Variant::candidates)",
                p.gpu.info.name
            );
            // Square on the first level only; the last writes out[0].
            let (mut src, mut square) = (x.clone(), square);
            loop {
                let m = src.len().div_ceil(BLOCK).max(1);
                let dst = if m == 1 { out.view(0, &[1]) } else { p.gpu.zeros(&[m]) };
                subgroup_level(p, &src, &dst, square, 1.0);
                if m == 1 {
                    return;
                }
                (src, square) = (dst, false);
            }
        }
    }
}

/// out[0] = Σ x (written). Deterministic; an empty `x` gives 0.
pub fn sum(p: &mut Plan, x: &Tensor, out: &Tensor) {
    sum_with(p, Variant::Levels, x, out);
}

/// out[0] = Σ x² (written): the squared global norm used for gradient clipping.
pub fn sum_squares(p: &mut Plan, x: &Tensor, out: &Tensor) {
    sum_squares_with(p, Variant::Levels, x, out);
}

/// [`sum`] with an explicit [`Variant`].
pub fn sum_with(p: &mut Plan, v: Variant, x: &Tensor, out: &Tensor) {
    reduce(p, v, x, out, false);
}

/// [`sum_squares`] with an explicit [`Variant`].
pub fn sum_squares_with(p: &mut Plan, v: Variant, x: &Tensor, out: &Tensor) {
    reduce(p, v, x, out, true);
}
