//! conv2d: GPU kernels (every variant: naive, tiled at each channel tile, split weight gradient,
//! workgroup-memory tiles, the variants chosen for a CPU and for a GPU adapter) vs the CPU
//! reference on awkward shapes, gradient accumulation into prefilled buffers, and the reference
//! backward vs finite differences.

mod common;
use common::*;
use ddpm_gpu::ops::conv2d::{self, BiasSum, Choice, Conv2d, Variant};
use ddpm_gpu::reference;

/// Relative L2 tolerance of f32 GPU results vs the f64 reference.
const TOL: f64 = 2e-6;
/// Finite-difference tolerance of the f64 reference gradients.
const FD_TOL: f64 = 1e-6;

/// Conv2d from (N, Cin, H, W, Cout, k, stride) and the padding [top, bottom, left, right].
fn conv([n, c_in, h, w, c_out, k, stride]: [usize; 7], pad: [usize; 4]) -> Conv2d {
    Conv2d {
        n,
        c_in,
        h,
        w,
        c_out,
        k,
        stride,
        pad,
    }
}

/// Awkward shapes: batch 1, odd sizes, channel counts not multiples of 4, 1×1, stride 2 with
/// symmetric and DDPM's asymmetric padding, other kernel sizes and strides, wide strided rows, and
/// one shape large enough to span several workgroups and channel blocks.
fn shapes() -> Vec<Conv2d> {
    vec![
        conv([1, 3, 5, 7, 5, 3, 1], [1, 1, 1, 1]),
        conv([2, 13, 7, 5, 3, 1, 1], [0, 0, 0, 0]),
        conv([1, 5, 7, 9, 13, 3, 2], [1, 1, 1, 1]),
        conv([2, 3, 8, 8, 5, 3, 2], [0, 1, 0, 1]),
        conv([2, 5, 5, 7, 13, 3, 2], [0, 1, 0, 1]),
        conv([1, 5, 6, 9, 6, 3, 1], [0, 0, 0, 0]),
        conv([1, 2, 9, 11, 3, 5, 1], [2, 1, 0, 2]),
        conv([2, 3, 10, 9, 4, 2, 3], [0, 1, 2, 0]),
        conv([1, 6, 7, 6, 5, 1, 2], [0, 0, 1, 0]),
        conv([1, 18, 5, 6, 7, 3, 2], [0, 1, 0, 1]),
        conv([2, 17, 12, 13, 19, 3, 1], [1, 1, 1, 1]),
        conv([5, 1, 9, 11, 17, 3, 1], [1, 1, 1, 1]),
        conv([4, 17, 9, 7, 1, 3, 1], [1, 1, 1, 1]),
        conv([3, 17, 11, 9, 3, 3, 2], [0, 1, 0, 1]),
        // Rows wide enough for several 8-pixel groups per residue class of the strided backward.
        conv([1, 3, 6, 37, 5, 3, 2], [0, 1, 0, 1]),
        conv([1, 2, 5, 50, 3, 3, 3], [1, 1, 1, 1]),
    ]
}

struct Data {
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
    dy: Vec<f32>,
    /// Prefilled gradient buffers: the backward kernels must add to them.
    dx0: Vec<f32>,
    dw0: Vec<f32>,
    db0: Vec<f32>,
}

fn data(s: &Conv2d, seed: u64) -> Data {
    let xs = s.n * s.c_in * s.h * s.w;
    let ws = s.c_out * s.c_in * s.k * s.k;
    let ys = s.n * s.c_out * s.out_h() * s.out_w();
    Data {
        x: random(xs, seed),
        w: random(ws, seed + 1),
        b: random(s.c_out, seed + 2),
        dy: random(ys, seed + 3),
        dx0: random(xs, seed + 4),
        dw0: random(ws, seed + 5),
        db0: random(s.c_out, seed + 6),
    }
}

/// The public entry points (variants chosen for this adapter), or the variants `choose` returns.
enum Run<'a> {
    Public,
    With(&'a dyn Fn(&Conv2d) -> Choice),
}

/// Run the forward (with and without bias, into garbage-filled outputs) and backward passes on
/// every shape and compare with the reference.
fn check_variant(name: &str, run: Run) {
    check_shapes(name, run, &shapes());
}

