//! 2D convolution, NCHW: `shaders/conv2d.wgsl`, reference in `src/reference/conv2d.rs`.
//!
//! y[n,o,oy,ox] = b[o] + Σ_{c,ky,kx} w[o,c,ky,kx] · x[n, c, oy·s + ky − pad_top, ox·s + kx − pad_left]
//! with zero padding. x (N, Cin, H, W), w (Cout, Cin, k, k) PyTorch layout, b (Cout), y (N, Cout, OH, OW).
//!
//! Variants of every pass ([`Variant`]), all tested against the reference:
//! - `Naive`: one invocation per output element, the readable definition (`*_naive`).
//! - `Tiled { tile_c }`: register-blocked implicit GEMMs (no im2col buffer, no atomics, no
//!   workgroup barriers), `tile_c` channels per invocation; see the header of the shader.
//! - `Split { tile_c, splits }` (backward_weight only): the tiled weight gradient with its
//!   reduction over the batch cut into `splits` partial sums, added up by a second small kernel.
//! - `Shared`: every pass as a GEMM tiled through workgroup memory (64×64 tiles of the output,
//!   cooperative loads, barriers, 4×4 register blocks), the textbook GPU form; see the shader.
//! - `SharedSplit { splits }` (backward_weight only): `Shared` with split-K, its long reduction
//!   over N·OH·OW cut into `splits` slices run by their own workgroups (the small dW alone gives a
//!   GPU only a handful of tiles), partial tiles added up by the same second kernel as `Split`.
//!
//! The public [`forward`] / [`backward_input`] / [`backward_weight`] run the variants that
//! [`Choice::for_adapter`] picks for the adapter and shape; `*_with` run a given variant.

use std::sync::OnceLock;

use crate::gpu::{grid_1d, Gpu, Plan, Shader, Tensor};
use crate::ops::linear;
pub use crate::ops::linear::BiasSum;
use crate::shader;

/// Shape of a convolution: square k×k kernel, equal stride in y and x, asymmetric zero padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
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
    splits: u32,
}

/// `flags` bits.
const ADD_BIAS: u32 = 1;
const ACCUMULATE: u32 = 2;

/// Largest channel tile: channels per invocation of the tiled kernels (output channels of
/// `conv_tiled` and `backward_weight`, input channels of `backward_input_strided`); `TILE_C` in the
/// shader. Larger register tiles spill on lavapipe and run several times slower (measured: 24 and
/// 32 channels × 8 pixels are 3–8× slower than 16 × 8).
const MAX_TILE_C: usize = 16;
/// Output pixels along x per invocation of `conv_tiled` (two vec4).
const CONV_PX: usize = 8;
/// Pixels along x per invocation of `backward_input_strided` (two vec4).
const TILE_P: usize = 8;
/// Input channels per invocation of `backward_weight` (two vec4).
const BW_CI: usize = 8;
/// Output tile of the `*_shared` kernels: `SH_BM` rows (channels) × `SH_BN` columns (pixels, or
/// weight taps for backward_weight), as in the shader.
const SH_BM: usize = 64;
const SH_BN: usize = 64;
/// Reduction indices per chunk of the `*_shared` kernels (`SH_BK`): a `SharedSplit` slice is a
/// whole number of chunks.
const SH_BK: usize = 16;
/// Workgroup sizes (`WG`, `TILE_WG`, `BW_WG` in the shader).
const WG: u32 = 64;
const TILE_WG: u32 = 64;
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
        splits: 1,
    }
}

