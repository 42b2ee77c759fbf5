//! timestep_embedding (not yet written).
