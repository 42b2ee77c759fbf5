//! ema (not yet written).