/// How one pass of a convolution is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Variant {
    /// One invocation per output element (`*_naive`).
    Naive,
    /// Register-blocked kernels with `tile_c` ∈ {1, 2, 4, 8, 16} channels per invocation: output
    /// channels × 8 pixels (forward, stride-1 backward_input), input channels × 8 pixels spaced
    /// by the stride (strided backward_input), output channels × 8 input channels (backward_weight).
    Tiled { tile_c: usize },
    /// forward and stride-1 backward_input: `Tiled` with `tile_c` ∈ {4, 8, 16}, the weights first
    /// repacked (one small kernel) with output channels innermost, so a tap loads `tile_c / 4`
    /// vec4 instead of `tile_c` scalars. Strided backward_input runs `Tiled`.
    Packed { tile_c: usize },
    /// backward_weight only: `Tiled`, with the reduction over the batch cut into `splits` slices
    /// whose partial sums go to a scratch buffer, then one kernel adds them into dw.
    Split { tile_c: usize, splits: usize },
    /// Every pass as an implicit GEMM tiled through workgroup memory (`*_shared`): a workgroup of
    /// 256 invocations computes a 64×64 tile of the output matrix, 4×4 per invocation, looping
    /// over the reduction in chunks of 16 that it loads cooperatively into workgroup memory.
    Shared,
    /// backward_weight only: `Shared` with split-K, the reduction over N·OH·OW cut into `splits`
    /// slices of whole chunks, one set of tile workgroups per slice writing partial tiles to a
    /// scratch buffer, then one kernel adds them into dw (as `Split`). Any `splits` ≥ 1 is
    /// correct; slices past the end of the reduction are empty.
    SharedSplit { splits: usize },
}

/// The three passes of a convolution (each tuned on its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pass {
    Forward,
    BackwardInput,
    BackwardWeight,
}

/// The variant measured fastest for `pass` of `s` on this adapter (see [`crate::ops::tune`]), else
/// the heuristic [`Choice::for_adapter`].
pub fn chosen(gpu: &Gpu, pass: Pass, s: &Conv2d) -> Variant {
    let case = crate::ops::tune::Case::Conv2d { pass, shape: *s };
    gpu.tuned(&case).unwrap_or_else(|| {
        let c = Choice::for_adapter(gpu, s);
        match pass {
            Pass::Forward => c.forward,
            Pass::BackwardInput => c.backward_input,
            Pass::BackwardWeight => c.backward_weight,
        }
    })
}

/// The variants the tuner times for `pass` of `s`: the channel tile the channel count fills and
/// half of it (larger ones compute channels that are never stored), packed
/// weights where they apply, batch splits of the weight gradient up to 8, the workgroup-memory
/// tiles (and for the weight gradient their split-K into 4, 16, 64 slices of at least one chunk),
/// and the heuristic's choice for a device of each type.
pub fn candidates(pass: Pass, s: &Conv2d) -> Vec<Variant> {
    let channels = match pass {
        Pass::BackwardInput => s.c_in,
        Pass::Forward | Pass::BackwardWeight => s.c_out,
    };
    let top = tile_for(channels);
    let tiles: Vec<usize> = [top, top / 2].into_iter().filter(|&t| t >= 1).collect();
    let mut v = Vec::new();
    for &tile_c in &tiles {
        match pass {
            Pass::Forward | Pass::BackwardInput => {
                v.push(Variant::Tiled { tile_c });
                // Strided backward_input runs `Tiled` for `Packed`: not a candidate of its own.
                if tile_c >= 4 && (pass == Pass::Forward || s.stride == 1) {
                    v.push(Variant::Packed { tile_c });
                }
            }
            Pass::BackwardWeight => {
                v.push(Variant::Tiled { tile_c });
                for splits in [2, 4, 8].into_iter().filter(|&k| k <= s.n) {
                    v.push(Variant::Split { tile_c, splits });
                }
            }
        }
    }
    // The workgroup-memory kernels: the GPU textbook form (slow on CPU drivers, timed anyway).
    v.push(Variant::Shared);
    if pass == Pass::BackwardWeight {
        let reduction = s.n * s.out_h() * s.out_w();
        for splits in [4, 16, 64].into_iter().filter(|&k| k * SH_BK <= reduction) {
            v.push(Variant::SharedSplit { splits });
        }
    }
    for device in [wgpu::DeviceType::Cpu, wgpu::DeviceType::DiscreteGpu] {
        let c = Choice::for_device(device, 8, s);
        let h = match pass {
            Pass::Forward => c.forward,
            Pass::BackwardInput => c.backward_input,
            Pass::BackwardWeight => c.backward_weight,
        };
        if !v.contains(&h) {
            v.push(h);
        }
    }
    v
}

