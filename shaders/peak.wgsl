// Roofline probes: the fastest arithmetic and the fastest memory traffic this adapter can do
// from WGSL. Benchmarks report every kernel as a percentage of these, measured in the same run.
//
//   fma:  each invocation runs `iters` rounds of 4 independent vec4<f32> fused multiply-adds
//         (4 chains × vec4 = 16 scalar FMAs in flight), so FLOPs = n · iters · 16 · 2.
//         The result is written so the compiler cannot remove the work.
//   copy: dst[i] = src[i] on vec4<f32>; bytes moved = 2 · 16 · n4.
//
// Layout: `out`/`src`/`dst` are flat arrays. Mapping: one invocation per output element,
// workgroups of 64 over x and y (linear index = gid.x + gid.y · num_workgroups.x · 64).

struct Params {
    n: u32,      // invocations (fma) or vec4 elements (copy)
    iters: u32,  // FMA rounds per invocation
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;  // (n)   fma result
@group(0) @binding(2) var<storage, read> src: array<vec4<f32>>;        // (n)
@group(0) @binding(3) var<storage, read_write> dst: array<vec4<f32>>;  // (n)

const WG: u32 = 64u;

@compute @workgroup_size(WG)
fn fma_peak(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.n) {
        return;
    }
    let s = f32(i) * 1e-9;
    var a = vec4<f32>(s, s + 1.0, s + 2.0, s + 3.0);
    var b = a + 0.5;
    var c = a + 0.25;
    var d = a + 0.125;
    let m = vec4<f32>(0.999999);
    let k = vec4<f32>(1e-7);
    for (var it = 0u; it < params.iters; it++) {
        a = fma(a, m, k);
        b = fma(b, m, k);
        c = fma(c, m, k);
        d = fma(d, m, k);
    }
    out[i] = a + b + c + d;
}

@compute @workgroup_size(WG)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.n) {
        return;
    }
    dst[i] = src[i];
}
