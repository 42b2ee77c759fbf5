// Softmax cross-entropy of classifier logits against integer labels, forward and gradient fused
// (`forward_backward`), and the plain row softmax for inference (`predict`).
//
//   m_r     = max_j z[r, j]                      (subtracted: every exp below is ≤ 1, no overflow)
//   e_rj    = exp(z[r, j] − m_r),   s_r = Σ_j e_rj,   rest_r = Σ_{j ≠ t_r} e_rj,   t_r = label[r]
//   probs[r, j]   = e_rj / s_r                                                      (written)
//   ℓ_r           = −log p[r, t_r] = log s_r − (z[r, t_r] − m_r)
//                 = log1p(rest_r)                       when z[r, t_r] = m_r (the label is a max)
//   row_loss[r]   = ℓ_r          (src/ops/cross_entropy.rs reduces it to loss[0] = (1/rows) Σ_r ℓ_r)
//   dlogits[r, j] = (probs[r, j] − [j = t_r]) / rows                                (written)
//                 with probs[r, t_r] − 1 computed as −rest_r / s_r
//
// The log-probability is never the log of a probability: (z_t − m) − log s is finite however
// confident the row is (p_t itself may underflow to 0). For rows whose label is the arg max (a
// trained classifier's usual case) ℓ = log(1 + rest) and p_t − 1 = −rest/s are formed from rest
// directly, so that they keep their relative accuracy when rest ≪ 1 instead of cancelling against 1.
//
// Layout: logits, probs, dlogits (rows, classes) row-major; labels (rows) as f32 integers in
// [0, classes) (exact below 2^24; the caller validates them, as for the class embedding);
// row_loss (rows).
// Mapping: one invocation per row (passes over the row: max, sums, write), workgroups of 64 over
// x and y of the dispatch grid (grid_1d), row = gid.x + gid.y · (num_workgroups.x · 64).

struct Params {
    rows: u32,
    classes: u32,
    inv_rows: f32,   // 1 / rows: the mean's factor in dlogits
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;          // (rows, classes)
@group(0) @binding(2) var<storage, read> labels: array<f32>;          // (rows)
@group(0) @binding(3) var<storage, read_write> probs: array<f32>;     // (rows, classes)  written
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>;   // (rows, classes)  written
@group(0) @binding(5) var<storage, read_write> row_loss: array<f32>;  // (rows)           written

const WG: u32 = 64u;

fn row_max(base: u32) -> f32 {
    var m = logits[base];
    for (var j = 1u; j < params.classes; j++) {
        m = max(m, logits[base + j]);
    }
    return m;
}

// log(1 + x) for x ≥ 0, accurate relative to the result also for small x: below 1/2 through
// log1p(x) = 2 atanh(u) = 2 (u + u³/3 + u⁵/5 + …), u = x / (2 + x) ≤ 1/5 (the terms after u⁹/9 are
// below 1e-8 of the sum), above it log(1 + x) directly (rounding 1 + x costs ≤ 1e-7 relative).
fn log1p(x: f32) -> f32 {
    if (x >= 0.5) {
        return log(1.0 + x);
    }
    let u = x / (2.0 + x);
    let u2 = u * u;
    return 2.0 * u * (1.0 + u2 * (1.0 / 3.0 + u2 * (1.0 / 5.0 + u2 * (1.0 / 7.0 + u2 * (1.0 / 9.0)))));
}

@compute @workgroup_size(WG)
fn forward_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = gid.x + gid.y * nwg.x * WG;
    if (r >= params.rows) {
        return;
    }
    let base = r * params.classes;
    let t = u32(labels[r]);
    let m = row_max(base);
    var rest = 0.0;
    var e_t = 0.0;
    for (var j = 0u; j < params.classes; j++) {
        let e = exp(logits[base + j] - m);
        if (j == t) {
            e_t = e;
        } else {
            rest += e;
        }
    }
    let s = rest + e_t;
    let inv = 1.0 / s;
    // exp is recomputed rather than stored: a row lives in registers only if it is short.
    for (var j = 0u; j < params.classes; j++) {
        let i = base + j;
        let p = exp(logits[i] - m) * inv;
        probs[i] = p;
        dlogits[i] = select(p, -rest * inv, j == t) * params.inv_rows;
    }
    let zt = logits[base + t];
    if (zt == m) {
        row_loss[r] = log1p(rest);
    } else {
        row_loss[r] = log(s) - (zt - m);
    }
}

@compute @workgroup_size(WG)
fn predict(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = gid.x + gid.y * nwg.x * WG;
    if (r >= params.rows) {
        return;
    }
    let base = r * params.classes;
    let m = row_max(base);
    var s = 0.0;
    for (var j = 0u; j < params.classes; j++) {
        s += exp(logits[base + j] - m);
    }
    let inv = 1.0 / s;
    for (var j = 0u; j < params.classes; j++) {
        probs[base + j] = exp(logits[base + j] - m) * inv;
    }
}
