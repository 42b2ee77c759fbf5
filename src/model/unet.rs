//! The U-Net of DDPM in diffusers' `UNet2DModel` structure, instantiated for one batch size:
//! every activation the backward needs is allocated once, the forward records its kernels into a
//! plan, and the backward is written out layer by layer in reverse, a mirror of the forward.
//!
//! Gradient convention (see `src/gpu/mod.rs`): every backward kernel accumulates, so all activation
//! gradients are zeroed by [`UNet::zero_grads`] before the loss writes `d_output`, and parameter
//! gradients are zeroed by the trainer.

use anyhow::{bail, Result};

use super::config::{BlockKind, UNetConfig};
use super::params::ParamTable;
use crate::gpu::{Gpu, KernelRef, Plan, Tensor};
use crate::ops::attention::{Attention, AttentionBuffers, AttentionWeights};
use crate::ops::conv2d::Conv2d;
use crate::ops::dropout::DropoutParams;
use crate::ops::group_norm::GroupNorm;
use crate::ops::{
    attention, class_embedding, concat, conv2d, dropout, elementwise, group_norm, linear, silu, timestep_embedding,
    upsample,
};

/// An activation and its gradient (the gradient is a shared 1-element dummy when not training).
struct Act {
    v: Tensor,
    g: Tensor,
}

/// A parameter view and its gradient view in the flat buffers.
struct Param {
    w: Tensor,
    g: Tensor,
}

/// Allocation context while building the network.
struct Builder<'a> {
    gpu: &'a Gpu,
    cfg: &'a UNetConfig,
    table: &'a ParamTable,
    params: &'a Tensor,
    grads: Option<&'a Tensor>,
    dummy: Tensor,
    max_binding: usize,
    /// Bytes of activations (and their gradients) allocated, and of the largest one.
    bytes: usize,
    largest: usize,
    flops: f64,
}

impl Builder<'_> {
    fn param(&self, name: &str) -> Param {
        let e = self
            .table
            .get(name)
            .unwrap_or_else(|| panic!("parameter table lacks {name}"));
        let w = self.params.view(e.offset, &e.shape);
        let g = match self.grads {
            Some(g) => g.view(e.offset, &e.shape),
            None => self.dummy.clone(),
        };
        Param { w, g }
    }

    fn tensor(&mut self, shape: &[usize]) -> Result<Tensor> {
        let bytes = shape.iter().product::<usize>() * 4;
        if bytes > self.max_binding {
            bail!(
                "an activation of shape {shape:?} needs {} MiB, more than this adapter's max storage binding of {} MiB: use fewer images per pass",
                bytes >> 20,
                self.max_binding >> 20
            );
        }
        self.bytes += bytes;
        self.largest = self.largest.max(bytes);
        Ok(self.gpu.zeros(shape))
    }

    fn act(&mut self, shape: &[usize]) -> Result<Act> {
        let v = self.tensor(shape)?;
        let g = if self.grads.is_some() {
            self.tensor(shape)?
        } else {
            self.dummy.clone()
        };
        Ok(Act { v, g })
    }

    fn conv(&mut self, name: &str, s: Conv2d) -> Conv {
        self.flops += s.flops();
        Conv {
            name: name.to_string(),
            s,
            w: self.param(&format!("{name}.weight")),
            b: self.param(&format!("{name}.bias")),
        }
    }

    fn norm(&mut self, name: &str, s: GroupNorm) -> Result<Norm> {
        Ok(Norm {
            name: name.to_string(),
            s,
            gamma: self.param(&format!("{name}.weight")),
            beta: self.param(&format!("{name}.bias")),
            mean: self.tensor(&[s.n * s.groups])?,
            rstd: self.tensor(&[s.n * s.groups])?,
        })
    }

    fn linear(&mut self, name: &str, rows: usize, inp: usize, out: usize) -> Linear {
        self.flops += 2.0 * (rows * inp * out) as f64;
        Linear {
            name: name.to_string(),
            rows,
            inp,
            out,
            w: self.param(&format!("{name}.weight")),
            b: self.param(&format!("{name}.bias")),
        }
    }
}

/// A convolution layer with bias.
struct Conv {
    /// diffusers' parameter prefix: the layer's name in profiles.
    name: String,
    s: Conv2d,
    w: Param,
    b: Param,
}

impl Conv {
    fn forward(&self, p: &mut Plan, x: &Tensor, y: &Tensor) {
        p.within(&self.name, |p| {
            conv2d::forward(p, &self.s, x, &self.w.w, Some(&self.b.w), y)
        });
    }

    /// dW, db (and dx when given) from dy.
    fn backward(&self, p: &mut Plan, x: &Tensor, dy: &Tensor, dx: Option<&Tensor>) {
        p.within(&self.name, |p| {
            if let Some(dx) = dx {
                conv2d::backward_input(p, &self.s, dy, &self.w.w, dx);
            }
            conv2d::backward_weight(p, &self.s, x, dy, &self.w.g);
            conv2d::backward_bias(p, &self.s, dy, &self.b.g);
        });
    }
}

