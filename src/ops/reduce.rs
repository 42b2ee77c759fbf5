//! reduce (not yet written).
