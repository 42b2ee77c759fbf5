//! Every `shaders/*.wgsl` parses and validates with naga (after `#import` expansion).

#[test]
fn every_wgsl_file_parses_and_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut count = 0;
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("wgsl") {
            continue;
        }
        count += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        let source = match ddpm_gpu::gpu::preprocess(&text) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        let module = match naga::front::wgsl::parse_str(&source) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{}: {}", path.display(), e.emit_to_string(&source)));
                continue;
            }
        };
        let mut validator =
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all());
        if let Err(e) = validator.validate(&module) {
            failures.push(format!("{}: {}", path.display(), e.emit_to_string(&source)));
        }
        assert!(
            text.trim_start().starts_with("//"),
            "{}: must start with a header comment",
            path.display()
        );
    }
    assert!(count > 0, "no shaders found in {}", dir.display());
    assert!(
        failures.is_empty(),
        "{} of {count} shaders failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("{count} shaders validated");
}

/// Every shader the code can instantiate: each file of `shaders/` (as build.rs lists them into
/// the binary), the `TILE_C` specialisations of conv2d, and group_norm and reduce cut before their
/// subgroup sections (each whole file is the subgroup module), after `#import` expansion.
fn every_variant() -> Vec<(String, String)> {
    let tiles = ddpm_gpu::ops::conv2d::TILE_CS.map(ddpm_gpu::ops::conv2d::tiled_shader);
    let mut group_norm = ddpm_gpu::ops::group_norm::base_shader();
    group_norm.name = "group_norm (without its subgroup section)";
    let mut reduce = ddpm_gpu::ops::reduce::base_shader();
    reduce.name = "reduce (without its subgroup section)";
    ddpm_gpu::gpu::SHADERS
        .iter()
        .chain(tiles.iter().filter(|s| s.name != "conv2d"))
        .chain([&group_norm, &reduce])
        .map(|s| (s.name.to_string(), ddpm_gpu::gpu::preprocess(s.source).unwrap()))
        .collect()
}

/// What wgpu does on Metal, DX12, Vulkan and GL, done here without those drivers: naga translates
/// each module to MSL, HLSL and SPIR-V, and each compute entry point to GLSL (ES 3.10, what
/// wgpu's GL backend asks for on compute).
#[test]
fn every_shader_variant_translates_to_every_backend() {
    use naga::back::{glsl, hlsl, msl, spv};
    let mut failures = Vec::new();
    let (mut modules, mut entry_points) = (0, 0);
    for (name, source) in every_variant() {
        let module = naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| panic!("{name}: {e}"));
        let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        modules += 1;
        if let Err(e) = spv::write_vec(&module, &info, &spv::Options::default(), None) {
            failures.push(format!("{name} → SPIR-V: {e}"));
        }
        if let Err(e) = msl::write_string(
            &module,
            &info,
            &msl::Options::default(),
            &msl::PipelineOptions::default(),
        ) {
            failures.push(format!("{name} → MSL: {e}"));
        }
        let mut hlsl_out = String::new();
        let (options, pipeline) = (hlsl::Options::default(), hlsl::PipelineOptions::default());
        if let Err(e) = hlsl::Writer::new(&mut hlsl_out, &options, &pipeline).write(&module, &info, None) {
            failures.push(format!("{name} → HLSL: {e}"));
        }
        for ep in &module.entry_points {
            entry_points += 1;
            let options = glsl::Options {
                version: glsl::Version::Embedded {
                    version: 310,
                    is_webgl: false,
                },
                ..glsl::Options::default()
            };
            let pipeline = glsl::PipelineOptions {
                shader_stage: ep.stage,
                entry_point: ep.name.clone(),
                multiview: None,
            };
            let mut out = String::new();
            let written = glsl::Writer::new(
                &mut out,
                &module,
                &info,
                &options,
                &pipeline,
                naga::proc::BoundsCheckPolicies::default(),
            )
            .and_then(|mut w| w.write().map(|_| ()));
            if let Err(e) = written {
                failures.push(format!("{name}::{} → GLSL: {e}", ep.name));
            }
        }
    }
    println!("{modules} modules ({entry_points} entry points) translated to SPIR-V, MSL, HLSL and GLSL");
    assert!(modules > 20 && entry_points > 50, "too few shaders found");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
