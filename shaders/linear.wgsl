// Gradient of a per-channel bias (nn.Linear's b, or any channel bias). The forward bias is
// added by the matmul's epilogue (shaders/matmul.wgsl, bias_mode).
//
//   bias_grad: db[c] += Σ_o Σ_i dy[o, c, i]            (∂L/∂b of y[o, c, i] = … + b[c])
//
// Layout: dy is (outer, channels, inner) row-major; nn.Linear is (rows, out, 1), an image
// (N, C, H·W). db is (channels).
// Mapping: one invocation per channel, a serial sum over outer × inner (no atomics, no
// barriers). Workgroups of 64 over x and y of the dispatch grid (grid_1d), linear index =
// gid.x + gid.y · (num_workgroups.x · 64).

struct Params {
    outer: u32,
    channels: u32,
    inner: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(3) var<storage, read> dy: array<f32>;         // (outer, channels, inner)
@group(0) @binding(4) var<storage, read_write> db: array<f32>;   // (channels)  accumulated

const WG: u32 = 64u;

@compute @workgroup_size(WG)
fn bias_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let ch = gid.x + gid.y * nwg.x * WG;
    if (ch >= params.channels) {
        return;
    }
    var sum = 0.0;
    for (var o = 0u; o < params.outer; o++) {
        let base = (o * params.channels + ch) * params.inner;
        for (var i = 0u; i < params.inner; i++) {
            sum += dy[base + i];
        }
    }
    db[ch] += sum;
}
