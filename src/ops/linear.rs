//! linear (not yet written).
