//! GPU ops: each module binds one `shaders/<op>.wgsl` (forward and backward entry points)
//! and records its kernels into a [`crate::gpu::Plan`]. The CPU twin of `ops::x` is `reference::x`.

pub mod adam;
pub mod attention;
pub mod class_embedding;
pub mod concat;
pub mod conv2d;
pub mod cross_entropy;
pub mod ddim;
pub mod dropout;
pub mod elementwise;
pub mod ema;
pub mod group_norm;
pub mod guidance;
pub mod linear;
pub mod loss;
pub mod matmul;
pub mod p_sample;
pub mod peak;
pub mod pool;
pub mod q_sample;
pub mod reduce;
pub mod silu;
pub mod softmax;
pub mod timestep_embedding;
pub mod tune;
pub mod upsample;
