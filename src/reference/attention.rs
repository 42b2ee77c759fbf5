//! CPU reference for the self-attention block (see `src/ops/attention.rs`): diffusers'
//! `Attention` as used by `UNet2DModel`, without its group norm and residual add.

use crate::ops::attention::Attention;

/// The eight parameters, PyTorch layout: w* (C, C) as (out, in), b* (C).
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    pub wq: Vec<f64>,
    pub bq: Vec<f64>,
    pub wk: Vec<f64>,
    pub bk: Vec<f64>,
    pub wv: Vec<f64>,
    pub bv: Vec<f64>,
    pub wo: Vec<f64>,
    pub bo: Vec<f64>,
}

impl Weights {
    /// All parameters zero (gradient accumulators).
    pub fn zeros(channels: usize) -> Weights {
        let (w, b) = (vec![0.0; channels * channels], vec![0.0; channels]);
        Weights {
            wq: w.clone(),
            bq: b.clone(),
            wk: w.clone(),
            bk: b.clone(),
            wv: w.clone(),
            bv: b.clone(),
            wo: w,
            bo: b,
        }
    }

    /// The parameters in the order wq, bq, wk, bk, wv, bv, wo, bo.
    pub fn parts(&self) -> [&Vec<f64>; 8] {
        [
            &self.wq, &self.bq, &self.wk, &self.bk, &self.wv, &self.bv, &self.wo, &self.bo,
        ]
    }

    pub fn parts_mut(&mut self) -> [&mut Vec<f64>; 8] {
        [
            &mut self.wq,
            &mut self.bq,
            &mut self.wk,
            &mut self.bk,
            &mut self.wv,
            &mut self.bv,
            &mut self.wo,
            &mut self.bo,
        ]
    }
}

/// Per batch item: q, k, v, o as (T, C) token-major and the probabilities P (heads, T, T).
struct Saved {
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    p: Vec<f64>,
    o: Vec<f64>,
}

/// t-th token of image `b` projected: out[t, o] = bias[o] + Σ_i w[o, i] · x[b, i, t].
fn project(s: &Attention, x: &[f64], b: usize, w: &[f64], bias: &[f64]) -> Vec<f64> {
    let (c, t) = (s.channels, s.tokens);
    let mut out = vec![0.0; t * c];
    for tok in 0..t {
        for o in 0..c {
            let mut sum = bias[o];
            for i in 0..c {
                sum += w[o * c + i] * x[(b * c + i) * t + tok];
            }
            out[tok * c + o] = sum;
        }
    }
    out
}

fn forward_item(s: &Attention, x: &[f64], w: &Weights, b: usize) -> Saved {
    let (c, t, heads) = (s.channels, s.tokens, s.heads);
    let d = c / heads;
    let scale = 1.0 / (d as f64).sqrt();
    let q = project(s, x, b, &w.wq, &w.bq);
    let k = project(s, x, b, &w.wk, &w.bk);
    let v = project(s, x, b, &w.wv, &w.bv);
    let mut p = vec![0.0; heads * t * t];
    let mut o = vec![0.0; t * c];
    for h in 0..heads {
        for i in 0..t {
            let scores: Vec<f64> = (0..t)
                .map(|j| scale * (0..d).map(|e| q[i * c + h * d + e] * k[j * c + h * d + e]).sum::<f64>())
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = scores.iter().map(|v| (v - max).exp()).sum();
            for j in 0..t {
                p[(h * t + i) * t + j] = (scores[j] - max).exp() / sum;
            }
            for e in 0..d {
                o[i * c + h * d + e] = (0..t).map(|j| p[(h * t + i) * t + j] * v[j * c + h * d + e]).sum();
            }
        }
    }
    Saved { q, k, v, p, o }
}

/// y (B, C, T) = attention(x (B, C, T)), see `ops::attention`.
pub fn forward(s: &Attention, x: &[f64], w: &Weights) -> Vec<f64> {
    let (c, t) = (s.channels, s.tokens);
    let mut y = vec![0.0; s.batch * c * t];
    for b in 0..s.batch {
        let sv = forward_item(s, x, w, b);
        for ch in 0..c {
            for tok in 0..t {
                let o: f64 = (0..c).map(|j| w.wo[ch * c + j] * sv.o[tok * c + j]).sum();
                y[(b * c + ch) * t + tok] = w.bo[ch] + o;
            }
        }
    }
    y
}

/// Gradients (dx, dweights) of `forward` for the output gradient dy (B, C, T).
pub fn backward(s: &Attention, x: &[f64], w: &Weights, dy: &[f64]) -> (Vec<f64>, Weights) {
    let (c, t, heads) = (s.channels, s.tokens, s.heads);
    let d = c / heads;
    let scale = 1.0 / (d as f64).sqrt();
    let mut dx = vec![0.0; x.len()];
    let mut g = Weights::zeros(c);
    for b in 0..s.batch {
        let sv = forward_item(s, x, w, b);
        let dyb = |ch: usize, tok: usize| dy[(b * c + ch) * t + tok];
        // Output projection y = Wo·oᵀ + bo.
        let mut d_o = vec![0.0; t * c];
        for ch in 0..c {
            for tok in 0..t {
                let gy = dyb(ch, tok);
                g.bo[ch] += gy;
                for j in 0..c {
                    g.wo[ch * c + j] += gy * sv.o[tok * c + j];
                    d_o[tok * c + j] += gy * w.wo[ch * c + j];
                }
            }
        }
        // Per head: o = P v, P = softmax(scale · q kᵀ).
        let (mut dq, mut dk, mut dv) = (vec![0.0; t * c], vec![0.0; t * c], vec![0.0; t * c]);
        for h in 0..heads {
            let p = |i: usize, j: usize| sv.p[(h * t + i) * t + j];
            for i in 0..t {
                let dp: Vec<f64> = (0..t)
                    .map(|j| (0..d).map(|e| d_o[i * c + h * d + e] * sv.v[j * c + h * d + e]).sum())
                    .collect();
                let dot: f64 = (0..t).map(|j| dp[j] * p(i, j)).sum();
                for j in 0..t {
                    let ds = scale * p(i, j) * (dp[j] - dot);
                    for e in 0..d {
                        dv[j * c + h * d + e] += p(i, j) * d_o[i * c + h * d + e];
                        dq[i * c + h * d + e] += ds * sv.k[j * c + h * d + e];
                        dk[j * c + h * d + e] += ds * sv.q[i * c + h * d + e];
                    }
                }
            }
        }
        // Input projections q = xᵀWqᵀ + bq (and k, v).
        for (dproj, wt, dw, db) in [
            (&dq, &w.wq, &mut g.wq, &mut g.bq),
            (&dk, &w.wk, &mut g.wk, &mut g.bk),
            (&dv, &w.wv, &mut g.wv, &mut g.bv),
        ] {
            for tok in 0..t {
                for o in 0..c {
                    let gq = dproj[tok * c + o];
                    db[o] += gq;
                    for i in 0..c {
                        dw[o * c + i] += gq * x[(b * c + i) * t + tok];
                        dx[(b * c + i) * t + tok] += gq * wt[o * c + i];
                    }
                }
            }
        }
    }
    (dx, g)
}
