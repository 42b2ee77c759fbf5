//! ddpm-gpu: the DDPM U-Net (Ho et al. 2020) trained and sampled on any GPU through wgpu, with
//! hand-written WGSL kernels and hand-derived backward passes. No ML framework.
//!
//! Layers, each knowing only those below it:
//! - `gpu`: device context, tensors, shaders, pipeline cache, plans (recorded dispatch lists);
//! - `ops`: one module per op, forward and backward, binding `shaders/<op>.wgsl`;
//! - `reference`: the plain-Rust CPU twin of every op, the specification the kernels are tested
//!   against.

pub mod data;
pub mod diffusion;
pub mod dist;
pub mod files;
pub mod gpu;
pub mod model;
pub mod ops;
pub mod quality;
pub mod reference;
pub mod viz;
