//! Self-attention block of the DDPM U-Net: diffusers' `Attention` inside `UNet2DModel`
//! (AttnDownBlock2D etc.), WITHOUT its group norm and WITHOUT the residual add (the U-Net does
//! those). Reference: `src/reference/attention.rs`.
//!
//! x (B, C, T) with T = H·W tokens, weights in PyTorch layout (C, C) = (out, in):
//!   q = xᵀ·Wqᵀ + bq, k = xᵀ·Wkᵀ + bk, v = xᵀ·Wvᵀ + bv           each (B, T, C)
//!   per head h (heads·d = C, columns h·d..(h+1)·d):
//!     P_h = softmax(q_h·k_hᵀ / √d)  (B, heads, T, T),   o_h = P_h·v_h
//!   y = (o·Woᵀ + bo)ᵀ                                          (B, C, T)
//! (diffusers: to_q, to_k, to_v, to_out.0). No transpose kernel: the image↔token transposes are
//! folded into the strides of the products, heads into element offsets (`matmul_ext`).
//!
//! Backward, with S_h = q_h·k_hᵀ (before the 1/√d of the softmax):
//!   dbo = Σ dy,  dWo = Σ_b dy[b]·o[b],  do = dyᵀ·Wo
//!   dP_h = do_h·v_hᵀ,  dv_h = P_hᵀ·do_h,  dS_h = softmax'(dP_h) (includes 1/√d)
//!   dq_h = dS_h·k_h,  dk_h = dS_hᵀ·q_h
//!   for (q, Wq, bq) etc.: dbq = Σ dq,  dWq = Σ_b dq[b]ᵀ·x[b]ᵀ,  dx[b] += Wqᵀ·dq[b]ᵀ

use crate::gpu::{Gpu, Plan, Tensor};
use crate::ops::linear::bias_backward;
use crate::ops::matmul::{matmul, matmul_ext, Extra, Matmul};
use crate::ops::softmax::{self, Softmax};

#[derive(Clone, Copy, Debug)]
pub struct Attention {
    pub batch: usize,
    pub channels: usize,
    pub tokens: usize,
    pub heads: usize,
}

impl Attention {
    /// Channels per head.
    pub fn head_dim(&self) -> usize {
        assert!(
            self.heads > 0 && self.channels.is_multiple_of(self.heads),
            "attention: {} channels do not split into {} heads",
            self.channels,
            self.heads
        );
        self.channels / self.heads
    }

    /// Row stride of the (B, heads, T, T) score tensors: T rounded up to a multiple of 4, so that
    /// the head products can read and write them as vec4 (`matmul::vec4_ok`); the padding
    /// columns are never written and stay zero.
    pub fn score_ld(&self) -> usize {
        self.tokens.next_multiple_of(4)
    }

    /// The softmax scale 1/√d.
    /// The softmax over each head's score rows.
    fn softmax(&self) -> Softmax {
        Softmax {
            rows: self.batch * self.heads * self.tokens,
            cols: self.tokens,
            ld: self.score_ld(),
            scale: self.scale(),
        }
    }

    pub fn scale(&self) -> f32 {
        1.0 / (self.head_dim() as f32).sqrt()
    }

    /// FLOPs of the forward products (4 projections, scores, P·v).
    pub fn flops(&self) -> f64 {
        let (b, c, t) = (self.batch as f64, self.channels as f64, self.tokens as f64);
        2.0 * b * (4.0 * t * c * c + 2.0 * t * t * c)
    }
}

/// The eight parameters (and, for the backward, their gradients): w* (C, C), b* (C).
pub struct AttentionWeights<'a> {
    pub wq: &'a Tensor,
    pub bq: &'a Tensor,
    pub wk: &'a Tensor,
    pub bk: &'a Tensor,
    pub wv: &'a Tensor,
    pub bv: &'a Tensor,
    pub wo: &'a Tensor,
    pub bo: &'a Tensor,
}

/// Activations saved by the forward (q, k, v, probs, o) and backward scratch, allocated once.
pub struct AttentionBuffers {
    /// (B, T, C) each.
    pub q: Tensor,
    pub k: Tensor,
    pub v: Tensor,
    /// Softmax output P (B, heads, T, T), rows [`Attention::score_ld`] apart.
    pub probs: Tensor,
    /// P·v (B, T, C).
    pub o: Tensor,
    /// (B, heads, T, T) with padded rows: scores S in the forward, dP in the backward.
    scores: Tensor,
    /// (B, heads, T, T) with padded rows: dS.
    d_scores: Tensor,
    /// (B, T, C) each.
    dq: Tensor,
    dk: Tensor,
    dv: Tensor,
    d_o: Tensor,
}

