//! q_sample (not yet written).
