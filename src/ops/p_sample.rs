//! p_sample (not yet written).
