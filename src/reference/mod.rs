//! Plain-Rust CPU references of every op, in f64 with obvious loops: the specification each
//! WGSL kernel is tested against, and whose backward passes are checked by finite differences.

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
pub mod pool;
pub mod q_sample;
pub mod reduce;
pub mod rng;
pub mod silu;
pub mod softmax;
pub mod timestep_embedding;
pub mod upsample;