/// Group norm with its saved statistics.
struct Norm {
    name: String,
    s: GroupNorm,
    gamma: Param,
    beta: Param,
    mean: Tensor,
    rstd: Tensor,
}

impl Norm {
    fn forward(&self, p: &mut Plan, x: &Tensor, y: &Tensor) {
        let (g, b) = (&self.gamma, &self.beta);
        p.within(&self.name, |p| {
            group_norm::forward(p, &self.s, x, &g.w, &b.w, y, &self.mean, &self.rstd)
        });
    }

    fn backward(&self, p: &mut Plan, x: &Tensor, dy: &Tensor, dx: &Tensor) {
        let (g, b) = (&self.gamma, &self.beta);
        p.within(&self.name, |p| {
            group_norm::backward(p, &self.s, x, &g.w, &self.mean, &self.rstd, dy, dx, &g.g, &b.g)
        });
    }

    /// a = silu(norm(x)), fused (the normalized values are not stored).
    fn forward_silu(&self, p: &mut Plan, x: &Tensor, a: &Tensor) {
        let (g, b) = (&self.gamma, &self.beta);
        p.within(&self.name, |p| {
            group_norm::forward_silu(p, &self.s, x, &g.w, &b.w, a, &self.mean, &self.rstd)
        });
    }

    fn backward_silu(&self, p: &mut Plan, x: &Tensor, da: &Tensor, dx: &Tensor) {
        let (g, b) = (&self.gamma, &self.beta);
        p.within(&self.name, |p| {
            group_norm::backward_silu(p, &self.s, x, &g.w, &b.w, &self.mean, &self.rstd, da, dx, &g.g, &b.g)
        });
    }
}

/// A linear layer (PyTorch layout) over `rows` rows.
struct Linear {
    name: String,
    rows: usize,
    inp: usize,
    out: usize,
    w: Param,
    b: Param,
}

impl Linear {
    fn forward(&self, p: &mut Plan, x: &Tensor, y: &Tensor) {
        p.within(&self.name, |p| {
            linear::forward(p, self.rows, self.inp, self.out, x, &self.w.w, Some(&self.b.w), y)
        });
    }

    fn backward(&self, p: &mut Plan, x: &Tensor, dy: &Tensor, dx: Option<&Tensor>) {
        let (w, b) = (&self.w, &self.b);
        p.within(&self.name, |p| {
            linear::backward(p, self.rows, self.inp, self.out, x, &w.w, dy, dx, &w.g, Some(&b.g))
        });
    }
}

/// diffusers `ResnetBlock2D` (time_embedding_norm "default"):
/// h = conv1(silu(norm1(x))) + time_emb_proj(silu(temb)); h = conv2(dropout(silu(norm2(h))));
/// out = (shortcut(x) + h) / output_scale_factor, shortcut = 1×1 conv when channels change.
struct ResBlock {
    name: String,
    norm1: Norm,
    conv1: Conv,
    time_emb_proj: Linear,
    norm2: Norm,
    conv2: Conv,
    shortcut: Option<Conv>,
    scale: f32,
    dropout: f32,
    a1: Act,            // silu(norm1(x)), fused
    h1: Tensor,         // conv1(a1)      (its gradient is h1b's)
    tp: Act,            // time_emb_proj(silu(temb)) (N, C_out)
    h1b: Act,           // h1 + tp
    a2: Act,            // silu(norm2(h1b)), fused
    d: Option<Act>,     // dropout(a2), training with dropout > 0 only
    h2: Tensor,         // conv2(d or a2) (its gradient is the output's)
    sc: Option<Tensor>, // shortcut(x)
    sum: Option<Act>,   // sc + h2 before the division, when scale ≠ 1
    out: Act,
}

