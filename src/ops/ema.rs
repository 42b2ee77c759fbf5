//! Exponential moving average of the parameters: `shaders/ema.wgsl`, reference in
//! `src/reference/ema.rs`.
//!
//! Record once with `let idx = ops::ema::update(p, &ema, &params, decay)`; to change the decay
//! later (e.g. a warm-up of the decay), rewrite the uniform before running the plan:
//! `plan.set_params(idx, &EmaParams::new(ema.len(), new_decay))`.

use crate::gpu::{grid_1d, KernelRef, Plan, Tensor};
use crate::ops::reduce;
use crate::shader;

const WG: u32 = 256;

/// The kernel's uniform block (mirrors `Params` in `shaders/ema.wgsl`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct EmaParams {
    /// Elements of the buffers.
    pub n: u32,
    pub decay: f32,
}

impl EmaParams {
    pub fn new(n: usize, decay: f32) -> EmaParams {
        EmaParams { n: n as u32, decay }
    }
}

/// ema = decay · ema + (1 − decay) · params over one flat buffer (in place). Returns the kernel,
/// for `p.set_params(k, &EmaParams::new(n, decay))`.
pub fn update(p: &mut Plan, ema: &Tensor, params: &Tensor, decay: f32) -> KernelRef<EmaParams> {
    let n = ema.len();
    assert_eq!(params.len(), n, "ema: ema and params differ in length");
    reduce::check_bindable(p, "ema", n);
    p.kernel(
        &shader!("ema"),
        "update",
        &EmaParams::new(n, decay),
        &[(1, ema), (2, params)],
        grid_1d(n, WG),
    )
}
