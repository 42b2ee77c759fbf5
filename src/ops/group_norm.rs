//! Group normalization: `shaders/group_norm.wgsl`, reference in `src/reference/group_norm.rs`.
//!
//! Three mappings of the same math are kept (see the shader header): [`Mapping::Workgroup`], one
//! workgroup per (sample, group) with a tree reduction, [`Mapping::Subgroup`], the same with
//! subgroup operations (adapters with `wgpu::Features::SUBGROUP` only, see [`Mapping::candidates`]),
//! and [`Mapping::Serial`], one invocation per (sample, group) with no barriers. [`forward`] /
//! [`backward`] choose with [`Mapping::for_adapter`].
//!
//! [`forward_silu`] / [`backward_silu`] are the same kernels fused with the SiLU that follows the
//! norm in the U-Net: the forward writes a = silu(group_norm(x)) only, and the backward takes
//! ∂L/∂a and recomputes group_norm(x) from x and the saved statistics, so neither the normalized
//! tensor nor separate SiLU passes exist. Unfused, `forward` then `silu::forward` is the readable
//! equivalent (both are tested against the same reference).

use crate::gpu::{grid_1d, Gpu, Plan, Shader, Tensor};
use crate::shader;

/// Shape and settings of a `nn.GroupNorm(groups, c, eps, affine=True)` applied to x (n, c, hw),
/// hw = H·W flattened.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct GroupNorm {
    pub n: usize,
    pub c: usize,
    pub hw: usize,
    pub groups: usize,
    pub eps: f32,
}

/// Which kernels compute the group norm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Mapping {
    /// One workgroup (64 invocations) per (sample, group), shared-memory tree reduction.
    Workgroup,
    /// One invocation per (sample, group), serial loops, no barriers (fast on CPU drivers).
    Serial,
    /// As `Workgroup`, the sums added with `subgroupAdd` within each subgroup, then across
    /// subgroups through workgroup memory with one barrier. Needs `wgpu::Features::SUBGROUP`.
    Subgroup,
}

impl Mapping {
    /// `Serial` on CPU adapters (lavapipe), where workgroup barriers are emulated and slow;
    /// `Workgroup` on GPUs, where one invocation per group leaves most of the device idle.
    pub fn for_adapter(gpu: &Gpu) -> Mapping {
        if gpu.info.device_type == wgpu::DeviceType::Cpu {
            Mapping::Serial
        } else {
            Mapping::Workgroup
        }
    }

    /// The mapping measured fastest for this norm (forward or `backward`, fused with SiLU or not)
    /// on this adapter (see [`crate::ops::tune`]), else [`Mapping::for_adapter`].
    pub fn chosen(gpu: &Gpu, backward: bool, silu: bool, s: &GroupNorm) -> Mapping {
        let case = crate::ops::tune::Case::GroupNorm {
            backward,
            silu,
            shape: *s,
        };
        gpu.tuned(&case).unwrap_or_else(|| Mapping::for_adapter(gpu))
    }

    /// Every mapping that can run on `gpu`: `Subgroup` only where the device has subgroup
    /// operations.
    pub fn candidates(gpu: &Gpu) -> Vec<Mapping> {
        let mut all = vec![Mapping::Workgroup, Mapping::Serial];
        if gpu.features.contains(wgpu::Features::SUBGROUP) {
            all.push(Mapping::Subgroup);
        }
        all
    }
}

/// The last section of `shaders/group_norm.wgsl`, which uses subgroup operations, starts here.
const SUBGROUP_SECTION: &str = "// ==== subgroup mapping";

/// `shaders/group_norm.wgsl` cut before its subgroup section: the `Workgroup` and `Serial`
/// kernels, for every adapter (a module that uses subgroup operations fails to create without them).
pub fn base_shader() -> Shader {
    let full = shader!("group_norm");
    let end = full
        .source
        .find(SUBGROUP_SECTION)
        .expect("group_norm.wgsl: the subgroup section's first line is missing");
    Shader {
        name: "group_norm",
        source: &full.source[..end],
    }
}

/// The whole of `shaders/group_norm.wgsl`, the `Subgroup` kernels included: only for a device
/// with `wgpu::Features::SUBGROUP`.
pub fn subgroup_shader() -> Shader {
    Shader {
        name: "group_norm_subgroup",
        ..shader!("group_norm")
    }
}

