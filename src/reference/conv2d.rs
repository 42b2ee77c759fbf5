//! CPU reference for conv2d (not yet written).
