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

use crate::fastmath;
use crate::float::Float;
use crate::layers::{Elementwise, LANES, elementwise_layer};

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
        Self {
            shift: vec![F::zero(); dim],
            log_scale: vec![F::zero(); dim],
        }
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
        Self {
            shift: vec![F::zero(); dim],
            learnable: true,
        }
    }
    /// The constant shift `c` on every coordinate.
    pub fn constant(dim: usize, c: f64) -> Self {
        Self {
            shift: vec![F::of(c); dim],
            learnable: false,
        }
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
        Self {
            log_scale: vec![F::zero(); dim],
            sign: F::one(),
            learnable: true,
        }
    }
    /// The constant non-zero scale `c` on every coordinate.
    pub fn constant(dim: usize, c: f64) -> Self {
        assert!(
            c != 0.0 && c.is_finite(),
            "scale must be finite and non-zero"
        );
        Self {
            log_scale: vec![F::of(c.abs().ln()); dim],
            sign: F::of(c.signum()),
            learnable: false,
        }
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
        assert!(
            slope > 0.0 && slope.is_finite(),
            "leaky_relu slope must be > 0"
        );
        Self {
            slope: F::of(slope),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Scalar helpers (public: the gradient code reuses them). They call `crate::fastmath`, not
// libm, and have no branches (only selects), so that the loops of `map_rows` vectorise.
// ---------------------------------------------------------------------------------------

/// `a` where `c`, else `b`: written as a value choice so that it compiles to a select.
#[inline(always)]
fn pick<T>(c: bool, a: T, b: T) -> T {
    if c { a } else { b }
}

/// `log(1 + exp x)`, stable for large `|x|`: `max(x, 0) + log1p(exp(−|x|))`, so `exp` never
/// overflows. `softplus(+∞) = +∞`, `softplus(−∞) = 0`.
#[inline]
pub fn softplus<F: Float>(x: F) -> F {
    fastmath::softplus(x)
}

/// The inverse of [`softplus`] on `(0, ∞)`: `y + log(−expm1(−y))`, accurate for tiny `y`
/// (where it is `≈ log y`) and for large `y` (where it is `≈ y`).
#[inline]
pub fn softplus_inverse<F: Float>(y: F) -> F {
    y + fastmath::ln(-fastmath::exp_m1(-y))
}

/// `(σ(x), log σ'(x))` from one `e = exp(−|x|)`: `σ = 1/(1 + e)` or `e/(1 + e)`, and the
/// log-det `−|x| − 2·log1p(e)`.
#[inline(always)]
fn sigmoid_and_log_det<F: Float>(x: F) -> (F, F) {
    let a = x.abs();
    let e = fastmath::exp(-a);
    let y = pick(x >= F::zero(), F::one(), e) / (F::one() + e);
    (y, -a - (F::one() + F::one()) * fastmath::ln_1p_in_domain(e))
}

/// `σ(x) = 1/(1 + exp(−x))`, without overflow for either sign of `x`.
#[inline]
pub fn sigmoid<F: Float>(x: F) -> F {
    let e = fastmath::exp(-x.abs());
    pick(x >= F::zero(), F::one(), e) / (F::one() + e)
}

/// `logit y = log y − log1p(−y)` for `y ∈ (0, 1)` (no range check).
#[inline]
pub fn logit<F: Float>(y: F) -> F {
    fastmath::ln(y) - fastmath::ln_1p(-y)
}

/// [`logit`] for `y ∈ (0, 1)` (or NaN) only: the kernels' version.
#[inline(always)]
fn logit_in_domain<F: Float>(y: F) -> F {
    fastmath::ln(y) - fastmath::ln_1p_in_domain(-y)
}

/// `log σ'(x) = −softplus(−x) − softplus(x)`, evaluated as `−|x| − 2·log1p(exp(−|x|))`
/// (the same value with one `exp`): finite for every finite `x`.
#[inline]
pub fn sigmoid_log_det<F: Float>(x: F) -> F {
    let a = x.abs();
    -a - (F::one() + F::one()) * fastmath::ln_1p_in_domain(fastmath::exp(-a))
}

/// `log tanh'(x) = log(1 − tanh²x) = 2(log 2 − x − softplus(−2x))`, evaluated at `|x|`
/// (the function is even) so that no large terms cancel: finite for every finite `x`.
#[inline]
pub fn tanh_log_det<F: Float>(x: F) -> F {
    fastmath::tanh_with_log_det(x).1
}

/// `atanh x = ½·log1p(2x/(1 − x))`, evaluated at `|x|` and given the sign of `x`, so that
/// `1 − |x|` is exact near `±1` (no cancellation at `x → −1`). No range check.
#[inline]
pub fn atanh<F: Float>(x: F) -> F {
    let a = x.abs();
    let half = F::of(0.5);
    (half * fastmath::ln_1p((a + a) / (F::one() - a))).copysign(x)
}

/// `log atanh'(x) = −log(1 − x²)`: `−log1p(−x²)` for `|x| < ½`, else
/// `−log((1 − |x|)(1 + |x|))` where `1 − |x|` is exact. No range check. One logarithm:
/// the argument is chosen, as the unevaluated sum `1 + (−x²)` or the product. (The
/// kernels use [`fastmath::atanh_with_log_det`], which shares its logarithms with the
/// value.)
#[inline]
pub fn atanh_log_det<F: Float>(x: F) -> F {
    let a = x.abs();
    let z = -(a * a);
    let u = F::one() + z;
    // The exact rounding error of 1 + z (|z| ≤ 1).
    let c = z - (u - F::one());
    let small = a < F::of(0.5);
    let hi = pick(small, u, (F::one() - a) * (F::one() + a));
    -fastmath::ln_two_sum(hi, pick(small, c, F::zero()))
}

/// The smallest positive value of `F` (the least subnormal: `2^−1074` for `f64`,
/// `2^−149` for `f32`): where a value that rounded to exactly `0` saturates.
#[inline]
pub fn smallest_positive<F: Float>() -> F {
    let tiny = F::min_positive_value() * F::epsilon();
    if tiny > F::zero() {
        tiny
    } else {
        // Subnormals flushed to zero: the least normal value instead.
        F::min_positive_value()
    }
}

/// The largest value of `F` below 1 (`1 − ε/2`): where a value that rounded to exactly
/// `1` saturates.
#[inline]
pub fn largest_below_one<F: Float>() -> F {
    F::one() - F::epsilon() * F::of(0.5)
}

/// Keeps a value rounded onto the boundary of (0, 1) inside it, so that samples of a flow
/// ending in a saturated `sigmoid` stay in the flow's open support. NaN passes through.
#[inline(always)]
pub fn into_unit_interval<F: Float>(y: F) -> F {
    let (lo, hi) = (smallest_positive(), largest_below_one());
    pick(y < lo, lo, pick(y > hi, hi, y))
}

/// What an inverse kernel returns for a value outside its layer's codomain.
#[inline(always)]
fn outside_codomain<F: Float>() -> (F, F) {
    (F::nan(), F::neg_infinity())
}

/// What a forward kernel returns for a value strictly outside its layer's domain.
#[inline(always)]
fn outside_domain<F: Float>() -> (F, F) {
    (F::nan(), F::nan())
}

/// `v` where `ok`, else what an inverse kernel returns outside its codomain.
#[inline(always)]
fn inside_codomain<F: Float>(ok: bool, v: (F, F)) -> (F, F) {
    pick(ok, v, outside_codomain())
}

// ---------------------------------------------------------------------------------------
// Kernels. Inverse kernels reject NaN and ±∞ (not in any codomain) with `(NaN, −∞)`.
// They compute the value unconditionally and then select, rather than returning early,
// so that a loop over many entries has no branches and vectorises.
//
// Backward kernels (`inverse_backward`) differentiate the exact formulas of `inverse`.
// Given a `y` that `inverse` rejects, they return NaN for `∂J/∂y` and leave `param_grad`
// untouched: such a point has log-density −∞, and the NaN tells the caller so without
// poisoning the accumulated parameter gradients of the other rows.
//
// `forward_backward` differentiates the formulas of `forward` the same way. Given an `x`
// that is not a finite point of the domain (NaN, ±∞, or strictly outside a bounded
// domain) it returns NaN and leaves `param_grad` untouched. On the closed boundary of a
// bounded domain, where `forward` saturates (`logit` at 0 and 1, `atanh` at ±1, `log` at
// 0), it differentiates at the saturated point, as `forward` evaluates there: a huge (in
// `f32` possibly infinite) but not NaN gradient.
// ---------------------------------------------------------------------------------------

impl<F: Float> Elementwise<F> for Affine<F> {
    /// `x = (y − shift)·e^{−s}`, log-det `−s`: `∂J/∂y = x̄·e^{−s}`,
    /// `∂J/∂shift = −x̄·e^{−s}`, `∂J/∂s = −x̄·x − w`.
    #[inline]
    fn inverse_backward(&self, j: usize, y: F, x_bar: F, w: F, param_grad: &mut [F]) -> F {
        if !y.is_finite() {
            return F::nan();
        }
        let e = fastmath::exp(-self.log_scale[j]);
        let x = (y - self.shift[j]) * e;
        let dy = x_bar * e;
        param_grad[j] -= dy;
        param_grad[self.shift.len() + j] -= x_bar * x + w;
        dy
    }
    /// `y = x·e^s + shift`, log-det `s`: `∂J/∂x = ȳ·e^s`, `∂J/∂shift = ȳ`,
    /// `∂J/∂s = ȳ·x·e^s + w`.
    #[inline]
    fn forward_backward(&self, j: usize, x: F, y_bar: F, w: F, param_grad: &mut [F]) -> F {
        if !x.is_finite() {
            return F::nan();
        }
        let e = fastmath::exp(self.log_scale[j]);
        let dx = y_bar * e;
        param_grad[j] += y_bar;
        param_grad[self.shift.len() + j] += dx * x + w;
        dx
    }
    #[inline(always)]
    fn forward(&self, j: usize, x: F) -> (F, F) {
        let s = self.log_scale[j];
        (x * fastmath::exp(s) + self.shift[j], s)
    }
    #[inline(always)]
    fn inverse(&self, j: usize, y: F) -> (F, F) {
        let (s, t) = (self.log_scale[j], self.shift[j]);
        inside_codomain(y.is_finite(), ((y - t) * fastmath::exp(-s), -s))
    }
    /// The parameters and `exp(log_scale)` once per tile (the per-row bounds checks kept
    /// the loop scalar and recomputed the exponential for every row).
    #[inline(always)]
    fn forward_lanes(&self, j: usize, v: &mut [F; LANES], acc: &mut [F; LANES]) {
        let (s, t) = (self.log_scale[j], self.shift[j]);
        let e = fastmath::exp(s);
        for (v, acc) in v.iter_mut().zip(acc.iter_mut()) {
            *v = *v * e + t;
            *acc += s;
        }
    }
    #[inline(always)]
    fn forward_values_lanes(&self, j: usize, v: &mut [F; LANES]) {
        let (s, t) = (self.log_scale[j], self.shift[j]);
        let e = fastmath::exp(s);
        for v in v.iter_mut() {
            *v = *v * e + t;
        }
    }
    #[inline(always)]
    fn inverse_lanes(&self, j: usize, v: &mut [F; LANES], acc: &mut [F; LANES]) {
        let (s, t) = (self.log_scale[j], self.shift[j]);
        let e = fastmath::exp(-s);
        for (v, acc) in v.iter_mut().zip(acc.iter_mut()) {
            let (x, l) = inside_codomain(v.is_finite(), ((*v - t) * e, -s));
            *acc += l;
            *v = x;
        }
    }
}

impl<F: Float> Elementwise<F> for Shift<F> {
    /// `x = y − shift`, log-det 0: `∂J/∂y = x̄`, `∂J/∂shift = −x̄` (when learnable).
    #[inline]
    fn inverse_backward(&self, j: usize, y: F, x_bar: F, _w: F, param_grad: &mut [F]) -> F {
        if !y.is_finite() {
            return F::nan();
        }
        if self.learnable {
            param_grad[j] -= x_bar;
        }
        x_bar
    }
    /// `y = x + shift`, log-det 0: `∂J/∂x = ȳ`, `∂J/∂shift = ȳ` (when learnable).
    #[inline]
    fn forward_backward(&self, j: usize, x: F, y_bar: F, _w: F, param_grad: &mut [F]) -> F {
        if !x.is_finite() {
            return F::nan();
        }
        if self.learnable {
            param_grad[j] += y_bar;
        }
        y_bar
    }
    #[inline(always)]
    fn forward(&self, j: usize, x: F) -> (F, F) {
        (x + self.shift[j], F::zero())
    }
    #[inline(always)]
    fn inverse(&self, j: usize, y: F) -> (F, F) {
        let t = self.shift[j];
        inside_codomain(y.is_finite(), (y - t, F::zero()))
    }
}

impl<F: Float> Elementwise<F> for Scale<F> {
    /// `x = sign·e^{−s}·y`, log-det `−s`: `∂J/∂y = x̄·sign·e^{−s}`, `∂J/∂s = −x̄·x − w`
    /// (when learnable).
    #[inline]
    fn inverse_backward(&self, j: usize, y: F, x_bar: F, w: F, param_grad: &mut [F]) -> F {
        if !y.is_finite() {
            return F::nan();
        }
        let d = self.sign * fastmath::exp(-self.log_scale[j]);
        if self.learnable {
            param_grad[j] -= x_bar * (d * y) + w;
        }
        x_bar * d
    }
    /// `y = sign·e^s·x`, log-det `s`: `∂J/∂x = ȳ·sign·e^s`, `∂J/∂s = ȳ·y + w` (when
    /// learnable).
    #[inline]
    fn forward_backward(&self, j: usize, x: F, y_bar: F, w: F, param_grad: &mut [F]) -> F {
        if !x.is_finite() {
            return F::nan();
        }
        let d = self.sign * fastmath::exp(self.log_scale[j]);
        if self.learnable {
            param_grad[j] += y_bar * (d * x) + w;
        }
        y_bar * d
    }
    #[inline(always)]
    fn forward(&self, j: usize, x: F) -> (F, F) {
        let s = self.log_scale[j];
        (self.sign * fastmath::exp(s) * x, s)
    }
    #[inline(always)]
    fn inverse(&self, j: usize, y: F) -> (F, F) {
        let s = self.log_scale[j];
        inside_codomain(y.is_finite(), (self.sign * fastmath::exp(-s) * y, -s))
    }
}

/// The log-det is a function of the real-line value (`x` forward, `logit y` inverse),
/// evaluated by the same [`sigmoid_log_det`], so `inverse(y).1 == −forward(inverse(y).0).1`.
impl<F: Float> Elementwise<F> for Sigmoid {
    /// `x = logit y`, log-det `−log y − log(1 − y)`: `dx/dy = 1/(y(1 − y))` and
    /// `d(log-det)/dy = (2y − 1)/(y(1 − y))` (`2y − 1` is exact for `y ≥ ¼`).
    #[inline]
    fn inverse_backward(&self, _j: usize, y: F, x_bar: F, w: F, _param_grad: &mut [F]) -> F {
        if !(y > F::zero() && y < F::one()) {
            return F::nan();
        }
        (x_bar + w * (y + y - F::one())) / (y * (F::one() - y))
    }
    /// `y = σ(x)`, log-det `log σ(x) + log σ(−x)`: `dy/dx = σ(x)·σ(−x)` and
    /// `d(log-det)/dx = σ(−x) − σ(x) = −tanh(x/2)` (the formulas of
    /// [`Logit::inverse_backward`](Elementwise::inverse_backward)).
    #[inline]
    fn forward_backward(&self, _j: usize, x: F, y_bar: F, w: F, _param_grad: &mut [F]) -> F {
        if !x.is_finite() {
            return F::nan();
        }
        y_bar * (sigmoid(x) * sigmoid(-x)) - w * fastmath::tanh(x * F::of(0.5))
    }
    #[inline(always)]
    fn forward(&self, _j: usize, x: F) -> (F, F) {
        let (y, l) = sigmoid_and_log_det(x);
        (into_unit_interval(y), l)
    }
    #[inline(always)]
    fn inverse(&self, _j: usize, y: F) -> (F, F) {
        // Rejects y ≤ 0, y ≥ 1 (an f32 value rounded onto the boundary included) and NaN.
        let x = logit_in_domain(y);
        inside_codomain((y > F::zero()) & (y < F::one()), (x, -sigmoid_log_det(x)))
    }
}

/// Mirror of [`Sigmoid`]: `forward(y).1 == −inverse(forward(y).0).1` exactly.
impl<F: Float> Elementwise<F> for Logit {
    /// `x = σ(y)`, log-det `log σ(y) + log σ(−y)`: `dx/dy = σ(y)·σ(−y)` and
    /// `d(log-det)/dy = σ(−y) − σ(y) = −tanh(y/2)` (no cancellation).
    #[inline]
    fn inverse_backward(&self, _j: usize, y: F, x_bar: F, w: F, _param_grad: &mut [F]) -> F {
        if !y.is_finite() {
            return F::nan();
        }
        x_bar * (sigmoid(y) * sigmoid(-y)) - w * fastmath::tanh(y * F::of(0.5))
    }
    /// `y = logit x`, log-det `−log x − log(1 − x)`: `dy/dx = 1/(x(1 − x))` and
    /// `d(log-det)/dx = (2x − 1)/(x(1 − x))`, at `x` saturated into `(0, 1)` as `forward`
    /// does; NaN outside `[0, 1]`.
    #[inline]
    fn forward_backward(&self, _j: usize, x: F, y_bar: F, w: F, _param_grad: &mut [F]) -> F {
        if !(x >= F::zero() && x <= F::one()) {
            return F::nan();
        }
        let v = pick(x == F::zero(), smallest_positive(), x);
        let v = pick(v == F::one(), largest_below_one(), v);
        (y_bar + w * (v + v - F::one())) / (v * (F::one() - v))
    }
    #[inline(always)]
    fn forward(&self, _j: usize, y: F) -> (F, F) {
        // 0 and 1 saturate just inside (0, 1); outside [0, 1] (and NaN) is outside the domain.
        let v = pick(y == F::zero(), smallest_positive(), y);
        let v = pick(v == F::one(), largest_below_one(), v);
        let x = logit_in_domain(v);
        pick(
            (y >= F::zero()) & (y <= F::one()),
            (x, -sigmoid_log_det(x)),
            outside_domain(),
        )
    }
    #[inline(always)]
    fn inverse(&self, _j: usize, x: F) -> (F, F) {
        inside_codomain(x.is_finite(), sigmoid_and_log_det(x))
    }
}

impl<F: Float> Elementwise<F> for Tanh {
    /// `x = atanh y`, log-det `−log(1 − y²)`: `dx/dy = 1/(1 − y²)` and
    /// `d(log-det)/dy = 2y/(1 − y²)`, with `1 − y² = (1 − |y|)(1 + |y|)`.
    #[inline]
    fn inverse_backward(&self, _j: usize, y: F, x_bar: F, w: F, _param_grad: &mut [F]) -> F {
        if y.is_nan() || y.abs() >= F::one() {
            return F::nan();
        }
        let a = y.abs();
        (x_bar + w * (y + y)) / ((F::one() - a) * (F::one() + a))
    }
    /// `y = tanh x`, log-det `log(1 − tanh²x)`: `dy/dx = sech²x = 4e/(1 + e)²` with
    /// `e = exp(−2|x|)`, `d(log-det)/dx = −2·tanh x` (the formulas of
    /// [`Atanh::inverse_backward`](Elementwise::inverse_backward)).
    #[inline]
    fn forward_backward(&self, _j: usize, x: F, y_bar: F, w: F, _param_grad: &mut [F]) -> F {
        if !x.is_finite() {
            return F::nan();
        }
        let two = F::one() + F::one();
        let e = fastmath::exp(-two * x.abs());
        let one_e = F::one() + e;
        let sech2 = (two + two) * e / (one_e * one_e);
        y_bar * sech2 - w * two * fastmath::tanh(x)
    }
    /// The value and the log-det share one exponential ([`fastmath::tanh_with_log_det`]).
    #[inline(always)]
    fn forward(&self, _j: usize, x: F) -> (F, F) {
        let bound = largest_below_one::<F>();
        let (y, l) = fastmath::tanh_with_log_det(x);
        (pick(y > bound, bound, pick(y < -bound, -bound, y)), l)
    }
    #[inline(always)]
    fn inverse(&self, _j: usize, y: F) -> (F, F) {
        // Rejects |y| ≥ 1 and NaN.
        inside_codomain(y.abs() < F::one(), fastmath::atanh_with_log_det(y))
    }
}

/// Mirror of [`Tanh`]: `Atanh::forward` is `Tanh::inverse` on `(−1, 1)` and
/// `Atanh::inverse` is `Tanh::forward`.
impl<F: Float> Elementwise<F> for Atanh {
    /// `x = tanh y`, log-det `log(1 − tanh²y)`: `dx/dy = sech²y = 4e/(1 + e)²` with
    /// `e = exp(−2|y|)` (no cancellation near `±1`), `d(log-det)/dy = −2·tanh y`.
    #[inline]
    fn inverse_backward(&self, _j: usize, y: F, x_bar: F, w: F, _param_grad: &mut [F]) -> F {
        if !y.is_finite() {
            return F::nan();
        }
        let two = F::one() + F::one();
        let e = fastmath::exp(-two * y.abs());
        let one_e = F::one() + e;
        let sech2 = (two + two) * e / (one_e * one_e);
        x_bar * sech2 - w * two * fastmath::tanh(y)
    }
    /// `y = atanh x`, log-det `−log(1 − x²)`: `dy/dx = 1/(1 − x²)` and
    /// `d(log-det)/dx = 2x/(1 − x²)`, with `1 − x² = (1 − |x|)(1 + |x|)`, at `x` saturated
    /// into `(−1, 1)` as `forward` does; NaN outside `[−1, 1]`.
    #[inline]
    fn forward_backward(&self, _j: usize, x: F, y_bar: F, w: F, _param_grad: &mut [F]) -> F {
        let a = x.abs();
        if a.is_nan() || a > F::one() {
            return F::nan();
        }
        let v = pick(a == F::one(), largest_below_one::<F>().copysign(x), x);
        let a = v.abs();
        (y_bar + w * (v + v)) / ((F::one() - a) * (F::one() + a))
    }
    #[inline(always)]
    fn forward(&self, _j: usize, x: F) -> (F, F) {
        // ±1 saturate just inside (−1, 1); |x| > 1 (and NaN) is outside the domain.
        let a = x.abs();
        let v = pick(a == F::one(), largest_below_one::<F>().copysign(x), x);
        pick(
            a <= F::one(),
            fastmath::atanh_with_log_det(v),
            outside_domain(),
        )
    }
    #[inline(always)]
    fn inverse(&self, _j: usize, y: F) -> (F, F) {
        inside_codomain(y.is_finite(), fastmath::tanh_with_log_det(y))
    }
}

impl<F: Float> Elementwise<F> for Softplus {
    /// `x = y + log(−expm1(−y))`, log-det `−log(−expm1(−y))`:
    /// `dx/dy = 1/(1 − e^{−y}) = −1/expm1(−y)` and `d(log-det)/dy = −1/expm1(y)`.
    /// Overflows to `±∞` only where the true derivative exceeds the float range (y ≲ 1/MAX).
    #[inline]
    fn inverse_backward(&self, _j: usize, y: F, x_bar: F, w: F, _param_grad: &mut [F]) -> F {
        if !(y > F::zero() && y < F::infinity()) {
            return F::nan();
        }
        x_bar / -fastmath::exp_m1(-y) - w / fastmath::exp_m1(y)
    }
    /// `y = softplus x`, log-det `log σ(x)`: `dy/dx = σ(x)`, `d(log-det)/dx = σ(−x)`.
    #[inline]
    fn forward_backward(&self, _j: usize, x: F, y_bar: F, w: F, _param_grad: &mut [F]) -> F {
        if !x.is_finite() {
            return F::nan();
        }
        y_bar * sigmoid(x) + w * sigmoid(-x)
    }
    /// `softplus(x)` and `softplus(−x)` share `log1p(exp(−|x|))`.
    #[inline(always)]
    fn forward(&self, _j: usize, x: F) -> (F, F) {
        let l = fastmath::ln_1p_in_domain(fastmath::exp(-x.abs()));
        let zero = F::zero();
        let y = pick(x > zero, x, zero) + l;
        let tiny = smallest_positive();
        (pick(y < tiny, tiny, y), -(pick(-x > zero, -x, zero) + l))
    }
    #[inline(always)]
    fn inverse(&self, _j: usize, y: F) -> (F, F) {
        // Rejects y ≤ 0, +∞ and NaN.
        // log(−expm1(−y)) = x − y = log σ(x) = −softplus(−x): the forward log-det.
        let t = fastmath::ln(-fastmath::exp_m1(-y));
        inside_codomain((y > F::zero()) & (y < F::infinity()), (y + t, -t))
    }
}

impl<F: Float> Elementwise<F> for Exp {
    /// `x = log y`, log-det `−log y`: `∂J/∂y = (x̄ − w)/y`.
    #[inline]
    fn inverse_backward(&self, _j: usize, y: F, x_bar: F, w: F, _param_grad: &mut [F]) -> F {
        if !(y > F::zero() && y < F::infinity()) {
            return F::nan();
        }
        (x_bar - w) / y
    }
    /// `y = exp x`, log-det `x`: `∂J/∂x = ȳ·exp x + w` (infinite where `exp x`
    /// overflows, as the value itself does).
    #[inline]
    fn forward_backward(&self, _j: usize, x: F, y_bar: F, w: F, _param_grad: &mut [F]) -> F {
        if !x.is_finite() {
            return F::nan();
        }
        y_bar * fastmath::exp(x) + w
    }
    #[inline(always)]
    fn forward(&self, _j: usize, x: F) -> (F, F) {
        let y = fastmath::exp(x);
        let tiny = smallest_positive();
        (pick(y < tiny, tiny, y), x)
    }
    #[inline(always)]
    fn inverse(&self, _j: usize, y: F) -> (F, F) {
        // Rejects y ≤ 0, +∞ and NaN.
        let x = fastmath::ln(y);
        inside_codomain((y > F::zero()) & (y < F::infinity()), (x, -x))
    }
}

/// Mirror of [`Exp`]: `forward(x).1 == −inverse(forward(x).0).1` exactly.
impl<F: Float> Elementwise<F> for Log {
    /// `x = exp y`, log-det `y`: `∂J/∂y = x̄·exp y + w` (infinite where `exp y` overflows,
    /// as the value itself does).
    #[inline]
    fn inverse_backward(&self, _j: usize, y: F, x_bar: F, w: F, _param_grad: &mut [F]) -> F {
        if !y.is_finite() {
            return F::nan();
        }
        x_bar * fastmath::exp(y) + w
    }
    /// `y = log x`, log-det `−log x`: `∂J/∂x = (ȳ − w)/x`, at `x = 0` saturated to the
    /// least positive value as `forward` does; NaN below 0 and at `+∞`.
    #[inline]
    fn forward_backward(&self, _j: usize, x: F, y_bar: F, w: F, _param_grad: &mut [F]) -> F {
        if !(x >= F::zero() && x < F::infinity()) {
            return F::nan();
        }
        let v = pick(x == F::zero(), smallest_positive(), x);
        (y_bar - w) / v
    }
    #[inline(always)]
    fn forward(&self, _j: usize, x: F) -> (F, F) {
        // +∞ (an overflowed value) maps to (+∞, −∞) rather than NaN; 0 saturates to the
        // least positive value; below 0 (and NaN) is outside the domain.
        let v = pick(x == F::zero(), smallest_positive(), x);
        let y = fastmath::ln(v);
        pick(x >= F::zero(), (y, -y), outside_domain())
    }
    #[inline(always)]
    fn inverse(&self, _j: usize, y: F) -> (F, F) {
        inside_codomain(y.is_finite(), (fastmath::exp(y), y))
    }
}

impl<F: Float> Elementwise<F> for LeakyRelu<F> {
    /// `x = y/slope` for `y < 0`, else `y`; the log-det is piecewise constant, so
    /// `∂J/∂y = x̄/slope` or `x̄` (the slope is not learnable).
    #[inline]
    fn inverse_backward(&self, _j: usize, y: F, x_bar: F, _w: F, _param_grad: &mut [F]) -> F {
        if !y.is_finite() {
            return F::nan();
        }
        if y < F::zero() {
            x_bar / self.slope
        } else {
            x_bar
        }
    }
    /// `y = slope·x` for `x < 0`, else `x`; the log-det is piecewise constant, so
    /// `∂J/∂x = ȳ·slope` or `ȳ`.
    #[inline]
    fn forward_backward(&self, _j: usize, x: F, y_bar: F, _w: F, _param_grad: &mut [F]) -> F {
        if !x.is_finite() {
            return F::nan();
        }
        if x < F::zero() {
            y_bar * self.slope
        } else {
            y_bar
        }
    }
    #[inline(always)]
    fn forward(&self, _j: usize, x: F) -> (F, F) {
        // `ln slope` is the same for every entry: a loop hoists it.
        let ld = self.slope.ln();
        pick(x < F::zero(), (self.slope * x, ld), (x, F::zero()))
    }
    #[inline(always)]
    fn inverse(&self, _j: usize, y: F) -> (F, F) {
        let ld = -self.slope.ln();
        inside_codomain(
            y.is_finite(),
            pick(y < F::zero(), (y / self.slope, ld), (y, F::zero())),
        )
    }
}

/// The learnable parameters of an elementwise layer (none by default), behind
/// [`Layer::param_len`](crate::layers::Layer::param_len) and the visitors.
// The visitor types mirror `Layer::visit_params{,_mut}` exactly (the macro forwards them).
pub trait ElementwiseParams<F: Float> {
    /// The number of learnable parameters.
    fn param_len(&self) -> usize {
        0
    }
    /// Visits each learnable tensor as `(name, shape, values)`.
    #[allow(clippy::type_complexity)]
    fn visit_params(&self, _visit: &mut dyn FnMut(&str, &[usize], &[F])) {}
    /// Visits each learnable tensor mutably.
    #[allow(clippy::type_complexity)]
    fn visit_params_mut(&mut self, _visit: &mut dyn FnMut(&str, &[usize], &mut [F])) {}
    /// [`Layer::needs_data_init`](crate::layers::Layer::needs_data_init) (`false`).
    fn needs_data_init(&self) -> bool {
        false
    }
    /// [`Layer::init_from_data`](crate::layers::Layer::init_from_data) (nothing).
    fn init_from_data(&mut self, _y: ndarray::ArrayView2<'_, F>) {}
    /// [`Layer::mark_data_initialized`](crate::layers::Layer::mark_data_initialized)
    /// (nothing).
    fn mark_data_initialized(&mut self) {}
}

/// `shift` (`[D]`) then `log_scale` (`[D]`): `param_grad[j]` and `param_grad[D + j]`.
impl<F: Float> ElementwiseParams<F> for Affine<F> {
    fn param_len(&self) -> usize {
        self.shift.len() + self.log_scale.len()
    }
    fn visit_params(&self, visit: &mut dyn FnMut(&str, &[usize], &[F])) {
        visit("shift", &[self.shift.len()], &self.shift);
        visit("log_scale", &[self.log_scale.len()], &self.log_scale);
    }
    fn visit_params_mut(&mut self, visit: &mut dyn FnMut(&str, &[usize], &mut [F])) {
        visit("shift", &[self.shift.len()], &mut self.shift);
        visit("log_scale", &[self.log_scale.len()], &mut self.log_scale);
    }
}

/// `shift` (`[D]`) when learnable, nothing when constant.
impl<F: Float> ElementwiseParams<F> for Shift<F> {
    fn param_len(&self) -> usize {
        if self.learnable { self.shift.len() } else { 0 }
    }
    fn visit_params(&self, visit: &mut dyn FnMut(&str, &[usize], &[F])) {
        if self.learnable {
            visit("shift", &[self.shift.len()], &self.shift);
        }
    }
    fn visit_params_mut(&mut self, visit: &mut dyn FnMut(&str, &[usize], &mut [F])) {
        if self.learnable {
            visit("shift", &[self.shift.len()], &mut self.shift);
        }
    }
}

/// `log_scale` (`[D]`) when learnable, nothing when constant (the sign is never learnt).
impl<F: Float> ElementwiseParams<F> for Scale<F> {
    fn param_len(&self) -> usize {
        if self.learnable {
            self.log_scale.len()
        } else {
            0
        }
    }
    fn visit_params(&self, visit: &mut dyn FnMut(&str, &[usize], &[F])) {
        if self.learnable {
            visit("log_scale", &[self.log_scale.len()], &self.log_scale);
        }
    }
    fn visit_params_mut(&mut self, visit: &mut dyn FnMut(&str, &[usize], &mut [F])) {
        if self.learnable {
            visit("log_scale", &[self.log_scale.len()], &mut self.log_scale);
        }
    }
}

// No learnable parameters.
impl<F: Float> ElementwiseParams<F> for Sigmoid {}
impl<F: Float> ElementwiseParams<F> for Logit {}
impl<F: Float> ElementwiseParams<F> for Tanh {}
impl<F: Float> ElementwiseParams<F> for Atanh {}
impl<F: Float> ElementwiseParams<F> for Softplus {}
impl<F: Float> ElementwiseParams<F> for Exp {}
impl<F: Float> ElementwiseParams<F> for Log {}
impl<F: Float> ElementwiseParams<F> for LeakyRelu<F> {}

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

#[cfg(test)]
mod tests {
    use std::fmt::Debug;

    use ndarray::{Array1, Array2};
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::*;
    use crate::layers::checks::Direction;
    use crate::testing::log_abs_det_fd;

    // ----- fixtures ------------------------------------------------------------------

    fn affine<F: Float>() -> Affine<F> {
        Affine {
            shift: vec![F::of(0.3), F::of(-1.2)],
            log_scale: vec![F::of(0.7), F::of(-0.4)],
        }
    }

    fn shift<F: Float>() -> Shift<F> {
        Shift {
            shift: vec![F::of(0.5), F::of(-2.0)],
            learnable: true,
        }
    }

    fn scale<F: Float>() -> Scale<F> {
        Scale {
            log_scale: vec![F::of(0.3), F::of(-0.8)],
            sign: -F::one(),
            learnable: false,
        }
    }

    fn leaky<F: Float>() -> LeakyRelu<F> {
        LeakyRelu::new(0.2)
    }

    /// `n` points strictly inside `(lo, hi)`, midpoints of `n` equal cells (so `0` is
    /// avoided for even `n` on a symmetric interval).
    fn grid(lo: f64, hi: f64, n: usize) -> Vec<f64> {
        (0..n)
            .map(|k| lo + (hi - lo) * (k as f64 + 0.5) / n as f64)
            .collect()
    }

    fn log_grid(lo: f64, hi: f64, n: usize) -> Vec<f64> {
        grid(lo.ln(), hi.ln(), n)
            .into_iter()
            .map(f64::exp)
            .collect()
    }

    fn f64s<F: Float>(v: (F, F)) -> (f64, f64) {
        (v.0.to_f64_lossless(), v.1.to_f64_lossless())
    }

    /// The tolerance for `|inverse(forward(x)) − x|`: a few ulps of `x`, plus the rounding
    /// of `y` (relative, or one subnormal step) magnified by `|dx/dy| = exp(−log-det)`.
    fn round_trip_tol<F: Float>(x: f64, y: f64, log_det: f64, ulps: f64) -> f64 {
        let eps = F::epsilon().to_f64_lossless();
        let tiny = smallest_positive::<F>().to_f64_lossless();
        ulps * (eps * (1.0 + x.abs()) + (-log_det).exp() * (eps * y.abs() + tiny))
    }

    /// Checks one in-domain point of one layer: finite forward log-det, no NaN value, and,
    /// when `y` is in the codomain, no NaN inverse, round trip and negated log-dets; when
    /// `y` fell outside it (saturation or overflow), the inverse reports `−∞`.
    fn check_point<F: Float>(
        layer: &impl Elementwise<F>,
        j: usize,
        x: F,
        in_codomain: impl Fn(F) -> bool,
        ulps: f64,
    ) {
        let (y, l) = layer.forward(j, x);
        let xf = x.to_f64_lossless();
        assert!(!y.is_nan(), "forward({xf}) value is NaN");
        assert!(l.is_finite(), "forward({xf}) log-det {l} is not finite");
        let (x2, l2) = layer.inverse(j, y);
        if !in_codomain(y) {
            assert_eq!(l2, F::neg_infinity(), "inverse({y}) outside the codomain");
            return;
        }
        assert!(!x2.is_nan() && !l2.is_nan(), "inverse({y}) = ({x2}, {l2})");
        let (yf, lf) = (y.to_f64_lossless(), l.to_f64_lossless());
        let (x2f, l2f) = (x2.to_f64_lossless(), l2.to_f64_lossless());
        let tol = round_trip_tol::<F>(xf, yf, lf, ulps);
        assert!(
            (x2f - xf).abs() <= tol,
            "round trip {xf} -> {yf} -> {x2f} (err {}, tol {tol})",
            (x2f - xf).abs()
        );
        let eps = F::epsilon().to_f64_lossless();
        let y_mag = if yf.is_finite() { yf.abs() } else { 0.0 };
        let tol_l = ulps * eps * (1.0 + lf.abs() + xf.abs() + y_mag) + 4.0 * (x2f - xf).abs();
        assert!(
            (l2f + lf).abs() <= tol_l,
            "log-dets at {xf}: forward {lf}, inverse {l2f} (tol {tol_l})"
        );
    }

    fn any_finite<F: Float>(y: F) -> bool {
        y.is_finite()
    }

    fn unit<F: Float>(y: F) -> bool {
        y > F::zero() && y < F::one()
    }

    fn open_pm1<F: Float>(y: F) -> bool {
        y.abs() < F::one()
    }

    fn positive<F: Float>(y: F) -> bool {
        y > F::zero() && y.is_finite()
    }

    /// Runs `check_point` over grids covering every layer's domain, in `F`.
    fn check_all_layers_on_grids<F: Float>(ulps: f64) {
        let reals = grid(-8.0, 8.0, 160);
        let unit_pts = grid(0.0, 1.0, 200);
        let pm1 = grid(-1.0, 1.0, 200);
        let pos = log_grid(1e-6, 1e6, 200);
        let f = |v: &f64| F::of(*v);
        for j in 0..2 {
            for x in reals.iter().map(f) {
                check_point(&affine::<F>(), j, x, any_finite, ulps);
                check_point(&shift::<F>(), j, x, any_finite, ulps);
                check_point(&scale::<F>(), j, x, any_finite, ulps);
            }
        }
        for x in reals.iter().map(f) {
            check_point(&Sigmoid, 0, x, unit, ulps);
            check_point(&Tanh, 0, x, open_pm1, ulps);
            check_point(&Softplus, 0, x, positive, ulps);
            check_point(&Exp, 0, x, positive, ulps);
            check_point(&leaky::<F>(), 0, x, any_finite, ulps);
        }
        for x in unit_pts.iter().map(f) {
            check_point(&Logit, 0, x, any_finite, ulps);
        }
        for x in pm1.iter().map(f) {
            check_point(&Atanh, 0, x, any_finite, ulps);
        }
        for x in pos.iter().map(f) {
            check_point(&Log, 0, x, any_finite, ulps);
        }
    }

    // ----- round trips and log-dets -----------------------------------------------------

    #[test]
    fn round_trip_on_grids_f64() {
        check_all_layers_on_grids::<f64>(8.0);
    }

    #[test]
    fn round_trip_on_grids_f32() {
        check_all_layers_on_grids::<f32>(8.0);
    }

    #[test]
    fn round_trip_is_tight_on_moderate_inputs() {
        // Away from saturation the round trip is accurate to ~1e-12 absolute in f64.
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * (1.0 + a.abs());
        for x in grid(-5.0, 5.0, 50) {
            for (name, layer) in [
                ("sigmoid", &Sigmoid as &dyn Elementwise<f64>),
                ("tanh", &Tanh),
                ("softplus", &Softplus),
                ("exp", &Exp),
            ] {
                let (y, _) = layer.forward(0, x);
                assert!(close(layer.inverse(0, y).0, x), "{name} at {x}");
            }
            let (y, _) = affine::<f64>().forward(1, x);
            assert!(close(affine::<f64>().inverse(1, y).0, x));
            let (y, _) = scale::<f64>().forward(1, x);
            assert!(close(scale::<f64>().inverse(1, y).0, x));
        }
    }

    /// The forward log-det against a central finite difference of the forward value.
    fn check_fd(name: &str, layer: &impl Elementwise<f64>, j: usize, xs: &[f64]) {
        for &x in xs {
            let (_, l) = layer.forward(j, x);
            let fd = log_abs_det_fd(|v| vec![layer.forward(j, v[0]).0], &[x]);
            assert!(
                (l - fd).abs() <= 1e-6 * (1.0 + l.abs()),
                "{name} at {x}: log-det {l}, finite difference {fd}"
            );
        }
    }

    #[test]
    fn forward_log_det_matches_finite_differences() {
        let reals = grid(-6.0, 6.0, 60);
        for j in 0..2 {
            check_fd("affine", &affine(), j, &reals);
            check_fd("shift", &shift(), j, &reals);
            check_fd("scale", &scale(), j, &reals);
        }
        check_fd("sigmoid", &Sigmoid, 0, &reals);
        check_fd("tanh", &Tanh, 0, &reals);
        check_fd("softplus", &Softplus, 0, &reals);
        check_fd("exp", &Exp, 0, &reals);
        check_fd("leaky_relu", &leaky(), 0, &reals);
        check_fd("logit", &Logit, 0, &grid(0.01, 0.99, 60));
        check_fd("atanh", &Atanh, 0, &grid(-0.99, 0.99, 60));
        check_fd("log", &Log, 0, &log_grid(1e-2, 1e3, 60));
    }

    #[test]
    fn inverse_log_det_is_the_negated_forward_log_det() {
        // Pairs whose two log-dets are one function of the same value are exact negatives:
        // sigmoid/logit (of the real-line value) and exp/log (of the log-side value).
        for x in grid(-30.0, 30.0, 120) {
            let y = Sigmoid.forward(0, x).0;
            if y < 1.0 {
                let (x2, l2) = Sigmoid.inverse(0, y);
                assert_eq!(l2, -Sigmoid.forward(0, x2).1);
            }
            let (x2, l) = Logit.forward(0, Sigmoid.forward(0, x).0);
            assert_eq!(
                Elementwise::<f64>::inverse(&Logit, 0, x2).1,
                -l,
                "logit at {x}"
            );
            let (y, l) = Log.forward(0, Exp.forward(0, x).0);
            assert_eq!(Log.inverse(0, y).1, -l, "log at {x}");
            let (w, l) = Exp.inverse(0, Exp.forward(0, x).0);
            assert_eq!(Exp.forward(0, w).1, -l, "exp at {x}");
        }
        // And every pair, in f64 and f32, agrees with the negated forward log-det.
        fn negated<F: Float>(layer: &impl Elementwise<F>, j: usize, xs: &[f64], tol: f64) {
            for &x in xs {
                let (y, l) = f64s(layer.forward(j, F::of(x)));
                let (x2, l2) = f64s(layer.inverse(j, F::of(y)));
                // The inverse is evaluated at the rounded `y`: allow for that rounding
                // (|x2 − x|) times the slope of the log-det (≤ 2 for these layers).
                let x = F::of(x).to_f64_lossless();
                assert!(
                    (l2 + l).abs() <= tol * (1.0 + l.abs()) + 2.0 * (x2 - x).abs(),
                    "at {x}: {l} vs {l2}"
                );
            }
        }
        let reals = grid(-6.0, 6.0, 48);
        let (unit_pts, pm1, pos) = (
            grid(0.0, 1.0, 48),
            grid(-1.0, 1.0, 48),
            log_grid(1e-3, 1e3, 48),
        );
        for (tol64, tol32) in [(1e-12, 1e-5)] {
            for j in 0..2 {
                negated::<f64>(&affine(), j, &reals, tol64);
                negated::<f32>(&affine(), j, &reals, tol32);
                negated::<f64>(&shift(), j, &reals, tol64);
                negated::<f32>(&shift(), j, &reals, tol32);
                negated::<f64>(&scale(), j, &reals, tol64);
                negated::<f32>(&scale(), j, &reals, tol32);
            }
            negated::<f64>(&Sigmoid, 0, &reals, tol64);
            negated::<f32>(&Sigmoid, 0, &reals, tol32);
            negated::<f64>(&Tanh, 0, &reals, tol64);
            negated::<f32>(&Tanh, 0, &reals, tol32);
            negated::<f64>(&Softplus, 0, &reals, tol64);
            negated::<f32>(&Softplus, 0, &reals, tol32);
            negated::<f64>(&Exp, 0, &reals, tol64);
            negated::<f32>(&Exp, 0, &reals, tol32);
            negated::<f64>(&leaky(), 0, &reals, tol64);
            negated::<f32>(&leaky(), 0, &reals, tol32);
            negated::<f64>(&Logit, 0, &unit_pts, tol64);
            negated::<f32>(&Logit, 0, &unit_pts, tol32);
            negated::<f64>(&Atanh, 0, &pm1, tol64);
            negated::<f32>(&Atanh, 0, &pm1, tol32);
            negated::<f64>(&Log, 0, &pos, tol64);
            negated::<f32>(&Log, 0, &pos, tol32);
        }
    }

    #[test]
    fn known_values() {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-14 * (1.0 + b.abs());
        // Affine: y = x·e^s + t.
        let (y, l) = affine::<f64>().forward(0, 2.0);
        assert!(close(y, 2.0 * 0.7f64.exp() + 0.3) && l == 0.7);
        // Scale: sign·e^s·x.
        let (y, l) = scale::<f64>().forward(1, 2.0);
        assert!(close(y, -2.0 * (-0.8f64).exp()) && l == -0.8);
        let (y, l) = Scale::<f64>::constant(1, -3.0).forward(0, 2.0);
        assert!(close(y, -6.0) && close(l, 3f64.ln()));
        assert_eq!(shift::<f64>().forward(1, 1.0), (-1.0, 0.0));
        let (y, l) = Sigmoid.forward(0, 0.0f64);
        assert!(close(y, 0.5) && close(l, -4f64.ln()));
        let (y, l) = Tanh.forward(0, 0.0f64);
        assert!(y == 0.0 && close(l, 0.0));
        let (y, l) = Softplus.forward(0, 0.0f64);
        assert!(close(y, 2f64.ln()) && close(l, -2f64.ln()));
        let (y, l) = Atanh.forward(0, 0.5f64);
        assert!(close(y, 0.5f64.atanh()) && close(l, -(0.75f64).ln()));
        let (y, l) = Logit.forward(0, 0.25f64);
        assert!(close(y, (1.0f64 / 3.0).ln()) && close(l, -(0.25f64 * 0.75).ln()));
        assert_eq!(leaky::<f64>().forward(0, -1.0), (-0.2, 0.2f64.ln()));
        assert_eq!(leaky::<f64>().forward(0, 3.0), (3.0, 0.0));
        assert_eq!(leaky::<f64>().inverse(0, -0.2), (-1.0, -(0.2f64.ln())));
        assert_eq!(leaky::<f64>().inverse(0, 0.0), (0.0, 0.0));
    }

    // ----- domains and codomains ------------------------------------------------------

    fn assert_rejected<F: Float>(name: &str, layer: &impl Elementwise<F>, y: f64) {
        let (x, l) = layer.inverse(0, F::of(y));
        assert!(
            x.is_nan() && l == F::neg_infinity(),
            "{name}.inverse({y}) = ({x}, {l})"
        );
    }

    fn inverse_outside_codomain_is_neg_inf_in<F: Float>() {
        let (inf, nan) = (f64::INFINITY, f64::NAN);
        for y in [0.0, -0.0, 1.0, -0.5, 1.5, inf, -inf, nan] {
            assert_rejected::<F>("sigmoid", &Sigmoid, y);
        }
        // A saturated sigmoid stays inside (0, 1), so its inverse accepts it.
        for x in [40.0, -1000.0] {
            let y = Sigmoid.forward(0, F::of(x)).0;
            assert!(y > F::zero() && y < F::one(), "sigmoid({x}) = {y}");
            let (x, l) = Sigmoid.inverse(0, y);
            assert!(x.is_finite() && l.is_finite(), "sigmoid inverse at {y}");
        }
        for y in [1.0, -1.0, 1.5, -2.0, inf, -inf, nan] {
            assert_rejected::<F>("tanh", &Tanh, y);
        }
        for y in [0.0, -0.0, -1e-30, -3.0, inf, -inf, nan] {
            assert_rejected::<F>("softplus", &Softplus, y);
            assert_rejected::<F>("exp", &Exp, y);
        }
        for y in [inf, -inf, nan] {
            assert_rejected::<F>("affine", &affine::<F>(), y);
            assert_rejected::<F>("shift", &shift::<F>(), y);
            assert_rejected::<F>("scale", &scale::<F>(), y);
            assert_rejected::<F>("logit", &Logit, y);
            assert_rejected::<F>("atanh", &Atanh, y);
            assert_rejected::<F>("log", &Log, y);
            assert_rejected::<F>("leaky_relu", &leaky::<F>(), y);
        }
        // Any finite value is in an ℝ codomain.
        for y in [-1e30, -1.0, 0.0, 1.0, 1e30] {
            assert!(affine::<F>().inverse(1, F::of(y)).1.is_finite());
            assert!(Elementwise::<F>::inverse(&Logit, 0, F::of(y)).1.is_finite());
            assert!(Elementwise::<F>::inverse(&Atanh, 0, F::of(y)).1.is_finite());
            assert!(leaky::<F>().inverse(0, F::of(y)).1.is_finite());
        }
    }

    #[test]
    fn inverse_outside_codomain_is_neg_inf() {
        inverse_outside_codomain_is_neg_inf_in::<f64>();
        inverse_outside_codomain_is_neg_inf_in::<f32>();
    }

    fn forward_outside_domain_is_nan_in<F: Float>() {
        let both_nan = |v: (F, F)| v.0.is_nan() && v.1.is_nan();
        for x in [
            -1e-30,
            -0.5,
            1.0 + 1e-6,
            2.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ] {
            assert!(both_nan(Logit.forward(0, F::of(x))), "logit at {x}");
        }
        for x in [
            1.0 + 1e-6,
            -1.0 - 1e-6,
            5.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ] {
            assert!(both_nan(Atanh.forward(0, F::of(x))), "atanh at {x}");
        }
        for x in [-1e-30, -1.0, f64::NEG_INFINITY, f64::NAN] {
            assert!(both_nan(Log.forward(0, F::of(x))), "log at {x}");
        }
    }

    #[test]
    fn forward_outside_domain_is_nan() {
        forward_outside_domain_is_nan_in::<f64>();
        forward_outside_domain_is_nan_in::<f32>();
    }

    fn boundary_saturates_in<F: Float>() {
        let finite = |v: (F, F)| v.0.is_finite() && v.1.is_finite();
        // Logit at exactly 0, the least normal, 1 − ε/2 and exactly 1.
        for x in [
            F::zero(),
            F::min_positive_value(),
            largest_below_one(),
            F::one(),
        ] {
            assert!(finite(Logit.forward(0, x)), "logit at {x}");
        }
        assert_eq!(
            Logit.forward(0, F::one()),
            Logit.forward(0, largest_below_one::<F>())
        );
        assert_eq!(
            Logit.forward(0, F::zero()),
            Logit.forward(0, smallest_positive::<F>())
        );
        assert!(Logit.forward(0, F::one()).0 > F::zero());
        assert!(Logit.forward(0, F::zero()).0 < F::zero());
        // Logit then sigmoid (its inverse) stays inside (0, 1) after saturation... or
        // lands on the boundary only by rounding in `sigmoid`, never NaN.
        assert!(
            !Elementwise::<F>::inverse(&Logit, 0, Logit.forward(0, F::one()).0)
                .1
                .is_nan()
        );
        // Atanh at ±1.
        for x in [F::one(), -F::one()] {
            let (y, l) = Atanh.forward(0, x);
            assert!(y.is_finite() && l.is_finite(), "atanh at {x}");
            assert_eq!(y.signum(), x.signum());
        }
        // Log at 0.
        let (y, l) = Log.forward(0, F::zero());
        assert!(y.is_finite() && l.is_finite() && y < F::zero());
        // The sigmoid/tanh value that rounded onto the boundary, fed to logit/atanh.
        let s = Sigmoid.forward(0, F::of(40.0)).0;
        assert!(s < F::one());
        assert!(finite(Logit.forward(0, s)));
        let t = Tanh.forward(0, F::of(-40.0)).0;
        assert!(t > -F::one());
        assert!(finite(Atanh.forward(0, t)));
    }

    #[test]
    fn logit_atanh_log_saturate_on_the_boundary() {
        boundary_saturates_in::<f32>();
        boundary_saturates_in::<f64>();
        // In f32, sigmoid(20) rounds to 1; the kernel keeps it just below.
        assert_eq!(Sigmoid.forward(0, 20.0f32).0, 1.0 - f32::EPSILON / 2.0);
        let (x, l) = Logit.forward(0, 1.0f32);
        assert!((x - 16.635532).abs() < 1e-4 && l.is_finite(), "({x}, {l})");
    }

    // ----- extremes -------------------------------------------------------------------

    fn sigmoid_extremes_in<F: Float>() {
        for x in [-1000.0, -40.0, 40.0, 1000.0] {
            let (y, l) = Sigmoid.forward(0, F::of(x));
            assert!(y >= F::zero() && y <= F::one(), "sigmoid({x}) = {y}");
            assert!(l.is_finite(), "sigmoid log-det at {x} = {l}");
            // log σ'(x) ≈ −|x| in the tails.
            assert!((l.to_f64_lossless() + x.abs()).abs() < 1e-6 * x.abs());
            let (_, l) = Elementwise::<F>::inverse(&Logit, 0, F::of(x));
            assert!(l.is_finite());
        }
    }

    #[test]
    fn sigmoid_extremes_have_finite_log_dets() {
        sigmoid_extremes_in::<f32>();
        sigmoid_extremes_in::<f64>();
        // Tiny but non-zero sigmoid values still invert.
        let (y, _) = Sigmoid.forward(0, -80.0f32);
        assert!(y > 0.0);
        let (x, l) = Sigmoid.inverse(0, y);
        assert!((x + 80.0).abs() < 1e-3 && l.is_finite());
    }

    #[test]
    fn tanh_extremes_have_finite_log_dets() {
        for x in [-1000.0f64, -20.0, 20.0, 1000.0] {
            let (y, l) = Tanh.forward(0, x);
            assert!(y.abs() <= 1.0 && l.is_finite());
            // log(1 − tanh²x) ≈ 2 log 2 − 2|x| in the tails.
            assert!((l - (2.0 * 2f64.ln() - 2.0 * f64::abs(x))).abs() < 1e-12 * (1.0 + x.abs()));
            let (y, l) = Tanh.forward(0, x as f32);
            assert!(y.abs() <= 1.0 && l.is_finite());
            let (_, l) = Elementwise::<f32>::inverse(&Atanh, 0, x as f32);
            assert!(l.is_finite());
        }
        // Near ±1 the inverse still works in f64: tanh(15) = 1 − 1.9e-13.
        let (y, l) = Tanh.forward(0, 15.0f64);
        assert!(y < 1.0);
        let (x, l2) = Tanh.inverse(0, y);
        assert!((x - 15.0).abs() < 1e-3 && (l + l2).abs() < 1e-3);
        // atanh is accurate on both sides of the interval (no cancellation at −1);
        // references computed to 25 digits at the inputs' exact binary values, rounded.
        for (x, reference) in [
            (-0.999_999_9f64, -8.405_621_391_022_31f64),
            (-0.5, -0.549_306_144_334_054_9),
            (1e-12, 1e-12),
            (0.9, 1.472_219_489_583_220_4),
            (0.999_999_9, 8.405_621_391_022_31),
        ] {
            let (y, _) = Atanh.forward(0, x);
            assert!(
                (y - reference).abs() <= 2.0 * f64::EPSILON * reference.abs(),
                "atanh({x}) = {y}"
            );
            assert_eq!(Atanh.forward(0, -x).0, -y);
        }
    }

    #[test]
    fn softplus_inverse_at_tiny_y_is_finite() {
        for y in [1e-30f64, 1e-300, 5e-324] {
            let (x, l) = Softplus.inverse(0, y);
            assert!(x.is_finite() && l.is_finite(), "({x}, {l})");
            // softplus(x) ≈ e^x for very negative x: x ≈ log y, log-det ≈ −log y.
            assert!((x - y.ln()).abs() < 1e-9 && (l + y.ln()).abs() < 1e-9);
        }
        for y in [1e-30f32, 1e-40, 1e-45] {
            let (x, l) = Softplus.inverse(0, y);
            assert!(x.is_finite() && l.is_finite(), "({x}, {l})");
        }
        // Large y: x ≈ y, log-det ≈ 0.
        let (x, l) = Softplus.inverse(0, 1000.0f64);
        assert!((x - 1000.0).abs() < 1e-12 && l.abs() < 1e-300);
        // And the forward tails.
        let (y, l) = Softplus.forward(0, -1000.0f64);
        assert!(y > 0.0 && y < 1e-300 && l == -1000.0);
        let (y, l) = Softplus.forward(0, 1000.0f32);
        assert!(y == 1000.0 && l == 0.0);
    }

    #[test]
    fn softplus_helper_is_stable() {
        assert_eq!(softplus(1000.0f64), 1000.0);
        assert_eq!(softplus(1e30f32), 1e30);
        assert_eq!(softplus(-1000.0f64), 0.0);
        assert!((softplus(-40.0f64) - (-40.0f64).exp()).abs() < 1e-30);
        assert!((softplus(0.0f64) - 2f64.ln()).abs() < 1e-16);
        assert!((softplus(3.0f64) - (1.0 + 3f64.exp()).ln()).abs() < 1e-14);
        assert_eq!(softplus(f64::INFINITY), f64::INFINITY);
        assert_eq!(softplus(f64::NEG_INFINITY), 0.0);
        assert!(softplus(f64::NAN).is_nan());
        for y in [1e-10f64, 0.5, 3.0, 50.0] {
            assert!((softplus(softplus_inverse(y)) - y).abs() <= 1e-14 * y);
        }
        // The log-det helpers agree with the DESIGN formulas where those are accurate.
        for x in grid(-10.0, 10.0, 40) {
            let sig = -softplus(-x) - softplus(x);
            assert!((sigmoid_log_det(x) - sig).abs() < 1e-13);
            let th = 2.0 * (2f64.ln() - x - softplus(-2.0 * x));
            assert!((tanh_log_det(x) - th).abs() < 1e-12);
        }
    }

    #[test]
    fn exp_overflow_is_the_only_infinity() {
        assert_eq!(Exp.forward(0, 1000.0f64), (f64::INFINITY, 1000.0));
        let (y, l) = Exp.forward(0, -1000.0f64);
        assert!(
            y > 0.0 && y < 1e-300 && l == -1000.0,
            "exp underflow stays positive"
        );
        assert_eq!(Exp.forward(0, 100.0f32).0, f32::INFINITY);
        assert_eq!(
            Log.forward(0, f64::INFINITY),
            (f64::INFINITY, f64::NEG_INFINITY)
        );
    }

    #[test]
    fn f32_kernels_track_f64() {
        fn compare(
            name: &str,
            l32: &impl Elementwise<f32>,
            l64: &impl Elementwise<f64>,
            xs: &[f64],
        ) {
            for &x in xs {
                let (y32, d32) = f64s(l32.forward(0, x as f32));
                let (y64, d64) = l64.forward(0, x as f32 as f64);
                assert!(
                    (y32 - y64).abs() <= 1e-5 * (1.0 + y64.abs()),
                    "{name} value at {x}"
                );
                assert!(
                    (d32 - d64).abs() <= 1e-5 * (1.0 + d64.abs()),
                    "{name} log-det at {x}"
                );
            }
        }
        let reals = grid(-12.0, 12.0, 96);
        compare("sigmoid", &Sigmoid, &Sigmoid, &reals);
        compare("tanh", &Tanh, &Tanh, &reals);
        compare("softplus", &Softplus, &Softplus, &reals);
        compare("exp", &Exp, &Exp, &reals);
        compare("affine", &affine::<f32>(), &affine::<f64>(), &reals);
        compare("logit", &Logit, &Logit, &grid(0.0, 1.0, 96));
        compare("atanh", &Atanh, &Atanh, &grid(-1.0, 1.0, 96));
        compare("log", &Log, &Log, &log_grid(1e-20, 1e20, 96));
    }

    #[test]
    fn the_layer_impl_sums_kernel_log_dets() {
        use ndarray::{Array1, array};

        use crate::layers::Layer;
        use crate::workspace::Workspace;

        let layer = affine::<f64>();
        let mut x = array![[1.0, 2.0], [-3.0, 0.5]];
        let mut ld = Array1::zeros(2);
        layer.forward_block(x.view_mut(), ld.view_mut(), &mut Workspace::default());
        assert!((ld[0] - 0.3).abs() < 1e-15 && (ld[1] - 0.3).abs() < 1e-15);
        layer.inverse_block(x.view_mut(), ld.view_mut(), &mut Workspace::default());
        assert!(ld.iter().all(|l| l.abs() < 1e-15));
        assert!((x[[1, 0]] + 3.0).abs() < 1e-14);
        let mut p = [0.25f32, 0.5];
        let l = Layer::<f32>::forward_point(&Logit, &mut p, &mut []);
        let l2 = Layer::<f32>::inverse_point(&Logit, &mut p, &mut []);
        assert_eq!(l, -l2);
        assert!((p[0] - 0.25).abs() < 1e-6);
    }

    // ----- reverse mode -----------------------------------------------------------------

    /// `(output, log-det)` of one coordinate's pass in `dir` at `v`.
    fn pass(layer: &impl Elementwise<f64>, dir: Direction, j: usize, v: f64) -> (f64, f64) {
        match dir {
            Direction::Inverse => layer.inverse(j, v),
            Direction::Forward => layer.forward(j, v),
        }
    }

    /// The backward kernel of `dir`: `∂J/∂v` given `out_bar = ∂J/∂output`, adding `∂J/∂θ`.
    fn pass_backward<F: Float>(
        layer: &impl Elementwise<F>,
        dir: Direction,
        j: usize,
        v: F,
        out_bar: F,
        w: F,
        param_grad: &mut [F],
    ) -> F {
        match dir {
            Direction::Inverse => layer.inverse_backward(j, v, out_bar, w, param_grad),
            Direction::Forward => layer.forward_backward(j, v, out_bar, w, param_grad),
        }
    }

    /// `J = out_bar·output + w·log-det` of one coordinate's pass in `dir` at `v`.
    fn objective(
        layer: &impl Elementwise<f64>,
        dir: Direction,
        j: usize,
        v: f64,
        out_bar: f64,
        w: f64,
    ) -> f64 {
        let (out, l) = pass(layer, dir, j, v);
        out_bar * out + w * l
    }

    /// Central difference of `f` at `v` with step `h`, Richardson-extrapolated (error
    /// O(h⁴)); divides by the step actually taken (`v ± h` rounded).
    fn central_fd(mut f: impl FnMut(f64) -> f64, v: f64, h: f64) -> f64 {
        let mut d = |h: f64| {
            let (a, b) = (v + h, v - h);
            (f(a) - f(b)) / (a - b)
        };
        let (coarse, fine) = (d(h), d(0.5 * h));
        (4.0 * fine - coarse) / 3.0
    }

    /// Accessor of one parameter tensor (a pub field) of a learnable layer.
    type Field<L> = fn(&mut L) -> &mut Vec<f64>;

    /// Relative tolerance of the analytic gradients against the finite differences, scaled
    /// by `|x̄|·|∂x/∂·| + |w|·|∂ld/∂·|` (the size of the two terms before they cancel).
    const GRAD_TOL: f64 = 1e-7;

    /// At random `j`, `v = sample(rng)` (in the domain of the kernel of `dir`: the codomain
    /// towards the base, the domain towards the data) and random `out̄`, `w`, plus the unit
    /// pairs `(1, 0)` and `(0, 1)`: checks `∂J/∂v` of `J = out̄·output + w·log-det` from the
    /// backward kernel of `dir` against central differences in `v` (step `step(v)`, small
    /// against the distance to the boundary), and every parameter gradient (the flat
    /// layout `fields` in order) against central differences in that pub field. Gradients
    /// of other coordinates stay untouched and `param_grad` is added to, not overwritten.
    #[allow(clippy::too_many_arguments)]
    fn check_backward<L: Elementwise<f64> + ElementwiseParams<f64> + Clone>(
        dir: Direction,
        name: &str,
        layer: &L,
        dim: usize,
        fields: &[(&str, Field<L>)],
        seed: u64,
        sample: impl Fn(&mut StdRng) -> f64,
        step: impl Fn(f64) -> f64,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let p = layer.param_len();
        let mut probe = layer.clone();
        let field_lens: Vec<usize> = fields.iter().map(|(_, f)| f(&mut probe).len()).collect();
        assert_eq!(field_lens.iter().sum::<usize>(), p, "{name}: param_len");
        // `(∂J/∂y, ∂J/∂θ)` of the kernel from a zeroed gradient.
        let kernel = |j: usize, y: f64, xb: f64, w: f64| {
            let mut pg = vec![0.0; p];
            let yb = pass_backward(layer, dir, j, y, xb, w, &mut pg);
            (yb, pg)
        };
        for _ in 0..200 {
            let j = rng.random_range(0..dim);
            let y = sample(&mut rng);
            let (xb_r, w_r) = (rng.random_range(-3.0..3.0), rng.random_range(-3.0..3.0));
            let (yb_x, pg_x) = kernel(j, y, 1.0, 0.0);
            let (yb_w, pg_w) = kernel(j, y, 0.0, 1.0);
            for (xb, w) in [(1.0, 0.0), (0.0, 1.0), (xb_r, w_r)] {
                let ctx = format!("{name} {dir:?}: j = {j}, at {y}, out̄ = {xb}, w = {w}");
                // ∂J/∂y.
                let (yb, _) = kernel(j, y, xb, w);
                let fd = central_fd(|v| objective(layer, dir, j, v, xb, w), y, step(y));
                let mag = xb.abs() * yb_x.abs() + w.abs() * yb_w.abs();
                assert!(yb.is_finite(), "{ctx}: ∂J/∂y = {yb}");
                assert!(
                    (yb - fd).abs() <= GRAD_TOL * mag + 1e-13,
                    "{ctx}: ∂J/∂y = {yb}, finite difference {fd}"
                );
                // ∂J/∂θ, added onto a non-zero gradient.
                let before: Vec<f64> = (0..p).map(|k| 0.25 + k as f64).collect();
                let mut pg = before.clone();
                let again = pass_backward(layer, dir, j, y, xb, w, &mut pg);
                assert_eq!(again, yb, "{ctx}");
                let mut offset = 0;
                for ((fname, field), &n) in fields.iter().zip(&field_lens) {
                    for k in 0..n {
                        let at = offset + k;
                        let mut l = layer.clone();
                        let theta = field(&mut l)[k];
                        let fd = central_fd(
                            |t| {
                                field(&mut l)[k] = t;
                                objective(&l, dir, j, y, xb, w)
                            },
                            theta,
                            1e-3,
                        );
                        let g = pg[at] - before[at];
                        let mag = xb.abs() * pg_x[at].abs() + w.abs() * pg_w[at].abs();
                        assert!(pg[at].is_finite(), "{ctx}: ∂J/∂{fname}[{k}]");
                        if k != j {
                            assert_eq!(pg[at], before[at], "{ctx}: {fname}[{k}] touched");
                        }
                        assert!(
                            (g - fd).abs() <= GRAD_TOL * mag + 1e-12,
                            "{ctx}: ∂J/∂{fname}[{k}] = {g}, finite difference {fd}"
                        );
                    }
                    offset += n;
                }
            }
        }
    }

    fn random_vec(rng: &mut StdRng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| rng.random_range(lo..hi)).collect()
    }

    /// Learnable layers on 3 coordinates with non-trivial random parameters.
    /// The tile kernels of `Affine` are the row kernels, bit for bit, non-finite rows too.
    #[test]
    fn affine_lane_kernels_equal_the_row_kernels_bit_for_bit() {
        let mut r = StdRng::seed_from_u64(40);
        let a = random_affine(&mut r);
        for j in 0..a.shift.len() {
            let mut v: [f64; LANES] = std::array::from_fn(|_| r.random_range(-4.0..4.0));
            v[3] = f64::NAN;
            v[7] = f64::INFINITY;
            for inverse in [false, true] {
                let (mut lanes, mut acc) = (v, [0.5; LANES]);
                if inverse {
                    a.inverse_lanes(j, &mut lanes, &mut acc);
                } else {
                    a.forward_lanes(j, &mut lanes, &mut acc);
                }
                for k in 0..LANES {
                    let (y, l) = if inverse {
                        a.inverse(j, v[k])
                    } else {
                        a.forward(j, v[k])
                    };
                    assert_eq!(lanes[k].to_bits(), y.to_bits(), "value, lane {k}");
                    assert_eq!(acc[k].to_bits(), (0.5 + l).to_bits(), "log-det, lane {k}");
                }
            }
        }
    }

    fn random_affine(rng: &mut StdRng) -> Affine<f64> {
        Affine {
            shift: random_vec(rng, 3, -2.0, 2.0),
            log_scale: random_vec(rng, 3, -1.5, 1.5),
        }
    }

    fn random_shift(rng: &mut StdRng) -> Shift<f64> {
        Shift {
            shift: random_vec(rng, 3, -2.0, 2.0),
            learnable: true,
        }
    }

    fn random_scale(rng: &mut StdRng, sign: f64) -> Scale<f64> {
        Scale {
            log_scale: random_vec(rng, 3, -1.5, 1.5),
            sign,
            learnable: true,
        }
    }

    fn reals(rng: &mut StdRng) -> f64 {
        rng.random_range(-5.0..5.0)
    }

    fn real_step(y: f64) -> f64 {
        1e-3 * y.abs().max(1.0)
    }

    /// Every learnable layer (random parameters, four draws) and the constant shift and
    /// scale, through the kernels of `dir`.
    fn learnable_layers_match_fd(dir: Direction, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let affine_fields: [(&str, Field<Affine<f64>>); 2] = [
            ("shift", |l| &mut l.shift),
            ("log_scale", |l| &mut l.log_scale),
        ];
        let shift_fields: [(&str, Field<Shift<f64>>); 1] = [("shift", |l| &mut l.shift)];
        let scale_fields: [(&str, Field<Scale<f64>>); 1] = [("log_scale", |l| &mut l.log_scale)];
        for seed in 0..4 {
            let layer = random_affine(&mut rng);
            check_backward(
                dir,
                "affine",
                &layer,
                3,
                &affine_fields,
                seed,
                reals,
                real_step,
            );
            let layer = random_shift(&mut rng);
            check_backward(
                dir,
                "shift",
                &layer,
                3,
                &shift_fields,
                seed,
                reals,
                real_step,
            );
            let layer = random_scale(&mut rng, 1.0);
            check_backward(
                dir,
                "scale",
                &layer,
                3,
                &scale_fields,
                seed,
                reals,
                real_step,
            );
            let layer = random_scale(&mut rng, -1.0);
            check_backward(
                dir,
                "scale(−)",
                &layer,
                3,
                &scale_fields,
                seed,
                reals,
                real_step,
            );
        }
        // Constants: no parameters, the same ∂J/∂v.
        let layer = Shift::<f64>::constant(3, 0.7);
        check_backward(dir, "shift(const)", &layer, 3, &[], 1, reals, real_step);
        let layer = Scale::<f64>::constant(3, -2.5);
        check_backward(dir, "scale(const)", &layer, 3, &[], 2, reals, real_step);
    }

    #[test]
    fn backward_of_learnable_layers_matches_finite_differences() {
        learnable_layers_match_fd(Direction::Inverse, 11);
    }

    #[test]
    fn backward_of_fixed_layers_matches_finite_differences() {
        let dir = Direction::Inverse;
        // (0, 1): y = σ(t), steps small against min(y, 1 − y).
        check_backward(
            dir,
            "sigmoid",
            &Sigmoid,
            1,
            &[],
            3,
            |r| sigmoid(r.random_range(-9.0..9.0)),
            |y| 1e-3 * y.min(1.0 - y),
        );
        check_backward(
            dir,
            "logit",
            &Logit,
            1,
            &[],
            4,
            |r| r.random_range(-12.0..12.0),
            real_step,
        );
        // (−1, 1): y = tanh t.
        check_backward(
            dir,
            "tanh",
            &Tanh,
            1,
            &[],
            5,
            |r| r.random_range(-6.0f64..6.0).tanh(),
            |y| 1e-3 * (1.0 - y.abs()),
        );
        check_backward(
            dir,
            "atanh",
            &Atanh,
            1,
            &[],
            6,
            |r| r.random_range(-8.0..8.0),
            |_| 1e-3,
        );
        // (0, ∞): y = e^t.
        let pos = |r: &mut StdRng| r.random_range(-8.0f64..5.0).exp();
        check_backward(dir, "softplus", &Softplus, 1, &[], 7, pos, |y| 1e-3 * y);
        check_backward(dir, "exp", &Exp, 1, &[], 8, pos, |y| 1e-3 * y);
        check_backward(
            dir,
            "log",
            &Log,
            1,
            &[],
            9,
            |r| r.random_range(-10.0..10.0),
            |_| 1e-3,
        );
        // Away from the kink at 0 (the step stays on one side).
        check_backward(
            dir,
            "leaky_relu",
            &leaky::<f64>(),
            1,
            &[],
            10,
            |r| {
                let a: f64 = r.random_range(0.05..5.0);
                if r.random_range(0.0..1.0) < 0.5 {
                    -a
                } else {
                    a
                }
            },
            |y| 1e-3 * y.abs().min(1.0),
        );
    }

    #[test]
    fn backward_known_values() {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-14 * (1.0 + b.abs());
        let none: &mut [f64] = &mut [];
        // Sigmoid at ½: dx/dy = 4, d(ld)/dy = 0.
        assert!(close(Sigmoid.inverse_backward(0, 0.5, 1.0, 7.0, none), 4.0));
        // Logit at 0: dx/dy = ¼, d(ld)/dy = 0; at large y, d(ld)/dy → −1.
        assert!(close(Logit.inverse_backward(0, 0.0, 1.0, 7.0, none), 0.25));
        assert!(close(
            Logit.inverse_backward(0, 800.0, 0.0, 1.0, none),
            -1.0
        ));
        // Tanh at 0: dx/dy = 1; Atanh at 0: dx/dy = 1, d(ld)/dy = 0.
        assert!(close(Tanh.inverse_backward(0, 0.0, 1.0, 7.0, none), 1.0));
        assert!(close(Atanh.inverse_backward(0, 0.0, 1.0, 7.0, none), 1.0));
        // Exp at e: (x̄ − w)/y. Log at 0: x̄ + w.
        assert!(close(Exp.inverse_backward(0, 2.0, 3.0, 1.0, none), 1.0));
        assert!(close(Log.inverse_backward(0, 0.0, 3.0, 1.0, none), 4.0));
        // Softplus at log 2 (x = 0): dx/dy = 2, d(ld)/dy = −1.
        let y = 2f64.ln();
        assert!(close(Softplus.inverse_backward(0, y, 1.0, 0.0, none), 2.0));
        assert!(close(Softplus.inverse_backward(0, y, 0.0, 1.0, none), -1.0));
        // Leaky ReLU: 1/slope below 0, 1 from 0 on.
        assert!(close(
            leaky::<f64>().inverse_backward(0, -1.0, 1.0, 7.0, none),
            5.0
        ));
        assert_eq!(leaky::<f64>().inverse_backward(0, 0.0, 1.0, 7.0, none), 1.0);
        // Affine: layout [shift…, log_scale…].
        let a = affine::<f64>();
        let mut g = [0.0; 4];
        let yb = a.inverse_backward(1, 2.0, 1.0, 1.0, &mut g);
        let e = 0.4f64.exp();
        let x = (2.0 + 1.2) * e;
        assert!(close(yb, e));
        assert_eq!(g[0], 0.0);
        assert_eq!(g[2], 0.0);
        assert!(close(g[1], -e) && close(g[3], -x - 1.0), "{g:?}");
    }

    #[test]
    fn backward_in_the_tails_is_finite_and_accurate() {
        let none: &mut [f64] = &mut [];
        // Sigmoid near 1: 1 − y is exact, dx/dy = 1/(y(1 − y)).
        let y = 1.0 - 2f64.powi(-40);
        let g = Sigmoid.inverse_backward(0, y, 1.0, 0.0, none);
        assert!((g - 2f64.powi(40) / y).abs() <= 1e-15 * g);
        // Tanh near −1: 1 − |y| exact.
        let y = -1.0 + 2f64.powi(-40);
        let g = Tanh.inverse_backward(0, y, 1.0, 0.0, none);
        let expected = 1.0 / (2f64.powi(-40) * (2.0 - 2f64.powi(-40)));
        assert!((g - expected).abs() <= 1e-15 * g);
        // Atanh far out: sech² y ≈ 4e^{−2|y|}, without cancellation.
        for y in [30.0f64, -30.0, 300.0] {
            let g = Atanh.inverse_backward(0, y, 1.0, 0.0, none);
            let expected = 4.0 * (-2.0 * y.abs()).exp();
            assert!(
                (g - expected).abs() <= 1e-13 * expected,
                "atanh at {y}: {g}"
            );
            let g = Atanh.inverse_backward(0, y, 0.0, 1.0, none);
            assert_eq!(g, -2.0 * y.signum());
        }
        // Logit (inverse σ) far out: dx/dy ≈ e^{−|y|}.
        for y in [40.0f64, -40.0, 700.0] {
            let g = Logit.inverse_backward(0, y, 1.0, 0.0, none);
            let expected = (-y.abs()).exp();
            assert!(
                (g - expected).abs() <= 1e-13 * expected,
                "logit at {y}: {g}"
            );
        }
        // Softplus at tiny and huge y: dx/dy ≈ 1/y and ≈ 1; d(ld)/dy ≈ −1/y and ≈ 0.
        for y in [1e-30f64, 1e-300] {
            let g = Softplus.inverse_backward(0, y, 1.0, 0.0, none);
            assert!((g * y - 1.0).abs() < 1e-12, "softplus at {y}: {g}");
            let g = Softplus.inverse_backward(0, y, 0.0, 1.0, none);
            assert!((g * y + 1.0).abs() < 1e-12, "softplus at {y}: {g}");
        }
        assert_eq!(Softplus.inverse_backward(0, 1e4f64, 1.0, 1.0, none), 1.0);
        // f32 tails stay finite too.
        let none32: &mut [f32] = &mut [];
        let y = Sigmoid.forward(0, 30.0f32).0;
        assert!(Sigmoid.inverse_backward(0, y, 1.0, 1.0, none32).is_finite());
        let y = Tanh.forward(0, -30.0f32).0;
        assert!(Tanh.inverse_backward(0, y, 1.0, 1.0, none32).is_finite());
        assert!(
            Softplus
                .inverse_backward(0, 1e-30f32, 1.0, 1.0, none32)
                .is_finite()
        );
    }

    /// The backward kernel of `dir` at each of `vs` (outside where it is defined) is NaN
    /// and leaves `param_grad` as it was.
    fn rejected<F: Float, L: Elementwise<F> + ElementwiseParams<F>>(
        dir: Direction,
        name: &str,
        layer: &L,
        vs: &[f64],
    ) {
        for &v in vs {
            let before: Vec<F> = (0..layer.param_len()).map(|k| F::of(k as f64)).collect();
            let mut pg = before.clone();
            let g = pass_backward(layer, dir, 0, F::of(v), F::one(), F::one(), &mut pg);
            assert!(g.is_nan(), "{name} {dir:?} backward at {v} = {g}");
            assert_eq!(pg, before, "{name} {dir:?} at {v}: param_grad touched");
        }
    }

    fn backward_outside_codomain_is_nan_in<F: Float>() {
        let dir = Direction::Inverse;
        let (inf, nan) = (f64::INFINITY, f64::NAN);
        let non_finite = [inf, -inf, nan];
        rejected::<F, _>(
            dir,
            "sigmoid",
            &Sigmoid,
            &[0.0, -0.0, 1.0, -0.5, 1.5, inf, nan],
        );
        rejected::<F, _>(dir, "tanh", &Tanh, &[1.0, -1.0, 1.5, -2.0, inf, -inf, nan]);
        for y in [0.0, -0.0, -1e-30, -3.0, inf, -inf, nan] {
            rejected::<F, _>(dir, "softplus", &Softplus, &[y]);
            rejected::<F, _>(dir, "exp", &Exp, &[y]);
        }
        rejected::<F, _>(dir, "affine", &affine::<F>(), &non_finite);
        rejected::<F, _>(dir, "shift", &shift::<F>(), &non_finite);
        rejected::<F, _>(dir, "scale", &scale::<F>(), &non_finite);
        let learnable_scale = Scale::<F>::learnable(2);
        rejected::<F, _>(dir, "scale", &learnable_scale, &non_finite);
        rejected::<F, _>(dir, "logit", &Logit, &non_finite);
        rejected::<F, _>(dir, "atanh", &Atanh, &non_finite);
        rejected::<F, _>(dir, "log", &Log, &non_finite);
        rejected::<F, _>(dir, "leaky_relu", &leaky::<F>(), &non_finite);
    }

    #[test]
    fn backward_outside_codomain_is_nan_and_leaves_param_grad() {
        backward_outside_codomain_is_nan_in::<f64>();
        backward_outside_codomain_is_nan_in::<f32>();
    }

    /// The backward kernel of `dir` in f32 against f64 on coordinates 0 and 1 at each of
    /// `vs` (rounded to f32), to 1e-5, parameter gradients too.
    fn f32_tracks_f64(
        dir: Direction,
        name: &str,
        l32: &(impl Elementwise<f32> + ElementwiseParams<f32>),
        l64: &(impl Elementwise<f64> + ElementwiseParams<f64>),
        vs: &[f64],
    ) {
        for &v in vs {
            let v = v as f32;
            for j in 0..2 {
                let mut p32 = vec![0.0f32; l32.param_len()];
                let mut p64 = vec![0.0f64; l64.param_len()];
                let g32 = pass_backward(l32, dir, j, v, 0.7, -1.3, &mut p32) as f64;
                let g64 = pass_backward(l64, dir, j, v as f64, 0.7, -1.3, &mut p64);
                assert!(
                    (g32 - g64).abs() <= 1e-5 * (1.0 + g64.abs()),
                    "{name} {dir:?} at {v}: {g32} vs {g64}"
                );
                for (a, b) in p32.iter().zip(&p64) {
                    let a = *a as f64;
                    assert!(
                        (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                        "{name} {dir:?} at {v}"
                    );
                }
            }
        }
    }

    #[test]
    fn f32_backward_tracks_f64() {
        let dir = Direction::Inverse;
        let reals = grid(-8.0, 8.0, 64);
        f32_tracks_f64(dir, "affine", &affine::<f32>(), &affine::<f64>(), &reals);
        f32_tracks_f64(dir, "shift", &shift::<f32>(), &shift::<f64>(), &reals);
        f32_tracks_f64(dir, "scale", &scale::<f32>(), &scale::<f64>(), &reals);
        f32_tracks_f64(dir, "logit", &Logit, &Logit, &reals);
        f32_tracks_f64(dir, "atanh", &Atanh, &Atanh, &reals);
        f32_tracks_f64(dir, "log", &Log, &Log, &reals);
        f32_tracks_f64(dir, "leaky_relu", &leaky::<f32>(), &leaky::<f64>(), &reals);
        f32_tracks_f64(dir, "sigmoid", &Sigmoid, &Sigmoid, &grid(0.0, 1.0, 64));
        f32_tracks_f64(dir, "tanh", &Tanh, &Tanh, &grid(-1.0, 1.0, 64));
        let pos = log_grid(1e-3, 1e3, 64);
        f32_tracks_f64(dir, "softplus", &Softplus, &Softplus, &pos);
        f32_tracks_f64(dir, "exp", &Exp, &Exp, &pos);
    }

    /// `(name, shape, values)` as visited.
    fn visited(layer: &impl ElementwiseParams<f64>) -> Vec<(String, Vec<usize>, Vec<f64>)> {
        let mut out = Vec::new();
        layer.visit_params(&mut |name, shape, values| {
            out.push((name.to_string(), shape.to_vec(), values.to_vec()));
        });
        out
    }

    /// Writes `offset + k` into flat parameter `k` through `visit_params_mut`; checks that
    /// both visitors agree on names and shapes and that the shapes add up to `param_len`.
    fn write_flat(layer: &mut impl ElementwiseParams<f64>, offset: f64) {
        let before = visited(layer);
        let mut k = 0;
        let mut seen = Vec::new();
        layer.visit_params_mut(&mut |name, shape, values| {
            assert_eq!(values.len(), shape.iter().product::<usize>());
            seen.push((name.to_string(), shape.to_vec()));
            for v in values {
                *v = offset + k as f64;
                k += 1;
            }
        });
        assert_eq!(k, layer.param_len());
        let names: Vec<_> = before.into_iter().map(|(n, s, _)| (n, s)).collect();
        assert_eq!(names, seen);
    }

    #[test]
    fn visitors_follow_the_flat_layout() {
        let mut rng = StdRng::seed_from_u64(12);
        let flat = |n: usize, offset: f64| (0..n).map(|k| offset + k as f64).collect::<Vec<_>>();
        // Affine: [shift…, log_scale…].
        let mut a = random_affine(&mut rng);
        assert_eq!(ElementwiseParams::<f64>::param_len(&a), 6);
        assert_eq!(
            visited(&a),
            vec![
                ("shift".to_string(), vec![3], a.shift.clone()),
                ("log_scale".to_string(), vec![3], a.log_scale.clone()),
            ]
        );
        write_flat(&mut a, 10.0);
        assert_eq!(a.shift, flat(3, 10.0));
        assert_eq!(a.log_scale, flat(3, 13.0));
        // Learnable shift and scale: one tensor each.
        let mut s = random_shift(&mut rng);
        assert_eq!(ElementwiseParams::<f64>::param_len(&s), 3);
        assert_eq!(
            visited(&s),
            vec![("shift".to_string(), vec![3], s.shift.clone())]
        );
        write_flat(&mut s, 1.0);
        assert_eq!(s.shift, flat(3, 1.0));
        let mut c = random_scale(&mut rng, 1.0);
        assert_eq!(ElementwiseParams::<f64>::param_len(&c), 3);
        assert_eq!(
            visited(&c),
            vec![("log_scale".to_string(), vec![3], c.log_scale.clone())]
        );
        write_flat(&mut c, -2.0);
        assert_eq!(c.log_scale, flat(3, -2.0));
        // Constants and fixed layers: nothing.
        fn nothing(mut layer: impl ElementwiseParams<f64> + Clone + PartialEq + Debug) {
            assert_eq!(layer.param_len(), 0);
            assert!(visited(&layer).is_empty());
            let before = layer.clone();
            write_flat(&mut layer, 5.0);
            assert_eq!(layer, before);
        }
        nothing(Shift::<f64>::constant(3, 1.5));
        nothing(Scale::<f64>::constant(3, -1.5));
        nothing(Sigmoid);
        nothing(Logit);
        nothing(Tanh);
        nothing(Atanh);
        nothing(Softplus);
        nothing(Exp);
        nothing(Log);
        nothing(leaky::<f64>());
        // Through the `Layer` impl too.
        use crate::layers::Layer;
        let a = random_affine(&mut rng);
        assert_eq!(Layer::<f64>::param_len(&a), 6);
        let mut names = Vec::new();
        Layer::<f64>::visit_params(&a, &mut |n, _, _| names.push(n.to_string()));
        assert_eq!(names, ["shift", "log_scale"]);
        assert_eq!(Layer::<f64>::param_len(&Shift::<f64>::constant(2, 1.0)), 0);
        assert_eq!(Layer::<f64>::param_len(&Sigmoid), 0);
    }

    /// The backward block of `dir` against finite differences of the block objective
    /// `Σ x̄ ⊙ out(y) + Σ_r weight[r]·ld[r]` of its pass, in the input `y` and in every flat
    /// parameter (perturbed through `visit_params_mut`); parameter gradients accumulate
    /// over rows and onto what `param_grad` held.
    fn check_block<L: crate::layers::Layer<f64> + Clone>(
        dir: Direction,
        name: &str,
        layer: &L,
        y: Array2<f64>,
    ) {
        use crate::workspace::Workspace;
        let mut rng = StdRng::seed_from_u64(13);
        let (rows, cols) = y.dim();
        let x_bar = Array2::from_shape_fn((rows, cols), |_| rng.random_range(-2.0..2.0));
        let weight = Array1::from_shape_fn(rows, |_| rng.random_range(-2.0..2.0));
        let objective = |l: &L, y: &Array2<f64>| {
            let mut x = y.clone();
            let mut ld = Array1::zeros(rows);
            let ws = &mut Workspace::default();
            dir.block(l, x.view_mut(), ld.view_mut(), ws);
            (&x * &x_bar).sum() + ld.dot(&weight)
        };
        let p = layer.param_len();
        let before: Vec<f64> = (0..p).map(|k| 1.0 - k as f64).collect();
        let mut pg = before.clone();
        let mut grad = x_bar.clone();
        let (ws, w) = (&mut Workspace::default(), weight.view());
        dir.backward_block(layer, y.view(), grad.view_mut(), w, &mut pg, ws);
        for r in 0..rows {
            for c in 0..cols {
                let fd = central_fd(
                    |v| {
                        let mut yy = y.clone();
                        yy[[r, c]] = v;
                        objective(layer, &yy)
                    },
                    y[[r, c]],
                    1e-4,
                );
                let g = grad[[r, c]];
                assert!(
                    (g - fd).abs() <= 1e-7 * (1.0 + g.abs()),
                    "{name} {dir:?} ∂J/∂v[{r},{c}]: {g} vs {fd}"
                );
            }
        }
        for k in 0..p {
            let set = |l: &mut L, t: f64| {
                let mut at = 0;
                l.visit_params_mut(&mut |_, _, values| {
                    for v in values {
                        if at == k {
                            *v = t;
                        }
                        at += 1;
                    }
                });
            };
            let mut theta = 0.0;
            let mut at = 0;
            layer.visit_params(&mut |_, _, values| {
                for &v in values {
                    if at == k {
                        theta = v;
                    }
                    at += 1;
                }
            });
            let fd = central_fd(
                |t| {
                    let mut l = layer.clone();
                    set(&mut l, t);
                    objective(&l, &y)
                },
                theta,
                1e-3,
            );
            let g = pg[k] - before[k];
            assert!(
                (g - fd).abs() <= 1e-7 * (1.0 + g.abs()),
                "{name} {dir:?} ∂J/∂θ[{k}]: {g} vs {fd}"
            );
        }
    }

    #[test]
    fn block_backward_matches_finite_differences() {
        let inv = Direction::Inverse;
        let mut rng = StdRng::seed_from_u64(14);
        let reals = Array2::from_shape_fn((5, 3), |_| rng.random_range(-3.0..3.0));
        let unit = reals.mapv(sigmoid);
        check_block(inv, "affine", &random_affine(&mut rng), reals.clone());
        check_block(inv, "shift", &random_shift(&mut rng), reals.clone());
        check_block(inv, "scale", &random_scale(&mut rng, -1.0), reals.clone());
        check_block(
            inv,
            "scale(const)",
            &Scale::<f64>::constant(3, 0.5),
            reals.clone(),
        );
        check_block(inv, "sigmoid", &Sigmoid, unit.clone());
        check_block(inv, "logit", &Logit, reals.clone());
        check_block(inv, "tanh", &Tanh, reals.mapv(f64::tanh));
        check_block(inv, "exp", &Exp, reals.mapv(f64::exp));
        check_block(inv, "leaky_relu", &leaky::<f64>(), reals);
    }

    #[test]
    fn forward_backward_of_learnable_layers_matches_finite_differences() {
        learnable_layers_match_fd(Direction::Forward, 21);
    }

    #[test]
    fn forward_backward_of_fixed_layers_matches_finite_differences() {
        let dir = Direction::Forward;
        let wide = |r: &mut StdRng| r.random_range(-9.0..9.0);
        check_backward(dir, "sigmoid", &Sigmoid, 1, &[], 3, wide, real_step);
        // (0, 1): x = σ(t), steps small against min(x, 1 − x).
        check_backward(
            dir,
            "logit",
            &Logit,
            1,
            &[],
            4,
            |r| sigmoid(r.random_range(-9.0..9.0)),
            |x| 1e-3 * x.min(1.0 - x),
        );
        check_backward(dir, "tanh", &Tanh, 1, &[], 5, reals, real_step);
        // (−1, 1): x = tanh t.
        check_backward(
            dir,
            "atanh",
            &Atanh,
            1,
            &[],
            6,
            |r| r.random_range(-6.0f64..6.0).tanh(),
            |x| 1e-3 * (1.0 - x.abs()),
        );
        check_backward(dir, "softplus", &Softplus, 1, &[], 7, wide, real_step);
        check_backward(dir, "exp", &Exp, 1, &[], 8, reals, real_step);
        // (0, ∞): x = e^t.
        let pos = |r: &mut StdRng| r.random_range(-8.0f64..5.0).exp();
        check_backward(dir, "log", &Log, 1, &[], 9, pos, |x| 1e-3 * x);
        check_backward(
            dir,
            "leaky_relu",
            &leaky::<f64>(),
            1,
            &[],
            10,
            |r| {
                let a: f64 = r.random_range(0.05..5.0);
                if r.random_range(0.0..1.0) < 0.5 {
                    -a
                } else {
                    a
                }
            },
            |x| 1e-3 * x.abs().min(1.0),
        );
    }

    #[test]
    fn forward_backward_known_values() {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-14 * (1.0 + b.abs());
        let none: &mut [f64] = &mut [];
        // Sigmoid at 0: dy/dx = ¼, d(ld)/dx = 0. Logit at ½: dy/dx = 4, d(ld)/dx = 0.
        assert!(close(
            Sigmoid.forward_backward(0, 0.0, 1.0, 7.0, none),
            0.25
        ));
        assert!(close(Logit.forward_backward(0, 0.5, 1.0, 7.0, none), 4.0));
        // Tanh and Atanh at 0: dy/dx = 1, d(ld)/dx = 0.
        assert!(close(Tanh.forward_backward(0, 0.0, 1.0, 7.0, none), 1.0));
        assert!(close(Atanh.forward_backward(0, 0.0, 1.0, 7.0, none), 1.0));
        // Exp at 0: ȳ + w. Log at 2: (ȳ − w)/x.
        assert!(close(Exp.forward_backward(0, 0.0, 3.0, 1.0, none), 4.0));
        assert!(close(Log.forward_backward(0, 2.0, 3.0, 1.0, none), 1.0));
        // Softplus at 0: dy/dx = ½, d(ld)/dx = ½.
        assert!(close(
            Softplus.forward_backward(0, 0.0, 1.0, 3.0, none),
            2.0
        ));
        // Leaky ReLU: slope below 0, 1 from 0 on.
        assert!(close(
            leaky::<f64>().forward_backward(0, -1.0, 1.0, 7.0, none),
            0.2
        ));
        assert_eq!(leaky::<f64>().forward_backward(0, 0.0, 1.0, 7.0, none), 1.0);
        // Affine: layout [shift…, log_scale…]; y = x·e^s + t.
        let a = affine::<f64>();
        let mut g = [0.0; 4];
        let xb = a.forward_backward(1, 2.0, 1.0, 1.0, &mut g);
        let e = (-0.4f64).exp();
        assert!(close(xb, e));
        assert_eq!((g[0], g[2]), (0.0, 0.0));
        assert!(close(g[1], 1.0) && close(g[3], 2.0 * e + 1.0), "{g:?}");
    }

    fn forward_backward_outside_domain_is_nan_in<F: Float>() {
        let dir = Direction::Forward;
        let (inf, nan) = (f64::INFINITY, f64::NAN);
        let non_finite = [inf, -inf, nan];
        rejected::<F, _>(dir, "affine", &affine::<F>(), &non_finite);
        rejected::<F, _>(dir, "shift", &shift::<F>(), &non_finite);
        rejected::<F, _>(dir, "scale", &scale::<F>(), &non_finite);
        rejected::<F, _>(dir, "scale", &Scale::<F>::learnable(2), &non_finite);
        rejected::<F, _>(dir, "sigmoid", &Sigmoid, &non_finite);
        rejected::<F, _>(dir, "tanh", &Tanh, &non_finite);
        rejected::<F, _>(dir, "softplus", &Softplus, &non_finite);
        rejected::<F, _>(dir, "exp", &Exp, &non_finite);
        rejected::<F, _>(dir, "leaky_relu", &leaky::<F>(), &non_finite);
        rejected::<F, _>(dir, "logit", &Logit, &[-1e-30, -0.5, 1.5, inf, -inf, nan]);
        rejected::<F, _>(dir, "atanh", &Atanh, &[1.5, -1.0 - 1e-6, inf, -inf, nan]);
        rejected::<F, _>(dir, "log", &Log, &[-1e-30, -1.0, inf, -inf, nan]);
    }

    #[test]
    fn forward_backward_outside_domain_is_nan_and_leaves_param_grad() {
        forward_backward_outside_domain_is_nan_in::<f64>();
        forward_backward_outside_domain_is_nan_in::<f32>();
    }

    #[test]
    fn forward_backward_on_the_saturated_boundary_is_the_saturated_point() {
        let none: &mut [f64] = &mut [];
        let at = |l: &dyn Elementwise<f64>, x: f64| {
            (
                l.forward_backward(0, x, 0.7, -1.3, &mut []),
                l.forward(0, x).0,
            )
        };
        for (layer, edge, inside) in [
            (&Logit as &dyn Elementwise<f64>, 0.0, smallest_positive()),
            (&Logit, 1.0, largest_below_one()),
            (&Atanh, 1.0, largest_below_one()),
            (&Atanh, -1.0, -largest_below_one::<f64>()),
            (&Log, 0.0, smallest_positive()),
        ] {
            let (g, y) = at(layer, edge);
            assert!(!g.is_nan(), "at {edge}: {g}");
            assert_eq!((g, y), at(layer, inside), "at {edge}");
        }
        // Tails of the real-line layers stay finite and accurate.
        for x in [40.0f64, -40.0, 700.0] {
            let g = Sigmoid.forward_backward(0, x, 1.0, 0.0, none);
            let expected = (-x.abs()).exp();
            assert!((g - expected).abs() <= 1e-13 * expected, "sigmoid at {x}");
            let g = Tanh.forward_backward(0, x, 1.0, 0.0, none);
            let expected = 4.0 * (-2.0 * x.abs()).exp();
            assert!((g - expected).abs() <= 1e-13 * expected, "tanh at {x}");
            assert_eq!(
                Tanh.forward_backward(0, x, 0.0, 1.0, none),
                -2.0 * x.signum()
            );
        }
        assert_eq!(Softplus.forward_backward(0, -800.0f64, 1.0, 1.0, none), 1.0);
    }

    #[test]
    fn f32_forward_backward_tracks_f64() {
        let dir = Direction::Forward;
        let reals = grid(-8.0, 8.0, 64);
        f32_tracks_f64(dir, "affine", &affine::<f32>(), &affine::<f64>(), &reals);
        f32_tracks_f64(dir, "shift", &shift::<f32>(), &shift::<f64>(), &reals);
        f32_tracks_f64(dir, "scale", &scale::<f32>(), &scale::<f64>(), &reals);
        f32_tracks_f64(dir, "sigmoid", &Sigmoid, &Sigmoid, &reals);
        f32_tracks_f64(dir, "tanh", &Tanh, &Tanh, &reals);
        f32_tracks_f64(dir, "softplus", &Softplus, &Softplus, &reals);
        f32_tracks_f64(dir, "exp", &Exp, &Exp, &reals);
        f32_tracks_f64(dir, "leaky_relu", &leaky::<f32>(), &leaky::<f64>(), &reals);
        f32_tracks_f64(dir, "logit", &Logit, &Logit, &grid(0.0, 1.0, 64));
        f32_tracks_f64(dir, "atanh", &Atanh, &Atanh, &grid(-1.0, 1.0, 64));
        f32_tracks_f64(dir, "log", &Log, &Log, &log_grid(1e-3, 1e3, 64));
    }

    #[test]
    fn forward_block_backward_matches_finite_differences() {
        let mut rng = StdRng::seed_from_u64(24);
        let reals = Array2::from_shape_fn((5, 3), |_| rng.random_range(-3.0..3.0));
        let fwd = Direction::Forward;
        check_block(fwd, "affine", &random_affine(&mut rng), reals.clone());
        check_block(fwd, "shift", &random_shift(&mut rng), reals.clone());
        check_block(fwd, "scale", &random_scale(&mut rng, -1.0), reals.clone());
        let constant = Scale::<f64>::constant(3, 0.5);
        check_block(fwd, "scale(const)", &constant, reals.clone());
        check_block(fwd, "sigmoid", &Sigmoid, reals.clone());
        check_block(fwd, "logit", &Logit, reals.mapv(sigmoid));
        check_block(fwd, "tanh", &Tanh, reals.clone());
        check_block(fwd, "atanh", &Atanh, reals.mapv(f64::tanh));
        check_block(fwd, "softplus", &Softplus, reals.clone());
        check_block(fwd, "exp", &Exp, reals.clone());
        check_block(fwd, "log", &Log, reals.mapv(f64::exp));
        check_block(fwd, "leaky_relu", &leaky::<f64>(), reals);
    }

    // ----- the fused loop (`map_rows`) -------------------------------------------------

    /// `map_rows` as it was written before tiling: row by row, column order.
    fn map_rows_naive<F: Float>(
        x: &mut Array2<F>,
        log_det: &mut Array1<F>,
        f: impl Fn(usize, F) -> (F, F),
    ) {
        for (mut row, ld) in x.rows_mut().into_iter().zip(log_det.iter_mut()) {
            let mut acc = F::zero();
            for (j, v) in row.iter_mut().enumerate() {
                let (y, l) = f(j, *v);
                *v = y;
                acc += l;
            }
            *ld += acc;
        }
    }

    /// A fused chain like the generated ones: per-coordinate parameters, saturating and
    /// rejecting kernels, inverse direction.
    fn chain<F: Float>(dim: usize) -> impl Fn(usize, F) -> (F, F) {
        let a = Affine {
            shift: (0..dim).map(|j| F::of(0.1 * j as f64 - 0.3)).collect(),
            log_scale: (0..dim).map(|j| F::of(0.05 * j as f64 - 0.2)).collect(),
        };
        move |j, v| {
            let (v, l0) = Elementwise::<F>::inverse(&Tanh, j, v);
            let (v, l1) = a.inverse(j, v);
            let (v, l2) = Elementwise::<F>::forward(&Sigmoid, j, v);
            let (v, l3) = Elementwise::<F>::inverse(&Sigmoid, j, v);
            (v, l0 + l1 + l2 + l3)
        }
    }

    fn bits<F: Float>(a: &[F]) -> Vec<u64> {
        a.iter().map(|v| v.to_f64_lossless().to_bits()).collect()
    }

    fn tiled_equals_naive_in<F: Float>() {
        let mut rng = StdRng::seed_from_u64(21);
        for rows in [0, 1, 2, 5, 15, 16, 17, 31, 33, 259] {
            for cols in [0, 1, 3, 16, 64] {
                // Values in (−1.2, 1.2): some outside the codomain of the first kernel.
                let x0 =
                    Array2::from_shape_fn((rows, cols), |_| F::of(rng.random_range(-1.2..1.2)));
                let ld0 = Array1::from_shape_fn(rows, |_| F::of(rng.random_range(-1.0..1.0)));
                let (mut x1, mut ld1) = (x0.clone(), ld0.clone());
                map_rows_naive(&mut x1, &mut ld1, chain::<F>(cols));
                let (mut x2, mut ld2) = (x0.clone(), ld0.clone());
                crate::layers::map_rows(x2.view_mut(), ld2.view_mut(), chain::<F>(cols));
                let ctx = format!("{} {rows}×{cols}", F::NAME);
                assert_eq!(
                    bits(x1.as_slice().unwrap()),
                    bits(x2.as_slice().unwrap()),
                    "{ctx}"
                );
                assert_eq!(
                    bits(ld1.as_slice().unwrap()),
                    bits(ld2.as_slice().unwrap()),
                    "{ctx}"
                );
            }
        }
    }

    /// A fused run as the macro writes it (`Forward`/`Inverse` of nested layers) gives the
    /// same bits through `map_rows` (tiles, lanes, the processor's SIMD), through the
    /// baseline compilation and row by row through `map_point`; forward, `map_rows_values`
    /// gives the same values.
    fn fused_run_paths_agree_in<F: Float>() {
        use crate::layers::{
            Forward, Inverse, map_point, map_rows, map_rows_baseline, map_rows_values,
        };
        let mut rng = StdRng::seed_from_u64(22);
        for rows in [1, 15, 16, 17, 48, 259] {
            for cols in [1, 3, 16, 17, 64] {
                let a = Affine {
                    shift: (0..cols).map(|j| F::of(0.1 * j as f64 - 0.3)).collect(),
                    log_scale: (0..cols).map(|j| F::of(0.05 * j as f64 - 0.2)).collect(),
                };
                let run = (&a, (&Tanh, (&a, &Sigmoid)));
                let x0 =
                    Array2::from_shape_fn((rows, cols), |_| F::of(rng.random_range(-3.0..3.0)));
                for inverse in [false, true] {
                    // The inverse of the run needs (0, 1) data: take the forward's output.
                    let mut input = x0.clone();
                    if inverse {
                        map_rows(
                            input.view_mut(),
                            Array1::zeros(rows).view_mut(),
                            Forward(run),
                        );
                    }
                    let apply =
                        |x: &mut Array2<F>, ld: &mut Array1<F>, how: usize| match (inverse, how) {
                            (false, 0) => map_rows(x.view_mut(), ld.view_mut(), Forward(run)),
                            (true, 0) => map_rows(x.view_mut(), ld.view_mut(), Inverse(run)),
                            (false, 1) => map_rows_baseline(
                                x.as_slice_mut().unwrap(),
                                ld.as_slice_mut().unwrap(),
                                cols,
                                Forward(run),
                            ),
                            (true, 1) => map_rows_baseline(
                                x.as_slice_mut().unwrap(),
                                ld.as_slice_mut().unwrap(),
                                cols,
                                Inverse(run),
                            ),
                            _ => {
                                for (mut row, ld) in x.rows_mut().into_iter().zip(ld.iter_mut()) {
                                    let row = row.as_slice_mut().unwrap();
                                    *ld += if inverse {
                                        map_point(row, Inverse(run))
                                    } else {
                                        map_point(row, Forward(run))
                                    };
                                }
                            }
                        };
                    let results: Vec<(Vec<u64>, Vec<u64>)> = (0..3)
                        .map(|how| {
                            let (mut x, mut ld) = (input.clone(), Array1::zeros(rows));
                            apply(&mut x, &mut ld, how);
                            (bits(x.as_slice().unwrap()), bits(ld.as_slice().unwrap()))
                        })
                        .collect();
                    let ctx = format!("{} {rows}×{cols} inverse {inverse}", F::NAME);
                    assert_eq!(results[0], results[1], "dispatched vs baseline, {ctx}");
                    assert_eq!(results[0], results[2], "tiles vs points, {ctx}");
                    if !inverse {
                        // Sampling's pass: the same values, the log-dets left alone.
                        let (mut x, mut ld) = (input.clone(), Array1::from_elem(rows, F::of(7.0)));
                        map_rows_values(x.view_mut(), ld.view_mut(), Forward(run));
                        assert_eq!(bits(x.as_slice().unwrap()), results[0].0, "values, {ctx}");
                        assert!(
                            ld.iter().all(|&l| l == F::of(7.0)),
                            "values' log-dets, {ctx}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn fused_run_paths_agree_bit_for_bit() {
        fused_run_paths_agree_in::<f32>();
        fused_run_paths_agree_in::<f64>();
    }

    #[test]
    fn map_rows_equals_the_row_by_row_loop_bit_for_bit() {
        tiled_equals_naive_in::<f32>();
        tiled_equals_naive_in::<f64>();
    }

    #[test]
    fn map_rows_handles_any_layout_and_short_log_dets() {
        use ndarray::s;
        let mut rng = StdRng::seed_from_u64(22);
        let full = Array2::from_shape_fn((40, 12), |_| rng.random_range(-0.9..0.9f64));
        let ld0 = Array1::from_shape_fn(40, |_| rng.random_range(-1.0..1.0f64));
        // Transposed (column-major), a column slice, every other row, and a strided
        // log-det: each against the naive loop on a standard-layout copy.
        let check = |mut x: ndarray::ArrayViewMut2<'_, f64>,
                     mut ld: ndarray::ArrayViewMut1<'_, f64>| {
            let (mut x1, mut ld1) = (x.to_owned(), ld.to_owned());
            let cols = x.ncols();
            map_rows_naive(&mut x1, &mut ld1, chain::<f64>(cols));
            crate::layers::map_rows(x.view_mut(), ld.view_mut(), chain::<f64>(cols));
            // Bitwise (some entries leave the first kernel's codomain: NaN).
            let bits = |a: Vec<f64>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(x.iter().copied().collect()),
                bits(x1.iter().copied().collect())
            );
            assert_eq!(bits(ld.to_vec()), bits(ld1.to_vec()));
        };
        let mut t = full.t().as_standard_layout().into_owned().reversed_axes();
        assert!(!t.is_standard_layout());
        let mut ld = ld0.clone();
        check(t.view_mut(), ld.view_mut());
        let mut x = full.clone();
        check(x.slice_mut(s![.., 3..9]), ld.view_mut());
        check(x.slice_mut(s![..;2, ..]), ld.slice_mut(s![..20]));
        let mut ld_wide = Array1::zeros(80);
        check(x.view_mut(), ld_wide.slice_mut(s![..;2]));
        // A log-det shorter than the batch: the rows past its end are left alone.
        let mut x = full.clone();
        let mut ld = Array1::zeros(21);
        crate::layers::map_rows(x.view_mut(), ld.view_mut(), chain::<f64>(12));
        assert_eq!(x.slice(s![21.., ..]), full.slice(s![21.., ..]));
        let (mut x1, mut ld1) = (full.slice(s![..21, ..]).to_owned(), Array1::zeros(21));
        map_rows_naive(&mut x1, &mut ld1, chain::<f64>(12));
        assert_eq!(x.slice(s![..21, ..]), x1);
        assert_eq!(ld, ld1);
    }

    #[test]
    fn map_rows_applies_the_kernel_once_to_every_entry() {
        use crate::layers::LANES;
        use std::cell::RefCell;
        for (rows, cols) in [
            (1, 1),
            (7, 3),
            (16, 5),
            (37, 64),
            (LANES, 2),
            (LANES + 20, 3),
        ] {
            let seen = RefCell::new(vec![0usize; cols]);
            let mut x = Array2::from_shape_fn((rows, cols), |(i, j)| (i * cols + j) as f32);
            let mut ld = Array1::<f32>::zeros(rows);
            crate::layers::map_rows(x.view_mut(), ld.view_mut(), |j, v| {
                seen.borrow_mut()[j] += 1;
                (v + 1.0, 0.5)
            });
            // Every entry, and at most the padding of a partial tile more (its last row's
            // copies, whose results are discarded).
            let most = rows.div_ceil(LANES) * LANES;
            assert!(
                seen.borrow().iter().all(|&n| n >= rows && n <= most),
                "{rows}×{cols}"
            );
            for ((i, j), &v) in x.indexed_iter() {
                assert_eq!(v, (i * cols + j) as f32 + 1.0, "{rows}×{cols} ({i}, {j})");
            }
            assert!(ld.iter().all(|&l| l == 0.5 * cols as f32));
        }
    }

    // ----- properties -----------------------------------------------------------------

    const ULPS: f64 = 16.0;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn prop_affine_shift_scale(x in -1e6f64..1e6, j in 0usize..2) {
            check_point(&affine::<f64>(), j, x, any_finite, ULPS);
            check_point(&shift::<f64>(), j, x, any_finite, ULPS);
            check_point(&scale::<f64>(), j, x, any_finite, ULPS);
            check_point(&affine::<f32>(), j, x as f32, any_finite, ULPS);
            check_point(&scale::<f32>(), j, x as f32, any_finite, ULPS);
        }

        #[test]
        fn prop_sigmoid(x in -745.0f64..745.0) {
            check_point(&Sigmoid, 0, x, unit, ULPS);
            check_point(&Sigmoid, 0, x as f32, unit, ULPS);
        }

        #[test]
        fn prop_sigmoid_inverse(y in 0.0f64..1.0) {
            prop_assume!(y > 0.0);
            let (x, l) = Sigmoid.inverse(0, y);
            prop_assert!(x.is_finite() && l.is_finite());
            // logit rounds x by ~ε·|x|, which moves σ(x) by ~ε·|x|·y(1 − y).
            let tol = 4.0 * f64::EPSILON * (y + y * (1.0 - y) * x.abs());
            prop_assert!((Sigmoid.forward(0, x).0 - y).abs() <= tol);
        }

        #[test]
        fn prop_logit(y in 0.0f64..=1.0) {
            check_point(&Logit, 0, y, any_finite, ULPS);
            check_point(&Logit, 0, y as f32, any_finite, ULPS);
        }

        #[test]
        fn prop_tanh(x in -400.0f64..400.0) {
            check_point(&Tanh, 0, x, open_pm1, ULPS);
            check_point(&Tanh, 0, x as f32, open_pm1, ULPS);
        }

        #[test]
        fn prop_atanh(x in -1.0f64..=1.0) {
            check_point(&Atanh, 0, x, any_finite, ULPS);
            check_point(&Atanh, 0, x as f32, any_finite, ULPS);
        }

        #[test]
        fn prop_softplus(x in -745.0f64..1e6) {
            check_point(&Softplus, 0, x, positive, ULPS);
            check_point(&Softplus, 0, x as f32, positive, ULPS);
        }

        #[test]
        fn prop_softplus_inverse(e in -320.0f64..300.0) {
            let y = 10f64.powf(e);
            let (x, l) = Softplus.inverse(0, y);
            prop_assert!(x.is_finite() && l.is_finite());
            let y32 = y as f32;
            let (x, l) = Softplus.inverse(0, y32);
            if y32 > 0.0 && y32.is_finite() {
                prop_assert!(x.is_finite() && l.is_finite());
            } else {
                prop_assert!(l == f32::NEG_INFINITY);
            }
        }

        #[test]
        fn prop_exp(x in -800.0f64..800.0) {
            check_point(&Exp, 0, x, positive, ULPS);
            check_point(&Exp, 0, x as f32, positive, ULPS);
        }

        #[test]
        fn prop_log(e in -330.0f64..308.0) {
            let x = 10f64.powf(e);
            check_point(&Log, 0, x, any_finite, ULPS);
            if (x as f32).is_finite() {
                check_point(&Log, 0, x as f32, any_finite, ULPS);
            }
        }

        #[test]
        fn prop_leaky_relu(x in -1e6f64..1e6) {
            check_point(&leaky::<f64>(), 0, x, any_finite, ULPS);
            check_point(&leaky::<f32>(), 0, x as f32, any_finite, ULPS);
        }

        #[test]
        fn prop_any_finite_input_never_gives_nan(bits in any::<u64>()) {
            // Random finite f64 values of every magnitude, fed to every kernel (forward
            // only where in the domain); inverses on any input never return a NaN log-det.
            let x = f64::from_bits(bits);
            prop_assume!(x.is_finite());
            let x32 = x as f32;
            fn no_nan<F: Float>(v: (F, F)) -> bool {
                !v.0.is_nan() && !v.1.is_nan()
            }
            prop_assert!(no_nan(affine::<f64>().forward(0, x)));
            prop_assert!(no_nan(scale::<f64>().forward(1, x)));
            prop_assert!(no_nan(Sigmoid.forward(0, x)) && no_nan(Sigmoid.forward(0, x32)));
            prop_assert!(no_nan(Tanh.forward(0, x)) && no_nan(Tanh.forward(0, x32)));
            prop_assert!(no_nan(Softplus.forward(0, x)) && no_nan(Softplus.forward(0, x32)));
            prop_assert!(no_nan(Exp.forward(0, x)) && no_nan(Exp.forward(0, x32)));
            prop_assert!(no_nan(leaky::<f64>().forward(0, x)));
            if x.abs() <= 1.0 {
                prop_assert!(no_nan(Atanh.forward(0, x)) && no_nan(Atanh.forward(0, x32)));
            }
            if (0.0..=1.0).contains(&x) {
                prop_assert!(no_nan(Logit.forward(0, x)) && no_nan(Logit.forward(0, x32)));
            }
            if x >= 0.0 {
                prop_assert!(no_nan(Log.forward(0, x)) && no_nan(Log.forward(0, x32)));
            }
            // Inverses: the log-det is never NaN (−∞ outside the codomain).
            prop_assert!(!Sigmoid.inverse(0, x).1.is_nan());
            prop_assert!(!Sigmoid.inverse(0, x32).1.is_nan());
            prop_assert!(!Tanh.inverse(0, x).1.is_nan());
            prop_assert!(!Softplus.inverse(0, x).1.is_nan());
            prop_assert!(!Softplus.inverse(0, x32).1.is_nan());
            prop_assert!(!Exp.inverse(0, x).1.is_nan());
            prop_assert!(!Elementwise::<f64>::inverse(&Logit, 0, x).1.is_nan());
            prop_assert!(!Elementwise::<f64>::inverse(&Atanh, 0, x).1.is_nan());
            prop_assert!(!Elementwise::<f64>::inverse(&Log, 0, x).1.is_nan());
            prop_assert!(!affine::<f64>().inverse(0, x).1.is_nan());
            prop_assert!(!leaky::<f64>().inverse(0, x).1.is_nan());
        }
    }

    // ----- reverse-mode properties ------------------------------------------------------

    /// `∂J/∂y` and every `∂J/∂θ` of one backward call are finite.
    fn finite_backward<L: Elementwise<f64> + ElementwiseParams<f64>>(
        layer: &L,
        j: usize,
        y: f64,
        x_bar: f64,
        w: f64,
    ) -> bool {
        let mut pg = vec![0.5; layer.param_len()];
        let g = layer.inverse_backward(j, y, x_bar, w, &mut pg);
        g.is_finite() && pg.iter().all(|v| v.is_finite())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn prop_backward_finite_affine_shift_scale(
            y in -1e6f64..1e6, xb in -10.0f64..10.0, w in -10.0f64..10.0, j in 0usize..2,
        ) {
            prop_assert!(finite_backward(&affine::<f64>(), j, y, xb, w));
            prop_assert!(finite_backward(&shift::<f64>(), j, y, xb, w));
            prop_assert!(finite_backward(&scale::<f64>(), j, y, xb, w));
            prop_assert!(finite_backward(&Scale::<f64>::learnable(2), j, y, xb, w));
            prop_assert!(finite_backward(&Shift::<f64>::constant(2, 3.0), j, y, xb, w));
        }

        #[test]
        fn prop_backward_finite_sigmoid(
            t in -700.0f64..700.0, u in 0.0f64..1.0, xb in -10.0f64..10.0, w in -10.0f64..10.0,
        ) {
            // Every saturated sigmoid output down to ~1e-304, and uniform points of (0, 1).
            let y = Sigmoid.forward(0, t).0;
            prop_assert!(finite_backward(&Sigmoid, 0, y, xb, w), "y = {}", y);
            prop_assume!(u > 0.0);
            prop_assert!(finite_backward(&Sigmoid, 0, u, xb, w));
        }

        #[test]
        fn prop_backward_finite_tanh(
            t in -400.0f64..400.0, u in -1.0f64..1.0, xb in -10.0f64..10.0, w in -10.0f64..10.0,
        ) {
            let y = Tanh.forward(0, t).0;
            prop_assert!(finite_backward(&Tanh, 0, y, xb, w), "y = {}", y);
            prop_assume!(u > -1.0);
            prop_assert!(finite_backward(&Tanh, 0, u, xb, w));
        }

        #[test]
        fn prop_backward_finite_softplus_exp(
            e in -300.0f64..300.0, xb in -10.0f64..10.0, w in -10.0f64..10.0,
        ) {
            let y = 10f64.powf(e);
            prop_assert!(finite_backward(&Softplus, 0, y, xb, w), "y = {}", y);
            prop_assert!(finite_backward(&Exp, 0, y, xb, w), "y = {}", y);
        }

        #[test]
        fn prop_backward_finite_log(y in -700.0f64..700.0, xb in -10.0f64..10.0, w in -10.0f64..10.0) {
            prop_assert!(finite_backward(&Log, 0, y, xb, w));
        }

        #[test]
        fn prop_backward_finite_logit_atanh_leaky_relu(
            bits in any::<u64>(), xb in -10.0f64..10.0, w in -10.0f64..10.0,
        ) {
            // Every finite value, of every magnitude, is in these layers' codomain ℝ.
            let y = f64::from_bits(bits);
            prop_assume!(y.is_finite());
            prop_assert!(finite_backward(&Logit, 0, y, xb, w));
            prop_assert!(finite_backward(&Atanh, 0, y, xb, w));
            prop_assert!(finite_backward(&leaky::<f64>(), 0, y, xb, w));
        }
    }
}