impl ResBlock {
    fn new(
        b: &mut Builder,
        name: &str,
        n: usize,
        c_in: usize,
        c_out: usize,
        hw: [usize; 2],
        scale: f32,
    ) -> Result<ResBlock> {
        let cfg = b.cfg;
        let training = b.grads.is_some();
        let [h, w] = hw;
        let (groups, eps) = (cfg.norm_num_groups, cfg.norm_eps);
        let conv3 = |ci, co| Conv2d {
            n,
            c_in: ci,
            h,
            w,
            c_out: co,
            k: 3,
            stride: 1,
            pad: [1, 1, 1, 1],
        };
        let drop = if training { cfg.dropout } else { 0.0 };
        Ok(ResBlock {
            name: name.to_string(),
            norm1: b.norm(
                &format!("{name}.norm1"),
                GroupNorm {
                    n,
                    c: c_in,
                    hw: h * w,
                    groups,
                    eps,
                },
            )?,
            conv1: b.conv(&format!("{name}.conv1"), conv3(c_in, c_out)),
            time_emb_proj: b.linear(&format!("{name}.time_emb_proj"), n, cfg.time_embed_dim(), c_out),
            norm2: b.norm(
                &format!("{name}.norm2"),
                GroupNorm {
                    n,
                    c: c_out,
                    hw: h * w,
                    groups,
                    eps,
                },
            )?,
            conv2: b.conv(&format!("{name}.conv2"), conv3(c_out, c_out)),
            shortcut: (c_in != c_out).then(|| {
                b.conv(
                    &format!("{name}.conv_shortcut"),
                    Conv2d {
                        n,
                        c_in,
                        h,
                        w,
                        c_out,
                        k: 1,
                        stride: 1,
                        pad: [0; 4],
                    },
                )
            }),
            scale,
            dropout: drop,
            a1: b.act(&[n, c_in, h, w])?,
            h1: b.tensor(&[n, c_out, h, w])?,
            tp: b.act(&[n, c_out])?,
            h1b: b.act(&[n, c_out, h, w])?,
            a2: b.act(&[n, c_out, h, w])?,
            d: if drop > 0.0 {
                Some(b.act(&[n, c_out, h, w])?)
            } else {
                None
            },
            h2: b.tensor(&[n, c_out, h, w])?,
            sc: if c_in != c_out {
                Some(b.tensor(&[n, c_out, h, w])?)
            } else {
                None
            },
            sum: if scale != 1.0 {
                Some(b.act(&[n, c_out, h, w])?)
            } else {
                None
            },
            out: b.act(&[n, c_out, h, w])?,
        })
    }

    fn hw(&self) -> usize {
        self.norm2.s.hw
    }

    fn forward(&self, p: &mut Plan, x: &Act, temb: &Act, seeds: &mut Seeds) {
        p.within(&self.name, |p| self.record_forward(p, x, temb, seeds));
    }

    fn record_forward(&self, p: &mut Plan, x: &Act, temb: &Act, seeds: &mut Seeds) {
        let (n, c) = (self.norm2.s.n, self.norm2.s.c);
        self.norm1.forward_silu(p, &x.v, &self.a1.v);
        self.conv1.forward(p, &self.a1.v, &self.h1);
        self.time_emb_proj.forward(p, &temb.v, &self.tp.v);
        elementwise::add_channel_bias(p, n, c, self.hw(), &self.h1, &self.tp.v, &self.h1b.v);
        self.norm2.forward_silu(p, &self.h1b.v, &self.a2.v);
        let pre_conv2 = match &self.d {
            Some(d) => {
                let k = dropout::forward(p, self.dropout, &self.a2.v, &d.v, 0);
                seeds.forward.push((k, d.v.len()));
                &d.v
            }
            None => &self.a2.v,
        };
        self.conv2.forward(p, pre_conv2, &self.h2);
        let residual = match (&self.shortcut, &self.sc) {
            (Some(conv), Some(sc)) => {
                conv.forward(p, &x.v, sc);
                sc
            }
            _ => &x.v,
        };
        match &self.sum {
            Some(sum) => {
                elementwise::add(p, residual, &self.h2, &sum.v);
                elementwise::scale(p, 1.0 / self.scale, &sum.v, &self.out.v);
            }
            None => elementwise::add(p, residual, &self.h2, &self.out.v),
        }
    }

    fn backward(&self, p: &mut Plan, x: &Act, temb: &Act, seeds: &mut Seeds) {
        p.within(&self.name, |p| self.record_backward(p, x, temb, seeds));
    }

    fn record_backward(&self, p: &mut Plan, x: &Act, temb: &Act, seeds: &mut Seeds) {
        let (n, c) = (self.norm2.s.n, self.norm2.s.c);
        // out = (residual + h2) / scale: both branches receive d_out / scale.
        let d_sum = match &self.sum {
            Some(sum) => {
                elementwise::axpy(p, 1.0 / self.scale, &self.out.g, &sum.g);
                &sum.g
            }
            None => &self.out.g,
        };
        match &self.shortcut {
            Some(conv) => conv.backward(p, &x.v, d_sum, Some(&x.g)),
            None => elementwise::axpy(p, 1.0, d_sum, &x.g),
        }
        // h2 = conv2(dropout(a2))
        let (pre_conv2, d_pre_conv2) = match &self.d {
            Some(d) => (&d.v, &d.g),
            None => (&self.a2.v, &self.a2.g),
        };
        self.conv2.backward(p, pre_conv2, d_sum, Some(d_pre_conv2));
        if let Some(d) = &self.d {
            let k = dropout::backward(p, self.dropout, &d.g, &self.a2.g, 0);
            seeds.backward.push((k, d.g.len()));
        }
        self.norm2.backward_silu(p, &self.h1b.v, &self.a2.g, &self.h1b.g);
        // h1b = h1 + tp[n, c]: h1's gradient is h1b's; tp's is its sum over pixels.
        elementwise::add_channel_bias_backward(p, n, c, self.hw(), &self.h1b.g, &self.tp.g);
        self.time_emb_proj.backward(p, &temb.v, &self.tp.g, Some(&temb.g));
        self.conv1.backward(p, &self.a1.v, &self.h1b.g, Some(&self.a1.g));
        self.norm1.backward_silu(p, &x.v, &self.a1.g, &x.g);
    }

