//! upsample (not yet written).
