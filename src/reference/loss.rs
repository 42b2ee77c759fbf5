//! CPU reference for the DDPM loss L_simple (eq. 14; see `shaders/loss.wgsl`).

/// (loss, dpred): loss = (1/N) Σ (pred − target)², dpred = ∂loss/∂pred = 2 (pred − target) / N.
pub fn mse(pred: &[f64], target: &[f64]) -> (f64, Vec<f64>) {
    assert_eq!(pred.len(), target.len());
    let n = pred.len() as f64;
    let mut loss = 0.0;
    let mut dpred = Vec::with_capacity(pred.len());
    for (&p, &t) in pred.iter().zip(target) {
        let d = p - t;
        loss += d * d;
        dpred.push(2.0 * d / n);
    }
    (loss / n, dpred)
}