impl AttentionBuffers {
    pub fn new(gpu: &Gpu, s: &Attention) -> AttentionBuffers {
        s.head_dim();
        let tok = [s.batch, s.tokens, s.channels];
        let att = [s.batch, s.heads, s.tokens, s.score_ld()];
        AttentionBuffers {
            q: gpu.zeros(&tok),
            k: gpu.zeros(&tok),
            v: gpu.zeros(&tok),
            probs: gpu.zeros(&att),
            o: gpu.zeros(&tok),
            scores: gpu.zeros(&att),
            d_scores: gpu.zeros(&att),
            dq: gpu.zeros(&tok),
            dk: gpu.zeros(&tok),
            dv: gpu.zeros(&tok),
            d_o: gpu.zeros(&tok),
        }
    }
}

fn check(s: &Attention, x: &Tensor, w: &AttentionWeights, what: &str) {
    let (c, n) = (s.channels, s.batch * s.channels * s.tokens);
    assert_eq!(
        x.len(),
        n,
        "attention {what}: x has {} values, want (B, C, T) = {n}",
        x.len()
    );
    for (t, len) in [
        (w.wq, c * c),
        (w.bq, c),
        (w.wk, c * c),
        (w.bk, c),
        (w.wv, c * c),
        (w.bv, c),
        (w.wo, c * c),
        (w.bo, c),
    ] {
        assert_eq!(
            t.len(),
            len,
            "attention {what}: a weight has {} values, want {len}",
            t.len()
        );
    }
}

/// (B, T, C) token layout ← xᵀ·Wᵀ (+ bias added separately): x[b] stored C×T, W stored (out, in).
fn project_spec(s: &Attention) -> Matmul {
    let (c, t) = (s.channels, s.tokens);
    Matmul {
        trans_a: true,
        trans_b: true,
        lda: t,
        ldb: c,
        stride_a: c * t,
        stride_b: 0,
        ..Matmul::new(s.batch, t, c, c)
    }
}

/// The two kinds of per-head product in attention, each batched over B. Token-layout tensors
/// (B, T, C) hold head h in columns h·d..(h+1)·d (row stride C); score-layout tensors
/// (B, heads, T, ld) hold head h's T×T block, rows padded to `score_ld`.
#[derive(Clone, Copy)]
enum HeadProduct {
    /// S_h (T×T, score layout) = A_h·B_hᵀ of two token-layout tensors: q·kᵀ, do·vᵀ.
    Scores,
    /// C_h (T×d, token layout) = P_h·B_h, or P_hᵀ·B_h when `transposed`, with P in score layout
    /// and B in token layout: P·v, Pᵀ·do, dS·k, dSᵀ·q.
    Mix { transposed: bool },
}

/// Head `h`'s product of kind `kind`: c = a·b as [`HeadProduct`] says.
fn head_product(p: &mut Plan, s: &Attention, h: usize, kind: HeadProduct, a: &Tensor, b: &Tensor, c: &Tensor) {
    let (t, d, ld) = (s.tokens, s.head_dim(), s.score_ld());
    // (row stride, batch stride, offset) of head h in each layout.
    let tok = (s.channels, t * s.channels, h * d);
    let att = (ld, s.heads * t * ld, h * t * ld);
    let (m, k, n, trans_a, trans_b, la, lb, lc) = match kind {
        HeadProduct::Scores => (t, d, t, false, true, tok, tok, att),
        HeadProduct::Mix { transposed } => (t, t, d, transposed, false, att, tok, tok),
    };
    let spec = Matmul {
        batch: s.batch,
        m,
        k,
        n,
        trans_a,
        trans_b,
        lda: la.0,
        ldb: lb.0,
        ldc: lc.0,
        stride_a: la.1,
        stride_b: lb.1,
        stride_c: lc.1,
        alpha: 1.0,
        accumulate: false,
    };
    let e = Extra {
        offset_a: la.2,
        offset_b: lb.2,
        offset_c: lc.2,
        ..Extra::default()
    };
    matmul_ext(p, &spec, &e, None, a, b, c);
}

/// y (B, C, T) = attention(x (B, C, T)) (written); saves q, k, v, probs and o in `buf`.
pub fn forward(p: &mut Plan, s: &Attention, x: &Tensor, w: &AttentionWeights, buf: &AttentionBuffers, y: &Tensor) {
    check(s, x, w, "forward");
    assert_eq!(y.len(), x.len(), "attention forward: y and x differ in size");
    let (b, c, t, heads) = (s.batch, s.channels, s.tokens, s.heads);
    let proj = project_spec(s);
    for (wt, bias, out) in [(w.wq, w.bq, &buf.q), (w.wk, w.bk, &buf.k), (w.wv, w.bv, &buf.v)] {
        let e = Extra {
            bias: Some(bias),
            ..Extra::default()
        };
        matmul_ext(p, &proj, &e, None, x, wt, out);
    }
    for h in 0..heads {
        // S_h = q_h·k_hᵀ
        head_product(p, s, h, HeadProduct::Scores, &buf.q, &buf.k, &buf.scores);
    }
    softmax::forward(p, &s.softmax(), &buf.scores, &buf.probs);
    for h in 0..heads {
        // o_h = P_h·v_h
        head_product(
            p,
            s,
            h,
            HeadProduct::Mix { transposed: false },
            &buf.probs,
            &buf.v,
            &buf.o,
        );
    }
    // y[b] (C×T) = Wo·o[b]ᵀ + bo
    let out = Matmul {
        trans_b: true,
        lda: c,
        ldb: c,
        stride_a: 0,
        stride_b: t * c,
        ..Matmul::new(b, c, c, t)
    };
    let e = Extra {
        bias: Some(w.bo),
        bias_per_row: true,
        ..Extra::default()
    };
    matmul_ext(p, &out, &e, None, w.wo, &buf.o, y);
}

