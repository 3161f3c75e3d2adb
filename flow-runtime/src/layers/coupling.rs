//! Coupling layers (RealNVP, NICE): the kept coordinates pass through unchanged and feed a
//! conditioner MLP whose outputs transform the others.

use ndarray::{ArrayViewMut1, ArrayViewMut2};
use rand::Rng;

use crate::float::Float;
use crate::layers::Layer;
use crate::nets::Mlp;
pub use crate::nets::Activation;
use crate::workspace::Workspace;

/// Which coordinates a coupling keeps (passes through and conditions on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mask<'a> {
    /// Keeps coordinates 0, 2, 4, …
    Even,
    /// Keeps coordinates 1, 3, 5, …
    Odd,
    /// Keeps coordinates `0..⌈dim/2⌉`.
    FirstHalf,
    /// Keeps coordinates `⌈dim/2⌉..dim`.
    SecondHalf,
    /// Keeps the coordinates marked `true` (length `dim`).
    Explicit(&'a [bool]),
}

impl Mask<'_> {
    /// `kept[j]` for `j in 0..dim`.
    pub fn kept(&self, dim: usize) -> Vec<bool> {
        let half = dim.div_ceil(2);
        (0..dim)
            .map(|j| match self {
                Mask::Even => j % 2 == 0,
                Mask::Odd => j % 2 == 1,
                Mask::FirstHalf => j < half,
                Mask::SecondHalf => j >= half,
                Mask::Explicit(m) => m[j],
            })
            .collect()
    }
}

/// How the transformed coordinates are changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CouplingTransform {
    /// `y = x·exp(s) + t`, with `s = c·tanh(raw/c)` bounded (RealNVP).
    Affine,
    /// `y = x + t`, volume preserving (NICE).
    Additive,
}

/// A coupling layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Coupling<F> {
    kept: Vec<usize>,
    transformed: Vec<usize>,
    transform: CouplingTransform,
    /// The conditioner: kept coordinates → (shift, raw log-scale) of the transformed ones.
    pub net: Mlp<F>,
}

impl<F: Float> Coupling<F> {
    /// A coupling on `dim` coordinates that starts as the identity (last layer zero).
    /// Panics if the mask keeps or transforms nothing; `flow!` checks that at compile time.
    pub fn new<R: Rng + ?Sized>(
        dim: usize,
        mask: Mask<'_>,
        transform: CouplingTransform,
        hidden: &[usize],
        activation: Activation,
        rng: &mut R,
    ) -> Self {
        todo!()
    }
}

impl<F: Float> Layer<F> for Coupling<F> {
    fn kind(&self) -> &'static str {
        "coupling"
    }
    fn forward_block(&self, x: ArrayViewMut2<'_, F>, log_det: ArrayViewMut1<'_, F>, ws: &mut Workspace<F>) {
        todo!()
    }
    fn inverse_block(&self, y: ArrayViewMut2<'_, F>, log_det: ArrayViewMut1<'_, F>, ws: &mut Workspace<F>) {
        todo!()
    }
    fn forward_point(&self, x: &mut [F], scratch: &mut [F]) -> F {
        todo!()
    }
    fn inverse_point(&self, y: &mut [F], scratch: &mut [F]) -> F {
        todo!()
    }
    fn point_scratch(&self) -> usize {
        todo!()
    }
}
