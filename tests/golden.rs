//! The whole U-Net against PyTorch/diffusers: for every folder under `tests/golden/` (made by
//! `scripts/make_golden.py`), load the diffusers model, run forward + MSE loss + backward on the
//! GPU and compare the output, the loss and every parameter gradient with PyTorch's.

mod common;
use common::*;

use ddpm_gpu::model::{load_folder, UNet};
use ddpm_gpu::ops::{elementwise, loss};
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;

/// Relative L2 error allowed on the model output and the loss (f32 end to end).
const OUTPUT_TOL: f64 = 1e-4;
/// Relative L2 error allowed on each parameter gradient. A wrong term (a missing residual path,
/// a transposed weight, a wrong group) gives errors of order 1e-1..1.
const GRAD_TOL: f64 = 2e-3;
/// Gradients that are exactly zero in exact arithmetic (∂loss/∂to_k.bias: adding q·b_k to a whole
/// softmax row changes nothing) are float32 noise in PyTorch; ours must be as small in RMS.
const ZERO_GRAD_RMS: f64 = 1e-6;

fn tensor_f32(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f64>) {
    let v = st
        .tensor(name)
        .unwrap_or_else(|_| panic!("io.safetensors lacks {name}"));
    let data: Vec<f64> = match v.dtype() {
        Dtype::F32 => v
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect(),
        Dtype::I64 => v
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect(),
        d => panic!("{name}: unexpected dtype {d:?}"),
    };
    (v.shape().to_vec(), data)
}

fn run_case(dir: &std::path::Path) {
    let gpu = gpu();
    let (cfg, table, flat) = load_folder(dir).unwrap();
    let io_bytes = std::fs::read(dir.join("io.safetensors")).unwrap();
    let io = SafeTensors::deserialize(&io_bytes).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&io_bytes).unwrap();
    let zero_grads: Vec<String> = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("exactly_zero_grads"))
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let (shape, sample) = tensor_f32(&io, "sample");
    let (_, timestep) = tensor_f32(&io, "timestep");
    let (_, noise) = tensor_f32(&io, "noise");
    let (_, eps) = tensor_f32(&io, "eps");
    let (_, want_loss) = tensor_f32(&io, "loss");
    let batch = shape[0];

    let params = gpu.tensor(&[table.total], &flat);
    let grads = gpu.zeros(&[table.total]);
    let net = UNet::new(&gpu, &cfg, &table, &params, Some(&grads), batch).unwrap();
    let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    gpu.write(&net.input, &f32s(&sample));
    gpu.write(&net.timesteps, &f32s(&timestep));
    // Class-conditional cases carry their labels; the model must then have a label input.
    let has_labels = io.names().contains(&"class_labels");
    assert_eq!(
        has_labels,
        cfg.num_class_embeds.is_some(),
        "class_labels iff num_class_embeds"
    );
    if has_labels {
        let (_, labels) = tensor_f32(&io, "class_labels");
        gpu.write(net.class_labels.as_ref().unwrap(), &f32s(&labels));
    }
    let target = gpu.tensor(&shape, &f32s(&noise));
    let loss_t = gpu.zeros(&[1]);

    let mut p = Plan::new(&gpu);
    elementwise::fill(&mut p, &grads, 0.0);
    net.forward(&mut p);
    net.zero_grads(&mut p);
    loss::mse_forward_backward(&mut p, net.output(), &target, &loss_t, net.d_output());
    net.backward(&mut p);
    p.run();

    let case = dir.file_name().unwrap().to_string_lossy();
    assert_close(
        &format!("{case}: output eps"),
        &gpu.read(net.output()),
        &eps,
        OUTPUT_TOL,
    );
    assert_close(
        &format!("{case}: loss"),
        &gpu.read(&loss_t),
        &want_loss[..1],
        OUTPUT_TOL,
    );
    let all = gpu.read(&grads);
    let mut worst = (0.0f64, String::new());
    for e in &table.entries {
        let name = format!("grad.{}", e.name);
        let (gshape, want) = tensor_f32(&io, &name);
        assert_eq!(gshape, e.shape, "{name} shape");
        let got = &all[e.offset..e.offset + e.len()];
        if zero_grads.contains(&e.name) {
            let rms = (got.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / got.len() as f64).sqrt();
            assert!(rms <= ZERO_GRAD_RMS, "{case}: {} should be ~0, RMS {rms:.3e}", e.name);
            continue;
        }
        let err = rel_l2(got, &want);
        if err > worst.0 {
            worst = (err, e.name.clone());
        }
        assert!(
            err <= GRAD_TOL,
            "{case}: gradient of {} has rel L2 error {err:.3e} > {GRAD_TOL:.1e}",
            e.name
        );
    }
    println!(
        "{case}: {} gradients, worst rel L2 error {:.3e} ({}) (tolerance {GRAD_TOL:.1e})",
        table.entries.len(),
        worst.0,
        worst.1
    );
}

#[test]
fn unet_matches_pytorch_on_every_golden_case() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .expect("tests/golden exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("io.safetensors").exists())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 4,
        "expected at least 4 golden cases in {}",
        root.display()
    );
    for dir in cases {
        run_case(&dir);
    }
}