/// [`check_variant`] on the shapes `cases`.
fn check_shapes(name: &str, run: Run, cases: &[Conv2d]) {
    let gpu = gpu();
    for (i, s) in cases.iter().enumerate() {
        let d = data(s, 10 * i as u64);
        let (oh, ow) = (s.out_h(), s.out_w());
        let ys = s.n * s.c_out * oh * ow;
        let tx = gpu.tensor(&[s.n, s.c_in, s.h, s.w], &d.x);
        let tw = gpu.tensor(&[s.c_out, s.c_in, s.k, s.k], &d.w);
        let tb = gpu.tensor(&[s.c_out], &d.b);
        // Forward writes: start from garbage.
        let ty = gpu.tensor(&[s.n, s.c_out, oh, ow], &random(ys, 99));
        let ty_nb = gpu.tensor(&[s.n, s.c_out, oh, ow], &random(ys, 98));
        let tdy = gpu.tensor(&[s.n, s.c_out, oh, ow], &d.dy);
        let tdx = gpu.tensor(&[s.n, s.c_in, s.h, s.w], &d.dx0);
        let tdw = gpu.tensor(&[s.c_out, s.c_in, s.k, s.k], &d.dw0);
        let tdb = gpu.tensor(&[s.c_out], &d.db0);
        let mut p = Plan::new(&gpu);
        let tag = match &run {
            Run::Public => {
                conv2d::forward(&mut p, s, None, &tx, &tw, Some(&tb), &ty);
                conv2d::forward(&mut p, s, None, &tx, &tw, None, &ty_nb);
                conv2d::backward_input(&mut p, s, None, &tdy, &tw, &tdx);
                conv2d::backward_weight(&mut p, s, None, &tx, &tdy, &tdw);
                format!("{name} {s:?}")
            }
            Run::With(choose) => {
                let c = choose(s);
                conv2d::forward(&mut p, s, Some(c.forward), &tx, &tw, Some(&tb), &ty);
                conv2d::forward(&mut p, s, Some(c.forward), &tx, &tw, None, &ty_nb);
                conv2d::backward_input(&mut p, s, Some(c.backward_input), &tdy, &tw, &tdx);
                conv2d::backward_weight(&mut p, s, Some(c.backward_weight), &tx, &tdy, &tdw);
                format!("{name} {c:?} {s:?}")
            }
        };
        // The bias gradient both ways (it has no variant of its own in `Choice`).
        let tdb_wg = gpu.tensor(&[s.c_out], &d.db0);
        conv2d::backward_bias(&mut p, s, Some(BiasSum::Serial), &tdy, &tdb);
        conv2d::backward_bias(&mut p, s, Some(BiasSum::Workgroup), &tdy, &tdb_wg);
        p.run();

        let (x, w, b, dy) = (to_f64(&d.x), to_f64(&d.w), to_f64(&d.b), to_f64(&d.dy));
        let want_y = reference::conv2d::forward(s, &x, &w, Some(&b));
        let want_y_nb = reference::conv2d::forward(s, &x, &w, None);
        let (dx, dw, db) = reference::conv2d::backward(s, &x, &w, &dy);
        assert_close(&format!("{tag} forward"), &gpu.read(&ty), &want_y, TOL);
        assert_close(&format!("{tag} forward no bias"), &gpu.read(&ty_nb), &want_y_nb, TOL);
        assert_close(&format!("{tag} dx"), &gpu.read(&tdx), &plus(&d.dx0, &dx), TOL);
        assert_close(&format!("{tag} dw"), &gpu.read(&tdw), &plus(&d.dw0, &dw), TOL);
        assert_close(&format!("{tag} db"), &gpu.read(&tdb), &plus(&d.db0, &db), TOL);
        assert_close(
            &format!("{tag} db (workgroup)"),
            &gpu.read(&tdb_wg),
            &plus(&d.db0, &db),
            TOL,
        );
    }
}

/// Every pass with variant `v` (backward_weight runs `Tiled` for `Packed`).
fn all(v: Variant) -> Choice {
    Choice {
        forward: v,
        backward_input: v,
        backward_weight: match v {
            Variant::Packed { tile_c } => Variant::Tiled { tile_c },
            v => v,
        },
    }
}

#[test]
fn naive_kernels_match_reference() {
    check_variant("naive", Run::With(&|_| all(Variant::Naive)));
}

#[test]
fn public_kernels_match_reference() {
    check_variant("public (this adapter's choice)", Run::Public);
}

#[test]
fn tiled_kernels_match_reference_at_every_tile() {
    for tile_c in [16, 8, 4, 2, 1] {
        check_variant("tiled", Run::With(&|_| all(Variant::Tiled { tile_c })));
    }
}

/// Packed weights (forward and stride-1 backward_input; the others run `Tiled`).
#[test]
fn packed_kernels_match_reference() {
    for tile_c in [16, 8, 4] {
        check_variant("packed", Run::With(&|_| all(Variant::Packed { tile_c })));
    }
}

