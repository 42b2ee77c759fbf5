//! CPU reference for timestep_embedding (not yet written).
