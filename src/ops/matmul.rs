//! Strided batched matrix product: `shaders/matmul.wgsl`, reference in `src/reference/matmul.rs`.
//!
//! C[z] = alpha · op(A[z]) · op(B[z]) (or `+=`), z < batch, with arbitrary row strides, batch
//! strides (0 broadcasts an operand) and transposes. Five kernels, all tested:
//! - [`Variant::Naive`]: one invocation per output, the readable definition;
//! - [`Variant::Blocked`]: 4×4 outputs per invocation with scalar loads, any strides;
//! - [`Variant::Vec4`]: 4×4 outputs per invocation, operands read as vec4 4×4 tiles; needs
//!   offsets and strides that are multiples of 4 ([`vec4_ok`]);
//! - [`Variant::Wide`]: 16 rows × 8 columns per invocation, a workgroup of 64 invocations along
//!   one 16-row block, so A's loads are the same for the whole workgroup; any strides, vec4 loads
//!   where an operand is contiguous and aligned;
//! - [`Variant::Shared`]: the textbook GPU kernel: a workgroup of 16×16 invocations computes a
//!   64×64 tile of C, loading 8-deep slabs of op(A) and op(B) cooperatively (coalesced) into
//!   workgroup memory (4352 bytes) between two barriers, 4×4 outputs per invocation; any strides.
//!   Never picked by [`Variant::choose`]; the autotuner times it against the others.
//!
//! [`matmul`] picks by [`Variant::choose`]: on CPU adapters `Wide` (lavapipe runs every load
//! that differs between invocations as a loop over the SIMD lanes, so loads per FMA decide the
//! speed: `Wide` does 128 FMAs per 2–8 such loads, the 4×4 tiles 64 per 8; in two runs of
//! `cargo bench --bench matmul` it was 1.1–1.5× faster than `Vec4` on every shape and 1.05–2.5×
//! faster than `Blocked` on all but one measurement, 1024³ at 0.94×, in a run whose speed
//! drifted); elsewhere `Vec4` when the layout allows and `Blocked` otherwise (a GPU needs many
//! invocations in flight, and 128 accumulators per invocation would limit its occupancy;
//! reasoned, not measured: there is no GPU here).

use crate::gpu::{Plan, Tensor};
use crate::shader;

/// Shape and layout of a batched product C = alpha·op(A)·op(B), op(A) m×k, op(B) k×n, C m×n.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Matmul {
    pub batch: usize,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// op(A) = Aᵀ: A stored k×m (row stride lda).
    pub trans_a: bool,
    /// op(B) = Bᵀ: B stored n×k (row stride ldb).
    pub trans_b: bool,
    /// Row strides of the stored matrices.
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
    /// Elements between batch items (0 = broadcast).
    pub stride_a: usize,
    pub stride_b: usize,
    pub stride_c: usize,
    pub alpha: f32,
    /// C += alpha·op(A)op(B) instead of C = alpha·op(A)op(B).
    pub accumulate: bool,
}

impl Matmul {
    /// Contiguous row-major operands, no transposes, alpha 1, C written.
    pub fn new(batch: usize, m: usize, k: usize, n: usize) -> Matmul {
        Matmul {
            batch,
            m,
            k,
            n,
            trans_a: false,
            trans_b: false,
            lda: k,
            ldb: n,
            ldc: n,
            stride_a: m * k,
            stride_b: k * n,
            stride_c: m * n,
            alpha: 1.0,
            accumulate: false,
        }
    }

    /// 2·batch·m·n·k.
    pub fn flops(&self) -> f64 {
        2.0 * self.batch as f64 * self.m as f64 * self.n as f64 * self.k as f64
    }

    /// Element strides of op(A) along (i, k) and of op(B) along (k, j).
    pub fn op_strides(&self) -> ((usize, usize), (usize, usize)) {
        let a = if self.trans_a { (1, self.lda) } else { (self.lda, 1) };
        let b = if self.trans_b { (1, self.ldb) } else { (self.ldb, 1) };
        (a, b)
    }
}

/// What [`matmul_ext`] adds to [`Matmul`]: element offsets of the first batch item inside the
/// bound tensors (views need aligned byte offsets, these do not), summing over the batch, and a
/// bias added to every product: C = alpha·op(A)·op(B) + bias (or C += …).
#[derive(Clone, Copy, Debug, Default)]
pub struct Extra<'a> {
    pub offset_a: usize,
    pub offset_b: usize,
    pub offset_c: usize,
    /// C = alpha·Σ_z op(A[z])·op(B[z]) (one C; stride_c unused): weight gradients over a batch.
    pub sum_batch: bool,
    /// A bias of n values added along each row (bias[j], as nn.Linear), or with `bias_per_row`
    /// of m values, one per row (bias[i], a channel bias of an image-layout output).
    pub bias: Option<&'a Tensor>,
    pub bias_per_row: bool,
}

