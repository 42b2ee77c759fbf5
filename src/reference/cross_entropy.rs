//! CPU reference for the softmax cross-entropy (see `shaders/cross_entropy.wgsl`).

/// (loss, dlogits, probs) for `logits` (rows, classes) row-major and one label per row:
/// probs = row softmax, loss = (1/rows) Σ_r −log probs[r, labels[r]], dlogits = ∂loss/∂logits =
/// (probs − onehot(labels)) / rows.
///
/// With m the row maximum, e_j = exp(z_j − m), s = Σ_j e_j and rest = Σ_{j ≠ label} e_j:
/// −log p_label = log s − (z_label − m), or log1p(rest) when z_label = m, and p_label − 1 = −rest/s,
/// so that confident rows (rest ≪ 1) keep their relative accuracy.
pub fn forward_backward(logits: &[f64], labels: &[usize], classes: usize) -> (f64, Vec<f64>, Vec<f64>) {
    let rows = labels.len();
    assert_eq!(logits.len(), rows * classes);
    let mut loss = 0.0;
    let mut probs = vec![0.0; rows * classes];
    let mut dlogits = vec![0.0; rows * classes];
    for (r, &t) in labels.iter().enumerate() {
        assert!(t < classes, "label {t} out of {classes} classes");
        let z = &logits[r * classes..(r + 1) * classes];
        let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
        let rest: f64 = (0..classes).filter(|&j| j != t).map(|j| e[j]).sum();
        let s = rest + e[t];
        loss += if z[t] == m { rest.ln_1p() } else { s.ln() - (z[t] - m) };
        for j in 0..classes {
            let p = e[j] / s;
            probs[r * classes + j] = p;
            dlogits[r * classes + j] = if j == t { -rest / s } else { p } / rows as f64;
        }
    }
    (loss / rows as f64, dlogits, probs)
}