/// The module and entry point suffix of mapping `m`'s kernels, refusing `Subgroup` on a device
/// without subgroups.
fn kernels(gpu: &Gpu, m: Mapping) -> (Shader, &'static str) {
    match m {
        Mapping::Workgroup => (base_shader(), ""),
        Mapping::Serial => (base_shader(), "_serial"),
        Mapping::Subgroup => {
            assert!(
                gpu.features.contains(wgpu::Features::SUBGROUP),
                "group_norm: Mapping::Subgroup on adapter '{}', which lacks subgroup operations \
                 (see Mapping::candidates)",
                gpu.info.name
            );
            (subgroup_shader(), "_subgroup")
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    c: u32,
    hw: u32,
    groups: u32,
    eps: f32,
    silu: u32,
}

const WG_SERIAL: u32 = 64;

impl GroupNorm {
    fn params(&self, silu: bool) -> Params {
        assert!(
            self.groups > 0 && self.c.is_multiple_of(self.groups),
            "group_norm: {} channels do not split into {} groups",
            self.c,
            self.groups
        );
        assert!(self.hw > 0, "group_norm: empty spatial size");
        Params {
            n: self.n as u32,
            c: self.c as u32,
            hw: self.hw as u32,
            groups: self.groups as u32,
            eps: self.eps,
            silu: silu as u32,
        }
    }

    fn check(&self, what: &str, t: &Tensor, len: usize) {
        assert_eq!(
            t.len(),
            len,
            "group_norm {self:?}: {what} has {} elements, want {len}",
            t.len()
        );
    }
}

/// y = (x − μ)·rstd·γ + β per (sample, group); writes y, and mean and rstd (n·groups) for the
/// backward.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    p: &mut Plan,
    s: &GroupNorm,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    y: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
) {
    let m = Mapping::chosen(&p.gpu, false, false, s);
    forward_with(p, m, s, x, gamma, beta, y, mean, rstd);
}

/// [`forward`] with an explicit [`Mapping`].
#[allow(clippy::too_many_arguments)]
pub fn forward_with(
    p: &mut Plan,
    m: Mapping,
    s: &GroupNorm,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    y: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
) {
    record_forward(p, m, s, false, x, gamma, beta, y, mean, rstd);
}

/// a = silu((x − μ)·rstd·γ + β) per (sample, group), one pass fused: writes a, and mean and rstd
/// (n·groups) for [`backward_silu`]. The normalized tensor itself is not written.
#[allow(clippy::too_many_arguments)]
pub fn forward_silu(
    p: &mut Plan,
    s: &GroupNorm,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    a: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
) {
    let m = Mapping::chosen(&p.gpu, false, true, s);
    forward_silu_with(p, m, s, x, gamma, beta, a, mean, rstd);
}

/// [`forward_silu`] with an explicit [`Mapping`].
#[allow(clippy::too_many_arguments)]
pub fn forward_silu_with(
    p: &mut Plan,
    m: Mapping,
    s: &GroupNorm,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    a: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
) {
    record_forward(p, m, s, true, x, gamma, beta, a, mean, rstd);
}

#[allow(clippy::too_many_arguments)]
fn record_forward(
    p: &mut Plan,
    m: Mapping,
    s: &GroupNorm,
    silu: bool,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    y: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
) {
    let params = s.params(silu);
    let (numel, stats) = (s.n * s.c * s.hw, s.n * s.groups);
    s.check("x", x, numel);
    s.check("y", y, numel);
    s.check("gamma", gamma, s.c);
    s.check("beta", beta, s.c);
    s.check("mean", mean, stats);
    s.check("rstd", rstd, stats);
    let bindings = [(1, x), (2, gamma), (3, beta), (4, y), (5, mean), (6, rstd)];
    let (sh, suffix) = kernels(&p.gpu, m);
    // Serial: one invocation per (sample, group); the others one workgroup each.
    let per_workgroup = if m == Mapping::Serial { WG_SERIAL } else { 1 };
    p.kernel(
        &sh,
        &format!("forward{suffix}"),
        &params,
        &bindings,
        grid_1d(stats, per_workgroup),
    );
}

/// dx += ∂L/∂x, dgamma += ∂L/∂γ, dbeta += ∂L/∂β given dy = ∂L/∂y and the saved mean and rstd.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    p: &mut Plan,
    s: &GroupNorm,
    x: &Tensor,
    gamma: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    dy: &Tensor,
    dx: &Tensor,
    dgamma: &Tensor,
    dbeta: &Tensor,
) {
    let m = Mapping::chosen(&p.gpu, true, false, s);
    backward_with(p, m, s, x, gamma, mean, rstd, dy, dx, dgamma, dbeta);
}