    fn grads(&self) -> Vec<&Tensor> {
        let mut v = vec![&self.a1.g, &self.tp.g, &self.h1b.g, &self.a2.g, &self.out.g];
        v.extend(self.d.iter().map(|a| &a.g));
        v.extend(self.sum.iter().map(|a| &a.g));
        v
    }
}

/// diffusers `Attention` as used by `AttnDownBlock2D`/`AttnUpBlock2D`/the mid block:
/// out = (to_out(attention(group_norm(x))) + x) / rescale_output_factor.
struct AttnBlock {
    name: String,
    norm: Norm,
    s: Attention,
    q: (Param, Param),
    k: (Param, Param),
    v: (Param, Param),
    o: (Param, Param),
    buf: AttentionBuffers,
    nx: Act,
    y: Tensor, // attention output (its gradient is the output's, scaled)
    scale: f32,
    sum: Option<Act>,
    out: Act,
}

impl AttnBlock {
    fn new(b: &mut Builder, name: &str, n: usize, c: usize, hw: [usize; 2], scale: f32) -> Result<AttnBlock> {
        let cfg = b.cfg;
        let t = hw[0] * hw[1];
        let s = Attention {
            batch: n,
            channels: c,
            tokens: t,
            heads: cfg.heads(c),
        };
        // q, k, v, out projections and the two attention products.
        b.flops += 4.0 * 2.0 * (n * t * c * c) as f64 + 2.0 * 2.0 * (n * t * t * c) as f64;
        let pair = |b: &mut Builder, proj: &str| {
            (
                b.param(&format!("{name}.{proj}.weight")),
                b.param(&format!("{name}.{proj}.bias")),
            )
        };
        Ok(AttnBlock {
            name: name.to_string(),
            norm: b.norm(
                &format!("{name}.group_norm"),
                GroupNorm {
                    n,
                    c,
                    hw: t,
                    groups: cfg.norm_num_groups,
                    eps: cfg.norm_eps,
                },
            )?,
            s,
            q: pair(b, "to_q"),
            k: pair(b, "to_k"),
            v: pair(b, "to_v"),
            o: pair(b, "to_out.0"),
            buf: AttentionBuffers::new(b.gpu, &s),
            nx: b.act(&[n, c, t])?,
            y: b.tensor(&[n, c, t])?,
            scale,
            sum: if scale != 1.0 { Some(b.act(&[n, c, t])?) } else { None },
            out: b.act(&[n, c, hw[0], hw[1]])?,
        })
    }

    fn weights(&self) -> AttentionWeights<'_> {
        let (q, k, v, o) = (&self.q, &self.k, &self.v, &self.o);
        AttentionWeights {
            wq: &q.0.w,
            bq: &q.1.w,
            wk: &k.0.w,
            bk: &k.1.w,
            wv: &v.0.w,
            bv: &v.1.w,
            wo: &o.0.w,
            bo: &o.1.w,
        }
    }

    fn weight_grads(&self) -> AttentionWeights<'_> {
        let (q, k, v, o) = (&self.q, &self.k, &self.v, &self.o);
        AttentionWeights {
            wq: &q.0.g,
            bq: &q.1.g,
            wk: &k.0.g,
            bk: &k.1.g,
            wv: &v.0.g,
            bv: &v.1.g,
            wo: &o.0.g,
            bo: &o.1.g,
        }
    }

    fn forward(&self, p: &mut Plan, x: &Act) {
        p.within(&self.name, |p| self.record_forward(p, x));
    }

    fn record_forward(&self, p: &mut Plan, x: &Act) {
        self.norm.forward(p, &x.v, &self.nx.v);
        attention::forward(p, &self.s, &self.nx.v, &self.weights(), &self.buf, &self.y);
        match &self.sum {
            Some(sum) => {
                elementwise::add(p, &self.y, &x.v, &sum.v);
                elementwise::scale(p, 1.0 / self.scale, &sum.v, &self.out.v);
            }
            None => elementwise::add(p, &self.y, &x.v, &self.out.v),
        }
    }

    fn backward(&self, p: &mut Plan, x: &Act) {
        p.within(&self.name, |p| self.record_backward(p, x));
    }

    fn record_backward(&self, p: &mut Plan, x: &Act) {
        let d_sum = match &self.sum {
            Some(sum) => {
                elementwise::axpy(p, 1.0 / self.scale, &self.out.g, &sum.g);
                &sum.g
            }
            None => &self.out.g,
        };
        elementwise::axpy(p, 1.0, d_sum, &x.g); // the residual connection
        attention::backward(
            p,
            &self.s,
            &self.nx.v,
            &self.weights(),
            &self.buf,
            d_sum,
            &self.nx.g,
            &self.weight_grads(),
        );
        self.norm.backward(p, &x.v, &self.nx.g, &x.g);
    }

    fn grads(&self) -> Vec<&Tensor> {
        let mut v = vec![&self.nx.g, &self.out.g];
        v.extend(self.sum.iter().map(|a| &a.g));
        v
    }
}

