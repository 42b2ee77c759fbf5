//! dropout (not yet written).
