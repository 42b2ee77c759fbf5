//! The DDPM loss L_simple (eq. 14), forward and gradient fused: `shaders/loss.wgsl`, reference in
//! `src/reference/loss.rs`. The sum over the batch is the hierarchical reduction of `ops::reduce`
//! whose first level is fused into the loss kernel.

use crate::gpu::{grid_1d, Plan, Tensor};
use crate::ops::reduce;
use crate::shader;

const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    m: u32,
    grad_scale: f32,
    scale: f32,
}

/// loss[0] = mean((pred − target)²) (written) and dpred = 2 (pred − target) / numel (written, not
/// accumulated: this starts the backward pass). `pred`, `target`, `dpred`: same length, not empty.
pub fn mse_forward_backward(p: &mut Plan, pred: &Tensor, target: &Tensor, loss: &Tensor, dpred: &Tensor) {
    let n = pred.len();
    assert!(n > 0, "mse: empty prediction");
    assert!(
        target.len() == n && dpred.len() == n,
        "mse: pred ({n}), target ({}) and dpred ({}) differ in length",
        target.len(),
        dpred.len()
    );
    assert!(!loss.is_empty(), "mse: loss must hold at least one element");
    reduce::check_bindable(p, "mse", n);
    let inv_n = (1.0 / n as f64) as f32;
    let m = reduce::partial_count(n);
    let partials = if m == 1 { loss.view(0, &[1]) } else { p.gpu.zeros(&[m]) };
    p.kernel(
        &shader!("loss"),
        "forward_backward",
        &Params {
            n: n as u32,
            m: m as u32,
            grad_scale: (2.0 / n as f64) as f32,
            scale: if m == 1 { inv_n } else { 1.0 },
        },
        &[(1, pred), (2, target), (3, dpred), (4, &partials)],
        grid_1d(m, WG),
    );
    if m > 1 {
        reduce::finish(p, &partials, loss, inv_n);
    }
}
