//! 2D convolution, NCHW: `shaders/conv2d.wgsl`, reference in `src/reference/conv2d.rs`.
//!
//! y[n,o,oy,ox] = b[o] + Σ_{c,ky,kx} w[o,c,ky,kx] · x[n, c, oy·s + ky − pad_top, ox·s + kx − pad_left]
//! with zero padding. x (N, Cin, H, W), w (Cout, Cin, k, k) PyTorch layout, b (Cout), y (N, Cout, OH, OW).
//!
//! Two variants of every pass, both tested against the reference:
//! - `*_naive`: one invocation per output element, the readable definition.
//! - the public `forward` / `backward_*`: register-blocked implicit GEMMs (no im2col buffer,
//!   no atomics, no workgroup barriers); see the header of the shader for the tilings.

use crate::gpu::{grid_1d, Plan, Tensor};
use crate::shader;

/// Shape of a convolution: square k×k kernel, equal stride in y and x, asymmetric zero padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2d {
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    /// Square kernel k×k.
    pub k: usize,
    pub stride: usize,
    /// [top, bottom, left, right]; DDPM's downsample uses [0, 1, 0, 1].
    pub pad: [usize; 4],
}

impl Conv2d {
    pub fn out_h(&self) -> usize {
        self.out_size(self.h, self.pad[0] + self.pad[1])
    }

    pub fn out_w(&self) -> usize {
        self.out_size(self.w, self.pad[2] + self.pad[3])
    }

    fn out_size(&self, size: usize, pad: usize) -> usize {
        assert!(
            self.stride >= 1 && self.k >= 1 && size + pad >= self.k,
            "conv2d: kernel {} larger than padded input {} (or stride 0) in {self:?}",
            self.k,
            size + pad
        );
        (size + pad - self.k) / self.stride + 1
    }

    /// FLOPs of the forward pass, 2·N·Cout·OH·OW·Cin·k·k (each backward pass costs the same).
    pub fn flops(&self) -> f64 {
        2.0 * (self.n * self.c_out * self.out_h() * self.out_w() * self.c_in * self.k * self.k) as f64
    }

    fn check(&self, x: usize, w: usize, y: usize) {
        assert_eq!(
            x,
            self.n * self.c_in * self.h * self.w,
            "conv2d: x/dx length for {self:?}"
        );
        assert_eq!(
            w,
            self.c_out * self.c_in * self.k * self.k,
            "conv2d: w/dw length for {self:?}"
        );
        assert_eq!(
            y,
            self.n * self.c_out * self.out_h() * self.out_w(),
            "conv2d: y/dy length for {self:?}"
        );
    }
}

/// Mirrors `Params` in `shaders/conv2d.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    ci: u32,
    h: u32,
    w: u32,
    co: u32,
    oh: u32,
    ow: u32,
    k: u32,
    stride: u32,
    pad_t: i32,
    pad_l: i32,
    flags: u32,
    w_base: i32,
    w_so: i32,
    w_si: i32,
    w_sy: i32,
    w_sx: i32,
    groups: u32,
}

/// `flags` bits.
const ADD_BIAS: u32 = 1;
const ACCUMULATE: u32 = 2;

/// Channels per invocation of the tiled kernels (output channels of `conv_tiled` and
/// `backward_weight`, input channels of `backward_input_strided`); `TILE_C` in the shader.
const TILE_C: usize = 16;
/// Pixels along x per invocation of the tiled convolutions (one vec4); input channels per
/// invocation of `backward_weight`.
const TILE_P: usize = 4;
/// Workgroup sizes (`WG`, `TILE_WG`, `BIAS_WG`, `BW_WG` in the shader).
const WG: u32 = 64;
const TILE_WG: u32 = 64;
const BIAS_WG: u32 = 8;
const BW_WG: u32 = 16;

fn u(v: usize) -> u32 {
    u32::try_from(v).expect("conv2d: size exceeds u32")
}

