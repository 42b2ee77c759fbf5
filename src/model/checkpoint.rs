//! Weights on disk: diffusers' `diffusion_pytorch_model.safetensors` (+ `config.json`).
//! Loading checks every name and shape against the parameter table and accepts the legacy
//! attention names (`query`, `key`, `value`, `proj_attn`); saving is atomic.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use super::params::ParamTable;

/// diffusers' file names inside a model folder.
pub const WEIGHTS_FILE: &str = "diffusion_pytorch_model.safetensors";
pub const CONFIG_FILE: &str = "config.json";

/// Map a legacy diffusers attention name to the current one.
fn modern_name(name: &str) -> String {
    for (old, new) in [
        (".query.", ".to_q."),
        (".key.", ".to_k."),
        (".value.", ".to_v."),
        (".proj_attn.", ".to_out.0."),
    ] {
        if name.contains(old) {
            return name.replace(old, new);
        }
    }
    name.to_string()
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // subnormal: normalise
            let shift = f.leading_zeros() - 21;
            sign | ((127 - 15 + 1 - shift) << 23) | (((f << shift) & 0x3ff) << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

fn to_f32(view: &TensorView<'_>, name: &str, path: &Path) -> Result<Vec<f32>> {
    let data = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
            .collect(),
        d => bail!(
            "{}: tensor '{name}' has dtype {d:?}; expected F32, F16 or BF16",
            path.display()
        ),
    })
}

/// Read weights into a flat buffer laid out by `table`. Every parameter must be present with
/// the table's shape; extra tensors are an error too (they mean the config does not match).
pub fn load_weights(path: &Path, table: &ParamTable) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading weights {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a valid safetensors file ({e})", path.display()))?;
    let mut flat = vec![0.0f32; table.total];
    let mut seen: HashMap<String, bool> = table.entries.iter().map(|e| (e.name.clone(), false)).collect();
    for (name, view) in st.tensors() {
        let modern = modern_name(&name);
        let Some(entry) = table.get(&modern) else {
            bail!(
                "{}: tensor '{name}' is not a parameter of the model described by config.json (config and weights do not match)",
                path.display()
            );
        };
        let shape = view.shape().to_vec();
        if shape != entry.shape {
            bail!(
                "{}: tensor '{name}' has shape {shape:?}; config.json implies {:?} (config and weights do not match)",
                path.display(),
                entry.shape
            );
        }
        let values = to_f32(&view, &name, path)?;
        flat[entry.offset..entry.offset + entry.len()].copy_from_slice(&values);
        seen.insert(modern, true);
    }
    let mut missing: Vec<&String> = seen.iter().filter(|(_, &v)| !v).map(|(k, _)| k).collect();
    if !missing.is_empty() {
        missing.sort();
        bail!(
            "{}: {} parameters missing (config and weights do not match), e.g. {:?}",
            path.display(),
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }
    Ok(flat)
}

/// Serialize `flat` (laid out by `table`) as safetensors bytes, diffusers names, f32.
pub fn weights_bytes(table: &ParamTable, flat: &[f32]) -> Result<Vec<u8>> {
    let mut views = Vec::with_capacity(table.entries.len());
    for e in &table.entries {
        let data: &[u8] = bytemuck::cast_slice(&flat[e.offset..e.offset + e.len()]);
        views.push((e.name.clone(), TensorView::new(Dtype::F32, e.shape.clone(), data)?));
    }
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    Ok(safetensors::serialize(views, Some(meta))?)
}
