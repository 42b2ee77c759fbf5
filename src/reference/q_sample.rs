//! CPU reference for q_sample (not yet written).