/// The variants of the three passes of one convolution on one adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    pub forward: Variant,
    pub backward_input: Variant,
    pub backward_weight: Variant,
}

/// SIMD lanes per core of lavapipe (256-bit LLVM vectors of f32): a workgroup whose active
/// invocations fill fewer lanes wastes the rest.
const CPU_LANES: usize = 8;
/// Invocations a GPU needs in flight to hide its memory latency: a discrete GPU runs tens of
/// compute units × 32–128 lanes × several resident waves, i.e. on the order of 10⁴–10⁵.
const GPU_INVOCATIONS: usize = 16384;

/// The smallest power-of-two tile that holds `channels` (at most `MAX_TILE_C`): a tile larger
/// than the channel count computes accumulators that are never stored (conv_in has 1 input
/// channel, conv_out 1 output channel: with 16-channel tiles 15/16 of their FMAs were wasted).
fn tile_for(channels: usize) -> usize {
    channels.next_power_of_two().min(MAX_TILE_C)
}

impl Choice {
    /// The variants for the adapter `gpu` (see [`Choice::for_device`]). A CPU adapter (lavapipe)
    /// runs `LP_NUM_THREADS` worker threads, by default one per core of this machine.
    pub fn for_adapter(gpu: &Gpu, s: &Conv2d) -> Choice {
        let threads = std::env::var("LP_NUM_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        Choice::for_device(gpu.info.device_type, threads, s)
    }

    /// The variants for a device of type `device` (`threads`: workgroups a CPU adapter runs at
    /// once): a heuristic on the adapter type, measured on lavapipe (`cargo bench --bench conv2d`)
    /// and reasoned for GPUs.
    ///
    /// - CPU adapters (lavapipe): the largest channel tile that the channel count fills
    ///   ([`tile_for`]). Lavapipe turns every storage load into scalar work per SIMD lane (even a
    ///   workgroup-uniform one costs a search for the first active lane inside loops), so reuse
    ///   per load decides the speed, and a few hundred invocations fill its cores. Forward and
    ///   stride-1 backward_input use `Packed` weights when the tile allows (5–15% faster than
    ///   `Tiled` on the `mnist` shapes: a quarter of the weight loads, for one extra launch).
    ///   backward_weight has one invocation per 8 input channels per workgroup row, which for
    ///   1–8, 16, 32 or 48 input channels fills 1/8, 2/8, 4/8 or 6/8 of the 8-lane SIMD groups
    ///   (`CPU_LANES`), and a 1×1 convolution with one output block has few workgroups: the
    ///   batch is split in 2, 4, 8 slices while the lanes are less than 90% filled or there are
    ///   fewer workgroups than threads (measured 1.4–3.5× faster on those shapes than the unsplit
    ///   kernel; splitting shapes that already fill the lanes is up to 10% slower, because the dy
    ///   loads, uniform without a split, then differ between lanes).
    /// - GPUs (and anything else): `Tiled` with the same tile, halved (down to 4) while the grid
    ///   has fewer than `GPU_INVOCATIONS` invocations, and backward_weight split until it has that
    ///   many: a GPU given a few thousand invocations leaves most of its cores idle, and its
    ///   loads of workgroup-uniform weights are cached broadcasts, so smaller tiles cost it
    ///   little and packing the weights would only add a launch.
    pub fn for_device(device: wgpu::DeviceType, threads: usize, s: &Conv2d) -> Choice {
        let cpu = device == wgpu::DeviceType::Cpu;
        let tile = |channels: usize, per_channel_block: usize| {
            let mut t = tile_for(channels);
            while !cpu && t > 4 && per_channel_block * channels.div_ceil(t) < GPU_INVOCATIONS {
                t /= 2;
            }
            t
        };
        let conv = |tile_c: usize| {
            if cpu && tile_c >= 4 {
                Variant::Packed { tile_c }
            } else {
                Variant::Tiled { tile_c }
            }
        };
        let bw_tile = tile_for(s.c_out);
        let blocks = s.c_in.div_ceil(BW_CI);
        let rows = s.c_out.div_ceil(bw_tile) * s.k * s.k;
        let lanes_filled = |sp: usize| (blocks * sp) as f64 / (blocks * sp).next_multiple_of(CPU_LANES) as f64;
        let workgroups = |sp: usize| rows * (blocks * sp).div_ceil(BW_WG as usize);
        let mut splits = 1;
        while 2 * splits <= s.n
            && if cpu {
                splits < CPU_LANES && (lanes_filled(splits) < 0.9 || workgroups(splits) < threads)
            } else {
                rows * blocks * splits < GPU_INVOCATIONS
            }
        {
            splits *= 2;
        }
        Choice {
            forward: conv(tile(s.c_out, s.n * s.out_h() * s.out_w().div_ceil(CONV_PX))),
            backward_input: conv(tile(s.c_in, s.n * s.h * s.w.div_ceil(CONV_PX))),
            backward_weight: if splits > 1 {
                Variant::Split {
                    tile_c: bw_tile,
                    splits,
                }
            } else {
                Variant::Tiled { tile_c: bw_tile }
            },
        }
    }
}

/// Every `TILE_C` the tiled kernels are compiled with (powers of two up to `MAX_TILE_C`).
pub const TILE_CS: [usize; 5] = [16, 8, 4, 2, 1];

/// `shaders/conv2d.wgsl` compiled with `TILE_C = tile_c` (the file itself has 16); public for the
/// test that translates every shader variant to every backend.
pub fn tiled_shader(tile_c: usize) -> Shader {
    const LINE: &str = "const TILE_C: u32 = 16u;";
    static SOURCES: [OnceLock<String>; 4] = [const { OnceLock::new() }; 4];
    let base = shader!("conv2d");
    let (slot, name) = match tile_c {
        16 => return base,
        8 => (0, "conv2d_tile8"),
        4 => (1, "conv2d_tile4"),
        2 => (2, "conv2d_tile2"),
        1 => (3, "conv2d_tile1"),
        _ => panic!("conv2d: tile_c {tile_c} is not 1, 2, 4, 8 or 16"),
    };
    let source = SOURCES[slot].get_or_init(|| {
        assert!(base.source.contains(LINE), "conv2d.wgsl: the line `{LINE}` is missing");
        base.source.replace(LINE, &format!("const TILE_C: u32 = {tile_c}u;"))
    });
    Shader { name, source }
}

/// The tiled direct convolution `conv_tiled` with parameters `q` (in the geometry of the
/// convolution it runs): input at binding 1, weights 2, bias 3, output 4.
fn conv_tiled(p: &mut Plan, v: Variant, mut q: Params, input: &Tensor, w: &Tensor, b: Option<&Tensor>, out: &Tensor) {
    q.groups = u((q.ow as usize).div_ceil(CONV_PX));
    q.flags |= if b.is_some() { ADD_BIAS } else { 0 };
    // Without a bias the weights are bound in its place (read-only twice is allowed) and unused.
    let bias = b.unwrap_or(w);
    let [x, y, _] = grid_1d(q.n as usize * q.oh as usize * q.groups as usize, TILE_WG);
    let (packed, tile_c) = match v {
        Variant::Tiled { tile_c } => (false, tile_c),
        Variant::Packed { tile_c } => (true, tile_c),
        _ => unreachable!("conv_tiled runs Tiled or Packed"),
    };
    let z = (q.co as usize).div_ceil(tile_c);
    assert!(z <= 65535, "conv2d: too many channel blocks ({z})");
    let shader = tiled_shader(tile_c);
    if packed {
        assert!(tile_c % 4 == 0, "conv2d: Packed needs tile_c 4, 8 or 16, not {tile_c}");
        let len = (q.ci * q.k * q.k) as usize * (q.co as usize).next_multiple_of(4);
        let wp = p.gpu.zeros(&[len]);
        p.kernel(&shader, "pack_weights", &q, &[(2, w), (11, &wp)], grid_1d(len, WG));
        p.kernel(
            &shader,
            "conv_packed",
            &q,
            &[(1, input), (3, bias), (4, out), (10, &wp)],
            [x, y, u(z)],
        );
    } else {
        p.kernel(
            &shader,
            "conv_tiled",
            &q,
            &[(1, input), (2, w), (3, bias), (4, out)],
            [x, y, u(z)],
        );
    }
}

/// The grid of a `*_shared` kernel for an output matrix of `rows` × `cols`: column tiles on x
/// and y (more than 65535 of them spill into y, like [`grid_1d`]), row tiles on z.
fn shared_grid(rows: usize, cols: usize) -> [u32; 3] {
    let [x, y, _] = grid_1d(cols, SH_BN as u32);
    let z = rows.div_ceil(SH_BM);
    assert!(z <= 65535, "conv2d: too many channel tiles ({z})");
    [x, y, u(z)]
}

// The `*_shared` kernels share one tile loop that reads its operands through a switch on the
// pass, so each of them statically uses x, wt and dy (bindings 1, 2, 5): the one a pass does not
// read is bound to a tensor it already has (read-only, never read).

/// y = conv(x, w) + b with variant `v` (not `Split` or `SharedSplit`), else the one [`chosen`] for
/// the forward.
pub fn forward(p: &mut Plan, s: &Conv2d, v: Option<Variant>, x: &Tensor, w: &Tensor, b: Option<&Tensor>, y: &Tensor) {
    s.check(x.len(), w.len(), y.len());
    let v = v.unwrap_or_else(|| chosen(&p.gpu, Pass::Forward, s));
    match v {
        Variant::Naive => forward_naive(p, s, x, w, b, y),
        Variant::Tiled { .. } | Variant::Packed { .. } => conv_tiled(p, v, params(s), x, w, b, y),
        Variant::Shared => {
            let mut q = params(s);
            q.flags = if b.is_some() { ADD_BIAS } else { 0 };
            p.kernel(
                &shader!("conv2d"),
                "forward_shared",
                &q,
                &[(1, x), (2, w), (3, b.unwrap_or(w)), (4, y), (5, x)],
                shared_grid(s.c_out, s.n * s.out_h() * s.out_w()),
            );
        }
        Variant::Split { .. } | Variant::SharedSplit { .. } => {
            panic!("conv2d: {v:?} is a backward_weight variant")
        }
    }
    p.set_flops(s.flops());
}

/// dx += ∂loss/∂x with variant `v` (not `Split` or `SharedSplit`), else the one [`chosen`] for this
/// pass. Tiled, stride 1: the convolution of dy with the flipped, channel-transposed kernel
/// (padding k−1−pad), run by the forward's tiled kernel; other strides use a tiled gather.
/// `Shared` gathers dy for any stride.
pub fn backward_input(p: &mut Plan, s: &Conv2d, v: Option<Variant>, dy: &Tensor, w: &Tensor, dx: &Tensor) {
    s.check(dx.len(), w.len(), dy.len());
    let v = v.unwrap_or_else(|| chosen(&p.gpu, Pass::BackwardInput, s));
    let tile_c = match v {
        Variant::Naive => return backward_input_naive(p, s, dy, w, dx),
        Variant::Shared => {
            p.kernel(
                &shader!("conv2d"),
                "backward_input_shared",
                &params(s),
                &[(1, dy), (2, w), (5, dy), (6, dx)],
                shared_grid(s.c_in, s.n * s.h * s.w),
            );
            p.set_flops(s.flops());
            return;
        }
        Variant::Tiled { tile_c } | Variant::Packed { tile_c } => tile_c,
        Variant::Split { .. } | Variant::SharedSplit { .. } => {
            panic!("conv2d: {v:?} is a backward_weight variant")
        }
    };
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
            splits: 1,
        };
        conv_tiled(p, v, q, dy, w, None, dx);
        p.set_flops(s.flops());
    } else {
        let mut q = params(s);
        // Per residue class (ry, rx): rows of ⌈H/s⌉ × groups of TILE_P pixels spaced by s.
        q.groups = u(s.w.div_ceil(s.stride).div_ceil(TILE_P));
        let [x, y, _] = grid_1d(s.n * s.h.div_ceil(s.stride) * q.groups as usize, TILE_WG);
        let z = s.c_in.div_ceil(tile_c) * s.stride * s.stride;
        assert!(z <= 65535, "conv2d: too many channel blocks × stride² for {s:?}");
        let grid = [x, y, u(z)];
        p.kernel(
            &tiled_shader(tile_c),
            "backward_input_strided",
            &q,
            &[(2, w), (5, dy), (6, dx)],
            grid,
        );
        p.set_flops(s.flops());
    }
}