/// [`backward`] with an explicit [`Mapping`]. Two kernels: dx per (sample, group), then the
/// parameter gradients per channel (`Serial`: from per-(sample, channel) sums the dx kernel leaves
/// in a small scratch tensor, allocated here when the plan is built).
#[allow(clippy::too_many_arguments)]
pub fn backward_with(
    p: &mut Plan,
    m: Mapping,
    s: &GroupNorm,
    x: &Tensor,
    gamma: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    dy: &Tensor,
    dx: &Tensor,
    dgamma: &Tensor,
    dbeta: &Tensor,
) {
    // The kernels use β only for the fused SiLU: `gamma` fills its binding here, its values unused.
    record_backward(p, m, s, false, x, gamma, gamma, mean, rstd, dy, dx, dgamma, dbeta);
}

/// The backward of [`forward_silu`]: dx += ∂L/∂x, dgamma += ∂L/∂γ, dbeta += ∂L/∂β given
/// da = ∂L/∂a and the saved mean and rstd (the normalized values are recomputed from x).
#[allow(clippy::too_many_arguments)]
pub fn backward_silu(
    p: &mut Plan,
    s: &GroupNorm,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    da: &Tensor,
    dx: &Tensor,
    dgamma: &Tensor,
    dbeta: &Tensor,
) {
    let m = Mapping::chosen(&p.gpu, true, true, s);
    backward_silu_with(p, m, s, x, gamma, beta, mean, rstd, da, dx, dgamma, dbeta);
}

/// [`backward_silu`] with an explicit [`Mapping`] (the same two kernels as [`backward_with`]).
#[allow(clippy::too_many_arguments)]
pub fn backward_silu_with(
    p: &mut Plan,
    m: Mapping,
    s: &GroupNorm,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    da: &Tensor,
    dx: &Tensor,
    dgamma: &Tensor,
    dbeta: &Tensor,
) {
    s.check("beta", beta, s.c);
    record_backward(p, m, s, true, x, gamma, beta, mean, rstd, da, dx, dgamma, dbeta);
}

#[allow(clippy::too_many_arguments)]
fn record_backward(
    p: &mut Plan,
    m: Mapping,
    s: &GroupNorm,
    silu: bool,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    dy: &Tensor,
    dx: &Tensor,
    dgamma: &Tensor,
    dbeta: &Tensor,
) {
    let params = s.params(silu);
    let (numel, stats) = (s.n * s.c * s.hw, s.n * s.groups);
    s.check("x", x, numel);
    s.check("dy", dy, numel);
    s.check("dx", dx, numel);
    s.check("gamma", gamma, s.c);
    s.check("dgamma", dgamma, s.c);
    s.check("dbeta", dbeta, s.c);
    s.check("mean", mean, stats);
    s.check("rstd", rstd, stats);
    let dx_bindings = [(1, x), (2, gamma), (3, beta), (7, mean), (8, rstd), (9, dy), (10, dx)];
    let (sh, suffix) = kernels(&p.gpu, m);
    match m {
        Mapping::Workgroup | Mapping::Subgroup => {
            let param_bindings = [
                (1, x),
                (2, gamma),
                (3, beta),
                (7, mean),
                (8, rstd),
                (9, dy),
                (11, dgamma),
                (12, dbeta),
            ];
            p.kernel(
                &sh,
                &format!("backward_dx{suffix}"),
                &params,
                &dx_bindings,
                grid_1d(stats, 1),
            );
            p.kernel(
                &sh,
                &format!("backward_params{suffix}"),
                &params,
                &param_bindings,
                grid_1d(s.c, 1),
            );
        }
        Mapping::Serial => {
            // Per-(sample, channel) (Σ dn·x̂, Σ dn), made once when the plan is built.
            let partial = p.gpu.zeros(&[s.n, s.c, 2]);
            let mut dx_bindings = dx_bindings.to_vec();
            dx_bindings.push((13, &partial));
            p.kernel(
                &sh,
                "backward_dx_serial",
                &params,
                &dx_bindings,
                grid_1d(stats, WG_SERIAL),
            );
            p.kernel(
                &sh,
                "backward_params_serial",
                &params,
                &[(14, &partial), (11, dgamma), (12, dbeta)],
                grid_1d(s.c, WG_SERIAL),
            );
        }
    }
}
