//! adam (not yet written).
