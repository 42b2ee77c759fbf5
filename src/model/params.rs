//! The parameter table: every tensor of a `UNet2DModel`, named and shaped exactly as diffusers,
//! laid out in one flat buffer (each tensor starting on a 256-byte boundary so it can be bound as
//! a view on any adapter), and the paper's initialisation.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::config::{BlockKind, UNetConfig};

/// Alignment of each parameter in the flat buffer, in elements (256 bytes).
pub const ALIGN: usize = 64;

#[derive(Clone, Debug, PartialEq)]
pub struct ParamEntry {
    pub name: String,
    pub shape: Vec<usize>,
    /// Offset in the flat buffer, in elements.
    pub offset: usize,
}

impl ParamEntry {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// All parameters in diffusers' registration order.
#[derive(Clone, Debug)]
pub struct ParamTable {
    pub entries: Vec<ParamEntry>,
    index: HashMap<String, usize>,
    /// Length of the flat buffer (with alignment padding), in elements.
    pub total: usize,
}

impl ParamTable {
    pub fn new(cfg: &UNetConfig) -> ParamTable {
        let mut t = ParamTable {
            entries: Vec::new(),
            index: HashMap::new(),
            total: 0,
        };
        let ch = &cfg.block_out_channels;
        let levels = ch.len();
        let temb = cfg.time_embed_dim();
        t.conv("conv_in", ch[0], cfg.in_channels, 3);
        t.linear("time_embedding.linear_1", temb, ch[0]);
        t.linear("time_embedding.linear_2", temb, temb);
        if let Some(rows) = cfg.num_class_embeds {
            t.push("class_embedding.weight".into(), vec![rows, temb]);
        }
        let mut prev = ch[0];
        for (i, &c) in ch.iter().enumerate() {
            for j in 0..cfg.layers_per_block {
                t.resnet(
                    &format!("down_blocks.{i}.resnets.{j}"),
                    if j == 0 { prev } else { c },
                    c,
                    temb,
                );
            }
            if cfg.down_kind(i) == BlockKind::Attn {
                for j in 0..cfg.layers_per_block {
                    t.attention(&format!("down_blocks.{i}.attentions.{j}"), c);
                }
            }
            if i + 1 < levels {
                t.conv(&format!("down_blocks.{i}.downsamplers.0.conv"), c, c, 3);
            }
            prev = c;
        }
        let last = ch[levels - 1];
        if cfg.add_attention {
            t.attention("mid_block.attentions.0", last);
        }
        t.resnet("mid_block.resnets.0", last, last, temb);
        t.resnet("mid_block.resnets.1", last, last, temb);
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        for i in 0..levels {
            let (out, prev_out, input) = (rev[i], rev[i.saturating_sub(1)], rev[(i + 1).min(levels - 1)]);
            for j in 0..=cfg.layers_per_block {
                let skip = if j == cfg.layers_per_block { input } else { out };
                let rin = if j == 0 { prev_out } else { out };
                t.resnet(&format!("up_blocks.{i}.resnets.{j}"), rin + skip, out, temb);
            }
            if cfg.up_kind(i) == BlockKind::Attn {
                for j in 0..=cfg.layers_per_block {
                    t.attention(&format!("up_blocks.{i}.attentions.{j}"), out);
                }
            }
            if i + 1 < levels {
                t.conv(&format!("up_blocks.{i}.upsamplers.0.conv"), out, out, 3);
            }
        }
        t.norm("conv_norm_out", ch[0]);
        t.conv("conv_out", cfg.out_channels, ch[0], 3);
        t
    }

    fn push(&mut self, name: String, shape: Vec<usize>) {
        let len: usize = shape.iter().product();
        self.index.insert(name.clone(), self.entries.len());
        self.entries.push(ParamEntry {
            name,
            shape,
            offset: self.total,
        });
        self.total += len.div_ceil(ALIGN) * ALIGN;
    }

    fn conv(&mut self, name: &str, c_out: usize, c_in: usize, k: usize) {
        self.push(format!("{name}.weight"), vec![c_out, c_in, k, k]);
        self.push(format!("{name}.bias"), vec![c_out]);
    }

