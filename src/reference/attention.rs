//! CPU reference for attention (not yet written).
