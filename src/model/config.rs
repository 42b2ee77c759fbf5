//! The U-Net configuration: the fields of diffusers' `UNet2DModel` `config.json`, their defaults,
//! validation (anything we do not support is refused naming the field), and the presets.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

fn d_in() -> usize {
    3
}
fn d_true() -> bool {
    true
}
fn d_positional() -> String {
    "positional".into()
}
fn d_down() -> Vec<String> {
    ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"]
        .map(String::from)
        .to_vec()
}
fn d_up() -> Vec<String> {
    ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"]
        .map(String::from)
        .to_vec()
}
fn d_channels() -> Vec<usize> {
    vec![224, 448, 672, 896]
}
fn d_two() -> usize {
    2
}
fn d_one_f() -> f32 {
    1.0
}
fn d_one() -> usize {
    1
}
fn d_conv() -> String {
    "conv".into()
}
fn d_silu() -> String {
    "silu".into()
}
fn d_head_dim() -> Option<usize> {
    Some(8)
}
fn d_groups() -> usize {
    32
}
fn d_eps() -> f32 {
    1e-5
}
fn d_default() -> String {
    "default".into()
}
fn d_class() -> String {
    "UNet2DModel".into()
}

/// diffusers `UNet2DModel` configuration. Missing fields take diffusers' defaults; every field is
/// written back explicitly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    #[serde(rename = "_class_name", default = "d_class")]
    pub class_name: String,
    pub sample_size: Option<usize>,
    #[serde(default = "d_in")]
    pub in_channels: usize,
    #[serde(default = "d_in")]
    pub out_channels: usize,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "d_positional")]
    pub time_embedding_type: String,
    #[serde(default)]
    pub freq_shift: usize,
    #[serde(default = "d_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default = "d_down")]
    pub down_block_types: Vec<String>,
    #[serde(default = "d_up")]
    pub up_block_types: Vec<String>,
    #[serde(default = "d_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "d_two")]
    pub layers_per_block: usize,
    #[serde(default = "d_one_f")]
    pub mid_block_scale_factor: f32,
    #[serde(default = "d_one")]
    pub downsample_padding: usize,
    #[serde(default = "d_conv")]
    pub downsample_type: String,
    #[serde(default = "d_conv")]
    pub upsample_type: String,
    #[serde(default)]
    pub dropout: f32,
    #[serde(default = "d_silu")]
    pub act_fn: String,
    /// `null` = one head as wide as the block's channels.
    #[serde(default = "d_head_dim")]
    pub attention_head_dim: Option<usize>,
    #[serde(default = "d_groups")]
    pub norm_num_groups: usize,
    #[serde(default)]
    pub attn_norm_num_groups: Option<usize>,
    #[serde(default = "d_eps")]
    pub norm_eps: f32,
    #[serde(default = "d_default")]
    pub resnet_time_scale_shift: String,
    #[serde(default = "d_true")]
    pub add_attention: bool,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    #[serde(default)]
    pub num_train_timesteps: Option<usize>,
}

/// The kinds of down/up blocks of a `UNet2DModel` we build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    Plain,
    Attn,
}

