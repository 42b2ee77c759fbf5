//! CPU reference for conv2d (see `shaders/conv2d.wgsl`): plain f64 loops, the specification.
//!
//! Layouts: x (N, Cin, H, W), w (Cout, Cin, k, k) as in PyTorch, b (Cout), y (N, Cout, OH, OW).
//! y[n,o,oy,ox] = b[o] + Σ_{c,ky,kx} w[o,c,ky,kx] · x[n, c, oy·s + ky − pad_top, ox·s + kx − pad_left],
//! where taps outside the image read zero (zero padding).

use crate::ops::conv2d::Conv2d;

/// The input coordinate read by output coordinate `o` and kernel tap `t`, or `None` in the padding.
fn tap(o: usize, t: usize, stride: usize, pad: usize, size: usize) -> Option<usize> {
    let i = (o * stride + t) as isize - pad as isize;
    (i >= 0 && (i as usize) < size).then_some(i as usize)
}

/// y = conv(x, w) + b, shape (N, Cout, OH, OW).
pub fn forward(s: &Conv2d, x: &[f64], w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
    let (oh, ow, k) = (s.out_h(), s.out_w(), s.k);
    assert_eq!(x.len(), s.n * s.c_in * s.h * s.w, "x");
    assert_eq!(w.len(), s.c_out * s.c_in * k * k, "w");
    let mut y = vec![0.0; s.n * s.c_out * oh * ow];
    for n in 0..s.n {
        for o in 0..s.c_out {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = b.map_or(0.0, |b| b[o]);
                    for c in 0..s.c_in {
                        for ky in 0..k {
                            let Some(iy) = tap(oy, ky, s.stride, s.pad[0], s.h) else {
                                continue;
                            };
                            for kx in 0..k {
                                let Some(ix) = tap(ox, kx, s.stride, s.pad[2], s.w) else {
                                    continue;
                                };
                                acc += w[((o * s.c_in + c) * k + ky) * k + kx]
                                    * x[((n * s.c_in + c) * s.h + iy) * s.w + ix];
                            }
                        }
                    }
                    y[((n * s.c_out + o) * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
    y
}

/// Gradients (dx, dw, db) of the loss given dy = ∂loss/∂y: each forward product
/// w·x contributes dy·x to dw and dy·w to dx; db sums dy over batch and pixels.
pub fn backward(s: &Conv2d, x: &[f64], w: &[f64], dy: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (oh, ow, k) = (s.out_h(), s.out_w(), s.k);
    assert_eq!(dy.len(), s.n * s.c_out * oh * ow, "dy");
    let mut dx = vec![0.0; x.len()];
    let mut dw = vec![0.0; w.len()];
    let mut db = vec![0.0; s.c_out];
    for n in 0..s.n {
        for o in 0..s.c_out {
            for oy in 0..oh {
                for ox in 0..ow {
                    let g = dy[((n * s.c_out + o) * oh + oy) * ow + ox];
                    db[o] += g;
                    for c in 0..s.c_in {
                        for ky in 0..k {
                            let Some(iy) = tap(oy, ky, s.stride, s.pad[0], s.h) else {
                                continue;
                            };
                            for kx in 0..k {
                                let Some(ix) = tap(ox, kx, s.stride, s.pad[2], s.w) else {
                                    continue;
                                };
                                let wi = ((o * s.c_in + c) * k + ky) * k + kx;
                                let xi = ((n * s.c_in + c) * s.h + iy) * s.w + ix;
                                dw[wi] += g * x[xi];
                                dx[xi] += g * w[wi];
                            }
                        }
                    }
                }
            }
        }
    }
    (dx, dw, db)
}
