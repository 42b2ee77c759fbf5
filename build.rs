//! Lists `shaders/*.wgsl` for `src/gpu/shader.rs` (`ALL`), so the set of shaders is the folder
//! itself: the device-limit check and the portability tests read every one of them.

fn main() {
    println!("cargo:rerun-if-changed=shaders");
    let mut names: Vec<String> = std::fs::read_dir("shaders")
        .expect("the shaders/ folder")
        .filter_map(|e| {
            let path = e.expect("listing shaders/").path();
            let wgsl = path.extension().is_some_and(|x| x == "wgsl");
            wgsl.then(|| path.file_stem().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    names.sort();
    let list: String = names
        .iter()
        .map(|n| format!("    crate::shader!(\"{n}\"),\n"))
        .collect();
    let out = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("shaders.rs");
    std::fs::write(out, format!("pub const ALL: &[Shader] = &[\n{list}];\n")).expect("writing shaders.rs");
}
