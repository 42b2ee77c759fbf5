//! attention (not yet written).
