//! elementwise (not yet written).
