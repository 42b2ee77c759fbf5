//! CPU reference for the parameter EMA (see `shaders/ema.wgsl`).

/// ema = decay · ema + (1 − decay) · params, in place.
pub fn update(ema: &mut [f64], params: &[f64], decay: f64) {
    assert_eq!(ema.len(), params.len());
    for (e, &p) in ema.iter_mut().zip(params) {
        *e = decay * *e + (1.0 - decay) * p;
    }
}
