//! Diffusion processes: noise schedules, samplers and the training loop.

pub mod schedule;
