//! loss (not yet written).
