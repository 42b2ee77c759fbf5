//! The U-Net of DDPM in diffusers' `UNet2DModel` structure, instantiated for one batch size.
//!
//! [`UNet::new`] is the one description of the network: it walks the configuration once,
//! allocating every activation where it is made and appending each layer (its kind, its
//! parameters, the activations it reads and writes) to a list. [`UNet::forward`] records that list
//! in order and [`UNet::backward`] the same list in reverse, each layer's backward mirroring its
//! forward: no second walk of the topology. Skip connections are the down path's outputs, pushed
//! on a stack as they are made and popped by the up path's concatenations.
//!
//! Gradient convention (see `src/gpu/mod.rs`): every backward kernel accumulates, so all activation
//! gradients are zeroed by [`UNet::zero_grads`] before the loss writes `d_output`, and parameter
//! gradients are zeroed by the trainer.

use anyhow::{bail, Result};

use super::config::{BlockKind, UNetConfig};
use super::params::ParamTable;
use crate::gpu::{Gpu, KernelRef, Plan, Tensor};
use crate::ops::attention::{Attention, AttentionBuffers, AttentionGrads, AttentionWeights};
use crate::ops::concat::Concat;
use crate::ops::conv2d::Conv2d;
use crate::ops::dropout::DropoutParams;
use crate::ops::group_norm::GroupNorm;
use crate::ops::{
    attention, class_embedding, concat, conv2d, dropout, elementwise, group_norm, linear, silu, timestep_embedding,
    upsample,
};

/// An activation and its gradient. The gradient is absent where none flows: the network's inputs
/// (images, the timestep projection) and every activation of a network built without gradients.
#[derive(Clone)]
struct Act {
    v: Tensor,
    g: Option<Tensor>,
}

impl Act {
    fn input(v: &Tensor) -> Act {
        Act { v: v.clone(), g: None }
    }

    /// The gradient, for layers that only exist inside a trained network.
    fn g(&self) -> &Tensor {
        self.g
            .as_ref()
            .expect("the backward of an activation without a gradient")
    }
}

/// A parameter view and its gradient view in the flat buffers.
struct Param {
    w: Tensor,
    g: Tensor,
}

/// A dropout kernel recorded in a plan. Its seed must change every step: `layer` numbers the
/// network's dropout layers in forward order, and a layer's forward and backward kernels take the
/// same seed (the backward redraws the forward's mask).
#[derive(Clone, Copy, Debug)]
pub struct DropoutKernel {
    pub layer: usize,
    pub kernel: KernelRef<DropoutParams>,
    /// Elements the kernel covers.
    pub len: usize,
}

/// Allocation context while building the network: the layer list grows as the configuration is
/// walked.
struct Builder<'a> {
    gpu: &'a Gpu,
    cfg: &'a UNetConfig,
    table: &'a ParamTable,
    params: &'a Tensor,
    param_grads: Option<&'a Tensor>,
    /// Stands in for parameter gradients in a network built without them.
    dummy: Tensor,
    max_binding: usize,
    /// Bytes of activations (and their gradients) allocated, and of the largest one.
    bytes: usize,
    largest: usize,
    flops: f64,
    layers: Vec<Layer>,
    /// Every activation gradient allocated, for [`UNet::zero_grads`].
    act_grads: Vec<Tensor>,
    /// Dropout layers so far (their numbers, see [`DropoutKernel`]).
    dropouts: usize,
}

