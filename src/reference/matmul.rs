//! CPU reference for the batched matrix product (see `shaders/matmul.wgsl`).

use crate::ops::matmul::{Extra, Matmul};

/// C[z] = alpha · op(A[z]) · op(B[z]) (or `+=` when `s.accumulate`), in place on `c`.
pub fn matmul(s: &Matmul, a: &[f64], b: &[f64], c: &mut [f64]) {
    matmul_ext(s, &Extra::default(), None, a, b, c);
}

/// [`matmul`] with element offsets, with `e.sum_batch` all batch items summed into one C, and
/// `bias` (values of `e.bias`, n of them, or m with `e.bias_per_row`) added after alpha.
pub fn matmul_ext(s: &Matmul, e: &Extra, bias: Option<&[f64]>, a: &[f64], b: &[f64], c: &mut [f64]) {
    let op_a = |z: usize, i: usize, k: usize| {
        let base = e.offset_a + z * s.stride_a;
        if s.trans_a {
            a[base + k * s.lda + i]
        } else {
            a[base + i * s.lda + k]
        }
    };
    let op_b = |z: usize, k: usize, j: usize| {
        let base = e.offset_b + z * s.stride_b;
        if s.trans_b {
            b[base + j * s.ldb + k]
        } else {
            b[base + k * s.ldb + j]
        }
    };
    let outputs = if e.sum_batch { 1 } else { s.batch };
    for zc in 0..outputs {
        let items: Vec<usize> = if e.sum_batch { (0..s.batch).collect() } else { vec![zc] };
        for i in 0..s.m {
            for j in 0..s.n {
                let mut sum = 0.0;
                for &z in &items {
                    for k in 0..s.k {
                        sum += op_a(z, i, k) * op_b(z, k, j);
                    }
                }
                let ci = e.offset_c + zc * s.stride_c + i * s.ldc + j;
                let bias = bias.map_or(0.0, |v| if e.bias_per_row { v[i] } else { v[j] });
                let v = s.alpha as f64 * sum + bias;
                c[ci] = if s.accumulate { c[ci] + v } else { v };
            }
        }
    }
}