/// Which kernel records the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Variant {
    Naive,
    Blocked,
    Vec4,
    Wide,
    Shared,
}

impl Variant {
    /// The kernels the tuner times for a product (`vec4_ok`: see [`vec4_ok`]).
    pub fn candidates(vec4_ok: bool) -> Vec<Variant> {
        let mut v = vec![Variant::Blocked, Variant::Wide, Variant::Shared];
        if vec4_ok {
            v.push(Variant::Vec4);
        }
        v
    }

    /// The kernel for a device of type `device` (see the module documentation); `vec4_ok`:
    /// whether the product's layout allows [`Variant::Vec4`].
    pub fn choose(device: wgpu::DeviceType, vec4_ok: bool) -> Variant {
        match (device, vec4_ok) {
            (wgpu::DeviceType::Cpu, _) => Variant::Wide,
            (_, true) => Variant::Vec4,
            (_, false) => Variant::Blocked,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    k: u32,
    n: u32,
    batch: u32,
    a_si: u32,
    a_sk: u32,
    b_sk: u32,
    b_sj: u32,
    stride_a: u32,
    stride_b: u32,
    stride_c: u32,
    ldc: u32,
    offset_a: u32,
    offset_b: u32,
    offset_c: u32,
    accumulate: u32,
    alpha: f32,
    sum_batch: u32,
    bias_mode: u32,
    wide_vec4: u32,
}

/// Workgroup sizes of `shaders/matmul.wgsl`.
const NAIVE: (usize, usize) = (16, 4);
const TILE: usize = 8 * 4; // 8×8 invocations of 4×4 outputs
const WIDE: (usize, usize) = (64 * 8, 16); // columns and rows of C per `wide` workgroup
const SHARED: usize = 64; // rows and columns of C per `shared_tile` workgroup

/// C = alpha·op(A)·op(B) (or `+=`), with the fastest kernel the layout allows.
pub fn matmul(p: &mut Plan, s: &Matmul, a: &Tensor, b: &Tensor, c: &Tensor) {
    matmul_ext(p, s, &Extra::default(), None, a, b, c);
}

/// Can [`Variant::Vec4`] run this product? Every offset, batch stride and row stride of A, B
/// and C (and their tensors' lengths) must be a multiple of 4, so that all vec4 accesses are
/// aligned.
pub fn vec4_ok(s: &Matmul, e: &Extra, a: &Tensor, b: &Tensor, c: &Tensor) -> bool {
    [
        s.lda,
        s.ldb,
        s.ldc,
        s.stride_a,
        s.stride_b,
        s.stride_c,
        e.offset_a,
        e.offset_b,
        e.offset_c,
        a.len(),
        b.len(),
        c.len(),
    ]
    .iter()
    .all(|v| v.is_multiple_of(4))
}

/// [`matmul`] with element offsets, batch summation and a chosen kernel (`None`: the fastest).
pub fn matmul_ext(p: &mut Plan, s: &Matmul, e: &Extra, variant: Option<Variant>, a: &Tensor, b: &Tensor, c: &Tensor) {
    if s.batch == 0 || s.m == 0 || s.n == 0 {
        return;
    }
    let ((a_si, a_sk), (b_sk, b_sj)) = s.op_strides();
    // Largest element index each operand touches, checked against the tensors.
    let last = |off: usize, stride: usize, si: usize, ni: usize, sk: usize, nk: usize| {
        off + (s.batch - 1) * stride + (ni - 1) * si + nk.saturating_sub(1) * sk
    };
    if s.k > 0 {
        let la = last(e.offset_a, s.stride_a, a_si, s.m, a_sk, s.k);
        let lb = last(e.offset_b, s.stride_b, b_sj, s.n, b_sk, s.k);
        assert!(
            la < a.len(),
            "matmul: A needs {} elements, has {} ({s:?}, {e:?})",
            la + 1,
            a.len()
        );
        assert!(
            lb < b.len(),
            "matmul: B needs {} elements, has {} ({s:?}, {e:?})",
            lb + 1,
            b.len()
        );
    }
    let batches_c = if e.sum_batch { 1 } else { s.batch };
    let lc = e.offset_c + (batches_c - 1) * s.stride_c + (s.m - 1) * s.ldc + s.n - 1;
    assert!(
        lc < c.len(),
        "matmul: C needs {} elements, has {} ({s:?}, {e:?})",
        lc + 1,
        c.len()
    );
    assert!(s.n <= s.ldc || s.m == 1, "matmul: ldc {} < n {}", s.ldc, s.n);
    let fits = |v: usize| u32::try_from(v).expect("matmul: index exceeds u32");
    let params = Params {
        m: fits(s.m),
        k: fits(s.k),
        n: fits(s.n),
        batch: fits(s.batch),
        a_si: fits(a_si),
        a_sk: fits(a_sk),
        b_sk: fits(b_sk),
        b_sj: fits(b_sj),
        stride_a: fits(s.stride_a),
        stride_b: fits(s.stride_b),
        stride_c: fits(s.stride_c),
        ldc: fits(s.ldc),
        offset_a: fits(e.offset_a),
        offset_b: fits(e.offset_b),
        offset_c: fits(e.offset_c),
        accumulate: s.accumulate as u32,
        alpha: s.alpha,
        sum_batch: e.sum_batch as u32,
        bias_mode: match (e.bias, e.bias_per_row) {
            (None, _) => 0,
            (Some(_), false) => 1,
            (Some(_), true) => 2,
        },
        wide_vec4: 0,
    };
    if let Some(bias) = e.bias {
        let want = if e.bias_per_row { s.m } else { s.n };
        assert_eq!(bias.len(), want, "matmul: bias of {} values, want {want}", bias.len());
    }
    // Entry points that never add a bias still declare its binding: bind A again then.
    let bias = e.bias.unwrap_or(a);
    let variant = variant.unwrap_or_else(|| {
        let case = crate::ops::tune::Case::matmul(s, e, [a.len(), b.len(), c.len()]);
        let ok = vec4_ok(s, e, a, b, c);
        p.gpu
            .tuned(&case)
            .unwrap_or_else(|| Variant::choose(p.gpu.info.device_type, ok))
    });
    let z = fits(batches_c);
    assert!(z <= 65535, "matmul: batch {z} exceeds one dispatch dimension");
    let groups = |v: usize, per: usize| fits(v.div_ceil(per));
    let shader = shader!("matmul");
    match variant {
        Variant::Naive => {
            let wg = [groups(s.n, NAIVE.0), groups(s.m, NAIVE.1), z];
            p.kernel(&shader, "naive", &params, &[(1, a), (2, b), (3, c), (7, bias)], wg);
        }
        Variant::Blocked => {
            let wg = [groups(s.n, TILE), groups(s.m, TILE), z];
            p.kernel(&shader, "blocked", &params, &[(1, a), (2, b), (3, c), (7, bias)], wg);
        }
        Variant::Vec4 => {
            assert!(vec4_ok(s, e, a, b, c), "matmul: layout not vec4-aligned: {s:?}, {e:?}");
            let entry = match (s.trans_a, s.trans_b) {
                (false, false) => "tile_nn",
                (true, false) => "tile_tn",
                (false, true) => "tile_nt",
                (true, true) => "tile_tt",
            };
            let wg = [groups(s.n, TILE), groups(s.m, TILE), z];
            p.kernel(&shader, entry, &params, &[(4, a), (5, b), (6, c), (7, bias)], wg);
        }
        Variant::Wide => {
            // vec4 loads where an operand is contiguous along the tile's wide side and every
            // start is 4-aligned: op(B) rows (plain B), op(A) columns (transposed A).
            let aligned = |v: &[usize]| v.iter().all(|x| x.is_multiple_of(4));
            let b_vec = !s.trans_b && aligned(&[s.ldb, s.stride_b, e.offset_b, b.len()]);
            let a_vec = s.trans_a && aligned(&[s.lda, s.stride_a, e.offset_a, a.len()]);
            let params = Params {
                wide_vec4: b_vec as u32 | (a_vec as u32) << 1,
                ..params
            };
            let wg = [groups(s.n, WIDE.0), groups(s.m, WIDE.1), z];
            // An operand not read as vec4 leaves its vec4 binding to a 4-element placeholder
            // (its own size may not be a whole number of vec4s).
            let unused = (!a_vec || !b_vec).then(|| p.gpu.zeros(&[4]));
            let a4 = if a_vec {
                a
            } else {
                unused.as_ref().expect("placeholder")
            };
            let b4 = if b_vec {
                b
            } else {
                unused.as_ref().expect("placeholder")
            };
            let bindings = [(1, a), (2, b), (3, c), (4, a4), (5, b4), (7, bias)];
            p.kernel(&shader, "wide", &params, &bindings, wg);
        }
        Variant::Shared => {
            let wg = [groups(s.n, SHARED), groups(s.m, SHARED), z];
            p.kernel(
                &shader,
                "shared_tile",
                &params,
                &[(1, a), (2, b), (3, c), (7, bias)],
                wg,
            );
        }
    }
    p.set_flops(s.flops());
}
