//! Elementwise layers: each coordinate mapped by a scalar bijection.
//!
//! | layer | domain → codomain | forward log-det |
//! |---|---|---|
//! | `Affine` | ℝ → ℝ | `log_scale[j]` (y = x·exp(log_scale) + shift) |
//! | `Shift` | ℝ → ℝ | 0 |
//! | `Scale` | ℝ → ℝ | `log|scale[j]|` |
//! | `Sigmoid` | ℝ → (0,1) | `−softplus(−x) − softplus(x)` |
//! | `Logit` | (0,1) → ℝ | `−log y − log1p(−y)` … see kernels |
//! | `Tanh` | ℝ → (−1,1) | `2(log 2 − x − softplus(−2x))` |
//! | `Atanh` | (−1,1) → ℝ | `−log1p(−x²)` |
//! | `Softplus` | ℝ → (0,∞) | `−softplus(−x)` |
//! | `Exp` | ℝ → (0,∞) | `x` |
//! | `Log` | (0,∞) → ℝ | `−log x` |
//! | `LeakyRelu` | ℝ → ℝ | `log slope` for x < 0, else 0 |

use crate::float::Float;
use crate::layers::{Elementwise, elementwise_layer};

/// `y = x·exp(log_scale[j]) + shift[j]`, learnable per coordinate; starts as the identity.
#[derive(Debug, Clone, PartialEq)]
pub struct Affine<F> {
    /// Per-coordinate shift.
    pub shift: Vec<F>,
    /// Per-coordinate log-scale.
    pub log_scale: Vec<F>,
}

impl<F: Float> Affine<F> {
    /// The identity on `dim` coordinates.
    pub fn identity(dim: usize) -> Self {
        Self { shift: vec![F::zero(); dim], log_scale: vec![F::zero(); dim] }
    }
}

/// `y = x + shift[j]`: learnable (starts at 0) or a constant.
#[derive(Debug, Clone, PartialEq)]
pub struct Shift<F> {
    /// Per-coordinate shift.
    pub shift: Vec<F>,
    /// Whether training updates it.
    pub learnable: bool,
}

impl<F: Float> Shift<F> {
    /// A learnable shift starting at 0.
    pub fn learnable(dim: usize) -> Self {
        Self { shift: vec![F::zero(); dim], learnable: true }
    }
    /// The constant shift `c` on every coordinate.
    pub fn constant(dim: usize, c: f64) -> Self {
        Self { shift: vec![F::of(c); dim], learnable: false }
    }
}

/// `y = sign·exp(log_scale[j])·x`: learnable (positive, starts at 1) or a non-zero constant.
#[derive(Debug, Clone, PartialEq)]
pub struct Scale<F> {
    /// Per-coordinate log of the absolute scale.
    pub log_scale: Vec<F>,
    /// Sign of the scale (`1` or `−1`).
    pub sign: F,
    /// Whether training updates it.
    pub learnable: bool,
}

impl<F: Float> Scale<F> {
    /// A learnable positive scale starting at 1.
    pub fn learnable(dim: usize) -> Self {
        Self { log_scale: vec![F::zero(); dim], sign: F::one(), learnable: true }
    }
    /// The constant non-zero scale `c` on every coordinate.
    pub fn constant(dim: usize, c: f64) -> Self {
        assert!(c != 0.0 && c.is_finite(), "scale must be finite and non-zero");
        Self { log_scale: vec![F::of(c.abs().ln()); dim], sign: F::of(c.signum()), learnable: false }
    }
}

/// `y = 1/(1+exp(−x))`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sigmoid;
/// `y = log(x/(1−x))`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Logit;
/// `y = tanh x`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tanh;
/// `y = atanh x`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Atanh;
/// `y = log(1+exp x)`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Softplus;
/// `y = exp x`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Exp;
/// `y = log x`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Log;

/// `y = x` for x ≥ 0, `slope·x` for x < 0 (slope > 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeakyRelu<F> {
    /// The negative-side slope, > 0.
    pub slope: F,
}

impl<F: Float> LeakyRelu<F> {
    /// A leaky ReLU with the given positive slope.
    pub fn new(slope: f64) -> Self {
        assert!(slope > 0.0 && slope.is_finite(), "leaky_relu slope must be > 0");
        Self { slope: F::of(slope) }
    }
}

// KERNELS: TODO(helper) — Elementwise impls for every type above.

elementwise_layer!(Affine<F>, "affine");
elementwise_layer!(Shift<F>, "shift");
elementwise_layer!(Scale<F>, "scale");
elementwise_layer!(Sigmoid, "sigmoid");
elementwise_layer!(Logit, "logit");
elementwise_layer!(Tanh, "tanh");
elementwise_layer!(Atanh, "atanh");
elementwise_layer!(Softplus, "softplus");
elementwise_layer!(Exp, "exp");
elementwise_layer!(Log, "log");
elementwise_layer!(LeakyRelu<F>, "leaky_relu");
