//! SiLU: GPU kernel vs CPU reference, reference backward vs finite differences.

mod common;
use common::*;
use ddpm_gpu::{ops, reference};

const TOL: f64 = 1e-6;
const FD_TOL: f64 = 1e-7;

#[test]
fn silu_forward_and_backward_match_reference() {
    let gpu = gpu();
    // Awkward lengths: 1, not a multiple of the workgroup, and more than 65535 workgroups' worth
    // would be too slow here, so one length that spans several workgroups.
    for (n, seed) in [(1usize, 1u64), (257, 2), (3 * 5 * 7 * 11 * 13, 3)] {
        let x = random(n, seed).iter().map(|v| v * 6.0).collect::<Vec<_>>();
        let dy = random(n, seed + 100);
        let dx0 = random(n, seed + 200); // the backward accumulates into existing values
        let (tx, ty, tdy, tdx) = (
            gpu.tensor(&[n], &x),
            gpu.zeros(&[n]),
            gpu.tensor(&[n], &dy),
            gpu.tensor(&[n], &dx0),
        );
        let mut p = Plan::new(&gpu);
        ops::silu::forward(&mut p, &tx, &ty);
        ops::silu::backward(&mut p, &tx, &tdy, &tdx);
        p.run();
        let want_y = reference::silu::forward(&to_f64(&x));
        let want_dx: Vec<f64> = reference::silu::backward(&to_f64(&x), &to_f64(&dy))
            .iter()
            .zip(&dx0)
            .map(|(g, &a)| g + a as f64)
            .collect();
        assert_close(&format!("silu forward n={n}"), &gpu.read(&ty), &want_y, TOL);
        assert_close(&format!("silu backward n={n}"), &gpu.read(&tdx), &want_dx, TOL);
    }
}

#[test]
fn silu_backward_matches_finite_differences() {
    let x: Vec<f64> = to_f64(&random(50, 7)).iter().map(|v| v * 5.0).collect();
    let w = to_f64(&random(50, 8));
    let f = |x: &[f64]| dot(&reference::silu::forward(x), &w);
    check_grad("silu", &f, &x, &reference::silu::backward(&x, &w), 50, FD_TOL);
}
