//! CPU reference for reduce (not yet written).