/// dw += ∂loss/∂w with variant `v` (not `Packed`), else the one [`chosen`] for this pass: per
/// weight element a reduction over N·OH·OW,
/// blocked `tile_c` output × 8 input channels per invocation; `Split` cuts the batch into slices;
/// `Shared` tiles the (Cout) × (Cin·k·k) matrix dw; `SharedSplit` also cuts its reduction into
/// slices (split-K).
pub fn backward_weight(p: &mut Plan, s: &Conv2d, v: Option<Variant>, x: &Tensor, dy: &Tensor, dw: &Tensor) {
    s.check(x.len(), dw.len(), dy.len());
    let v = v.unwrap_or_else(|| chosen(&p.gpu, Pass::BackwardWeight, s));
    let (tile_c, splits) = match v {
        Variant::Naive => return backward_weight_naive(p, s, x, dy, dw),
        Variant::Shared => {
            p.kernel(
                &shader!("conv2d"),
                "backward_weight_shared",
                &params(s),
                &[(1, x), (2, x), (5, dy), (7, dw)],
                shared_grid(s.c_out, s.c_in * s.k * s.k),
            );
            p.set_flops(s.flops());
            return;
        }
        Variant::SharedSplit { splits } => return backward_weight_shared_split(p, s, splits, x, dy, dw),
        Variant::Tiled { tile_c } => (tile_c, 1),
        Variant::Packed { .. } => panic!("conv2d: {v:?} is a forward/backward_input variant"),
        Variant::Split { tile_c, splits } => (tile_c, splits),
    };
    assert!(
        (1..=s.n).contains(&splits),
        "conv2d: {splits} batch slices for a batch of {}",
        s.n
    );
    let mut q = params(s);
    q.splits = u(splits);
    let z = s.c_out.div_ceil(tile_c) * s.k * s.k;
    assert!(z <= 65535, "conv2d: too many output channel blocks × taps for {s:?}");
    let blocks = s.c_in.div_ceil(BW_CI);
    let shader = tiled_shader(tile_c);
    if splits == 1 {
        let grid = [u(blocks.div_ceil(BW_WG as usize)), 1, u(z)];
        p.kernel(&shader, "backward_weight", &q, &[(1, x), (5, dy), (7, dw)], grid);
        p.set_flops(s.flops());
    } else {
        let part = p.gpu.zeros(&[splits, dw.len()]);
        let grid = [u((blocks * splits).div_ceil(BW_WG as usize)), 1, u(z)];
        p.kernel(
            &shader,
            "backward_weight_split",
            &q,
            &[(1, x), (5, dy), (9, &part)],
            grid,
        );
        p.set_flops(s.flops());
        p.kernel(
            &shader,
            "backward_weight_reduce",
            &q,
            &[(7, dw), (9, &part)],
            grid_1d(dw.len(), WG),
        );
    }
}

