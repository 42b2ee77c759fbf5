//! Group normalization: `shaders/group_norm.wgsl`, reference in `src/reference/group_norm.rs`.
//!
//! Three mappings of the same math are kept (see the shader header): [`Mapping::Workgroup`], one
//! workgroup per (sample, group) with a tree reduction, [`Mapping::Subgroup`], the same with
//! subgroup operations (adapters with `wgpu::Features::SUBGROUP` only, see [`Mapping::candidates`]),
//! and [`Mapping::Serial`], one invocation per (sample, group) with no barriers. [`forward`] /
//! [`backward`] record the mapping [`Options::mapping`] names, else the one tuned for the shape,
//! else [`Mapping::for_adapter`].
//!
//! With [`Options::silu`] the same kernels are fused with the SiLU that follows the norm in the
//! U-Net: the forward writes a = silu(group_norm(x)) only, and the backward takes ∂L/∂a and
//! recomputes group_norm(x) from x and the saved statistics, so neither the normalized tensor nor
//! separate SiLU passes exist. Unfused, `forward` then `silu::forward` is the readable equivalent
//! (both are tested against the same reference).

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

    fn check_tensors(&self, t: &Tensors) {
        self.check("x", t.x, self.n * self.c * self.hw);
        self.check("gamma", t.gamma, self.c);
        self.check("beta", t.beta, self.c);
        self.check("mean", t.mean, self.n * self.groups);
        self.check("rstd", t.rstd, self.n * self.groups);
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

/// One group norm's tensors: its input, its affine parameters, and the statistics the forward
/// saves for the backward (mean and rstd, n·groups each).
#[derive(Clone, Copy)]
pub struct Tensors<'a> {
    pub x: &'a Tensor,
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
    pub mean: &'a Tensor,
    pub rstd: &'a Tensor,
}

/// The backward's gradients: `dy` (∂L/∂y, or ∂L/∂a with the fused SiLU) is read; `dx`, `dgamma`
/// and `dbeta` accumulate.
#[derive(Clone, Copy)]
pub struct Grads<'a> {
    pub dy: &'a Tensor,
    pub dx: &'a Tensor,
    pub dgamma: &'a Tensor,
    pub dbeta: &'a Tensor,
}

/// How a group norm is recorded.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Fuse the SiLU that follows the norm: the forward writes a = silu(y), not y, and the
    /// backward takes ∂L/∂a and recomputes y from x and the saved statistics.
    pub silu: bool,
    /// The kernels; `None` takes the mapping tuned for this shape on this adapter, else
    /// [`Mapping::for_adapter`].
    pub mapping: Option<Mapping>,
}

impl Options {
    /// Group norm then SiLU in one pass, on the chosen mapping.
    pub const SILU: Options = Options {
        silu: true,
        mapping: None,
    };

    fn mapping(&self, gpu: &Gpu, backward: bool, s: &GroupNorm) -> Mapping {
        self.mapping
            .unwrap_or_else(|| Mapping::chosen(gpu, backward, self.silu, s))
    }
}

/// y = (x − μ)·rstd·γ + β per (sample, group), or a = silu(y) with [`Options::silu`] (y itself is
/// then not written); writes `y` and the saved mean and rstd.
pub fn forward(p: &mut Plan, s: &GroupNorm, o: Options, t: Tensors, y: &Tensor) {
    let m = o.mapping(&p.gpu, false, s);
    let params = s.params(o.silu);
    let (numel, stats) = (s.n * s.c * s.hw, s.n * s.groups);
    s.check_tensors(&t);
    s.check("y", y, numel);
    let bindings = [(1, t.x), (2, t.gamma), (3, t.beta), (4, y), (5, t.mean), (6, t.rstd)];
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

/// dx += ∂L/∂x, dgamma += ∂L/∂γ, dbeta += ∂L/∂β given `g.dy` and the saved mean and rstd. Two
/// kernels: dx per (sample, group), then the parameter gradients per channel (`Serial`: from
/// per-(sample, channel) sums the dx kernel leaves in a small scratch tensor, allocated here when
/// the plan is built).
pub fn backward(p: &mut Plan, s: &GroupNorm, o: Options, t: Tensors, g: Grads) {
    let m = o.mapping(&p.gpu, true, s);
    let params = s.params(o.silu);
    let numel = s.n * s.c * s.hw;
    s.check_tensors(&t);
    s.check("dy", g.dy, numel);
    s.check("dx", g.dx, numel);
    s.check("dgamma", g.dgamma, s.c);
    s.check("dbeta", g.dbeta, s.c);
    let stats = s.n * s.groups;
    let saved = [(1, t.x), (2, t.gamma), (3, t.beta), (7, t.mean), (8, t.rstd), (9, g.dy)];
    let mut dx_bindings = saved.to_vec();
    dx_bindings.push((10, g.dx));
    let (sh, suffix) = kernels(&p.gpu, m);
    match m {
        Mapping::Workgroup | Mapping::Subgroup => {
            let mut param_bindings = saved.to_vec();
            param_bindings.extend([(11, g.dgamma), (12, g.dbeta)]);
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
                &[(14, &partial), (11, g.dgamma), (12, g.dbeta)],
                grid_1d(s.c, WG_SERIAL),
            );
        }
    }
}