    fn linear(&mut self, name: &str, out: usize, inp: usize) {
        self.push(format!("{name}.weight"), vec![out, inp]);
        self.push(format!("{name}.bias"), vec![out]);
    }

    fn norm(&mut self, name: &str, c: usize) {
        self.push(format!("{name}.weight"), vec![c]);
        self.push(format!("{name}.bias"), vec![c]);
    }

    fn resnet(&mut self, name: &str, c_in: usize, c_out: usize, temb: usize) {
        self.norm(&format!("{name}.norm1"), c_in);
        self.conv(&format!("{name}.conv1"), c_out, c_in, 3);
        self.linear(&format!("{name}.time_emb_proj"), c_out, temb);
        self.norm(&format!("{name}.norm2"), c_out);
        self.conv(&format!("{name}.conv2"), c_out, c_out, 3);
        if c_in != c_out {
            self.conv(&format!("{name}.conv_shortcut"), c_out, c_in, 1);
        }
    }

    fn attention(&mut self, name: &str, c: usize) {
        self.norm(&format!("{name}.group_norm"), c);
        for proj in ["to_q", "to_k", "to_v", "to_out.0"] {
            self.linear(&format!("{name}.{proj}"), c, c);
        }
    }

    pub fn get(&self, name: &str) -> Option<&ParamEntry> {
        self.index.get(name).map(|&i| &self.entries[i])
    }

    /// Number of parameters (without alignment padding).
    pub fn count(&self) -> usize {
        self.entries.iter().map(|e| e.len()).sum()
    }

    /// The paper's initialisation (hojonathanho/diffusion `nn.py`): weights variance-scaling
    /// fan-avg uniform with scale 1, biases zero, group norm γ = 1 and β = 0; the last conv of each
    /// res block, the attention output projection and `conv_out` with scale 1e-10 (near zero).
    /// The class-embedding table (rows, dim), which the paper does not have, is treated like a
    /// (dim → rows) linear layer's weight.
    pub fn init(&self, seed: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut flat = vec![0.0f32; self.total];
        for e in &self.entries {
            let dst = &mut flat[e.offset..e.offset + e.len()];
            let is_norm = e.name.contains("norm");
            if e.name.ends_with(".bias") {
                continue;
            }
            if is_norm {
                dst.fill(1.0);
                continue;
            }
            let near_zero =
                e.name.ends_with("conv2.weight") || e.name.ends_with("to_out.0.weight") || e.name == "conv_out.weight";
            let scale = if near_zero { 1e-10 } else { 1.0 };
            let receptive: usize = e.shape[2..].iter().product();
            let (fan_in, fan_out) = (e.shape[1] * receptive, e.shape[0] * receptive);
            let limit = (3.0 * scale / ((fan_in + fan_out) as f64 / 2.0)).sqrt() as f32;
            for v in dst.iter_mut() {
                *v = rng.random_range(-limit..=limit);
            }
        }
        flat
    }

    /// PyTorch's default initialisation, which diffusers' `UNet2DModel` keeps: conv and linear
    /// weights and biases U(−1/√fan_in, 1/√fan_in) (`kaiming_uniform_(a=√5)`), group norm γ = 1
    /// and β = 0, the class-embedding table N(0, 1) (`nn.Embedding`). No layer starts at zero.
    pub fn init_pytorch(&self, seed: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut flat = vec![0.0f32; self.total];
        let mut bound = 0.0f32;
        for e in &self.entries {
            let dst = &mut flat[e.offset..e.offset + e.len()];
            if e.name.contains("norm") {
                dst.fill(if e.name.ends_with(".weight") { 1.0 } else { 0.0 });
            } else if e.name == "class_embedding.weight" {
                for v in dst.iter_mut() {
                    // Box–Muller: a standard normal from two uniforms.
                    let (u1, u2): (f64, f64) = (rng.random_range(f64::MIN_POSITIVE..1.0), rng.random());
                    *v = ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32;
                }
            } else {
                // A bias follows its weight in the table and shares its fan-in.
                if e.name.ends_with(".weight") {
                    bound = 1.0 / ((e.shape[1..].iter().product::<usize>()) as f32).sqrt();
                }
                for v in dst.iter_mut() {
                    *v = rng.random_range(-bound..=bound);
                }
            }
        }
        flat
    }
}