fn i(v: usize) -> i32 {
    i32::try_from(v).expect("conv2d: size exceeds i32")
}

/// The parameters of the convolution `s` itself, weights in PyTorch layout.
fn params(s: &Conv2d) -> Params {
    let k = s.k;
    Params {
        n: u(s.n),
        ci: u(s.c_in),
        h: u(s.h),
        w: u(s.w),
        co: u(s.c_out),
        oh: u(s.out_h()),
        ow: u(s.out_w()),
        k: u(k),
        stride: u(s.stride),
        pad_t: i(s.pad[0]),
        pad_l: i(s.pad[2]),
        flags: 0,
        w_base: 0,
        w_so: i(s.c_in * k * k),
        w_si: i(k * k),
        w_sy: i(k),
        w_sx: 1,
        groups: 0,
    }
}

/// Workgroups for `per_channel` invocations per channel block, times `channels.div_ceil(TILE_C)` blocks in z.
fn tiled_grid(per_channel: usize, channels: usize) -> [u32; 3] {
    let [x, y, _] = grid_1d(per_channel, TILE_WG);
    [x, y, u(channels.div_ceil(TILE_C))]
}

/// The tiled direct convolution `conv_tiled` with parameters `q` (in the geometry of the
/// convolution it runs): input at binding 1, weights 2, bias 3, output 4.
fn conv_tiled(p: &mut Plan, mut q: Params, input: &Tensor, w: &Tensor, b: Option<&Tensor>, out: &Tensor) {
    q.groups = u((q.ow as usize).div_ceil(TILE_P));
    q.flags |= if b.is_some() { ADD_BIAS } else { 0 };
    // Without a bias the weights are bound in its place (read-only twice is allowed) and unused.
    let bias = b.unwrap_or(w);
    let grid = tiled_grid(q.n as usize * q.oh as usize * q.groups as usize, q.co as usize);
    p.kernel(
        &shader!("conv2d"),
        "conv_tiled",
        &q,
        &[(1, input), (2, w), (3, bias), (4, out)],
        grid,
    );
}

/// y = conv(x, w) + b. Register-blocked: each invocation computes 16 output channels × 4 pixels.
pub fn forward(p: &mut Plan, s: &Conv2d, x: &Tensor, w: &Tensor, b: Option<&Tensor>, y: &Tensor) {
    s.check(x.len(), w.len(), y.len());
    conv_tiled(p, params(s), x, w, b, y);
}

/// dx += ∂loss/∂x. With stride 1 this is the convolution of dy with the flipped, channel-transposed
/// kernel (padding k−1−pad), run by the forward's tiled kernel; other strides use a tiled gather.
pub fn backward_input(p: &mut Plan, s: &Conv2d, dy: &Tensor, w: &Tensor, dx: &Tensor) {
    s.check(dx.len(), w.len(), dy.len());
    let k = s.k;
    if s.stride == 1 {
        // Output channel c of the transposed conv reads input channel o at tap (k−1−ky, k−1−kx):
        // w[o, c, k−1−ky, k−1−kx] = w_base + o·w_si + c·w_so + ky·w_sy + kx·w_sx below.
        let q = Params {
            n: u(s.n),
            ci: u(s.c_out),
            h: u(s.out_h()),
            w: u(s.out_w()),
            co: u(s.c_in),
            oh: u(s.h),
            ow: u(s.w),
            k: u(k),
            stride: 1,
            pad_t: i(k - 1) - i(s.pad[0]),
            pad_l: i(k - 1) - i(s.pad[2]),
            flags: ACCUMULATE,
            w_base: i(k * k - 1),
            w_so: i(k * k),
            w_si: i(s.c_in * k * k),
            w_sy: -i(k),
            w_sx: -1,
            groups: 0,
        };
        conv_tiled(p, q, dy, w, None, dx);
    } else {
        let mut q = params(s);
        // Per residue class (ry, rx): rows of ⌈H/s⌉ × groups of TILE_P pixels spaced by s.
        q.groups = u(s.w.div_ceil(s.stride).div_ceil(TILE_P));
        let [x, y, _] = grid_1d(s.n * s.h.div_ceil(s.stride) * q.groups as usize, TILE_WG);
        let z = s.c_in.div_ceil(TILE_C) * s.stride * s.stride;
        assert!(z <= 65535, "conv2d: too many channel blocks × stride² for {s:?}");
        let grid = [x, y, u(z)];
        p.kernel(
            &shader!("conv2d"),
            "backward_input_strided",
            &q,
            &[(2, w), (5, dy), (6, dx)],
            grid,
        );
    }
}

