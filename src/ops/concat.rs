//! concat (not yet written).