impl UNetConfig {
    /// Read and validate `config.json`.
    pub fn load(path: &Path) -> Result<UNetConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading model config {}", path.display()))?;
        let cfg: UNetConfig = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a valid UNet2DModel config.json", path.display()))?;
        cfg.validate()
            .with_context(|| format!("{}: unsupported model config", path.display()))?;
        Ok(cfg)
    }

    /// Write `config.json` with every key explicit.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("config serializes")
    }

    /// Refuse, naming the field, whatever this implementation does not support.
    pub fn validate(&self) -> Result<()> {
        let size = self
            .sample_size
            .context("field `sample_size`: required (the image side in pixels)")?;
        let levels = self.block_out_channels.len();
        if levels == 0 {
            bail!("field `block_out_channels`: must not be empty");
        }
        if self.down_block_types.len() != levels || self.up_block_types.len() != levels {
            bail!(
                "fields `down_block_types`/`up_block_types`: need {levels} entries each (one per `block_out_channels`), got {} and {}",
                self.down_block_types.len(),
                self.up_block_types.len()
            );
        }
        for t in &self.down_block_types {
            if t != "DownBlock2D" && t != "AttnDownBlock2D" {
                bail!(
                    "field `down_block_types`: unsupported block type '{t}' (supported: DownBlock2D, AttnDownBlock2D)"
                );
            }
        }
        for t in &self.up_block_types {
            if t != "UpBlock2D" && t != "AttnUpBlock2D" {
                bail!("field `up_block_types`: unsupported block type '{t}' (supported: UpBlock2D, AttnUpBlock2D)");
            }
        }
        let check = |field: &str, value: &str, want: &str| -> Result<()> {
            if value != want {
                bail!("field `{field}`: '{value}' is not supported (only '{want}')");
            }
            Ok(())
        };
        check("act_fn", &self.act_fn, "silu")?;
        check("time_embedding_type", &self.time_embedding_type, "positional")?;
        check("resnet_time_scale_shift", &self.resnet_time_scale_shift, "default")?;
        check("downsample_type", &self.downsample_type, "conv")?;
        check("upsample_type", &self.upsample_type, "conv")?;
        if let Some(t) = &self.class_embed_type {
            bail!(
                "field `class_embed_type`: '{t}' is not supported (only null, a learned table of `num_class_embeds` rows)"
            );
        }
        if self.num_class_embeds == Some(0) {
            bail!("field `num_class_embeds`: must be at least 1 (or null for an unconditional model)");
        }
        if self.downsample_padding > 1 {
            bail!(
                "field `downsample_padding`: {} is not supported (0 or 1)",
                self.downsample_padding
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("field `dropout`: {} must be in [0, 1)", self.dropout);
        }
        if self.block_out_channels.contains(&0) {
            bail!(
                "field `block_out_channels`: every level needs at least one channel, got {:?}",
                self.block_out_channels
            );
        }
        if self.layers_per_block == 0 {
            bail!("field `layers_per_block`: must be at least 1");
        }
        let groups = self.norm_num_groups;
        if let Some(g) = self.attn_norm_num_groups {
            if g != groups {
                bail!("field `attn_norm_num_groups`: only null or equal to `norm_num_groups` is supported");
            }
        }
        for &c in &self.block_out_channels {
            if groups == 0 || c % groups != 0 {
                bail!("field `norm_num_groups`: {groups} does not divide block channel count {c}");
            }
            if let Some(d) = self.attention_head_dim {
                if d == 0 || c % d != 0 {
                    bail!("field `attention_head_dim`: {d} does not divide block channel count {c}");
                }
            }
        }
        if self.in_channels == 0 || self.out_channels == 0 {
            bail!("fields `in_channels`/`out_channels`: must be positive");
        }
        // Every level but the last halves the resolution, and the up path doubles it back.
        let factor = 1usize << (levels - 1);
        if size % factor != 0 {
            bail!("field `sample_size`: {size} must be divisible by {factor} for {levels} resolution levels");
        }
        if self.center_input_sample {
            bail!("field `center_input_sample`: true is not supported (scale data to [-1, 1] instead)");
        }
        Ok(())
    }

    pub fn sample_size(&self) -> usize {
        self.sample_size.expect("validated config has sample_size")
    }

    pub fn down_kind(&self, level: usize) -> BlockKind {
        if self.down_block_types[level] == "AttnDownBlock2D" {
            BlockKind::Attn
        } else {
            BlockKind::Plain
        }
    }

    pub fn up_kind(&self, level: usize) -> BlockKind {
        if self.up_block_types[level] == "AttnUpBlock2D" {
            BlockKind::Attn
        } else {
            BlockKind::Plain
        }
    }

    /// Attention heads for a block of `channels` channels.
    pub fn heads(&self, channels: usize) -> usize {
        match self.attention_head_dim {
            Some(d) => channels / d,
            None => 1,
        }
    }

    /// Width of the time embedding (4 × the first block's channels, as diffusers).
    pub fn time_embed_dim(&self) -> usize {
        self.block_out_channels[0] * 4
    }

    /// The label meaning "no class" of a class-conditional model: the last row of the class
    /// embedding (diffusers `num_class_embeds`). ddpm-gpu trains conditional models on
    /// `num_class_embeds − 1` classes plus this label, which classifier-free guidance needs.
    pub fn null_class(&self) -> Option<usize> {
        self.num_class_embeds.map(|rows| rows - 1)
    }

    /// A named preset.
    pub fn preset(name: &str) -> Result<UNetConfig> {
        let base = UNetConfig {
            class_name: d_class(),
            sample_size: Some(28),
            in_channels: 1,
            out_channels: 1,
            center_input_sample: false,
            time_embedding_type: d_positional(),
            freq_shift: 1,
            flip_sin_to_cos: false,
            down_block_types: vec![],
            up_block_types: vec![],
            block_out_channels: vec![],
            layers_per_block: 1,
            mid_block_scale_factor: 1.0,
            downsample_padding: 0,
            downsample_type: d_conv(),
            upsample_type: d_conv(),
            dropout: 0.0,
            act_fn: d_silu(),
            attention_head_dim: None,
            norm_num_groups: 8,
            attn_norm_num_groups: None,
            norm_eps: 1e-6,
            resnet_time_scale_shift: d_default(),
            add_attention: true,
            class_embed_type: None,
            num_class_embeds: None,
            num_train_timesteps: Some(1000),
        };
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let cfg = match name {
            // The paper's CIFAR-10 model (google/ddpm-cifar10-32): 35.7M parameters.
            "ddpm-cifar10" => UNetConfig {
                sample_size: Some(32),
                in_channels: 3,
                out_channels: 3,
                down_block_types: s(&["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"]),
                up_block_types: s(&["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]),
                block_out_channels: vec![128, 256, 256, 256],
                layers_per_block: 2,
                norm_num_groups: 32,
                dropout: 0.1,
                ..base
            },
            // Sized for a CPU Vulkan driver: 28 → 14 → 7, attention only at 7×7, one res block per level.
            "mnist" => UNetConfig {
                down_block_types: s(&["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"]),
                up_block_types: s(&["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"]),
                block_out_channels: vec![16, 32, 32],
                layers_per_block: 1,
                norm_num_groups: 8,
                ..base
            },
            // For real GPUs: wider, two res blocks per level, attention at 14×14.
            "mnist-large" => UNetConfig {
                down_block_types: s(&["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"]),
                up_block_types: s(&["AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"]),
                block_out_channels: vec![64, 128, 128],
                layers_per_block: 2,
                norm_num_groups: 32,
                dropout: 0.1,
                ..base
            },
            // For tests: tiny and quick on lavapipe.
            "tiny" => UNetConfig {
                sample_size: Some(8),
                down_block_types: s(&["DownBlock2D", "AttnDownBlock2D"]),
                up_block_types: s(&["AttnUpBlock2D", "UpBlock2D"]),
                block_out_channels: vec![8, 16],
                layers_per_block: 1,
                norm_num_groups: 4,
                ..base
            },
            other => bail!("unknown model preset '{other}' (known: {})", PRESETS.join(", ")),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Names accepted by [`UNetConfig::preset`].
pub const PRESETS: &[&str] = &["mnist", "mnist-large", "ddpm-cifar10", "tiny"];
