//! softmax (not yet written).
