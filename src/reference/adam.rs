//! CPU reference for Adam / AdamW with global-norm clipping (see `shaders/adam.wgsl`), following
//! PyTorch: `torch.nn.utils.clip_grad_norm_(max_norm)` then `torch.optim.Adam` (decoupled = 0) or
//! `torch.optim.AdamW` (decoupled = 1), amsgrad = False, maximize = False.
//!
//! Everything in f64: the hyper-parameters are widened from their f32 values, the bias corrections
//! are computed here from `hp.step` (the `bc1`/`bc2` fields are ignored), and the clip factor from
//! the f64 norm of `grads`.

use crate::ops::adam::AdamParams;

/// One update of `params`, `m`, `v` in place. `grads` is left unchanged (the clipped gradient is
/// a temporary).
pub fn step(params: &mut [f64], grads: &[f64], m: &mut [f64], v: &mut [f64], hp: &AdamParams) {
    let n = params.len();
    assert!(grads.len() == n && m.len() == n && v.len() == n);
    assert!(hp.step >= 1);
    let (lr, beta1, beta2, eps, wd) = (
        hp.lr as f64,
        hp.beta1 as f64,
        hp.beta2 as f64,
        hp.eps as f64,
        hp.weight_decay as f64,
    );
    // clip_grad_norm_: total_norm = ‖g‖₂, coefficient max_norm / (total_norm + 1e-6) clamped to ≤ 1.
    let clip = if hp.max_norm > 0.0 {
        let norm = grads.iter().map(|g| g * g).sum::<f64>().sqrt();
        (hp.max_norm as f64 / (norm + 1e-6)).min(1.0)
    } else {
        1.0
    };
    let t = hp.step as i32;
    let bc1 = 1.0 - beta1.powi(t);
    let bc2 = 1.0 - beta2.powi(t);
    for i in 0..n {
        let mut g = clip * grads[i];
        if hp.decoupled == 1 {
            params[i] *= 1.0 - lr * wd;
        } else {
            g += wd * params[i];
        }
        m[i] = beta1 * m[i] + (1.0 - beta1) * g;
        v[i] = beta2 * v[i] + (1.0 - beta2) * g * g;
        let m_hat = m[i] / bc1;
        let v_hat = v[i] / bc2;
        params[i] -= lr * m_hat / (v_hat.sqrt() + eps);
    }
}
