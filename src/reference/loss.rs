//! CPU reference for loss (not yet written).
