//! CPU reference for ema (not yet written).
