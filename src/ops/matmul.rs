//! matmul (not yet written).
