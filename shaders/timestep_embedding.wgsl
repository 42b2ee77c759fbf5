// Sinusoidal timestep embedding (Vaswani et al. 2017 §3.5, used by DDPM Ho et al. 2020 Appx. B),
// as diffusers get_timestep_embedding(t, dim, flip_sin_to_cos, downscale_freq_shift, scale=1,
// max_period=10000):
//
//   half = ⌊dim/2⌋,  freq_j = exp(−ln(10000) · j / (half − freq_shift)),  arg_j = t · freq_j
//   y[n, :] = [sin(arg_0..half), cos(arg_0..half)]   ([cos, sin] when flip_sin_to_cos)
//   odd dim: a zero in the last column.
//
// Numerics: arg reaches ~1000 for t ≤ 999; it is reduced to [−π, π] (Cody–Waite, 2π split in an
// exactly-multipliable high part and a low part) before sin/cos, whose accuracy WGSL guarantees only
// on [−π, π]. The two subtractions are written as nested fma calls, not as (arg − k·hi) − k·lo:
// Metal compiles with fast math, which may reassociate plain arithmetic into arg − k·(hi + lo) and
// lose the low part; an fma is one operation with its own rounding, which it does not split.
// Layout: t (N), y (N, dim) row-major.
// Mapping: one invocation per element of y, workgroups of WG over x and y of the dispatch grid
// (linear index = gid.x + gid.y · num_workgroups.x · WG).

struct Params {
    n: u32,
    dim: u32,
    flip: u32,         // 1: [cos, sin], 0: [sin, cos]
    freq_shift: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> t: array<f32>;         // (N)       timesteps
@group(0) @binding(2) var<storage, read_write> y: array<f32>;   // (N, dim)  output

const WG: u32 = 256u;
const LN_MAX_PERIOD: f32 = 9.210340371976184;  // ln(10000)
const TWO_PI_HI: f32 = 6.28125;                // 201/32: k · TWO_PI_HI is exact for |k| < 2^16
const TWO_PI_LO: f32 = 0.0019353071795864769;  // 2π − TWO_PI_HI
const INV_TWO_PI: f32 = 0.15915494309189535;

@compute @workgroup_size(WG)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = gid.x + gid.y * nwg.x * WG;
    if (o >= params.n * params.dim) {
        return;
    }
    let row = o / params.dim;
    let col = o % params.dim;
    let half = params.dim / 2u;
    if (col >= 2u * half) {
        y[o] = 0.0;  // odd dim padding
        return;
    }
    let j = col % half;
    let freq = exp(-LN_MAX_PERIOD * f32(j) / (f32(half) - params.freq_shift));
    let arg = t[row] * freq;
    let k = round(arg * INV_TWO_PI);
    let r = fma(-k, TWO_PI_LO, fma(-k, TWO_PI_HI, arg));
    let first_half = col < half;
    let use_sin = first_half != (params.flip == 1u);
    y[o] = select(cos(r), sin(r), use_sin);
}
