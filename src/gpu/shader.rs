//! WGSL sources. Every kernel lives in `shaders/<op>.wgsl`; the sources are compiled into the
//! binary with `include_str!`. A shader may share code with a line `#import <name>`, which is
//! replaced by the text of `shaders/<name>.wgsl` (see [`preprocess`]).

/// A WGSL source file of `shaders/`, named by its file stem.
#[derive(Clone, Copy, Debug)]
pub struct Shader {
    pub name: &'static str,
    pub source: &'static str,
}

/// `shader!("silu")` is the `Shader` for `shaders/silu.wgsl`.
#[macro_export]
macro_rules! shader {
    ($name:literal) => {
        $crate::gpu::Shader {
            name: $name,
            source: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/", $name, ".wgsl")),
        }
    };
}

// Every file of `shaders/`, as `Shader`s, listed by build.rs.
include!(concat!(env!("OUT_DIR"), "/shaders.rs"));

/// The device limits the kernels need, read from the shaders themselves with naga: what the
/// most demanding entry point uses of each.
#[derive(Clone, Debug, Default)]
pub struct Needs {
    /// Storage buffers bound by one entry point, and which one.
    pub storage_buffers: (u32, String),
    /// Invocations of the largest workgroup, and which entry point.
    pub invocations: (u32, String),
    /// Bytes of `var<workgroup>` memory, and which entry point.
    pub workgroup_bytes: (u32, String),
}

/// [`Needs`] of every shader in [`ALL`] (computed once per process).
pub fn needs() -> &'static Needs {
    static NEEDS: std::sync::OnceLock<Needs> = std::sync::OnceLock::new();
    NEEDS.get_or_init(|| {
        let mut needs = Needs::default();
        for shader in ALL {
            let source = preprocess(shader.source).expect("shaders import known libraries");
            let module = naga::front::wgsl::parse_str(&source).expect("shaders parse (tests/shaders.rs)");
            let info =
                naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
                    .validate(&module)
                    .expect("shaders validate (tests/shaders.rs)");
            let mut layouter = naga::proc::Layouter::default();
            layouter.update(module.to_ctx()).expect("shader types lay out");
            for (i, ep) in module.entry_points.iter().enumerate() {
                let used = info.get_entry_point(i);
                let (mut storage, mut shared) = (0, 0);
                for (handle, var) in module.global_variables.iter() {
                    if used[handle].is_empty() {
                        continue;
                    }
                    match var.space {
                        naga::AddressSpace::Storage { .. } => storage += 1,
                        naga::AddressSpace::WorkGroup => shared += layouter[var.ty].size,
                        _ => {}
                    }
                }
                let name = format!("{}.wgsl {}", shader.name, ep.name);
                let invocations = ep.workgroup_size.iter().product::<u32>();
                for (need, have) in [
                    (&mut needs.storage_buffers, storage),
                    (&mut needs.invocations, invocations),
                    (&mut needs.workgroup_bytes, shared),
                ] {
                    if have > need.0 {
                        *need = (have, name.clone());
                    }
                }
            }
        }
        needs
    })
}

/// Shared WGSL snippets that other shaders may `#import`.
fn library(name: &str) -> Option<&'static str> {
    match name {
        "rng" => Some(include_str!("../../shaders/rng.wgsl")),
        _ => None,
    }
}

/// Expand `#import <name>` lines. Fails on an unknown import.
pub fn preprocess(source: &str) -> Result<String, String> {
    let mut out = String::with_capacity(source.len());
    for line in source.lines() {
        if let Some(name) = line.trim().strip_prefix("#import ") {
            let name = name.trim();
            let text = library(name).ok_or_else(|| format!("unknown #import {name}"))?;
            out.push_str(text);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    Ok(out)
}