/// The gradients the backward accumulates: the input's and the eight parameters'.
pub struct AttentionGrads<'a> {
    pub dx: &'a Tensor,
    pub dw: AttentionWeights<'a>,
}

/// dx and all eight weight gradients `+=` for the output gradient dy (B, C, T). Needs the
/// activations saved in `buf` by [`forward`] on the same x and weights.
pub fn backward(
    p: &mut Plan,
    s: &Attention,
    x: &Tensor,
    w: &AttentionWeights,
    buf: &AttentionBuffers,
    dy: &Tensor,
    g: AttentionGrads,
) {
    let AttentionGrads { dx, dw } = g;
    let dw = &dw;
    check(s, x, w, "backward");
    check(s, x, dw, "backward (gradients)");
    assert!(
        dy.len() == x.len() && dx.len() == x.len(),
        "attention backward: dy/dx differ in size from x"
    );
    let (b, c, t, heads) = (s.batch, s.channels, s.tokens, s.heads);
    let sum_batch = Extra {
        sum_batch: true,
        ..Extra::default()
    };
    // Output projection: dbo, dWo = Σ_b dy[b]·o[b], do[b] = dy[b]ᵀ·Wo.
    bias_backward(p, [b, c, t], None, dy, dw.bo);
    let d_wo = Matmul {
        accumulate: true,
        ..Matmul::new(b, c, t, c)
    };
    matmul_ext(p, &d_wo, &sum_batch, None, dy, &buf.o, dw.wo);
    let d_o = Matmul {
        trans_a: true,
        lda: t,
        stride_a: c * t,
        stride_b: 0,
        ..Matmul::new(b, t, c, c)
    };
    matmul(p, &d_o, dy, w.wo, &buf.d_o);
    for h in 0..heads {
        // dP_h = do_h·v_hᵀ (into the scores scratch)
        head_product(p, s, h, HeadProduct::Scores, &buf.d_o, &buf.v, &buf.scores);
        // dv_h = P_hᵀ·do_h
        head_product(
            p,
            s,
            h,
            HeadProduct::Mix { transposed: true },
            &buf.probs,
            &buf.d_o,
            &buf.dv,
        );
    }
    p.clear(&buf.d_scores);
    softmax::backward(p, &s.softmax(), &buf.probs, &buf.scores, &buf.d_scores);
    for h in 0..heads {
        // dq_h = dS_h·k_h
        head_product(
            p,
            s,
            h,
            HeadProduct::Mix { transposed: false },
            &buf.d_scores,
            &buf.k,
            &buf.dq,
        );
        // dk_h = dS_hᵀ·q_h
        head_product(
            p,
            s,
            h,
            HeadProduct::Mix { transposed: true },
            &buf.d_scores,
            &buf.q,
            &buf.dk,
        );
    }
    // Input projections.
    let d_w = Matmul {
        trans_a: true,
        trans_b: true,
        lda: c,
        ldb: t,
        stride_a: t * c,
        stride_b: c * t,
        accumulate: true,
        ..Matmul::new(b, c, t, c)
    };
    let d_x = Matmul {
        trans_a: true,
        trans_b: true,
        lda: c,
        ldb: c,
        stride_a: 0,
        stride_b: t * c,
        accumulate: true,
        ..Matmul::new(b, c, c, t)
    };
    for (g, wt, gw, gb) in [
        (&buf.dq, w.wq, dw.wq, dw.bq),
        (&buf.dk, w.wk, dw.wk, dw.bk),
        (&buf.dv, w.wv, dw.wv, dw.bv),
    ] {
        bias_backward(p, [b * t, c, 1], None, g, gb);
        // dW = Σ_b dq[b]ᵀ·x[b]ᵀ
        matmul_ext(p, &d_w, &sum_batch, None, g, x, gw);
        // dx[b] (C×T) += Wᵀ·dq[b]ᵀ
        matmul(p, &d_x, wt, g, dx);
    }
}
