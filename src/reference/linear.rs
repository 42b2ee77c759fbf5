//! CPU reference for linear (not yet written).