/// Every pass as an implicit GEMM tiled through workgroup memory.
#[test]
fn shared_kernels_match_reference() {
    check_variant("shared", Run::With(&|_| all(Variant::Shared)));
}

/// The weight gradient with the batch cut into slices: one sample per slice, uneven slices, and
/// (batch 4, 3 slices of 2) an empty last slice.
#[test]
fn split_backward_weight_matches_reference() {
    for tile_c in [16, 4] {
        for splits in [|n: usize| n, |n: usize| n.div_ceil(2), |n: usize| n.min(3)] {
            let choose = |s: &Conv2d| Choice {
                backward_weight: Variant::Split {
                    tile_c,
                    splits: splits(s.n),
                },
                ..all(Variant::Tiled { tile_c })
            };
            check_variant("split", Run::With(&choose));
        }
    }
}

/// The workgroup-memory weight gradient with split-K: one slice (the whole reduction), slices of
/// uneven chunk counts, and more slices than chunks (the shapes' reductions span 1–31 chunks of
/// 16, so 64 slices leave empty ones, which must write zeros). The last shape has 2 × 2 tiles of
/// dW (70 output channels × 72 taps), so slice and row tile share workgroup z.
#[test]
fn shared_split_backward_weight_matches_reference() {
    let mut cases = shapes();
    cases.push(conv([2, 8, 7, 6, 70, 3, 1], [1, 1, 1, 1]));
    for splits in [1, 2, 3, 7, 64] {
        let choose = |_: &Conv2d| Choice {
            backward_weight: Variant::SharedSplit { splits },
            ..all(Variant::Shared)
        };
        check_shapes("shared split", Run::With(&choose), &cases);
    }
}

/// A pass-specific variant is refused by the other passes.
#[test]
#[should_panic(expected = "is a backward_weight variant")]
fn shared_split_is_refused_by_forward() {
    let gpu = gpu();
    let s = conv([1, 3, 5, 7, 5, 3, 1], [1, 1, 1, 1]);
    let x = gpu.tensor(&[1, 3, 5, 7], &random(105, 1));
    let w = gpu.tensor(&[5, 3, 3, 3], &random(135, 2));
    let y = gpu.tensor(&[1, 5, 5, 7], &random(175, 3));
    let mut p = Plan::new(&gpu);
    conv2d::forward(&mut p, &s, Some(Variant::SharedSplit { splits: 4 }), &x, &w, None, &y);
}

/// What a CPU adapter and a discrete GPU would run, whatever adapter runs the tests.
#[test]
fn chosen_variants_match_reference_for_cpu_and_gpu() {
    for device in [wgpu::DeviceType::Cpu, wgpu::DeviceType::DiscreteGpu] {
        check_variant(&format!("{device:?}"), Run::With(&|s| Choice::for_device(device, 2, s)));
    }
}

/// The choice rule on `mnist` shapes (2 threads): tiles never larger than the channels they
/// hold, the batch split where the weight gradient would fill few SIMD lanes or workgroups, and
/// smaller tiles / more slices on GPUs.
#[test]
fn variant_choice_rule() {
    use wgpu::DeviceType::{Cpu, DiscreteGpu};
    let conv_in = conv([32, 1, 28, 28, 16, 3, 1], [1; 4]);
    let conv_out = conv([32, 16, 28, 28, 1, 3, 1], [1; 4]);
    let mid = conv([32, 32, 14, 14, 32, 3, 1], [1; 4]);
    let wide = conv([32, 64, 7, 7, 32, 3, 1], [1; 4]);
    let skip_48 = conv([32, 48, 28, 28, 16, 1, 1], [0; 4]);
    let skip_32 = conv([32, 32, 28, 28, 16, 1, 1], [0; 4]);
    let c = Choice::for_device(Cpu, 2, &conv_in);
    assert_eq!(c.forward, Variant::Packed { tile_c: 16 });
    assert_eq!(c.backward_input, Variant::Tiled { tile_c: 1 });
    assert_eq!(c.backward_weight, Variant::Split { tile_c: 16, splits: 8 });
    let c = Choice::for_device(Cpu, 2, &conv_out);
    assert_eq!(c.forward, Variant::Tiled { tile_c: 1 });
    assert_eq!(c.backward_weight, Variant::Split { tile_c: 1, splits: 4 });
    let c = Choice::for_device(Cpu, 2, &wide);
    assert_eq!(
        (c.forward, c.backward_input),
        (Variant::Packed { tile_c: 16 }, Variant::Packed { tile_c: 16 })
    );
    assert_eq!(c.backward_weight, Variant::Tiled { tile_c: 16 });
    let split = |s: &Conv2d| Choice::for_device(Cpu, 2, s).backward_weight;
    // 4 blocks of 8 input channels: 2 slices fill the 8 lanes.
    assert_eq!(split(&mid), Variant::Split { tile_c: 16, splits: 2 });
    // 6 blocks: 4 slices (24 lanes = 3 full groups).
    assert_eq!(split(&skip_48), Variant::Split { tile_c: 16, splits: 4 });
    // One output block, one tap: 8 slices give the 2 threads 2 workgroups.
    assert_eq!(split(&skip_32), Variant::Split { tile_c: 16, splits: 8 });
    let g = Choice::for_device(DiscreteGpu, 2, &mid);
    assert_eq!(g.forward, Variant::Tiled { tile_c: 4 });
    assert_eq!(
        Choice::for_device(DiscreteGpu, 2, &wide).forward,
        Variant::Tiled { tile_c: 4 }
    );
    // 72 invocations per slice: split down to one sample per slice.
    assert_eq!(g.backward_weight, Variant::Split { tile_c: 16, splits: 32 });
}

