//! CPU reference for permute (not yet written).