/// One step of a down or up path: a res block optionally followed by attention.
struct Layer {
    res: ResBlock,
    attn: Option<AttnBlock>,
}

impl Layer {
    fn out(&self) -> &Act {
        match &self.attn {
            Some(a) => &a.out,
            None => &self.res.out,
        }
    }

    fn forward(&self, p: &mut Plan, x: &Act, temb: &Act, seeds: &mut Seeds) {
        self.res.forward(p, x, temb, seeds);
        if let Some(a) = &self.attn {
            a.forward(p, &self.res.out);
        }
    }

    fn backward(&self, p: &mut Plan, x: &Act, temb: &Act, seeds: &mut Seeds) {
        if let Some(a) = &self.attn {
            a.backward(p, &self.res.out);
        }
        self.res.backward(p, x, temb, seeds);
    }

    fn grads(&self) -> Vec<&Tensor> {
        let mut v = self.res.grads();
        if let Some(a) = &self.attn {
            v.extend(a.grads());
        }
        v
    }
}

/// An up-path layer: concatenate the skip, then a layer.
struct UpLayer {
    cat: Act,
    c_h: usize,
    c_skip: usize,
    layer: Layer,
}

/// One resolution level of the down path: its layers and the stride-2 conv after them
/// (diffusers `Downsample2D`), absent on the last level.
struct DownLevel {
    layers: Vec<Layer>,
    downsample: Option<(Conv, Act)>,
}

/// Nearest 2× upsampling followed by a 3×3 conv (diffusers `Upsample2D`).
struct Upsampler {
    u: Act, // the upsampled activation
    conv: Conv,
    out: Act,
}

/// (kernel, element count) of the dropout layers in the plans, so that their seeds can
/// change every step. The backward meets the layers in reverse order.
#[derive(Default, Debug, Clone)]
pub struct Seeds {
    pub forward: Vec<(KernelRef<DropoutParams>, usize)>,
    pub backward: Vec<(KernelRef<DropoutParams>, usize)>,
}

/// The U-Net for a fixed batch size, with every activation allocated.
pub struct UNet {
    pub cfg: UNetConfig,
    pub batch: usize,
    pub training: bool,
    /// Input images x_t (N, C_in, H, W); write before running the forward.
    pub input: Tensor,
    /// Timesteps (N) as f32 integers; write before running the forward.
    pub timesteps: Tensor,
    /// Class labels (N) as f32 integers below `num_class_embeds`, for a class-conditional model
    /// (`cfg.null_class()`, the "no class" label, until written); write before running the forward.
    pub class_labels: Option<Tensor>,
    /// Bytes of activations allocated, the largest single activation, and forward FLOPs per batch.
    pub activation_bytes: usize,
    pub largest_activation_bytes: usize,
    pub forward_flops: f64,
    t_proj: Tensor,
    linear_1: Linear,
    e1: Act,
    e1a: Act,
    linear_2: Linear,
    /// The class-embedding table of a class-conditional model, added to the time embedding.
    class_embedding: Option<Param>,
    emb: Act,
    temb: Act, // silu(emb), shared by every res block's time_emb_proj
    conv_in: Conv,
    h0: Act,
    down: Vec<DownLevel>,
    mid: (ResBlock, Option<AttnBlock>, ResBlock),
    up: Vec<(Vec<UpLayer>, Option<Upsampler>)>,
    norm_out: Norm,
    a_out: Act, // silu(norm_out(h)), fused
    conv_out: Conv,
    output: Act,
}

