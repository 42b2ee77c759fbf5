//! CPU reference for dropout (not yet written).
