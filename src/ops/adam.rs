//! Adam / AdamW with global-norm gradient clipping over one flat parameter buffer:
//! `shaders/adam.wgsl`, reference in `src/reference/adam.rs` (PyTorch semantics).
//!
//! Per training step the plan holds, in order:
//! ```text
//! ops::reduce::sum_squares(p, &grads, &sumsq);                    // global squared norm
//! let idx = ops::adam::step(p, &params, &grads, &m, &v, &sumsq, &hp);
//! ```
//! and before each run of the plan the trainer rewrites the kernel's uniform with the step count
//! and the (warmed-up) learning rate — `at_step` recomputes the bias corrections:
//! ```text
//! plan.set_params(idx, &AdamParams { lr: lr_at(t), ..hp }.at_step(t));
//! ```
//! `m` and `v` start at zero; `grads` is read, never modified (clipping scales on the fly).

use crate::gpu::{grid_1d, KernelRef, Plan, Tensor};
use crate::ops::reduce;
use crate::shader;

const WG: u32 = 256;

/// Hyper-parameters of one Adam/AdamW step; also the kernel's uniform block, field by field
/// (mirrors `Params` in `shaders/adam.wgsl`).
///
/// Build with [`AdamParams::new`] (PyTorch defaults, no clipping, step 1), change fields with
/// struct-update syntax, and ALWAYS finish with [`AdamParams::at_step`], which sets `step`, `bc1`
/// and `bc2` consistently (the kernel uses `bc1`/`bc2`, not `step`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct AdamParams {
    /// Elements of the parameter buffer.
    pub n: u32,
    /// t ≥ 1, the number of this update (1 for the first).
    pub step: u32,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    /// Added to sqrt(v̂) (not inside the square root), as in PyTorch.
    pub eps: f32,
    /// Adam: L2 penalty added to the gradient; AdamW: decoupled decay p −= lr·wd·p.
    pub weight_decay: f32,
    /// Global-norm clipping threshold; ≤ 0 disables clipping.
    pub max_norm: f32,
    /// Bias correction 1 − β1^t (f32 of an f64 computation; set by `at_step`).
    pub bc1: f32,
    /// Bias correction 1 − β2^t (f32 of an f64 computation; set by `at_step`).
    pub bc2: f32,
    /// 1: AdamW (decoupled weight decay), 0: Adam.
    pub decoupled: u32,
}

/// 1 − β^t in f64, rounded to f32.
fn bias_correction(beta: f32, t: u32) -> f32 {
    (1.0 - (beta as f64).powi(t as i32)) as f32
}

impl AdamParams {
    /// Adam with PyTorch's defaults (β = (0.9, 0.999), eps = 1e-8, no weight decay), no clipping,
    /// at step 1.
    pub fn new(n: usize, lr: f32) -> AdamParams {
        AdamParams {
            n: n as u32,
            step: 1,
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            max_norm: 0.0,
            bc1: 0.0,
            bc2: 0.0,
            decoupled: 0,
        }
        .at_step(1)
    }

    /// The same hyper-parameters for update number `t` ≥ 1, with the bias corrections for `t`.
    pub fn at_step(self, t: u32) -> AdamParams {
        assert!(t >= 1, "Adam steps count from 1");
        AdamParams {
            step: t,
            bc1: bias_correction(self.beta1, t),
            bc2: bias_correction(self.beta2, t),
            ..self
        }
    }
}

/// Record one Adam/AdamW update of `params` from `grads`, clipped by the global norm whose square
/// is `sumsq[0]`; `m`, `v` are the moment buffers (zero at the start). All four buffers have
/// `hp.n` elements. Returns the kernel, for `p.set_params(k, &new_hp)`.
pub fn step(
    p: &mut Plan,
    params: &Tensor,
    grads: &Tensor,
    m: &Tensor,
    v: &Tensor,
    sumsq: &Tensor,
    hp: &AdamParams,
) -> KernelRef<AdamParams> {
    let n = params.len();
    assert!(
        hp.n as usize == n && grads.len() == n && m.len() == n && v.len() == n,
        "adam: hp.n = {}, params {n}, grads {}, m {}, v {} must agree",
        hp.n,
        grads.len(),
        m.len(),
        v.len()
    );
    assert!(!sumsq.is_empty(), "adam: sumsq must hold Σ grads² in element 0");
    assert_eq!(
        *hp,
        hp.at_step(hp.step),
        "adam: bc1/bc2 do not match step; build the params with AdamParams::at_step"
    );
    reduce::check_bindable(p, "adam", n);
    p.kernel(
        &shader!("adam"),
        "adam_step",
        hp,
        &[(1, params), (2, grads), (3, m), (4, v), (5, &sumsq.view(0, &[1]))],
        grid_1d(n, WG),
    )
}
