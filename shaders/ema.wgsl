// Exponential moving average of the parameters (the DDPM paper samples with EMA weights,
// decay 0.9999):
//
//   ema_i = decay · ema_i + (1 − decay) · params_i
//
// `decay` lives in the uniform params so the trainer may change it every step (set_params).
// Layout: ema, params: flat arrays of n f32 (the flat parameter buffer and its shadow).
// Mapping: one invocation per element, workgroups of 256 over x and y of the dispatch grid
// (grid_1d), i = gid.x + gid.y · (num_workgroups.x · 256).

struct Params {
    n: u32,
    decay: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> ema: array<f32>;  // (n)   updated in place
@group(0) @binding(2) var<storage, read> param: array<f32>;      // (n)

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.n) {
        return;
    }
    ema[i] = params.decay * ema[i] + (1.0 - params.decay) * param[i];
}
