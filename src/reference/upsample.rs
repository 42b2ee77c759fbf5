//! CPU reference for nearest 2× upsampling (see `shaders/upsample.wgsl`).

/// y[n,c,oh,ow] = x[n,c,oh/2,ow/2]; x (n, c, h, w), y (n, c, 2h, 2w).
pub fn forward(n: usize, c: usize, h: usize, w: usize, x: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; n * c * 4 * h * w];
    for nc in 0..n * c {
        for oh in 0..2 * h {
            for ow in 0..2 * w {
                y[(nc * 2 * h + oh) * 2 * w + ow] = x[(nc * h + oh / 2) * w + ow / 2];
            }
        }
    }
    y
}

/// dx[n,c,h,w] = Σ of dy over the 2×2 block x[n,c,h,w] was copied to.
pub fn backward(n: usize, c: usize, h: usize, w: usize, dy: &[f64]) -> Vec<f64> {
    let mut dx = vec![0.0; n * c * h * w];
    for nc in 0..n * c {
        for oh in 0..2 * h {
            for ow in 0..2 * w {
                dx[(nc * h + oh / 2) * w + ow / 2] += dy[(nc * 2 * h + oh) * 2 * w + ow];
            }
        }
    }
    dx
}
