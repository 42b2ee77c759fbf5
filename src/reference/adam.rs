//! CPU reference for adam (not yet written).
