//! Permutations of the coordinates: `y[i] = x[perm[i]]`, log-det 0.

use ndarray::{ArrayViewMut1, ArrayViewMut2};

use crate::float::Float;
use crate::layers::Layer;
use crate::workspace::Workspace;

/// A fixed permutation of the coordinates, applied in place cycle by cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permute {
    perm: Vec<usize>,
    inverse: Vec<usize>,
}

impl Permute {
    /// From an explicit permutation of `0..perm.len()` (`y[i] = x[perm[i]]`).
    /// Panics if it is not one; the `flow!` macro checks this at compile time.
    pub fn new(perm: Vec<usize>) -> Self {
        todo!()
    }
    /// Reverses the order of `dim` coordinates.
    pub fn reverse(dim: usize) -> Self {
        todo!()
    }
    /// A pseudo-random permutation of `dim` coordinates, fixed by `seed`
    /// (Fisher–Yates driven by SplitMix64: the same on every platform and version).
    pub fn seeded(dim: usize, seed: u64) -> Self {
        todo!()
    }
    /// The permutation: `y[i] = x[perm[i]]`.
    pub fn as_slice(&self) -> &[usize] {
        &self.perm
    }
}

impl<F: Float> Layer<F> for Permute {
    fn kind(&self) -> &'static str {
        "permute"
    }
    fn forward_block(&self, x: ArrayViewMut2<'_, F>, _log_det: ArrayViewMut1<'_, F>, _ws: &mut Workspace<F>) {
        todo!()
    }
    fn inverse_block(&self, y: ArrayViewMut2<'_, F>, _log_det: ArrayViewMut1<'_, F>, _ws: &mut Workspace<F>) {
        todo!()
    }
    fn forward_point(&self, x: &mut [F], _scratch: &mut [F]) -> F {
        todo!()
    }
    fn inverse_point(&self, y: &mut [F], _scratch: &mut [F]) -> F {
        todo!()
    }
}
