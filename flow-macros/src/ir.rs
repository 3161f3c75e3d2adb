//! The typed model of a flow, between the syntax tree and the generated code: settings
//! resolved, `repeat` unrolled, every option typed and defaulted, every node with the span
//! of the token that wrote it.

use proc_macro2::Span;
use syn::Ident;

use crate::parse::{ItemHeader, Place};

/// A checked-to-be-well-formed flow declaration.
#[derive(Debug, Clone)]
pub struct Flow {
    /// Present in the named item form.
    pub header: Option<ItemHeader>,
    pub dim: Dim,
    pub base: Base,
    pub float: FloatType,
    /// The layers from the base to the data, `repeat` unrolled.
    pub layers: Vec<Layer>,
}

impl Flow {
    /// The first layer without an analytic inverse (`planar`, `radial`), if any: such a
    /// flow is forward-only, with no density at arbitrary points.
    pub fn forward_only_layer(&self) -> Option<&Layer> {
        self.layers.iter().find(|l| !l.kind.has_analytic_inverse())
    }

    /// Whether every layer has an analytic inverse, so the flow has a density anywhere.
    pub fn has_density(&self) -> bool {
        self.forward_only_layer().is_none()
    }
}

/// The flow's dimension: a literal, or a const generic parameter of the item.
#[derive(Debug, Clone)]
pub enum Dim {
    Literal {
        value: u64,
        span: Span,
    },
    Generic(Ident),
    /// Missing or invalid (already reported): dimension rules wait until it is fixed.
    Invalid,
}

impl Dim {
    /// The dimension when it is known to the macro.
    pub fn known(&self) -> Option<usize> {
        match self {
            Dim::Literal { value, .. } => usize::try_from(*value).ok(),
            Dim::Generic(_) | Dim::Invalid => None,
        }
    }
}

/// The base distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Base {
    /// N(0, I)
    Normal,
    /// `normal(learnable)`: N(μ, diag σ²) with learned μ and log σ, starting at N(0, I).
    LearnableNormal,
    /// U(0, 1)^D
    Uniform,
    /// `student_t(df = ν)`: independent standard Student-t coordinates.
    StudentT { df: f64 },
    /// `logistic`: independent standard logistic coordinates.
    Logistic,
}

/// The element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatType {
    F32,
    F64,
}

/// One layer of the unrolled chain.
#[derive(Debug, Clone)]
pub struct Layer {
    pub kind: LayerKind,
    /// The layer's name token, where its errors point.
    pub span: Span,
}

/// A number written in the DSL, with its span.
#[derive(Debug, Clone, Copy)]
pub struct Num {
    pub value: f64,
    pub place: Place,
}

/// Every layer kind and its typed options. What each kind means — its domain, its
/// image, its runtime type — is in `table.rs`.
#[derive(Debug, Clone)]
pub enum LayerKind {
    Affine,
    /// `shift` (learnable) or `shift(c)`.
    Shift(Option<Num>),
    /// `scale` (learnable) or `scale(c)`.
    Scale(Option<Num>),
    Sigmoid,
    Logit,
    Tanh,
    Atanh,
    Softplus,
    Exp,
    Log,
    LeakyRelu {
        slope: Num,
    },
    Permute(PermuteSpec),
    Coupling(CouplingSpec),
    /// `spline(bins = 8, bound = 5.0)`: a learnable rational-quadratic spline per coordinate.
    Spline(SplineSpec),
    /// `linear`, `linear(seed = k)` (LU with a seeded permutation) or `linear(orthogonal)`;
    /// `linear(n)` writes the width, which must be `dim` (a linear bijection is square).
    Linear(LinearSpec, Option<(u64, Place)>),
    /// `autoregressive(..)` (MAF) or `inverse_autoregressive(..)` (IAF).
    Autoregressive(AutoregressiveSpec),
    /// `actnorm`: a per-coordinate affine map initialised from the first batch of data.
    ActNorm,
    /// `batch_norm(momentum = 0.1, eps = 1e-5)`: batch statistics in training, running
    /// statistics otherwise.
    BatchNorm {
        momentum: Num,
        eps: Num,
    },
    /// `planar` (Rezende & Mohamed 2015): forward-only, no analytic inverse.
    Planar,
    /// `radial` (Rezende & Mohamed 2015): forward-only, no analytic inverse.
    Radial,
}

/// A rational-quadratic spline's options: `bins` bins on `[−bound, bound]`.
#[derive(Debug, Clone, Copy)]
pub struct SplineSpec {
    pub bins: (u64, Place),
    pub bound: Num,
}

impl SplineSpec {
    /// zuko's and nflows' defaults: 8 bins on [−5, 5].
    pub fn default_at(place: Place) -> Self {
        SplineSpec {
            bins: (8, place),
            bound: Num { value: 5.0, place },
        }
    }
}

/// Which invertible linear map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinearSpec {
    /// `P·L·U`, with `P` the identity or `permute(seed = k)`'s permutation.
    Lu { seed: Option<u64> },
    /// A product of `dim` Householder reflections.
    Orthogonal,
}

