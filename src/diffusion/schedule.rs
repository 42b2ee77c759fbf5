//! Noise schedules (not yet written).