/// Running the backward passes twice adds the gradient twice (accumulation, not overwrite).
#[test]
fn backward_accumulates_across_runs() {
    let gpu = gpu();
    let s = conv([2, 5, 6, 7, 6, 3, 1], [1, 1, 1, 1]);
    let d = data(&s, 500);
    let tx = gpu.tensor(&[s.n, s.c_in, s.h, s.w], &d.x);
    let tw = gpu.tensor(&[s.c_out, s.c_in, 3, 3], &d.w);
    let tdy = gpu.tensor(&[s.n, s.c_out, s.out_h(), s.out_w()], &d.dy);
    let tdx = gpu.tensor(&[s.n, s.c_in, s.h, s.w], &d.dx0);
    let tdw = gpu.tensor(&[s.c_out, s.c_in, 3, 3], &d.dw0);
    let tdb = gpu.tensor(&[s.c_out], &d.db0);
    let mut p = Plan::new(&gpu);
    conv2d::backward_input(&mut p, &s, None, &tdy, &tw, &tdx);
    conv2d::backward_weight(&mut p, &s, None, &tx, &tdy, &tdw);
    conv2d::backward_bias(&mut p, &s, None, &tdy, &tdb);
    p.run();
    p.run();
    let (dx, dw, db) = reference::conv2d::backward(&s, &to_f64(&d.x), &to_f64(&d.w), &to_f64(&d.dy));
    let twice = |v: &[f64]| v.iter().map(|g| 2.0 * g).collect::<Vec<_>>();
    assert_close("dx after two runs", &gpu.read(&tdx), &plus(&d.dx0, &twice(&dx)), TOL);
    assert_close("dw after two runs", &gpu.read(&tdw), &plus(&d.dw0, &twice(&dw)), TOL);
    assert_close("db after two runs", &gpu.read(&tdb), &plus(&d.db0, &twice(&db)), TOL);
}

#[test]
fn reference_backward_matches_finite_differences() {
    let cases = [
        conv([2, 3, 5, 7, 4, 3, 1], [1, 1, 1, 1]),
        conv([1, 3, 7, 6, 5, 3, 2], [0, 1, 0, 1]),
        conv([2, 5, 4, 5, 3, 1, 1], [0, 0, 0, 0]),
        conv([1, 2, 7, 8, 3, 2, 3], [0, 1, 2, 0]),
    ];
    for (i, s) in cases.iter().enumerate() {
        let d = data(s, 1000 + 10 * i as u64);
        let (x, w, b, r) = (to_f64(&d.x), to_f64(&d.w), to_f64(&d.b), to_f64(&d.dy));
        let (dx, dw, db) = reference::conv2d::backward(s, &x, &w, &r);
        let fx = |x: &[f64]| dot(&reference::conv2d::forward(s, x, &w, Some(&b)), &r);
        let fw = |w: &[f64]| dot(&reference::conv2d::forward(s, &x, w, Some(&b)), &r);
        let fb = |b: &[f64]| dot(&reference::conv2d::forward(s, &x, &w, Some(b)), &r);
        check_grad(&format!("{s:?} dx"), &fx, &x, &dx, 60, FD_TOL);
        check_grad(&format!("{s:?} dw"), &fw, &w, &dw, 60, FD_TOL);
        check_grad(&format!("{s:?} db"), &fb, &b, &db, 60, FD_TOL);
    }
}
