//! The parameter table matches diffusers exactly: the paper's CIFAR-10 model has every tensor of
//! `tests/fixtures/ddpm-cifar10-unet2d-tensors.txt` (names and shapes, 35,746,307 parameters);
//! configs round-trip; bad configs are refused naming the field; checkpoints round-trip and
//! corrupt ones give clear errors.

use ddpm_gpu::model::checkpoint::{load_weights, weights_bytes};
use ddpm_gpu::model::{ParamTable, UNetConfig};

#[test]
fn cifar10_preset_has_exactly_the_paper_models_tensors() {
    let text = include_str!("fixtures/ddpm-cifar10-unet2d-tensors.txt");
    let mut want: Vec<(String, Vec<usize>)> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (name, shape) = l.split_once('\t').expect("name<TAB>shape");
            let dims = shape.trim().trim_matches(|c| c == '[' || c == ']');
            let dims = dims
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().parse().unwrap())
                .collect();
            (name.to_string(), dims)
        })
        .collect();
    let table = ParamTable::new(&UNetConfig::preset("ddpm-cifar10").unwrap());
    let mut got: Vec<(String, Vec<usize>)> = table
        .entries
        .iter()
        .map(|e| (e.name.clone(), e.shape.clone()))
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got.len(), want.len(), "tensor count");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }
    assert_eq!(table.count(), 35_746_307);
}

#[test]
fn config_round_trips_and_defaults_follow_diffusers() {
    for name in ddpm_gpu::model::config::PRESETS {
        let cfg = UNetConfig::preset(name).unwrap();
        let back: UNetConfig = serde_json::from_str(&cfg.to_json()).unwrap();
        assert_eq!(cfg, back, "{name}");
    }
    // Missing keys take diffusers' defaults.
    let cfg: UNetConfig = serde_json::from_str(r#"{"sample_size": 32}"#).unwrap();
    assert_eq!(cfg.block_out_channels, vec![224, 448, 672, 896]);
    assert_eq!(cfg.attention_head_dim, Some(8));
    assert!(cfg.flip_sin_to_cos);
    assert_eq!(cfg.norm_eps, 1e-5);
    // An explicit null attention_head_dim means one head.
    let cfg: UNetConfig = serde_json::from_str(r#"{"sample_size": 32, "attention_head_dim": null}"#).unwrap();
    assert_eq!(cfg.attention_head_dim, None);
}

#[test]
fn unsupported_config_values_are_refused_naming_the_field() {
    let cases = [
        (r#"{"sample_size": 32, "act_fn": "gelu"}"#, "act_fn"),
        (
            r#"{"sample_size": 32, "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D"]}"#,
            "down_block_types",
        ),
        (r#"{"sample_size": 32, "norm_num_groups": 5}"#, "norm_num_groups"),
        (r#"{"sample_size": 30}"#, "sample_size"),
        (
            r#"{"sample_size": 32, "time_embedding_type": "fourier"}"#,
            "time_embedding_type",
        ),
        (r#"{"block_out_channels": [32, 64]}"#, "sample_size"),
    ];
    for (json, field) in cases {
        let cfg: UNetConfig = serde_json::from_str(json).unwrap();
        let err = format!("{:#}", cfg.validate().unwrap_err());
        assert!(err.contains(field), "error for {json} should name `{field}`: {err}");
    }
}

#[test]
fn checkpoint_round_trips_and_refuses_bad_files() {
    let cfg = UNetConfig::preset("tiny").unwrap();
    let table = ParamTable::new(&cfg);
    let flat = table.init(1);
    let dir = std::env::temp_dir().join(format!("ddpm-gpu-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("w.safetensors");
    let bytes = weights_bytes(&table, &flat).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(load_weights(&path, &table).unwrap(), flat);

    // Truncated file.
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = format!("{:#}", load_weights(&path, &table).unwrap_err());
    assert!(err.contains("w.safetensors") && err.contains("safetensors"), "{err}");
    // Weights of another config.
    let other = ParamTable::new(&UNetConfig::preset("mnist").unwrap());
    std::fs::write(&path, weights_bytes(&other, &other.init(2)).unwrap()).unwrap();
    let err = format!("{:#}", load_weights(&path, &table).unwrap_err());
    assert!(err.contains("do not match"), "{err}");
    // Missing file.
    let err = format!("{:#}", load_weights(&dir.join("nope.safetensors"), &table).unwrap_err());
    assert!(err.contains("nope.safetensors"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn init_follows_the_paper() {
    let cfg = UNetConfig::preset("mnist").unwrap();
    let table = ParamTable::new(&cfg);
    let flat = table.init(3);
    let get = |name: &str| {
        let e = table.get(name).unwrap();
        flat[e.offset..e.offset + e.len()].to_vec()
    };
    assert!(get("conv_in.bias").iter().all(|&v| v == 0.0));
    assert!(get("conv_norm_out.weight").iter().all(|&v| v == 1.0));
    let w = get("conv_in.weight"); // fan_in 9, fan_out 144: limit sqrt(3 / 76.5)
    let limit = (3.0f32 / 76.5).sqrt();
    assert!(w.iter().all(|v| v.abs() <= limit) && w.iter().any(|v| v.abs() > 0.5 * limit));
    assert!(get("down_blocks.0.resnets.0.conv2.weight")
        .iter()
        .all(|v| v.abs() < 1e-4));
    assert!(get("conv_out.weight").iter().all(|v| v.abs() < 1e-4));
}

#[test]
fn legacy_attention_names_load() {
    // Old diffusers checkpoints name the attention projections query/key/value/proj_attn.
    let cfg = UNetConfig::preset("tiny").unwrap();
    let table = ParamTable::new(&cfg);
    let flat = table.init(5);
    let mut legacy = Vec::new();
    for e in &table.entries {
        let name = e
            .name
            .replace(".to_q.", ".query.")
            .replace(".to_k.", ".key.")
            .replace(".to_v.", ".value.")
            .replace(".to_out.0.", ".proj_attn.");
        let data: Vec<u8> = bytemuck::cast_slice(&flat[e.offset..e.offset + e.len()]).to_vec();
        legacy.push((name, e.shape.clone(), data));
    }
    assert!(
        legacy.iter().any(|(n, _, _)| n.contains(".proj_attn.")),
        "the tiny preset has attention"
    );
    let views: Vec<(String, safetensors::tensor::TensorView)> = legacy
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    let path = std::env::temp_dir().join(format!("ddpm-gpu-legacy-{}.safetensors", std::process::id()));
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    let loaded = load_weights(&path, &table).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(loaded, flat);
}

#[test]
fn the_published_cifar10_config_loads_and_matches_the_preset() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/ddpm-cifar10-32.config.json");
    let published = UNetConfig::load(&path).unwrap();
    let preset = UNetConfig::preset("ddpm-cifar10").unwrap();
    // The hub config has no dropout entry (0.0); the paper trained with 0.1, which the preset sets.
    assert_eq!(
        published,
        UNetConfig {
            dropout: 0.0,
            num_train_timesteps: published.num_train_timesteps,
            ..preset
        }
    );
}
