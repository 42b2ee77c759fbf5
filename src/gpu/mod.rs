//! The GPU runtime: device context, tensors, shaders, cached pipelines and recorded plans.
//!
//! Conventions shared by every op (see `src/ops/`):
//! - Tensors are `f32`, row-major; images are NCHW.
//! - Forward kernels *write* (`=`) their outputs; backward kernels *accumulate* (`+=`) into
//!   gradient buffers, as in llm.c. Gradient buffers are zeroed by buffer clears recorded in the
//!   plan ([`Plan::clear`], wgpu's `clear_buffer`, no kernel): parameter gradients once per step,
//!   activation gradients before each backward pass.
//! - An op records one or more [`Kernel`]s into a [`Plan`]; a plan is submitted as one command
//!   buffer and can be replayed as often as wanted (buffers and bind groups are made once).

mod context;
mod plan;
mod profile;
mod shader;
mod tensor;

pub use context::{adapter_features, choose_adapter, enumerate_adapters, Gpu, GpuInner, GpuOptions, Tuning};
pub use plan::{grid_1d, Kernel, KernelRef, Plan, Timer};
pub use profile::{Dispatch, Probes, Profile, Row};
pub use shader::{needs, preprocess, Needs, Shader, ALL as SHADERS};
pub use tensor::Tensor;
