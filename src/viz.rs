//! Pictures: sample grids and loss curves as PNG (not yet written).