impl Builder<'_> {
    fn training(&self) -> bool {
        self.param_grads.is_some()
    }

    fn param(&self, name: &str) -> Param {
        let e = self
            .table
            .get(name)
            .unwrap_or_else(|| panic!("parameter table lacks {name}"));
        let w = self.params.view(e.offset, &e.shape);
        let g = match self.param_grads {
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
        let g = if self.training() {
            let g = self.tensor(shape)?;
            self.act_grads.push(g.clone());
            Some(g)
        } else {
            None
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

    /// A group norm over (n, c, hw), fused with the SiLU that follows when `silu`.
    fn norm(&mut self, name: &str, [n, c, hw]: [usize; 3], silu: bool) -> Result<Norm> {
        let s = GroupNorm {
            n,
            c,
            hw,
            groups: self.cfg.norm_num_groups,
            eps: self.cfg.norm_eps,
        };
        Ok(Norm {
            name: name.to_string(),
            s,
            o: group_norm::Options { silu, mapping: None },
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
            s: linear::Linear { rows, inp, out },
            w: self.param(&format!("{name}.weight")),
            b: self.param(&format!("{name}.bias")),
        }
    }

    // ---- layers: each allocates its output, appends itself to the list and returns the output.

    fn push(&mut self, layer: Layer) -> Act {
        let out = layer.output().clone();
        self.layers.push(layer);
        out
    }

    fn conv_layer(&mut self, name: &str, s: Conv2d, x: &Act) -> Result<Act> {
        let conv = self.conv(name, s);
        let y = self.act(&[s.n, s.c_out, s.out_h(), s.out_w()])?;
        Ok(self.push(Layer::Conv { conv, x: x.clone(), y }))
    }

    /// A 3×3 convolution with padding 1 and stride 1 on `x` (N, C, H, W).
    fn conv3_layer(&mut self, name: &str, x: &Act, c_out: usize) -> Result<Act> {
        let s = conv3(x.v.shape(), c_out);
        self.conv_layer(name, s, x)
    }

    fn linear_layer(&mut self, name: &str, x: &Act, out: usize) -> Result<Act> {
        let (rows, inp) = (x.v.shape()[0], x.v.shape()[1]);
        let lin = self.linear(name, rows, inp, out);
        let y = self.act(&[rows, out])?;
        Ok(self.push(Layer::Linear { lin, x: x.clone(), y }))
    }

    fn silu_layer(&mut self, name: &str, x: &Act) -> Result<Act> {
        let y = self.act(x.v.shape())?;
        Ok(self.push(Layer::Silu {
            name: name.to_string(),
            x: x.clone(),
            y,
        }))
    }

    fn norm_silu_layer(&mut self, name: &str, x: &Act) -> Result<Act> {
        let s = x.v.shape();
        let norm = self.norm(name, [s[0], s[1], s[2] * s[3]], true)?;
        let y = self.act(s)?;
        Ok(self.push(Layer::NormSilu { norm, x: x.clone(), y }))
    }

    fn res_layer(&mut self, name: &str, x: &Act, temb: &Act, c_out: usize, scale: f32) -> Result<Act> {
        let block = Box::new(ResBlock::new(self, name, x, c_out, scale)?);
        Ok(self.push(Layer::Res {
            block,
            x: x.clone(),
            temb: temb.clone(),
        }))
    }

    fn attn_layer(&mut self, name: &str, x: &Act, scale: f32) -> Result<Act> {
        let block = Box::new(AttnBlock::new(self, name, x, scale)?);
        Ok(self.push(Layer::Attn { block, x: x.clone() }))
    }

    /// [h, skip] along channels.
    fn concat_layer(&mut self, name: &str, h: &Act, skip: &Act) -> Result<Act> {
        let (a, b) = (h.v.shape(), skip.v.shape());
        assert_eq!(
            (a[0], a[2], a[3]),
            (b[0], b[2], b[3]),
            "{name}: the skip's size matches the up path"
        );
        let y = self.act(&[a[0], a[1] + b[1], a[2], a[3]])?;
        Ok(self.push(Layer::Concat {
            name: name.to_string(),
            h: h.clone(),
            skip: skip.clone(),
            y,
        }))
    }

    fn upsample_layer(&mut self, name: &str, x: &Act) -> Result<Act> {
        let s = x.v.shape();
        let y = self.act(&[s[0], s[1], 2 * s[2], 2 * s[3]])?;
        Ok(self.push(Layer::Upsample {
            name: name.to_string(),
            x: x.clone(),
            y,
        }))
    }
}

/// [h, skip] along channels, both (N, C, H, W).
fn concat_shape(h: &Act, skip: &Act) -> Concat {
    let s = h.v.shape();
    Concat {
        n: s[0],
        c1: s[1],
        c2: skip.v.shape()[1],
        hw: s[2] * s[3],
    }
}

/// A 3×3 convolution with padding 1 and stride 1 over an (N, C, H, W) input.
fn conv3(x: &[usize], c_out: usize) -> Conv2d {
    Conv2d {
        n: x[0],
        c_in: x[1],
        h: x[2],
        w: x[3],
        c_out,
        k: 3,
        stride: 1,
        pad: [1, 1, 1, 1],
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
            conv2d::forward(p, &self.s, None, x, &self.w.w, Some(&self.b.w), y)
        });
    }

    /// dW, db (and dx when given) from dy.
    fn backward(&self, p: &mut Plan, x: &Tensor, dy: &Tensor, dx: Option<&Tensor>) {
        p.within(&self.name, |p| {
            if let Some(dx) = dx {
                conv2d::backward_input(p, &self.s, None, dy, &self.w.w, dx);
            }
            conv2d::backward_weight(p, &self.s, None, x, dy, &self.w.g);
            conv2d::backward_bias(p, &self.s, None, dy, &self.b.g);
        });
    }
}

/// Group norm with its saved statistics.
struct Norm {
    name: String,
    s: GroupNorm,
    /// Whether the SiLU that follows is fused.
    o: group_norm::Options,
    gamma: Param,
    beta: Param,
    mean: Tensor,
    rstd: Tensor,
}

impl Norm {
    fn tensors<'a>(&'a self, x: &'a Tensor) -> group_norm::Tensors<'a> {
        group_norm::Tensors {
            x,
            gamma: &self.gamma.w,
            beta: &self.beta.w,
            mean: &self.mean,
            rstd: &self.rstd,
        }
    }

    /// y = norm(x), or silu(norm(x)) fused when the norm was built so.
    fn forward(&self, p: &mut Plan, x: &Tensor, y: &Tensor) {
        p.within(&self.name, |p| {
            group_norm::forward(p, &self.s, self.o, self.tensors(x), y)
        });
    }

    fn backward(&self, p: &mut Plan, x: &Tensor, dy: &Tensor, dx: &Tensor) {
        let g = group_norm::Grads {
            dy,
            dx,
            dgamma: &self.gamma.g,
            dbeta: &self.beta.g,
        };
        p.within(&self.name, |p| {
            group_norm::backward(p, &self.s, self.o, self.tensors(x), g)
        });
    }
}

/// A linear layer with bias (PyTorch layout).
struct Linear {
    name: String,
    s: linear::Linear,
    w: Param,
    b: Param,
}

impl Linear {
    fn tensors<'a>(&'a self, x: &'a Tensor) -> linear::Tensors<'a> {
        linear::Tensors {
            x,
            w: &self.w.w,
            b: Some(&self.b.w),
        }
    }

    fn forward(&self, p: &mut Plan, x: &Tensor, y: &Tensor) {
        p.within(&self.name, |p| linear::forward(p, &self.s, self.tensors(x), y));
    }

    fn backward(&self, p: &mut Plan, x: &Tensor, dy: &Tensor, dx: Option<&Tensor>) {
        let g = linear::Grads {
            dx,
            dw: &self.w.g,
            db: Some(&self.b.g),
        };
        p.within(&self.name, |p| linear::backward(p, &self.s, self.tensors(x), dy, g));
    }
}

/// diffusers `ResnetBlock2D` (time_embedding_norm "default"):
/// h = conv1(silu(norm1(x))) + time_emb_proj(silu(temb)); h = conv2(dropout(silu(norm2(h))));
/// out = (shortcut(x) + h) / output_scale_factor, shortcut = 1×1 conv when channels change.
/// Dropout in a res block (training with dropout > 0 only): its probability, its number among the
/// network's dropout layers (see [`DropoutKernel`]) and its output.
struct Dropout {
    prob: f32,
    layer: usize,
    out: Act,
}

struct ResBlock {
    name: String,
    norm1: Norm,
    conv1: Conv,
    time_emb_proj: Linear,
    norm2: Norm,
    conv2: Conv,
    shortcut: Option<Conv>,
    dropout: Option<Dropout>,
    a1: Act,            // silu(norm1(x)), fused
    h1: Tensor,         // conv1(a1)      (its gradient is h1b's)
    tp: Act,            // time_emb_proj(silu(temb)) (N, C_out)
    h1b: Act,           // h1 + tp
    a2: Act,            // silu(norm2(h1b)), fused
    h2: Tensor,         // conv2(d or a2) (its gradient is the output's)
    sc: Option<Tensor>, // shortcut(x)
    out: ScaledSum,     // (sc or x) + h2, scaled
}

impl ResBlock {
    /// The block on `x` (N, C_in, H, W), to `c_out` channels.
    fn new(b: &mut Builder, name: &str, x: &Act, c_out: usize, scale: f32) -> Result<ResBlock> {
        let &[n, c_in, h, w] = x.v.shape() else {
            unreachable!("a res block's input is (N, C, H, W)")
        };
        let temb_dim = b.cfg.time_embed_dim();
        let same = |b: &mut Builder| b.act(&[n, c_out, h, w]);
        let dropout = if b.training() && b.cfg.dropout > 0.0 {
            b.dropouts += 1;
            Some(Dropout {
                prob: b.cfg.dropout,
                layer: b.dropouts - 1,
                out: same(b)?,
            })
        } else {
            None
        };
        Ok(ResBlock {
            name: name.to_string(),
            norm1: b.norm(&format!("{name}.norm1"), [n, c_in, h * w], true)?,
            conv1: b.conv(&format!("{name}.conv1"), conv3(x.v.shape(), c_out)),
            time_emb_proj: b.linear(&format!("{name}.time_emb_proj"), n, temb_dim, c_out),
            norm2: b.norm(&format!("{name}.norm2"), [n, c_out, h * w], true)?,
            conv2: b.conv(&format!("{name}.conv2"), conv3(&[n, c_out, h, w], c_out)),
            shortcut: (c_in != c_out).then(|| {
                b.conv(
                    &format!("{name}.conv_shortcut"),
                    Conv2d {
                        k: 1,
                        pad: [0; 4],
                        ..conv3(x.v.shape(), c_out)
                    },
                )
            }),
            dropout,
            a1: b.act(x.v.shape())?,
            h1: b.tensor(&[n, c_out, h, w])?,
            tp: b.act(&[n, c_out])?,
            h1b: same(b)?,
            a2: same(b)?,
            h2: b.tensor(&[n, c_out, h, w])?,
            sc: if c_in != c_out {
                Some(b.tensor(&[n, c_out, h, w])?)
            } else {
                None
            },
            out: ScaledSum::new(b, &[n, c_out, h, w], scale)?,
        })
    }

    fn hw(&self) -> usize {
        self.norm2.s.hw
    }

    fn forward(&self, p: &mut Plan, x: &Act, temb: &Act, dropouts: &mut Vec<DropoutKernel>) {
        p.within(&self.name, |p| self.record_forward(p, x, temb, dropouts));
    }

    fn record_forward(&self, p: &mut Plan, x: &Act, temb: &Act, dropouts: &mut Vec<DropoutKernel>) {
        let (n, c) = (self.norm2.s.n, self.norm2.s.c);
        self.norm1.forward(p, &x.v, &self.a1.v);
        self.conv1.forward(p, &self.a1.v, &self.h1);
        self.time_emb_proj.forward(p, &temb.v, &self.tp.v);
        elementwise::add_channel_bias(p, [n, c, self.hw()], None, &self.h1, &self.tp.v, &self.h1b.v);
        self.norm2.forward(p, &self.h1b.v, &self.a2.v);
        let pre_conv2 = match &self.dropout {
            Some(d) => {
                let kernel = dropout::forward(p, d.prob, &self.a2.v, &d.out.v, 0);
                dropouts.push(d.kernel(kernel));
                &d.out.v
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
        self.out.forward(p, residual, &self.h2);
    }

    fn backward(&self, p: &mut Plan, x: &Act, temb: &Act, dropouts: &mut Vec<DropoutKernel>) {
        p.within(&self.name, |p| self.record_backward(p, x, temb, dropouts));
    }

    fn record_backward(&self, p: &mut Plan, x: &Act, temb: &Act, dropouts: &mut Vec<DropoutKernel>) {
        let (n, c) = (self.norm2.s.n, self.norm2.s.c);
        let d_sum = self.out.backward(p);
        match &self.shortcut {
            Some(conv) => conv.backward(p, &x.v, d_sum, Some(x.g())),
            None => elementwise::axpy(p, 1.0, d_sum, x.g()),
        }
        // h2 = conv2(dropout(a2))
        let pre_conv2 = match &self.dropout {
            Some(d) => &d.out,
            None => &self.a2,
        };
        self.conv2.backward(p, &pre_conv2.v, d_sum, Some(pre_conv2.g()));
        if let Some(d) = &self.dropout {
            let kernel = dropout::backward(p, d.prob, d.out.g(), self.a2.g(), 0);
            dropouts.push(d.kernel(kernel));
        }
        self.norm2.backward(p, &self.h1b.v, self.a2.g(), self.h1b.g());
        // h1b = h1 + tp[n, c]: h1's gradient is h1b's; tp's is its sum over pixels.
        elementwise::add_channel_bias_backward(p, [n, c, self.hw()], self.h1b.g(), self.tp.g());
        self.time_emb_proj.backward(p, &temb.v, self.tp.g(), Some(temb.g()));
        self.conv1.backward(p, &self.a1.v, self.h1b.g(), Some(self.a1.g()));
        self.norm1.backward(p, &x.v, self.a1.g(), x.g());
    }
}

impl Dropout {
    fn kernel(&self, kernel: KernelRef<DropoutParams>) -> DropoutKernel {
        DropoutKernel {
            layer: self.layer,
            kernel,
            len: self.out.v.len(),
        }
    }
}

/// out = (a + b) / scale, the residual sum that ends a res or attention block (diffusers'
/// `output_scale_factor` / `rescale_output_factor`, 1 except in a scaled mid block).
struct ScaledSum {
    scale: f32,
    /// a + b before the division, when scale ≠ 1.
    sum: Option<Act>,
    out: Act,
}

impl ScaledSum {
    fn new(b: &mut Builder, shape: &[usize], scale: f32) -> Result<ScaledSum> {
        Ok(ScaledSum {
            scale,
            sum: if scale != 1.0 { Some(b.act(shape)?) } else { None },
            out: b.act(shape)?,
        })
    }

    fn forward(&self, p: &mut Plan, a: &Tensor, b: &Tensor) {
        match &self.sum {
            Some(sum) => {
                elementwise::add(p, a, b, &sum.v);
                elementwise::scale(p, 1.0 / self.scale, &sum.v, &self.out.v);
            }
            None => elementwise::add(p, a, b, &self.out.v),
        }
    }

    /// Records ∂/∂(a + b), which both a and b receive, and returns it.
    fn backward(&self, p: &mut Plan) -> &Tensor {
        match &self.sum {
            Some(sum) => {
                elementwise::axpy(p, 1.0 / self.scale, self.out.g(), sum.g());
                sum.g()
            }
            None => self.out.g(),
        }
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
    out: ScaledSum,
}

impl AttnBlock {
    /// The block on `x` (N, C, H, W), whose H·W pixels are its tokens.
    fn new(b: &mut Builder, name: &str, x: &Act, scale: f32) -> Result<AttnBlock> {
        let &[n, c, h, w] = x.v.shape() else {
            unreachable!("an attention block's input is (N, C, H, W)")
        };
        let t = h * w;
        let s = Attention {
            batch: n,
            channels: c,
            tokens: t,
            heads: b.cfg.heads(c),
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
            norm: b.norm(&format!("{name}.group_norm"), [n, c, t], false)?,
            s,
            q: pair(b, "to_q"),
            k: pair(b, "to_k"),
            v: pair(b, "to_v"),
            o: pair(b, "to_out.0"),
            buf: AttentionBuffers::new(b.gpu, &s),
            nx: b.act(&[n, c, t])?,
            y: b.tensor(&[n, c, t])?,
            out: ScaledSum::new(b, x.v.shape(), scale)?,
        })
    }

    /// The four projections' weights and biases through `pick`: their values or their gradients.
    fn projections<'a>(&'a self, pick: impl Fn(&'a Param) -> &'a Tensor) -> AttentionWeights<'a> {
        let (q, k, v, o) = (&self.q, &self.k, &self.v, &self.o);
        AttentionWeights {
            wq: pick(&q.0),
            bq: pick(&q.1),
            wk: pick(&k.0),
            bk: pick(&k.1),
            wv: pick(&v.0),
            bv: pick(&v.1),
            wo: pick(&o.0),
            bo: pick(&o.1),
        }
    }

    fn weights(&self) -> AttentionWeights<'_> {
        self.projections(|p| &p.w)
    }

    fn forward(&self, p: &mut Plan, x: &Act) {
        p.within(&self.name, |p| self.record_forward(p, x));
    }

    fn record_forward(&self, p: &mut Plan, x: &Act) {
        self.norm.forward(p, &x.v, &self.nx.v);
        attention::forward(p, &self.s, &self.nx.v, &self.weights(), &self.buf, &self.y);
        self.out.forward(p, &self.y, &x.v);
    }

    fn backward(&self, p: &mut Plan, x: &Act) {
        p.within(&self.name, |p| self.record_backward(p, x));
    }

    fn record_backward(&self, p: &mut Plan, x: &Act) {
        let d_sum = self.out.backward(p);
        elementwise::axpy(p, 1.0, d_sum, x.g()); // the residual connection
        attention::backward(
            p,
            &self.s,
            &self.nx.v,
            &self.weights(),
            &self.buf,
            d_sum,
            AttentionGrads {
                dx: self.nx.g(),
                dw: self.projections(|p| &p.g),
            },
        );
        self.norm.backward(p, &x.v, self.nx.g(), x.g());
    }
}

/// One entry of the network's layer list: what it computes, its parameters, and the activations it
/// reads (`x`, ...) and writes (`y`, or the block's output).
enum Layer {
    /// The sinusoidal projection of the timesteps (no parameters; nothing upstream to train).
    TimestepProj {
        t: Tensor,
        y: Act,
    },
    Linear {
        lin: Linear,
        x: Act,
        y: Act,
    },
    Silu {
        name: String,
        x: Act,
        y: Act,
    },
    /// emb += class_embedding[label], in place (a class-conditional model).
    ClassEmbedding {
        labels: Tensor,
        table: Param,
        emb: Act,
    },
    Conv {
        conv: Conv,
        x: Act,
        y: Act,
    },
    /// y = silu(group_norm(x)), fused.
    NormSilu {
        norm: Norm,
        x: Act,
        y: Act,
    },
    Res {
        block: Box<ResBlock>,
        x: Act,
        temb: Act,
    },
    Attn {
        block: Box<AttnBlock>,
        x: Act,
    },
    /// y = [h, skip] along channels: the up path takes the skip connection.
    Concat {
        name: String,
        h: Act,
        skip: Act,
        y: Act,
    },
    /// Nearest-neighbour 2× upsampling (diffusers `Upsample2D` before its conv).
    Upsample {
        name: String,
        x: Act,
        y: Act,
    },
}

impl Layer {
    fn output(&self) -> &Act {
        match self {
            Layer::TimestepProj { y, .. }
            | Layer::Linear { y, .. }
            | Layer::Silu { y, .. }
            | Layer::Conv { y, .. }
            | Layer::NormSilu { y, .. }
            | Layer::Concat { y, .. }
            | Layer::Upsample { y, .. } => y,
            Layer::ClassEmbedding { emb, .. } => emb,
            Layer::Res { block, .. } => &block.out.out,
            Layer::Attn { block, .. } => &block.out.out,
        }
    }

    fn forward(&self, p: &mut Plan, cfg: &UNetConfig, dropouts: &mut Vec<DropoutKernel>) {
        match self {
            Layer::TimestepProj { t, y } => p.within("time_embedding", |p| {
                let dim = y.v.shape()[1];
                let (flip, shift) = (cfg.flip_sin_to_cos, cfg.freq_shift as f32);
                timestep_embedding::forward(p, t.len(), dim, flip, shift, t, &y.v)
            }),
            Layer::Linear { lin, x, y } => lin.forward(p, &x.v, &y.v),
            Layer::Silu { name, x, y } => p.within(name, |p| silu::forward(p, &x.v, &y.v)),
            Layer::ClassEmbedding { labels, table, emb } => p.within("class_embedding", |p| {
                class_embedding::forward(p, labels, &table.w, &emb.v, true)
            }),
            Layer::Conv { conv, x, y } => conv.forward(p, &x.v, &y.v),
            Layer::NormSilu { norm, x, y } => norm.forward(p, &x.v, &y.v),
            Layer::Res { block, x, temb } => block.forward(p, x, temb, dropouts),
            Layer::Attn { block, x } => block.forward(p, x),
            Layer::Concat { name, h, skip, y } => p.within(name, |p| {
                concat::forward(p, &concat_shape(h, skip), None, &h.v, &skip.v, &y.v)
            }),
            Layer::Upsample { name, x, y } => p.within(name, |p| {
                let s = x.v.shape();
                upsample::forward(p, s[0], s[1], s[2], s[3], &x.v, &y.v)
            }),
        }
    }

    /// The mirror of `forward`: from the output's gradient, accumulate the inputs' and the
    /// parameters' gradients.
    fn backward(&self, p: &mut Plan, dropouts: &mut Vec<DropoutKernel>) {
        match self {
            Layer::TimestepProj { .. } => {}
            Layer::Linear { lin, x, y } => lin.backward(p, &x.v, y.g(), x.g.as_ref()),
            Layer::Silu { name, x, y } => p.within(name, |p| silu::backward(p, &x.v, y.g(), x.g())),
            Layer::ClassEmbedding { labels, table, emb } => p.within("class_embedding", |p| {
                class_embedding::backward(p, labels, emb.g(), &table.g)
            }),
            Layer::Conv { conv, x, y } => conv.backward(p, &x.v, y.g(), x.g.as_ref()),
            Layer::NormSilu { norm, x, y } => norm.backward(p, &x.v, y.g(), x.g()),
            Layer::Res { block, x, temb } => block.backward(p, x, temb, dropouts),
            Layer::Attn { block, x } => block.backward(p, x),
            Layer::Concat { name, h, skip, y } => p.within(name, |p| {
                concat::backward(p, &concat_shape(h, skip), None, y.g(), h.g(), skip.g())
            }),
            Layer::Upsample { name, x, y } => p.within(name, |p| {
                let s = x.v.shape();
                upsample::backward(p, s[0], s[1], s[2], s[3], y.g(), x.g())
            }),
        }
    }
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
    /// The network in forward order.
    layers: Vec<Layer>,
    /// Every activation gradient (empty without gradients).
    act_grads: Vec<Tensor>,
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
        let mut b = Builder {
            gpu,
            cfg,
            table,
            params,
            param_grads: grads,
            dummy: gpu.zeros(&[1]),
            max_binding: gpu.limits.max_storage_buffer_binding_size as usize,
            bytes: 0,
            largest: 0,
            flops: 0.0,
            layers: Vec::new(),
            act_grads: Vec::new(),
            dropouts: 0,
        };
        let n = batch;
        let size = cfg.sample_size();
        let ch = &cfg.block_out_channels;
        let input = b.tensor(&[n, cfg.in_channels, size, size])?;
        let timesteps = b.tensor(&[n])?;
        let class_labels = match cfg.null_class() {
            Some(null) => {
                let t = b.tensor(&[n])?;
                gpu.write(&t, &vec![null as f32; n]);
                Some(t)
            }
            None => None,
        };

        // Time embedding: sinusoidal projection, linear_1, SiLU, linear_2 (plus the class's row of
        // the class embedding); every res block applies SiLU before its own projection, so
        // silu(emb) is computed once here.
        let t_proj = Act::input(&b.tensor(&[n, ch[0]])?);
        b.layers.push(Layer::TimestepProj {
            t: timesteps.clone(),
            y: t_proj.clone(),
        });
        let e1 = b.linear_layer("time_embedding.linear_1", &t_proj, cfg.time_embed_dim())?;
        let e1a = b.silu_layer("time_embedding.act", &e1)?;
        let emb = b.linear_layer("time_embedding.linear_2", &e1a, cfg.time_embed_dim())?;
        if let Some(labels) = &class_labels {
            let table = b.param("class_embedding.weight");
            b.push(Layer::ClassEmbedding {
                labels: labels.clone(),
                table,
                emb: emb.clone(),
            });
        }
        let temb = b.silu_layer("time_embedding.nonlinearity", &emb)?;

        // Down path: every layer's output is a skip connection for the up path.
        let mut h = b.conv3_layer("conv_in", &Act::input(&input), ch[0])?;
        let mut skips = vec![h.clone()];
        for (i, &c) in ch.iter().enumerate() {
            for j in 0..cfg.layers_per_block {
                h = b.res_layer(&format!("down_blocks.{i}.resnets.{j}"), &h, &temb, c, 1.0)?;
                if cfg.down_kind(i) == BlockKind::Attn {
                    h = b.attn_layer(&format!("down_blocks.{i}.attentions.{j}"), &h, 1.0)?;
                }
                skips.push(h.clone());
            }
            if i + 1 < ch.len() {
                let pad = if cfg.downsample_padding == 0 {
                    [0, 1, 0, 1]
                } else {
                    [1, 1, 1, 1]
                };
                let s = Conv2d {
                    stride: 2,
                    pad,
                    ..conv3(h.v.shape(), c)
                };
                h = b.conv_layer(&format!("down_blocks.{i}.downsamplers.0.conv"), s, &h)?;
                skips.push(h.clone());
            }
        }

        // Middle: res, attention, res.
        let (last, scale) = (ch[ch.len() - 1], cfg.mid_block_scale_factor);
        h = b.res_layer("mid_block.resnets.0", &h, &temb, last, scale)?;
        if cfg.add_attention {
            h = b.attn_layer("mid_block.attentions.0", &h, scale)?;
        }
        h = b.res_layer("mid_block.resnets.1", &h, &temb, last, scale)?;

        // Up path: each level has layers_per_block + 1 layers, each taking the last skip.
        for (i, &c) in ch.iter().rev().enumerate() {
            for j in 0..=cfg.layers_per_block {
                let skip = skips.pop().expect("one skip per up layer");
                h = b.concat_layer(&format!("up_blocks.{i}.skip.{j}"), &h, &skip)?;
                h = b.res_layer(&format!("up_blocks.{i}.resnets.{j}"), &h, &temb, c, 1.0)?;
                if cfg.up_kind(i) == BlockKind::Attn {
                    h = b.attn_layer(&format!("up_blocks.{i}.attentions.{j}"), &h, 1.0)?;
                }
            }
            if i + 1 < ch.len() {
                h = b.upsample_layer(&format!("up_blocks.{i}.upsamplers.0"), &h)?;
                h = b.conv3_layer(&format!("up_blocks.{i}.upsamplers.0.conv"), &h, c)?;
            }
        }
        assert!(skips.is_empty(), "every skip consumed");

        h = b.norm_silu_layer("conv_norm_out", &h)?;
        let output = b.conv3_layer("conv_out", &h, cfg.out_channels)?;
        Ok(UNet {
            cfg: cfg.clone(),
            batch,
            training: grads.is_some(),
            input,
            timesteps,
            class_labels,
            activation_bytes: b.bytes,
            largest_activation_bytes: b.largest,
            forward_flops: b.flops,
            layers: b.layers,
            act_grads: b.act_grads,
            output,
        })
    }

    /// The predicted noise ε_θ(x_t, t), (N, C_out, H, W).
    pub fn output(&self) -> &Tensor {
        &self.output.v
    }

    /// ∂loss/∂output: the loss writes it before the backward runs.
    pub fn d_output(&self) -> &Tensor {
        self.output.g()
    }

    /// Record the forward pass: the layer list in order. Returns its dropout kernels.
    pub fn forward(&self, p: &mut Plan) -> Vec<DropoutKernel> {
        let mut dropouts = Vec::new();
        for layer in &self.layers {
            layer.forward(p, &self.cfg, &mut dropouts);
        }
        dropouts
    }

    /// Record the zeroing of every activation gradient (before the loss writes `d_output`).
    pub fn zero_grads(&self, p: &mut Plan) {
        assert!(self.training, "zero_grads on a network built without gradients");
        for g in &self.act_grads {
            p.clear(g);
        }
    }

    /// Record the backward pass, the layer list in reverse: from `d_output` to every parameter
    /// gradient (accumulated). Returns its dropout kernels.
    pub fn backward(&self, p: &mut Plan) -> Vec<DropoutKernel> {
        assert!(self.training, "backward on a network built without gradients");
        let mut dropouts = Vec::new();
        for layer in self.layers.iter().rev() {
            layer.backward(p, &mut dropouts);
        }
        dropouts
    }
}
