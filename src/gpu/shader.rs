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