/// An autoregressive layer's options, defaults filled in.
#[derive(Debug, Clone)]
pub struct AutoregressiveSpec {
    /// `false`: MAF (one pass towards the base); `true`: IAF (one pass towards the data).
    pub inverse: bool,
    pub transform: CouplingTransform,
    pub hidden: Vec<(u64, Place)>,
    pub activation: Activation,
    pub order: Order,
}

/// The autoregressive order of the coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Natural,
    Reverse,
    Seed(u64),
}

/// How a `permute` is given.
#[derive(Debug, Clone)]
pub enum PermuteSpec {
    Reverse,
    Seed(u64),
    /// `permute([2, 0, 1])`: `y[i] = x[perm[i]]`.
    Explicit {
        perm: Vec<u64>,
        span: Span,
    },
}

/// A coupling's options, defaults filled in.
#[derive(Debug, Clone)]
pub struct CouplingSpec {
    pub mask: MaskSpec,
    pub transform: CouplingTransform,
    /// Hidden widths with where they were written.
    pub hidden: Vec<(u64, Place)>,
    pub activation: Activation,
}

/// Which coordinates a coupling keeps.
#[derive(Debug, Clone)]
pub enum MaskSpec {
    Even,
    Odd,
    FirstHalf,
    SecondHalf,
    /// `mask = [1, 0, 1]`: 1 keeps the coordinate.
    Explicit {
        kept: Vec<bool>,
        span: Span,
    },
}

impl MaskSpec {
    /// `kept[j]` for a known dimension (the same rule as the runtime's `Mask::kept`).
    pub fn kept(&self, dim: usize) -> Vec<bool> {
        let half = dim.div_ceil(2);
        (0..dim)
            .map(|j| match self {
                MaskSpec::Even => j % 2 == 0,
                MaskSpec::Odd => j % 2 == 1,
                MaskSpec::FirstHalf => j < half,
                MaskSpec::SecondHalf => j >= half,
                MaskSpec::Explicit { kept, .. } => kept.get(j).copied().unwrap_or(false),
            })
            .collect()
    }
}

/// How a coupling (or autoregressive layer) transforms a coordinate from its conditioner's
/// outputs.
#[derive(Debug, Clone, Copy)]
pub enum CouplingTransform {
    Affine,
    Additive,
    Spline(SplineSpec),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Relu,
    Tanh,
    Elu,
    Silu,
}

/// The support of a coordinate at some point of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Support {
    Real,
    UnitInterval,
    Symmetric,
    Positive,
}

impl Support {
    /// Whether every value of `self` lies in `other`.
    pub fn within(self, other: Support) -> bool {
        use Support::*;
        matches!(
            (self, other),
            (_, Real)
                | (UnitInterval, UnitInterval | Symmetric | Positive)
                | (Symmetric, Symmetric)
                | (Positive, Positive)
        )
    }

    /// How the set reads in a message.
    pub fn describe(self) -> &'static str {
        match self {
            Support::Real => "ℝ",
            Support::UnitInterval => "(0, 1)",
            Support::Symmetric => "(−1, 1)",
            Support::Positive => "(0, ∞)",
        }
    }

    /// The smallest support containing both.
    pub fn join(self, other: Support) -> Support {
        if self.within(other) {
            other
        } else if other.within(self) {
            self
        } else {
            Support::Real
        }
    }
}

/// SplitMix64-driven Fisher–Yates, exactly as the runtime's `seeded_permutation`
/// (the macro needs it to track supports through `permute(seed = k)`).
pub fn seeded_permutation(dim: usize, seed: u64) -> Vec<usize> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut perm: Vec<usize> = (0..dim).collect();
    for i in (1..dim).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        perm.swap(i, j);
    }
    perm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn support_containment() {
        use Support::*;
        assert!(UnitInterval.within(Positive));
        assert!(UnitInterval.within(Symmetric));
        assert!(!Symmetric.within(UnitInterval));
        assert!(!Real.within(Positive));
        assert_eq!(UnitInterval.join(Positive), Positive);
        assert_eq!(Symmetric.join(Positive), Real);
    }

    #[test]
    fn masks_split_like_the_runtime() {
        assert_eq!(MaskSpec::Even.kept(3), [true, false, true]);
        assert_eq!(MaskSpec::FirstHalf.kept(3), [true, true, false]);
        assert_eq!(MaskSpec::SecondHalf.kept(3), [false, false, true]);
    }

    #[test]
    fn seeded_permutation_is_a_permutation() {
        let mut p = seeded_permutation(10, 7);
        p.sort();
        assert_eq!(p, (0..10).collect::<Vec<_>>());
        // Pinned to the runtime's `flow_runtime::layers::permute::seeded_permutation`.
        assert_eq!(seeded_permutation(5, 7), [4, 1, 3, 0, 2]);
        assert_eq!(seeded_permutation(8, 0), [2, 5, 0, 3, 4, 6, 1, 7]);
    }
}
