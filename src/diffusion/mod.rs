//! Diffusion processes: noise schedules, samplers and the training loop.

pub mod ddim;
pub mod eval;
pub mod sampler;
pub mod schedule;
pub mod trainer;
pub mod vlb;