/// dw += ∂loss/∂w as `Shared` with split-K: slice z of the reduction over N·OH·OW writes its
/// partial tiles to `part` (`backward_weight_shared_split`, slices on workgroup z), then
/// `backward_weight_reduce` adds Σ_slice part into dw.
fn backward_weight_shared_split(p: &mut Plan, s: &Conv2d, splits: usize, x: &Tensor, dy: &Tensor, dw: &Tensor) {
    assert!(splits >= 1, "conv2d: SharedSplit needs at least 1 slice");
    let mut q = params(s);
    q.splits = u(splits);
    let [gx, gy, m_tiles] = shared_grid(s.c_out, s.c_in * s.k * s.k);
    let z = m_tiles as usize * splits;
    assert!(
        z <= 65535,
        "conv2d: {splits} slices × {m_tiles} channel tiles exceed 65535 workgroups"
    );
    let part = p.gpu.zeros(&[splits, dw.len()]);
    let shader = shader!("conv2d");
    p.kernel(
        &shader,
        "backward_weight_shared_split",
        &q,
        &[(1, x), (2, x), (5, dy), (9, &part)],
        [gx, gy, u(z)],
    );
    p.set_flops(s.flops());
    p.kernel(
        &shader,
        "backward_weight_reduce",
        &q,
        &[(7, dw), (9, &part)],
        grid_1d(dw.len(), WG),
    );
}