/// dw += ∂loss/∂w: per weight element a reduction over N·OH·OW, blocked 16 output × 4 input channels.
pub fn backward_weight(p: &mut Plan, s: &Conv2d, x: &Tensor, dy: &Tensor, dw: &Tensor) {
    s.check(x.len(), dw.len(), dy.len());
    let q = params(s);
    let groups = s.c_out.div_ceil(TILE_C) * s.k * s.k;
    assert!(
        groups <= 65535,
        "conv2d: too many output channel blocks × taps for {s:?}"
    );
    let grid = [u(s.c_in.div_ceil(TILE_P).div_ceil(BW_WG as usize)), 1, u(groups)];
    p.kernel(
        &shader!("conv2d"),
        "backward_weight",
        &q,
        &[(1, x), (5, dy), (7, dw)],
        grid,
    );
}

/// db += Σ_{n,oy,ox} dy[n, ·, oy, ox]. One invocation per output channel.
pub fn backward_bias(p: &mut Plan, s: &Conv2d, dy: &Tensor, db: &Tensor) {
    assert_eq!(
        dy.len(),
        s.n * s.c_out * s.out_h() * s.out_w(),
        "conv2d: dy length for {s:?}"
    );
    assert_eq!(db.len(), s.c_out, "conv2d: db length for {s:?}");
    p.kernel(
        &shader!("conv2d"),
        "backward_bias",
        &params(s),
        &[(5, dy), (8, db)],
        grid_1d(s.c_out, BIAS_WG),
    );
}

/// y = conv(x, w) + b, one invocation per output element.
pub fn forward_naive(p: &mut Plan, s: &Conv2d, x: &Tensor, w: &Tensor, b: Option<&Tensor>, y: &Tensor) {
    s.check(x.len(), w.len(), y.len());
    let mut q = params(s);
    q.flags = if b.is_some() { ADD_BIAS } else { 0 };
    p.kernel(
        &shader!("conv2d"),
        "forward_naive",
        &q,
        &[(1, x), (2, w), (3, b.unwrap_or(w)), (4, y)],
        grid_1d(y.len(), WG),
    );
}

/// dx += ∂loss/∂x, one invocation per input element gathering over (Cout, ky, kx).
pub fn backward_input_naive(p: &mut Plan, s: &Conv2d, dy: &Tensor, w: &Tensor, dx: &Tensor) {
    s.check(dx.len(), w.len(), dy.len());
    p.kernel(
        &shader!("conv2d"),
        "backward_input_naive",
        &params(s),
        &[(2, w), (5, dy), (6, dx)],
        grid_1d(dx.len(), WG),
    );
}

/// dw += ∂loss/∂w, one invocation per weight element reducing over (N, OH, OW).
pub fn backward_weight_naive(p: &mut Plan, s: &Conv2d, x: &Tensor, dy: &Tensor, dw: &Tensor) {
    s.check(x.len(), dw.len(), dy.len());
    p.kernel(
        &shader!("conv2d"),
        "backward_weight_naive",
        &params(s),
        &[(1, x), (5, dy), (7, dw)],
        grid_1d(dw.len(), WG),
    );
}
