//! The whole U-Net's backward against a directional finite difference of its own GPU forward, with
//! dropout active in the res blocks (the golden cases run without dropout), on the `tiny` preset
//! with every weight perturbed so that every layer matters.

mod common;
use common::*;

use ddpm_gpu::model::{ParamTable, UNet, UNetConfig};
use ddpm_gpu::ops::{dropout, elementwise, loss};

/// Relative difference of g·d and (L(θ + εd) − L(θ − εd)) / 2ε, in f32 arithmetic.
const DIRECTIONAL_TOL: f64 = 5e-3;

#[test]
fn backward_with_dropout_matches_a_directional_finite_difference() {
    let gpu = gpu();
    for prob in [0.0f32, 0.3] {
        let model = UNetConfig {
            dropout: prob,
            ..UNetConfig::preset("tiny").unwrap()
        };
        let table = ParamTable::new(&model);
        let theta: Vec<f32> = table
            .init(1)
            .iter()
            .zip(random(table.total, 2))
            .map(|(w, r)| w + 0.2 * r)
            .collect();
        let (params, grads) = (gpu.tensor(&[table.total], &theta), gpu.zeros(&[table.total]));
        let n = 2;
        let net = UNet::new(&gpu, &model, &table, &params, Some(&grads), n).unwrap();
        gpu.write(&net.input, &random(net.input.len(), 3));
        gpu.write(&net.timesteps, &[17.0, 640.0]);
        let target = gpu.tensor(net.output().shape(), &random(net.output().len(), 4));
        let loss_t = gpu.zeros(&[1]);
        let mut p = Plan::new(&gpu);
        elementwise::fill(&mut p, &grads, 0.0);
        let fwd = net.forward(&mut p);
        net.zero_grads(&mut p);
        loss::mse_forward_backward(&mut p, net.output(), &target, &loss_t, net.d_output());
        let bwd = net.backward(&mut p);
        // The same mask in every run: layer i's forward and backward kernels share seed 1000 + i.
        assert_eq!(fwd.len(), bwd.len());
        for d in fwd.iter().chain(&bwd) {
            dropout::set_seed(&p, d.kernel, d.len, prob, 1000 + d.layer as u32);
        }
        let loss_at = |w: &[f32]| {
            gpu.write(&params, w);
            p.run();
            gpu.read(&loss_t)[0] as f64
        };
        loss_at(&theta);
        let g = to_f64(&gpu.read(&grads));
        let d = to_f64(&random(table.total, 5));
        let eps = 1e-3;
        let shifted = |sign: f64| -> Vec<f32> {
            theta
                .iter()
                .zip(&d)
                .map(|(&w, &dv)| (w as f64 + sign * eps * dv) as f32)
                .collect()
        };
        let fd = (loss_at(&shifted(1.0)) - loss_at(&shifted(-1.0))) / (2.0 * eps);
        let analytic: f64 = g.iter().zip(&d).map(|(a, b)| a * b).sum();
        let rel = (fd - analytic).abs() / analytic.abs().max(fd.abs());
        println!("dropout {prob}: g·d = {analytic:.6e}, finite difference {fd:.6e}, rel diff {rel:.2e}");
        assert!(rel < DIRECTIONAL_TOL, "dropout {prob}: rel diff {rel:.3e}");
    }
}
