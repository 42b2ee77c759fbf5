//! Channel concatenation `torch.cat([a, b], dim=1)`: `shaders/concat.wgsl`, reference in
//! `src/reference/concat.rs`.

use crate::gpu::{grid_1d, Plan, Tensor};
use crate::shader;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    c1: u32,
    c2: u32,
    hw: u32,
}

/// Workgroup size and elements per invocation of `shaders/concat.wgsl`.
const WG: u32 = 64;
const RUN: usize = 4;

/// The shape of a concatenation along channels: y (n, c1 + c2, hw) = [a (n, c1, hw), b (n, c2, hw)].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Concat {
    pub n: usize,
    pub c1: usize,
    pub c2: usize,
    pub hw: usize,
}

impl Concat {
    /// Checks the lengths of the parts and the whole.
    fn params(&self, a: &Tensor, b: &Tensor, y: &Tensor) -> Params {
        let Concat { n, c1, c2, hw } = *self;
        for (what, t, c) in [("a", a, c1), ("b", b, c2), ("y", y, c1 + c2)] {
            assert_eq!(
                t.len(),
                n * c * hw,
                "concat: {what} is {:?}, not ({n}, {c}, {hw})",
                t.shape()
            );
        }
        Params {
            n: n as u32,
            c1: c1 as u32,
            c2: c2 as u32,
            hw: hw as u32,
        }
    }

    /// The grid of `m`'s kernels over y's `len` elements. Run: blocks of RUN·WG elements of the
    /// longer part, samples, 2 parts; flat: one invocation per element.
    fn grid(&self, m: Mapping, len: usize) -> [u32; 3] {
        match m {
            Mapping::Run => {
                assert!(self.n <= 65535, "concat: batch {} exceeds 65535 workgroups", self.n);
                let run = self.c1.max(self.c2) * self.hw;
                [(run.div_ceil(RUN * WG as usize)).max(1) as u32, self.n as u32, 2]
            }
            Mapping::Flat => grid_1d(len, WG),
        }
    }

    /// `m`, else the mapping measured fastest for this shape on this adapter (see
    /// [`crate::ops::tune`]), else [`Mapping::Run`].
    fn mapping(&self, p: &Plan, backward: bool, m: Option<Mapping>) -> Mapping {
        let case = crate::ops::tune::Case::Concat {
            backward,
            n: self.n,
            c1: self.c1,
            c2: self.c2,
            hw: self.hw,
        };
        m.or_else(|| p.gpu.tuned(&case)).unwrap_or(Mapping::Run)
    }
}

/// The two mappings of the concatenation (see `shaders/concat.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Mapping {
    /// Runs of 4 elements of one part per invocation: no division, uniform branches (the
    /// heuristic, everywhere).
    Run,
    /// One invocation per element (the readable mapping).
    Flat,
}

/// Entry point of `m`'s kernel for the forward or the backward.
fn entry(m: Mapping, backward: bool) -> &'static str {
    match (m, backward) {
        (Mapping::Run, false) => "forward",
        (Mapping::Run, true) => "backward",
        (Mapping::Flat, false) => "forward_flat",
        (Mapping::Flat, true) => "backward_flat",
    }
}

/// y = [a, b] along channels, with mapping `m` (`None`: the tuned one, else [`Mapping::Run`]).
pub fn forward(p: &mut Plan, s: &Concat, m: Option<Mapping>, a: &Tensor, b: &Tensor, y: &Tensor) {
    let params = s.params(a, b, y);
    let m = s.mapping(p, false, m);
    let grid = s.grid(m, y.len());
    p.kernel(
        &shader!("concat"),
        entry(m, false),
        &params,
        &[(1, a), (2, b), (3, y)],
        grid,
    );
}

/// da += dy[:, ..c1], db += dy[:, c1..], with mapping `m` as in [`forward`].
pub fn backward(p: &mut Plan, s: &Concat, m: Option<Mapping>, dy: &Tensor, da: &Tensor, db: &Tensor) {
    let params = s.params(da, db, dy);
    let m = s.mapping(p, true, m);
    let grid = s.grid(m, dy.len());
    p.kernel(
        &shader!("concat"),
        entry(m, true),
        &params,
        &[(4, dy), (5, da), (6, db)],
        grid,
    );
}
