//! CPU reference for p_sample (not yet written).