impl UNet {
    /// Build the network over `params` (flat, laid out by `table`). With `grads` the network can
    /// train: activations keep gradients and the backward accumulates into `grads`.
    pub fn new(
        gpu: &Gpu,
        cfg: &UNetConfig,
        table: &ParamTable,
        params: &Tensor,
        grads: Option<&Tensor>,
        batch: usize,
    ) -> Result<UNet> {
        cfg.validate()?;
        let training = grads.is_some();
        let mut b = Builder {
            gpu,
            cfg,
            table,
            params,
            grads,
            dummy: gpu.zeros(&[1]),
            max_binding: gpu.limits.max_storage_buffer_binding_size as usize,
            bytes: 0,
            largest: 0,
            flops: 0.0,
        };
        let n = batch;
        let size = cfg.sample_size();
        let ch = &cfg.block_out_channels;
        let levels = ch.len();
        let temb_dim = cfg.time_embed_dim();

        let input = b.tensor(&[n, cfg.in_channels, size, size])?;
        let timesteps = b.tensor(&[n])?;
        let t_proj = b.tensor(&[n, ch[0]])?;
        let linear_1 = b.linear("time_embedding.linear_1", n, ch[0], temb_dim);
        let linear_2 = b.linear("time_embedding.linear_2", n, temb_dim, temb_dim);
        let class_labels = match cfg.null_class() {
            Some(null) => {
                let t = b.tensor(&[n])?;
                gpu.write(&t, &vec![null as f32; n]);
                Some(t)
            }
            None => None,
        };
        let class_embedding = cfg.num_class_embeds.map(|_| b.param("class_embedding.weight"));
        let (e1, e1a, emb, temb) = (
            b.act(&[n, temb_dim])?,
            b.act(&[n, temb_dim])?,
            b.act(&[n, temb_dim])?,
            b.act(&[n, temb_dim])?,
        );
        let conv3 = |c_in, c_out, hw: usize| Conv2d {
            n,
            c_in,
            h: hw,
            w: hw,
            c_out,
            k: 3,
            stride: 1,
            pad: [1, 1, 1, 1],
        };
        let conv_in = b.conv("conv_in", conv3(cfg.in_channels, ch[0], size));
        let h0 = b.act(&[n, ch[0], size, size])?;

        // Down path; `skips` records the channel count and side of every skip activation.
        let mut skips = vec![(ch[0], size)];
        let mut down = Vec::new();
        let (mut c_prev, mut side) = (ch[0], size);
        for (i, &c) in ch.iter().enumerate() {
            let mut layers = Vec::new();
            for j in 0..cfg.layers_per_block {
                let c_in = if j == 0 { c_prev } else { c };
                let res = ResBlock::new(
                    &mut b,
                    &format!("down_blocks.{i}.resnets.{j}"),
                    n,
                    c_in,
                    c,
                    [side, side],
                    1.0,
                )?;
                let attn = match cfg.down_kind(i) {
                    BlockKind::Attn => Some(AttnBlock::new(
                        &mut b,
                        &format!("down_blocks.{i}.attentions.{j}"),
                        n,
                        c,
                        [side, side],
                        1.0,
                    )?),
                    BlockKind::Plain => None,
                };
                layers.push(Layer { res, attn });
                skips.push((c, side));
            }
            let downsample = if i + 1 < levels {
                let pad = if cfg.downsample_padding == 0 {
                    [0, 1, 0, 1]
                } else {
                    [1, 1, 1, 1]
                };
                let s = Conv2d {
                    n,
                    c_in: c,
                    h: side,
                    w: side,
                    c_out: c,
                    k: 3,
                    stride: 2,
                    pad,
                };
                let conv = b.conv(&format!("down_blocks.{i}.downsamplers.0.conv"), s);
                side = s.out_h();
                let out = b.act(&[n, c, side, side])?;
                skips.push((c, side));
                Some((conv, out))
            } else {
                None
            };
            down.push(DownLevel { layers, downsample });
            c_prev = c;
        }

        // Middle: res, attention, res.
        let last = ch[levels - 1];
        let scale = cfg.mid_block_scale_factor;
        let mid = (
            ResBlock::new(&mut b, "mid_block.resnets.0", n, last, last, [side, side], scale)?,
            if cfg.add_attention {
                Some(AttnBlock::new(
                    &mut b,
                    "mid_block.attentions.0",
                    n,
                    last,
                    [side, side],
                    scale,
                )?)
            } else {
                None
            },
            ResBlock::new(&mut b, "mid_block.resnets.1", n, last, last, [side, side], scale)?,
        );

        // Up path: each level has layers_per_block + 1 layers, each consuming one skip.
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up = Vec::new();
        let mut c_h = last;
        for (i, &c) in rev.iter().enumerate() {
            let mut layers = Vec::new();
            for j in 0..=cfg.layers_per_block {
                let (c_skip, skip_side) = skips.pop().expect("one skip per up layer");
                assert_eq!(skip_side, side, "skip resolution matches the up path");
                let cat = b.act(&[n, c_h + c_skip, side, side])?;
                let res = ResBlock::new(
                    &mut b,
                    &format!("up_blocks.{i}.resnets.{j}"),
                    n,
                    c_h + c_skip,
                    c,
                    [side, side],
                    1.0,
                )?;
                let attn = match cfg.up_kind(i) {
                    BlockKind::Attn => Some(AttnBlock::new(
                        &mut b,
                        &format!("up_blocks.{i}.attentions.{j}"),
                        n,
                        c,
                        [side, side],
                        1.0,
                    )?),
                    BlockKind::Plain => None,
                };
                layers.push(UpLayer {
                    cat,
                    c_h,
                    c_skip,
                    layer: Layer { res, attn },
                });
                c_h = c;
            }
            let upsample = if i + 1 < levels {
                let u = b.act(&[n, c, 2 * side, 2 * side])?;
                let conv = b.conv(&format!("up_blocks.{i}.upsamplers.0.conv"), conv3(c, c, 2 * side));
                side *= 2;
                let out = b.act(&[n, c, side, side])?;
                Some(Upsampler { u, conv, out })
            } else {
                None
            };
            up.push((layers, upsample));
        }
        assert!(skips.is_empty(), "every skip consumed");

        let norm_out = b.norm(
            "conv_norm_out",
            GroupNorm {
                n,
                c: ch[0],
                hw: size * size,
                groups: cfg.norm_num_groups,
                eps: cfg.norm_eps,
            },
        )?;
        let a_out = b.act(&[n, ch[0], size, size])?;
        let conv_out = b.conv("conv_out", conv3(ch[0], cfg.out_channels, size));
        let output = b.act(&[n, cfg.out_channels, size, size])?;
        Ok(UNet {
            cfg: cfg.clone(),
            batch,
            training,
            input,
            timesteps,
            class_labels,
            activation_bytes: b.bytes,
            largest_activation_bytes: b.largest,
            forward_flops: b.flops,
            t_proj,
            linear_1,
            e1,
            e1a,
            linear_2,
            class_embedding,
            emb,
            temb,
            conv_in,
            h0,
            down,
            mid,
            up,
            norm_out,
            a_out,
            conv_out,
            output,
        })
    }

