//! CPU reference for group_norm (not yet written).
