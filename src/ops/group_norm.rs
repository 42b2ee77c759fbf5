//! group_norm (not yet written).