    /// The predicted noise ε_θ(x_t, t), (N, C_out, H, W).
    pub fn output(&self) -> &Tensor {
        &self.output.v
    }

    /// ∂loss/∂output: the loss writes it before the backward runs.
    pub fn d_output(&self) -> &Tensor {
        &self.output.g
    }

    /// Record the forward pass. Returns the dropout kernels' indices in `p`.
    pub fn forward(&self, p: &mut Plan) -> Seeds {
        let mut seeds = Seeds::default();
        let cfg = &self.cfg;
        let n = self.batch;
        // Time embedding: sinusoidal projection, linear_1, SiLU, linear_2 (plus the class's row of
        // the class embedding); every res block applies SiLU before its own projection, so
        // silu(emb) is computed once here.
        p.within("time_embedding", |p| {
            timestep_embedding::forward(
                p,
                n,
                cfg.block_out_channels[0],
                cfg.flip_sin_to_cos,
                cfg.freq_shift as f32,
                &self.timesteps,
                &self.t_proj,
            );
            self.linear_1.forward(p, &self.t_proj, &self.e1.v);
            silu::forward(p, &self.e1.v, &self.e1a.v);
            self.linear_2.forward(p, &self.e1a.v, &self.emb.v);
            if let (Some(labels), Some(table)) = (&self.class_labels, &self.class_embedding) {
                class_embedding::forward(p, labels, &table.w, &self.emb.v, true);
            }
            silu::forward(p, &self.emb.v, &self.temb.v);
        });

        self.conv_in.forward(p, &self.input, &self.h0.v);
        let mut h = &self.h0;
        for DownLevel { layers, downsample } in &self.down {
            for layer in layers {
                layer.forward(p, h, &self.temb, &mut seeds);
                h = layer.out();
            }
            if let Some((conv, out)) = downsample {
                conv.forward(p, &h.v, &out.v);
                h = out;
            }
        }
        let (res0, attn, res1) = &self.mid;
        res0.forward(p, h, &self.temb, &mut seeds);
        h = &res0.out;
        if let Some(a) = attn {
            a.forward(p, h);
            h = &a.out;
        }
        res1.forward(p, h, &self.temb, &mut seeds);
        h = &res1.out;

        let mut skips = self.skip_acts();
        for (layers, upsample) in &self.up {
            for ul in layers {
                let skip = skips.pop().expect("skip");
                concat::forward(
                    p,
                    n,
                    ul.c_h,
                    ul.c_skip,
                    ul.cat.v.shape()[2] * ul.cat.v.shape()[3],
                    &h.v,
                    &skip.v,
                    &ul.cat.v,
                );
                ul.layer.forward(p, &ul.cat, &self.temb, &mut seeds);
                h = ul.layer.out();
            }
            if let Some(up) = upsample {
                let s = h.v.shape();
                upsample::forward(p, n, s[1], s[2], s[3], &h.v, &up.u.v);
                up.conv.forward(p, &up.u.v, &up.out.v);
                h = &up.out;
            }
        }
        self.norm_out.forward_silu(p, &h.v, &self.a_out.v);
        self.conv_out.forward(p, &self.a_out.v, &self.output.v);
        seeds
    }

    /// The activations pushed on the skip stack by the down path, in push order.
    fn skip_acts(&self) -> Vec<&Act> {
        let mut skips = vec![&self.h0];
        for DownLevel { layers, downsample } in &self.down {
            for layer in layers {
                skips.push(layer.out());
            }
            if let Some((_, out)) = downsample {
                skips.push(out);
            }
        }
        skips
    }

    /// Record the zeroing of every activation gradient (before the loss writes `d_output`).
    pub fn zero_grads(&self, p: &mut Plan) {
        assert!(self.training, "zero_grads on a network built without gradients");
        let mut all: Vec<&Tensor> = vec![&self.e1.g, &self.e1a.g, &self.emb.g, &self.temb.g, &self.h0.g];
        for DownLevel { layers, downsample } in &self.down {
            for layer in layers {
                all.extend(layer.grads());
            }
            if let Some((_, out)) = downsample {
                all.push(&out.g);
            }
        }
        let (res0, attn, res1) = &self.mid;
        all.extend(res0.grads());
        all.extend(attn.iter().flat_map(|a| a.grads()));
        all.extend(res1.grads());
        for (layers, upsample) in &self.up {
            for ul in layers {
                all.push(&ul.cat.g);
                all.extend(ul.layer.grads());
            }
            if let Some(up) = upsample {
                all.push(&up.u.g);
                all.push(&up.out.g);
            }
        }
        all.extend([&self.a_out.g, &self.output.g]);
        for g in all {
            p.clear(g);
        }
    }