/// db += Σ_{n,oy,ox} dy[n, ·, oy, ox]: the channel-bias gradient of [`crate::ops::linear`]
/// (dy is (N, Cout, OH·OW)), summed by `m`, else as [`linear::bias_backward`] chooses.
pub fn backward_bias(p: &mut Plan, s: &Conv2d, m: Option<BiasSum>, dy: &Tensor, db: &Tensor) {
    assert_eq!(
        dy.len(),
        s.n * s.c_out * s.out_h() * s.out_w(),
        "conv2d: dy length for {s:?}"
    );
    assert_eq!(db.len(), s.c_out, "conv2d: db length for {s:?}");
    linear::bias_backward(p, [s.n, s.c_out, s.out_h() * s.out_w()], m, dy, db);
}

/// y = conv(x, w) + b, one invocation per output element.
pub fn forward_naive(p: &mut Plan, s: &Conv2d, x: &Tensor, w: &Tensor, b: Option<&Tensor>, y: &Tensor) {
    s.check(x.len(), w.len(), y.len());
    let mut q = params(s);
    q.flags = if b.is_some() { ADD_BIAS } else { 0 };
    naive(
        p,
        s,
        "forward_naive",
        q,
        &[(1, x), (2, w), (3, b.unwrap_or(w)), (4, y)],
        y.len(),
    );
}

