//! CPU reference for elementwise (not yet written).
