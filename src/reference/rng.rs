//! CPU reference for the counter-based RNG of shaders/rng.wgsl (not yet written).