/// dx += ∂loss/∂x, one invocation per input element gathering over (Cout, ky, kx).
pub fn backward_input_naive(p: &mut Plan, s: &Conv2d, dy: &Tensor, w: &Tensor, dx: &Tensor) {
    s.check(dx.len(), w.len(), dy.len());
    naive(
        p,
        s,
        "backward_input_naive",
        params(s),
        &[(2, w), (5, dy), (6, dx)],
        dx.len(),
    );
}

/// dw += ∂loss/∂w, one invocation per weight element reducing over (N, OH, OW).
pub fn backward_weight_naive(p: &mut Plan, s: &Conv2d, x: &Tensor, dy: &Tensor, dw: &Tensor) {
    s.check(x.len(), dw.len(), dy.len());
    naive(
        p,
        s,
        "backward_weight_naive",
        params(s),
        &[(1, x), (5, dy), (7, dw)],
        dw.len(),
    );
}

/// Records a naive kernel: one invocation per element of the `outputs` it writes.
fn naive(p: &mut Plan, s: &Conv2d, entry: &str, q: Params, bindings: &[(u32, &Tensor)], outputs: usize) {
    p.kernel(&shader!("conv2d"), entry, &q, bindings, grid_1d(outputs, WG));
    p.set_flops(s.flops());
}
