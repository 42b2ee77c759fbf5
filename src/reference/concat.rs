//! CPU reference for concat (not yet written).