    /// Record the backward pass: from `d_output` to every parameter gradient (accumulated).
    /// Returns the dropout kernels' indices in `p`.
    pub fn backward(&self, p: &mut Plan) -> Seeds {
        assert!(self.training, "backward on a network built without gradients");
        let mut seeds = Seeds::default();
        let n = self.batch;
        // Output head, in reverse.
        let h_last = match self.up.last() {
            Some((_, Some(up))) => &up.out,
            Some((layers, None)) => layers.last().expect("up layers").layer.out(),
            _ => unreachable!("a U-Net has an up path"),
        };
        self.conv_out
            .backward(p, &self.a_out.v, &self.output.g, Some(&self.a_out.g));
        self.norm_out.backward_silu(p, &h_last.v, &self.a_out.g, &h_last.g);

        // Up path, in reverse. The input of each up layer is the previous layer's output (or
        // the mid block's output for the first).
        let (res0, attn, res1) = &self.mid;
        let mut inputs: Vec<&Act> = Vec::new(); // input of each up layer / upsample, in forward order
        {
            let mut h = &res1.out;
            for (layers, upsample) in &self.up {
                for ul in layers {
                    inputs.push(h);
                    h = ul.layer.out();
                }
                if let Some(up) = upsample {
                    inputs.push(h);
                    h = &up.out;
                }
            }
        }
        // The forward popped skips from the end of the stack, so the reverse meets them in push order.
        let mut skip_iter = self.skip_acts().into_iter();
        for (layers, upsample) in self.up.iter().rev() {
            if let Some(up) = upsample {
                let x = inputs.pop().expect("upsample input");
                up.conv.backward(p, &up.u.v, &up.out.g, Some(&up.u.g));
                let s = x.v.shape();
                upsample::backward(p, n, s[1], s[2], s[3], &up.u.g, &x.g);
            }
            for ul in layers.iter().rev() {
                let x = inputs.pop().expect("up layer input");
                let skip = skip_iter.next().expect("skip");
                ul.layer.backward(p, &ul.cat, &self.temb, &mut seeds);
                let hw = ul.cat.v.shape()[2] * ul.cat.v.shape()[3];
                concat::backward(p, n, ul.c_h, ul.c_skip, hw, &ul.cat.g, &x.g, &skip.g);
            }
        }

        // Middle, in reverse.
        let h_down = self.down_output();
        match attn {
            Some(a) => {
                res1.backward(p, &a.out, &self.temb, &mut seeds);
                a.backward(p, &res0.out);
            }
            None => res1.backward(p, &res0.out, &self.temb, &mut seeds),
        }
        res0.backward(p, h_down, &self.temb, &mut seeds);

        // Down path, in reverse.
        let mut inputs: Vec<&Act> = Vec::new();
        {
            let mut h = &self.h0;
            for DownLevel { layers, downsample } in &self.down {
                for layer in layers {
                    inputs.push(h);
                    h = layer.out();
                }
                if downsample.is_some() {
                    inputs.push(h);
                    h = &downsample.as_ref().expect("downsample").1;
                }
            }
        }
        for DownLevel { layers, downsample } in self.down.iter().rev() {
            if let Some((conv, out)) = downsample {
                let x = inputs.pop().expect("downsample input");
                conv.backward(p, &x.v, &out.g, Some(&x.g));
            }
            for layer in layers.iter().rev() {
                let x = inputs.pop().expect("down layer input");
                layer.backward(p, x, &self.temb, &mut seeds);
            }
        }
        self.conv_in.backward(p, &self.input, &self.h0.g, None);

        // Time embedding, in reverse (timesteps and labels are not learned).
        silu::backward(p, &self.emb.v, &self.temb.g, &self.emb.g);
        if let (Some(labels), Some(table)) = (&self.class_labels, &self.class_embedding) {
            class_embedding::backward(p, labels, &self.emb.g, &table.g);
        }
        self.linear_2.backward(p, &self.e1a.v, &self.emb.g, Some(&self.e1a.g));
        silu::backward(p, &self.e1.v, &self.e1a.g, &self.e1.g);
        self.linear_1.backward(p, &self.t_proj, &self.e1.g, None);
        seeds
    }

    /// The last activation of the down path (the mid block's input).
    fn down_output(&self) -> &Act {
        let DownLevel { layers, downsample } = self.down.last().expect("down path");
        match downsample {
            Some((_, out)) => out,
            None => layers.last().expect("layers").out(),
        }
    }
}
