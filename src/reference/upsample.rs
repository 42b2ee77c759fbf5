//! CPU reference for upsample (not yet written).
