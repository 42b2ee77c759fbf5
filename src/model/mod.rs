//! The DDPM U-Net in diffusers UNet2DModel layout (not yet written).
