//! Monotonic rational-quadratic splines (Durkan et al. 2019, "Neural Spline Flows").
//!
//! One coordinate is mapped by a spline of `K` bins on `[−B, B]` and by the identity
//! outside (log-det 0 there); the derivative at `±B` is exactly 1, so the map is `C¹`.
//!
//! **Raw parameters of one coordinate** (a slice of `3K − 1` values, unconstrained):
//! `[w_0 … w_{K−1}, h_0 … h_{K−1}, d_1 … d_{K−1}]`, the bin widths, the bin heights and the
//! derivatives at the `K − 1` interior knots. They are normalised as
//!
//! * width fraction `f_i = m_w + (1 − K·m_w)·softmax(w)_i` (`m_w =` [`MIN_BIN_WIDTH`]), knots
//!   `x_0 = −B`, `x_k = −B + 2B·Σ_{i<k} f_i`, `x_K = B`; the same for the heights (`y_k`);
//! * interior derivative `δ_k = m_d + softplus(d_k + c)` with `m_d =` [`MIN_DERIVATIVE`] and
//!   `c = ln(e^{1−m_d} − 1)` ([`DERIVATIVE_OFFSET`]), and `δ_0 = δ_K = 1`,
//!
//! so all raw parameters zero give uniform bins with derivative 1: the identity map.
//!
//! **In bin k** (`w = x_{k+1} − x_k`, `h = y_{k+1} − y_k`, `s = h/w`, `ξ = (x − x_k)/w`,
//! `θ = ξ(1 − ξ)`):
//! `y = y_k + h·(s·ξ² + δ_k·θ) / D` with `D = s + (δ_{k+1} + δ_k − 2s)·θ`, and
//! `dy/dx = s²·M / D²` with `M = δ_{k+1}·ξ² + 2s·θ + δ_k·(1 − ξ)²`.
//! The inverse solves `a·ξ² + b·ξ + c = 0` with `Δ = y − y_k`, `t = δ_{k+1} + δ_k − 2s`,
//! `a = h(s − δ_k) + Δ·t`, `b = h·δ_k − Δ·t`, `c = −s·Δ`, by the stable root
//! `ξ = 2c / (−b − √(b² − 4ac))` (discriminant clamped at 0).
//!
//! The input is clamped to `[−B, B]` before the bin search (so every bin index is in
//! `0..K` and every finite input gives finite values, log-dets and gradients), and the
//! result is then chosen: the spline inside, the identity outside.
//!
//! The kernels over one coordinate's slice ([`rq_forward`], [`rq_inverse`],
//! [`rq_inverse_backward`], [`rq_forward_backward`]) compute the knots on the fly, with no
//! memory beyond the stack (each softmax's exponentials once per call, in a stack buffer
//! for `K ≤ 64`, reused by the backwards); the layer [`Spline`] caches its knots and gives
//! the same bits.

use crate::fastmath;
use crate::float::Float;
use crate::layers::elementwise::{ElementwiseParams, sigmoid, softplus};
use crate::layers::{Elementwise, elementwise_layer};

/// The least bin width, as a fraction of `2B`.
pub const MIN_BIN_WIDTH: f64 = 1e-3;
/// The least bin height, as a fraction of `2B`.
pub const MIN_BIN_HEIGHT: f64 = 1e-3;
/// The least interior derivative.
pub const MIN_DERIVATIVE: f64 = 1e-3;
/// `c = ln(e^{1 − MIN_DERIVATIVE} − 1)`: `MIN_DERIVATIVE + softplus(0 + c) = 1`.
pub const DERIVATIVE_OFFSET: f64 = 0.5397424172369522;

/// The number of raw parameters of one coordinate of a `bins`-bin spline: `3·bins − 1`.
pub const fn params_per_coordinate(bins: usize) -> usize {
    3 * bins - 1
}

/// The bins of a spline whose coordinate has `len = 3K − 1` raw parameters.
/// Panics if `len` is not of that form.
fn bins_of(len: usize) -> usize {
    assert!(
        len >= 2 && (len + 1).is_multiple_of(3),
        "spline: {len} raw parameters per coordinate, expected 3·bins − 1"
    );
    (len + 1) / 3
}

/// One coordinate's raw parameters, split by kind.
#[derive(Clone, Copy)]
struct Raw<'a, F> {
    widths: &'a [F],
    heights: &'a [F],
    derivatives: &'a [F],
}

impl<'a, F> Raw<'a, F> {
    /// Splits a slice in the layout `[widths K, heights K, derivatives K − 1]`.
    fn split(raw: &'a [F]) -> Self {
        let k = bins_of(raw.len());
        let (widths, rest) = raw.split_at(k);
        let (heights, derivatives) = rest.split_at(k);
        Self {
            widths,
            heights,
            derivatives,
        }
    }
}

/// One bin: its left and right knots `(x, y)` and the derivatives there.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Bin<F> {
    x0: F,
    x1: F,
    y0: F,
    y1: F,
    d0: F,
    d1: F,
}

/// The partial derivatives of a bin's `J` with respect to its knots and derivatives.
#[derive(Clone, Copy, Debug, Default)]
struct BinGrad<F> {
    x0: F,
    x1: F,
    y0: F,
    y1: F,
    d0: F,
    d1: F,
}

/// `(max, 1/Σ exp(r − max))` of a softmax over `raw`, summed in order.
#[inline(always)]
fn softmax_stats<F: Float>(raw: &[F]) -> (F, F) {
    let max = raw.iter().fold(F::neg_infinity(), |m, &r| m.max(r));
    let mut sum = F::zero();
    for &r in raw {
        sum += fastmath::exp(r - max);
    }
    (max, F::one() / sum)
}

/// The largest `K` whose softmax exponentials the slice kernels keep on the stack; above
/// it they recompute each exponential where it is used (the same values).
const STACK_BINS: usize = 64;

/// The stack buffer used up to this `K` (a smaller buffer is cheaper to set up).
const SMALL_STACK_BINS: usize = 16;

/// The width of the exponential loop of [`softmax_exps`] (a whole number of SIMD lanes).
const EXP_LANES: usize = 8;

/// Writes `e_i = exp(r_i − max r)` into `e[..K]` for `raw.len() = K ≤ N` and returns
/// `1/Σ e_i` (summed in order): the same values as [`softmax_stats`] followed by
/// `exp(r_i − max)`. The exponentials run over whole chunks of [`EXP_LANES`] with no
/// branch (lanes past `K` hold `exp(0)` and are never read), so the loop vectorises.
/// `N` must be a multiple of [`EXP_LANES`].
#[inline(always)]
fn softmax_exps<F: Float, const N: usize>(raw: &[F], e: &mut [F; N]) -> F {
    let k = raw.len();
    let max = raw.iter().fold(F::neg_infinity(), |m, &r| m.max(r));
    let padded = k.div_ceil(EXP_LANES) * EXP_LANES;
    let (head, tail) = e[..padded].split_at_mut(k);
    for (v, &r) in head.iter_mut().zip(raw) {
        *v = r - max;
    }
    tail.fill(F::zero());
    for chunk in e[..padded].chunks_exact_mut(EXP_LANES) {
        for v in chunk {
            *v = fastmath::exp(*v);
        }
    }
    let mut sum = F::zero();
    for &v in &e[..k] {
        sum += v;
    }
    F::one() / sum
}

/// Evaluates `$body` with `$pw`, `$ph` bound to closures `i ↦ softmax(widths)_i`,
/// `i ↦ softmax(heights)_i` of `$raw` (a [`Raw`]), each computed as `e_i · (1/Σe)`: from
/// exponentials computed once into stack buffers when `K ≤` [`STACK_BINS`], else
/// recomputed on each call. All branches give the same bits.
macro_rules! with_softmax {
    ($raw:expr, |$pw:ident, $ph:ident| $body:expr) => {{
        let raw: Raw<'_, F> = $raw;
        let k = raw.widths.len();
        if k <= SMALL_STACK_BINS {
            with_softmax!(@stack SMALL_STACK_BINS, raw, |$pw, $ph| $body)
        } else if k <= STACK_BINS {
            with_softmax!(@stack STACK_BINS, raw, |$pw, $ph| $body)
        } else {
            let (max_w, inv_w) = softmax_stats(raw.widths);
            let (max_h, inv_h) = softmax_stats(raw.heights);
            let $pw = |i: usize| fastmath::exp(raw.widths[i] - max_w) * inv_w;
            let $ph = |i: usize| fastmath::exp(raw.heights[i] - max_h) * inv_h;
            $body
        }
    }};
    (@stack $n:expr, $raw:ident, |$pw:ident, $ph:ident| $body:expr) => {{
        let mut ew = [F::zero(); $n];
        let mut eh = [F::zero(); $n];
        let inv_w = softmax_exps($raw.widths, &mut ew);
        let inv_h = softmax_exps($raw.heights, &mut eh);
        let $pw = |i: usize| ew[i] * inv_w;
        let $ph = |i: usize| eh[i] * inv_h;
        $body
    }};
}

/// `δ = MIN_DERIVATIVE + softplus(raw + c)`.
#[inline(always)]
fn derivative<F: Float>(raw: F) -> F {
    F::of(MIN_DERIVATIVE) + softplus(raw + F::of(DERIVATIVE_OFFSET))
}

/// `min(max(v, lo), hi)` (NaN becomes `lo`; callers select on the unclamped value).
#[inline(always)]
fn clamp<F: Float>(v: F, lo: F, hi: F) -> F {
    v.max(lo).min(hi)
}

/// The derivatives `(δ_i, δ_{i+1})` at the knots of bin `i`: 1 at `±B`, else
/// [`derivative`] of the raw value.
#[inline(always)]
fn bin_derivatives<F: Float>(raw: Raw<'_, F>, i: usize) -> (F, F) {
    let k = raw.widths.len();
    let d0 = if i == 0 {
        F::one()
    } else {
        derivative(raw.derivatives[i - 1])
    };
    let d1 = if i + 1 == k {
        F::one()
    } else {
        derivative(raw.derivatives[i])
    };
    (d0, d1)
}

/// Calls `f(k, bin k)` for `k = 0..K`, in order, with the knots of the module docs and
/// the derivatives left at zero ([`bin_derivatives`] gives them). The one place knots are
/// computed, so the cached and the on-the-fly paths agree bit for bit.
#[inline(always)]
fn for_each_bin<F: Float>(raw: Raw<'_, F>, bound: F, f: impl FnMut(usize, Bin<F>)) {
    with_softmax!(raw, |pw, ph| knots_from(raw.widths.len(), bound, pw, ph, f))
}

/// [`for_each_bin`] from the width and height probabilities `pw(i)`, `ph(i)` of `K` bins:
/// cumulative fractions `Σ_{i<k} (m + (1 − K·m)·p_i)`, summed in order.
#[inline(always)]
fn knots_from<F: Float>(
    k: usize,
    bound: F,
    pw: impl Fn(usize) -> F,
    ph: impl Fn(usize) -> F,
    mut f: impl FnMut(usize, Bin<F>),
) {
    let (min_w, min_h) = (F::of(MIN_BIN_WIDTH), F::of(MIN_BIN_HEIGHT));
    let scale_w = F::one() - F::of(k as f64) * min_w;
    let scale_h = F::one() - F::of(k as f64) * min_h;
    let two_b = bound + bound;
    let (mut cum_w, mut cum_h) = (F::zero(), F::zero());
    let (mut x0, mut y0) = (-bound, -bound);
    for i in 0..k {
        cum_w += min_w + scale_w * pw(i);
        cum_h += min_h + scale_h * ph(i);
        let last = i + 1 == k;
        let x1 = if last { bound } else { -bound + two_b * cum_w };
        let y1 = if last { bound } else { -bound + two_b * cum_h };
        let (d0, d1) = (F::zero(), F::zero());
        f(
            i,
            Bin {
                x0,
                x1,
                y0,
                y1,
                d0,
                d1,
            },
        );
        (x0, y0) = (x1, y1);
    }
}

/// The bin whose left knot (in `x`, or in `y` when `by_y`) is the last at or below `key`
/// (bin 0 when none is, or for NaN), and its index, from the softmax probabilities.
#[inline(always)]
fn find_bin<F: Float>(
    raw: Raw<'_, F>,
    bound: F,
    key: F,
    by_y: bool,
    pw: impl Fn(usize) -> F,
    ph: impl Fn(usize) -> F,
) -> (usize, Bin<F>) {
    let mut found = (0, Bin::default());
    knots_from(raw.widths.len(), bound, pw, ph, |i, bin| {
        let left = if by_y { bin.y0 } else { bin.x0 };
        if i == 0 || key >= left {
            found = (i, bin);
        }
    });
    (found.1.d0, found.1.d1) = bin_derivatives(raw, found.0);
    found
}

/// `(θ, D, M)` of a bin at `ξ` (module docs), with `s = h/w`.
#[inline(always)]
fn shape<F: Float>(b: &Bin<F>, s: F, xi: F) -> (F, F, F) {
    let one = F::one();
    let theta = xi * (one - xi);
    let den = s + (b.d1 + b.d0 - (s + s)) * theta;
    let m = b.d1 * xi * xi + (s + s) * theta + b.d0 * (one - xi) * (one - xi);
    (theta, den, m)
}

/// `log(dy/dx) = log(s²·M/D²)`, multiplied as `r·(r·M)` with `r = s/D` so that huge
/// derivatives (`M`, `D` ~ δ) do not underflow an intermediate `r²`.
#[inline(always)]
fn log_slope<F: Float>(s: F, den: F, m: F) -> F {
    let r = s / den;
    fastmath::ln(r * (r * m))
}

/// The spline inside bin `b` at `x ∈ [x_k, x_{k+1}]`: `(y, log dy/dx)`.
#[inline(always)]
fn bin_forward<F: Float>(b: Bin<F>, x: F) -> (F, F) {
    let (w, h) = (b.x1 - b.x0, b.y1 - b.y0);
    let s = h / w;
    let xi = clamp((x - b.x0) / w, F::zero(), F::one());
    let (theta, den, m) = shape(&b, s, xi);
    let y = b.y0 + h * (s * xi * xi + b.d0 * theta) / den;
    (y, log_slope(s, den, m))
}

/// `ξ` of the inverse inside bin `b` at `y`, with `s = h/w` (the stable quadratic root).
#[inline(always)]
fn bin_inverse_xi<F: Float>(b: &Bin<F>, h: F, s: F, y: F) -> F {
    let delta = y - b.y0;
    let t = b.d1 + b.d0 - (s + s);
    let a = h * (s - b.d0) + delta * t;
    let bb = h * b.d0 - delta * t;
    let c = -s * delta;
    let disc = (bb * bb - F::of(4.0) * a * c).max(F::zero());
    clamp((c + c) / (-bb - disc.sqrt()), F::zero(), F::one())
}

/// The inverse inside bin `b` at `y ∈ [y_k, y_{k+1}]`: `(x, log dx/dy)`.
#[inline(always)]
fn bin_inverse<F: Float>(b: Bin<F>, y: F) -> (F, F) {
    let (w, h) = (b.x1 - b.x0, b.y1 - b.y0);
    let s = h / w;
    let xi = bin_inverse_xi(&b, h, s, y);
    let (_, den, m) = shape(&b, s, xi);
    (b.x0 + w * xi, -log_slope(s, den, m))
}

/// The partial derivatives of a bin's map at `ξ` that both backward kernels use, with
/// `φ(ξ) = (sξ² + δ_kθ)/D` (so `y = y_k + hφ`, `φ' = sM/D²`) and
/// `Λ = log(dy/dx) = 2 log s + log M − 2 log D`; `_q` is `∂/∂q` at fixed `ξ` for the shape
/// parameters `q ∈ {s, δ_k, δ_{k+1}}`.
struct Partials<F> {
    den: F,
    m: F,
    phi: F,
    phi_s: F,
    phi_d0: F,
    phi_d1: F,
    lam_xi: F,
    lam_s: F,
    lam_d0: F,
    lam_d1: F,
}

/// [`Partials`] of bin `b` at `ξ`, with `s = h/w`.
#[inline(always)]
fn partials<F: Float>(b: &Bin<F>, s: F, xi: F) -> Partials<F> {
    let one = F::one();
    let two = one + one;
    let (theta, den, m) = shape(b, s, xi);
    let t = b.d1 + b.d0 - (s + s);
    let phi = (s * xi * xi + b.d0 * theta) / den;
    let one_m_xi = one - xi;
    let m_xi = two * (b.d1 * xi + s * (one - two * xi) - b.d0 * one_m_xi);
    let d_xi = t * (one - two * xi);
    Partials {
        den,
        m,
        phi,
        phi_s: (xi * xi - phi * (one - two * theta)) / den,
        phi_d0: theta * (one - phi) / den,
        phi_d1: -phi * theta / den,
        lam_xi: m_xi / m - two * d_xi / den,
        lam_s: two / s + two * theta / m - two * (one - two * theta) / den,
        lam_d0: one_m_xi * one_m_xi / m - two * theta / den,
        lam_d1: xi * xi / m - two * theta / den,
    }
}

/// Reverse mode through [`bin_inverse`] for `J = x̄·x + ω·log(dx/dy)`: `(∂J/∂y, ∂J/∂bin)`.
///
/// With [`Partials`]: `J_ξ = x̄·w − ω·Λ_ξ`, `∂ξ/∂y = 1/(hφ')`, and for a shape parameter
/// `q` at fixed `y`: `∂ξ/∂q = −φ_q/φ'`, so `J_q = −J_ξ·φ_q/φ' − ω·Λ_q`; then `s = h/w`
/// gives `J_h = −J_ξ·φ/(hφ') + J_s/w` and `J_w = x̄·ξ − J_s·s/w`, and the knots
/// `J_{x_k} = x̄ − J_w`, `J_{x_{k+1}} = J_w`, `J_{y_k} = −J_ξ/(hφ') − J_h`,
/// `J_{y_{k+1}} = J_h`.
#[inline(always)]
fn bin_inverse_backward<F: Float>(b: Bin<F>, y: F, x_bar: F, w: F) -> (F, BinGrad<F>) {
    let (wb, h) = (b.x1 - b.x0, b.y1 - b.y0);
    let s = h / wb;
    let xi = bin_inverse_xi(&b, h, s, y);
    let p = partials(&b, s, xi);
    // φ' = s·M/D²; 1/(h·φ') = D²/(h·s·M).
    let inv_phi_prime = p.den * p.den / (s * p.m);
    let inv_h_phi_prime = inv_phi_prime / h;

    // J = x̄·x − ω·Λ.
    let j_xi = x_bar * wb - w * p.lam_xi;
    let y_bar = j_xi * inv_h_phi_prime;
    let j_s = -j_xi * p.phi_s * inv_phi_prime - w * p.lam_s;
    let j_d0 = -j_xi * p.phi_d0 * inv_phi_prime - w * p.lam_d0;
    let j_d1 = -j_xi * p.phi_d1 * inv_phi_prime - w * p.lam_d1;
    let j_h = -j_xi * p.phi * inv_h_phi_prime + j_s / wb;
    let j_w = x_bar * xi - j_s * s / wb;
    let grad = BinGrad {
        x0: x_bar - j_w,
        x1: j_w,
        y0: -y_bar - j_h,
        y1: j_h,
        d0: j_d0,
        d1: j_d1,
    };
    (y_bar, grad)
}

/// Reverse mode through [`bin_forward`] for `J = ȳ·y + ω·log(dy/dx)`: `(∂J/∂x, ∂J/∂bin)`.
///
/// With [`Partials`] and `ξ = (x − x_k)/w`: `J_ξ = ȳ·hφ' + ω·Λ_ξ`, `∂J/∂x = J_ξ/w`, and
/// for a shape parameter `q` at fixed `ξ`: `J_q = ȳ·hφ_q + ω·Λ_q`; then `s = h/w` gives
/// `J_h = ȳ·φ + J_s/w` and `J_w = −J_ξ·ξ/w − J_s·s/w`, and the knots
/// `J_{x_k} = −J_ξ/w − J_w`, `J_{x_{k+1}} = J_w`, `J_{y_k} = ȳ − J_h`, `J_{y_{k+1}} = J_h`.
#[inline(always)]
fn bin_forward_backward<F: Float>(b: Bin<F>, x: F, y_bar: F, w: F) -> (F, BinGrad<F>) {
    let (wb, h) = (b.x1 - b.x0, b.y1 - b.y0);
    let s = h / wb;
    let xi = clamp((x - b.x0) / wb, F::zero(), F::one());
    let p = partials(&b, s, xi);
    let phi_prime = s * p.m / (p.den * p.den);

    // J = ȳ·y + ω·Λ.
    let y_bar_h = y_bar * h;
    let j_xi = y_bar_h * phi_prime + w * p.lam_xi;
    let x_bar = j_xi / wb;
    let j_s = y_bar_h * p.phi_s + w * p.lam_s;
    let j_d0 = y_bar_h * p.phi_d0 + w * p.lam_d0;
    let j_d1 = y_bar_h * p.phi_d1 + w * p.lam_d1;
    let j_h = y_bar * p.phi + j_s / wb;
    let j_w = -x_bar * xi - j_s * s / wb;
    let grad = BinGrad {
        x0: -x_bar - j_w,
        x1: j_w,
        y0: y_bar - j_h,
        y1: j_h,
        d0: j_d0,
        d1: j_d1,
    };
    (x_bar, grad)
}

/// `v` inside `[−B, B]`, else the identity `(x, 0)` (also for NaN and ±∞).
#[inline(always)]
fn with_tails<F: Float>(x: F, bound: F, v: (F, F)) -> (F, F) {
    if x >= -bound && x <= bound {
        v
    } else {
        (x, F::zero())
    }
}

/// [`with_tails`] for an inverse: also `(NaN, −∞)` for a non-finite `y` (not in ℝ).
#[inline(always)]
fn with_tails_inverse<F: Float>(y: F, bound: F, v: (F, F)) -> (F, F) {
    if y.is_finite() {
        with_tails(y, bound, v)
    } else {
        (F::nan(), F::neg_infinity())
    }
}

/// The spline of one coordinate towards the data: `(y, log|dy/dx|)` at `x`.
///
/// `raw` holds the coordinate's `3K − 1` raw parameters `[widths K, heights K,
/// derivatives K − 1]` (module docs); `bound` is `B > 0`. The identity outside `[−B, B]`
/// (NaN and ±∞ pass through with log-det 0). Panics if `raw.len()` is not `3K − 1`.
#[inline]
pub fn rq_forward<F: Float>(raw: &[F], bound: F, x: F) -> (F, F) {
    let raw = Raw::split(raw);
    let xc = clamp(x, -bound, bound);
    let (_, bin) = with_softmax!(raw, |pw, ph| find_bin(raw, bound, xc, false, pw, ph));
    with_tails(x, bound, bin_forward(bin, xc))
}

/// The inverse of [`rq_forward`] towards the base: `(x, log|dx/dy|)` at `y`; the
/// identity outside `[−B, B]`, `(NaN, −∞)` for a non-finite `y`.
#[inline]
pub fn rq_inverse<F: Float>(raw: &[F], bound: F, y: F) -> (F, F) {
    let raw = Raw::split(raw);
    let yc = clamp(y, -bound, bound);
    let (_, bin) = with_softmax!(raw, |pw, ph| find_bin(raw, bound, yc, true, pw, ph));
    with_tails_inverse(y, bound, bin_inverse(bin, yc))
}

/// Reverse mode through [`rq_inverse`] at `y` for `J = x_bar·x + w·log|dx/dy|`: returns
/// `∂J/∂y` and ADDS `∂J/∂raw` into `raw_grad` (same length and layout as `raw`), through
/// the softmax and softplus normalisation. Outside `[−B, B]` it returns `x_bar` and adds
/// nothing; for a non-finite `y` it returns NaN and adds nothing.
#[inline]
pub fn rq_inverse_backward<F: Float>(
    raw: &[F],
    bound: F,
    y: F,
    x_bar: F,
    w: F,
    raw_grad: &mut [F],
) -> F {
    let (raw, grads) = split_with_grad(raw, raw_grad);
    backward_raw::<F, true>(raw, bound, y, x_bar, w, grads)
}

/// Reverse mode through [`rq_forward`] at `x` for `J = y_bar·y + w·log|dy/dx|`: returns
/// `∂J/∂x` and ADDS `∂J/∂raw` into `raw_grad` (same length and layout as `raw`), through
/// the softmax and softplus normalisation. Outside `[−B, B]` it returns `y_bar` and adds
/// nothing; for a non-finite `x` it returns NaN and adds nothing (the mirror of
/// [`rq_inverse_backward`]).
#[inline]
pub fn rq_forward_backward<F: Float>(
    raw: &[F],
    bound: F,
    x: F,
    y_bar: F,
    w: F,
    raw_grad: &mut [F],
) -> F {
    let (raw, grads) = split_with_grad(raw, raw_grad);
    backward_raw::<F, false>(raw, bound, x, y_bar, w, grads)
}

/// `raw` and `raw_grad` split by kind (widths, heights, derivatives); panics unless the
/// two have the same length.
#[inline(always)]
fn split_with_grad<'a, 'g, F: Float>(
    raw: &'a [F],
    raw_grad: &'g mut [F],
) -> (Raw<'a, F>, RawGrad<'g, F>) {
    assert_eq!(
        raw.len(),
        raw_grad.len(),
        "spline: raw_grad has the wrong length"
    );
    let raw = Raw::split(raw);
    let k = raw.widths.len();
    let (gw, rest) = raw_grad.split_at_mut(k);
    let (gh, gd) = rest.split_at_mut(k);
    (raw, (gw, gh, gd))
}

/// [`rq_inverse_backward`] (`INVERSE`, at `v = y` for `J = out_bar·x + w·log|dx/dy|`) or
/// [`rq_forward_backward`] (at `v = x`) with the raw parameters and their gradients split
/// by kind: `∂J/∂v`, with `∂J/∂raw` added into `grads`. Each direction is its own
/// monomorphisation, the kernel of the other not in it.
#[inline]
fn backward_raw<F: Float, const INVERSE: bool>(
    raw: Raw<'_, F>,
    bound: F,
    v: F,
    out_bar: F,
    w: F,
    grads: RawGrad<'_, F>,
) -> F {
    if !v.is_finite() {
        return F::nan();
    }
    if !(v >= -bound && v <= bound) {
        return out_bar;
    }
    with_softmax!(raw, |pw, ph| {
        let (i, bin) = find_bin(raw, bound, v, INVERSE, pw, ph);
        let (v_bar, g) = if INVERSE {
            bin_inverse_backward(bin, v, out_bar, w)
        } else {
            bin_forward_backward(bin, v, out_bar, w)
        };
        bin_grad_to_raw(raw, bound, i, g, pw, ph, grads);
        v_bar
    })
}

/// The gradients of one coordinate's raw parameters, split by kind: widths, heights,
/// derivatives.
type RawGrad<'a, F> = (&'a mut [F], &'a mut [F], &'a mut [F]);

/// Adds `∂J/∂raw` into `grads` given `g = ∂J/∂(bin i)`, the gradient of bin `i`'s knots
/// and derivatives: through the cumulative softmax fractions (`pw`, `ph`) and the softplus
/// of the derivatives. Knot `i` is learnt unless it is `x_0 = −B`, knot `i + 1` unless it is
/// `x_K = B`, and the derivatives `δ_0 = δ_K = 1` are fixed.
#[inline(always)]
fn bin_grad_to_raw<F: Float>(
    raw: Raw<'_, F>,
    bound: F,
    i: usize,
    g: BinGrad<F>,
    pw: impl Fn(usize) -> F,
    ph: impl Fn(usize) -> F,
    (grad_widths, grad_heights, grad_derivatives): RawGrad<'_, F>,
) {
    let (left, right) = (i >= 1, i + 1 < raw.widths.len());
    let zero = F::zero();
    let two_b = bound + bound;
    let pick = |c: bool, v: F| if c { v } else { zero };
    softmax_backward(
        pw,
        MIN_BIN_WIDTH,
        i,
        two_b * pick(left, g.x0),
        two_b * pick(right, g.x1),
        grad_widths,
    );
    softmax_backward(
        ph,
        MIN_BIN_HEIGHT,
        i,
        two_b * pick(left, g.y0),
        two_b * pick(right, g.y1),
        grad_heights,
    );
    let offset = F::of(DERIVATIVE_OFFSET);
    if left {
        grad_derivatives[i - 1] += g.d0 * sigmoid(raw.derivatives[i - 1] + offset);
    }
    if right {
        grad_derivatives[i] += g.d1 * sigmoid(raw.derivatives[i] + offset);
    }
}

/// Adds `∂J/∂raw` into `out` for fractions `f = min + (1 − K·min)·softmax(raw)` whose
/// cumulative sums place the knots of bin `bin`: `∂J/∂f_i = g_lo·[i < bin] + g_hi·[i ≤
/// bin]` (`g_lo`, `g_hi` the gradients of the bin's left and right knots with respect to
/// their cumulative sums), then `∂J/∂raw_i = (1 − K·min)·p_i·(∂J/∂f_i − Σ_j p_j ∂J/∂f_j)`.
#[inline(always)]
fn softmax_backward<F: Float>(
    p: impl Fn(usize) -> F,
    min: f64,
    bin: usize,
    g_lo: F,
    g_hi: F,
    out: &mut [F],
) {
    let scale = F::one() - F::of(out.len() as f64) * F::of(min);
    let g = |i: usize| {
        let lo = if i < bin { g_lo } else { F::zero() };
        let hi = if i <= bin { g_hi } else { F::zero() };
        lo + hi
    };
    let mut dot = F::zero();
    for i in 0..out.len() {
        dot += p(i) * g(i);
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o += scale * p(i) * (g(i) - dot);
    }
}

/// A learnable rational-quadratic spline on every coordinate (module docs), `K` bins on
/// `[−B, B]`, identity outside; starts as the identity (all raw parameters zero).
///
/// Parameters, in layout order: `widths` `[D, K]`, `heights` `[D, K]`, `derivatives`
/// `[D, K − 1]` (raw values, row `j` for coordinate `j`). The normalised knots are cached
/// and recomputed after every [`ElementwiseParams::visit_params_mut`]; the raw values are
/// the stored truth.
#[derive(Debug, Clone, PartialEq)]
pub struct Spline<F> {
    dim: usize,
    bins: usize,
    bound: f64,
    widths: Vec<F>,
    heights: Vec<F>,
    derivatives: Vec<F>,
    /// Per coordinate `3(K + 1)` values: the knots `x_0..=x_K`, `y_0..=y_K`, `δ_0..=δ_K`.
    knots: Vec<F>,
}

impl<F: Float> Spline<F> {
    /// The identity on `dim` coordinates: a `bins`-bin spline on `[−bound, bound]` with all
    /// raw parameters zero. Panics unless `1 ≤ bins < 1000` (so that `bins·MIN_BIN_WIDTH
    /// < 1`) and `bound` is positive and finite.
    pub fn new(dim: usize, bins: usize, bound: f64) -> Self {
        assert!(
            (1..1000).contains(&bins),
            "spline: bins = {bins}, expected 1 ≤ bins < 1000"
        );
        assert!(
            bound > 0.0 && bound.is_finite(),
            "spline: bound = {bound}, expected a positive finite value"
        );
        let mut s = Self {
            dim,
            bins,
            bound,
            widths: vec![F::zero(); dim * bins],
            heights: vec![F::zero(); dim * bins],
            derivatives: vec![F::zero(); dim * (bins - 1)],
            knots: vec![F::zero(); dim * 3 * (bins + 1)],
        };
        s.refresh_knots();
        s
    }

    /// The number of bins `K`.
    pub fn bins(&self) -> usize {
        self.bins
    }

    /// The bound `B`: the spline acts on `[−B, B]`.
    pub fn bound(&self) -> f64 {
        self.bound
    }

    /// The number of coordinates.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Coordinate `j`'s raw parameters in the layout of [`rq_forward`]
    /// (`[widths K, heights K, derivatives K − 1]`), as a new vector.
    pub fn raw_params(&self, j: usize) -> Vec<F> {
        let r = self.raw(j);
        [r.widths, r.heights, r.derivatives].concat()
    }

    fn raw(&self, j: usize) -> Raw<'_, F> {
        let k = self.bins;
        Raw {
            widths: &self.widths[j * k..(j + 1) * k],
            heights: &self.heights[j * k..(j + 1) * k],
            derivatives: &self.derivatives[j * (k - 1)..(j + 1) * (k - 1)],
        }
    }

    /// Coordinate `j`'s rows of the `widths`, `heights` and `derivatives` gradients in the
    /// flat layout of `param_grad`.
    fn coordinate_grad<'a>(&self, j: usize, param_grad: &'a mut [F]) -> RawGrad<'a, F> {
        let (d, k) = (self.dim, self.bins);
        let (gw, rest) = param_grad.split_at_mut(d * k);
        let (gh, gd) = rest.split_at_mut(d * k);
        (
            &mut gw[j * k..(j + 1) * k],
            &mut gh[j * k..(j + 1) * k],
            &mut gd[j * (k - 1)..(j + 1) * (k - 1)],
        )
    }

    /// Recomputes the cached knots from the raw parameters.
    fn refresh_knots(&mut self) {
        let n = self.bins + 1;
        let bound = F::of(self.bound);
        let mut knots = std::mem::take(&mut self.knots);
        for (j, kn) in knots.chunks_exact_mut(3 * n).enumerate() {
            let (xs, rest) = kn.split_at_mut(n);
            let (ys, ds) = rest.split_at_mut(n);
            let raw = self.raw(j);
            for_each_bin(raw, bound, |i, b| {
                (xs[i], ys[i]) = (b.x0, b.y0);
                (xs[i + 1], ys[i + 1]) = (b.x1, b.y1);
                (ds[i], ds[i + 1]) = bin_derivatives(raw, i);
            });
        }
        self.knots = knots;
    }

    /// Coordinate `j`'s bin containing `key` (clamped) by the cached knots: in `x`, or in
    /// `y` when `by_y`. The same bin as [`find_bin`]: the last left knot at or below `key`.
    #[inline(always)]
    fn cached_bin(&self, j: usize, key: F, by_y: bool) -> Bin<F> {
        let n = self.bins + 1;
        let kn = &self.knots[j * 3 * n..(j + 1) * 3 * n];
        let (xs, rest) = kn.split_at(n);
        let (ys, ds) = rest.split_at(n);
        let search = if by_y { ys } else { xs };
        let mut i = 0;
        for &left in &search[1..n - 1] {
            i += usize::from(key >= left);
        }
        Bin {
            x0: xs[i],
            x1: xs[i + 1],
            y0: ys[i],
            y1: ys[i + 1],
            d0: ds[i],
            d1: ds[i + 1],
        }
    }
}

impl<F: Float> Elementwise<F> for Spline<F> {
    #[inline(always)]
    fn forward(&self, j: usize, x: F) -> (F, F) {
        let bound = F::of(self.bound);
        let xc = clamp(x, -bound, bound);
        with_tails(x, bound, bin_forward(self.cached_bin(j, xc, false), xc))
    }
    #[inline(always)]
    fn inverse(&self, j: usize, y: F) -> (F, F) {
        let bound = F::of(self.bound);
        let yc = clamp(y, -bound, bound);
        with_tails_inverse(y, bound, bin_inverse(self.cached_bin(j, yc, true), yc))
    }
    /// [`rq_inverse_backward`] on coordinate `j`, its gradients added at row `j` of each of
    /// `widths`, `heights` and `derivatives` in the flat layout.
    #[inline]
    fn inverse_backward(&self, j: usize, y: F, x_bar: F, w: F, param_grad: &mut [F]) -> F {
        let grads = self.coordinate_grad(j, param_grad);
        backward_raw::<F, true>(self.raw(j), F::of(self.bound), y, x_bar, w, grads)
    }
    /// [`rq_forward_backward`] on coordinate `j`, its gradients added as for
    /// [`Elementwise::inverse_backward`].
    #[inline]
    fn forward_backward(&self, j: usize, x: F, y_bar: F, w: F, param_grad: &mut [F]) -> F {
        let grads = self.coordinate_grad(j, param_grad);
        backward_raw::<F, false>(self.raw(j), F::of(self.bound), x, y_bar, w, grads)
    }
}

/// `widths` (`[D, K]`), `heights` (`[D, K]`), `derivatives` (`[D, K − 1]`), raw values.
impl<F: Float> ElementwiseParams<F> for Spline<F> {
    fn param_len(&self) -> usize {
        self.widths.len() + self.heights.len() + self.derivatives.len()
    }
    fn visit_params(&self, visit: &mut dyn FnMut(&str, &[usize], &[F])) {
        let (d, k) = (self.dim, self.bins);
        visit("widths", &[d, k], &self.widths);
        visit("heights", &[d, k], &self.heights);
        visit("derivatives", &[d, k - 1], &self.derivatives);
    }
    /// Visits the raw tensors, then recomputes the cached knots.
    fn visit_params_mut(&mut self, visit: &mut dyn FnMut(&str, &[usize], &mut [F])) {
        let (d, k) = (self.dim, self.bins);
        visit("widths", &[d, k], &mut self.widths);
        visit("heights", &[d, k], &mut self.heights);
        visit("derivatives", &[d, k - 1], &mut self.derivatives);
        self.refresh_knots();
    }
}

elementwise_layer!(Spline<F>, "spline");

#[cfg(test)]
mod tests {
    use super::{
        DERIVATIVE_OFFSET, MIN_BIN_HEIGHT, MIN_BIN_WIDTH, MIN_DERIVATIVE, Raw, Spline,
        bin_derivatives, derivative, for_each_bin, params_per_coordinate, rq_forward,
        rq_forward_backward, rq_inverse, rq_inverse_backward,
    };
    use crate::float::Float;
    use crate::layers::Elementwise;
    use crate::layers::Layer;
    use crate::workspace::Workspace;
    use ndarray::{Array1, Array2, ShapeBuilder, s};
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    const BINS: [usize; 4] = [1, 2, 5, 8];

    fn rng(seed: u64) -> StdRng {
        StdRng::seed_from_u64(seed)
    }

    /// Random raw parameters of one coordinate, of size ~`scale`.
    fn random_raw(bins: usize, scale: f64, r: &mut StdRng) -> Vec<f64> {
        (0..params_per_coordinate(bins))
            .map(|_| scale * f64::standard_normal(r))
            .collect()
    }

    /// A spline layer with random raw parameters (set through `visit_params_mut`).
    fn random_spline(dim: usize, bins: usize, bound: f64, r: &mut StdRng) -> Spline<f64> {
        let mut sp = Spline::new(dim, bins, bound);
        sp.visit_params_mut(&mut |_, _, v| v.iter_mut().for_each(|x| *x = f64::standard_normal(r)));
        sp
    }

    fn bits(v: &[f64]) -> Vec<u64> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
    }

    fn grad_close(g: f64, fd: f64) -> bool {
        (g - fd).abs() <= 1e-5 * g.abs().max(fd.abs()) + 1e-7
    }

    #[test]
    fn derivative_offset_gives_derivative_one_at_zero() {
        let c = ((1.0 - MIN_DERIVATIVE).exp() - 1.0).ln();
        assert!((DERIVATIVE_OFFSET - c).abs() <= f64::EPSILON);
        assert!((derivative(0.0f64) - 1.0).abs() <= 2.0 * f64::EPSILON);
        assert!((derivative(0.0f32) - 1.0).abs() <= 2.0 * f32::EPSILON);
        // Bounded below by MIN_DERIVATIVE.
        assert!(derivative(-1e4f64) >= MIN_DERIVATIVE);
    }

    #[test]
    fn zero_raw_parameters_are_the_identity_to_rounding() {
        for bins in BINS {
            for bound in [1.0, 3.0, 7.5] {
                let raw = vec![0.0f64; params_per_coordinate(bins)];
                let raw32 = vec![0.0f32; params_per_coordinate(bins)];
                for i in 0..=200 {
                    let x = -1.2 * bound + 2.4 * bound * i as f64 / 200.0;
                    let (y, l) = rq_forward(&raw, bound, x);
                    assert!(
                        (y - x).abs() <= 8.0 * f64::EPSILON * bound,
                        "{bins} {x}: {y}"
                    );
                    assert!(l.abs() <= 8.0 * f64::EPSILON, "{bins} {x}: {l}");
                    let (z, l) = rq_inverse(&raw, bound, x);
                    assert!(
                        (z - x).abs() <= 8.0 * f64::EPSILON * bound,
                        "{bins} {x}: {z}"
                    );
                    assert!(l.abs() <= 8.0 * f64::EPSILON);
                    let x32 = x as f32;
                    let (y, l) = rq_forward(&raw32, bound as f32, x32);
                    assert!((y - x32).abs() <= 8.0 * f32::EPSILON * bound as f32);
                    assert!(l.abs() <= 8.0 * f32::EPSILON);
                }
            }
        }
        // The fresh layer too.
        let sp: Spline<f64> = Spline::new(3, 6, 2.0);
        for x in [-2.5, -2.0, -0.3, 0.0, 1.1, 2.0, 4.0] {
            for j in 0..3 {
                let (y, l) = sp.forward(j, x);
                assert!((y - x).abs() <= 1e-15 && l.abs() <= 1e-15, "{x}: {y} {l}");
            }
        }
    }

    #[test]
    fn knots_are_increasing_and_span_the_bound() {
        let mut r = rng(1);
        for bins in BINS {
            for scale in [0.5, 3.0, 30.0] {
                let raw = random_raw(bins, scale, &mut r);
                let mut seen = 0;
                let mut last = (-3.0f64, -3.0f64);
                let split = Raw::split(&raw);
                for_each_bin(split, 3.0, |i, mut b| {
                    (b.d0, b.d1) = bin_derivatives(split, i);
                    assert_eq!(i, seen);
                    assert_eq!((b.x0, b.y0), last);
                    assert!(b.x1 - b.x0 >= 0.99 * 6.0 * MIN_BIN_WIDTH, "{bins} {scale}");
                    assert!(b.y1 - b.y0 >= 0.99 * 6.0 * MIN_BIN_HEIGHT);
                    assert!(b.d0 >= MIN_DERIVATIVE && b.d1 >= MIN_DERIVATIVE);
                    if i == 0 {
                        assert_eq!(b.d0, 1.0);
                    }
                    if i + 1 == bins {
                        assert_eq!((b.x1, b.y1, b.d1), (3.0, 3.0, 1.0));
                    }
                    last = (b.x1, b.y1);
                    seen += 1;
                });
                assert_eq!(seen, bins);
            }
        }
    }

    #[test]
    fn round_trips_both_ways_and_is_monotonic() {
        let mut r = rng(2);
        for bins in BINS {
            for _ in 0..20 {
                let raw = random_raw(bins, 1.5, &mut r);
                let bound = r.random_range(0.5..4.0);
                let mut prev = f64::NEG_INFINITY;
                for i in 0..=300 {
                    let x = -1.3 * bound + 2.6 * bound * i as f64 / 300.0;
                    let (y, l) = rq_forward(&raw, bound, x);
                    assert!(y > prev, "{bins}: not increasing at {x}");
                    prev = y;
                    let (back, li) = rq_inverse(&raw, bound, y);
                    // x = back up to the rounding of y, magnified by dx/dy.
                    let tol = 1e-14 * (1.0 + (-l).exp());
                    assert!(close(back, x, tol), "{bins} {x}: {back}, log-det {l}");
                    assert!(close(li, -l, 1e-9), "{bins} {x}: {li} vs {l}");
                    let (z, _) = rq_inverse(&raw, bound, x);
                    let (again, _) = rq_forward(&raw, bound, z);
                    // The quadratic's coefficients cancel in steep bins: ~1000 ulps.
                    assert!(close(again, x, 1e-12), "{bins} {x}: {again}");
                    if x.abs() > bound {
                        assert_eq!((y, l), (x, 0.0));
                    }
                }
            }
        }
    }

    #[test]
    fn forward_log_det_matches_finite_differences() {
        let mut r = rng(3);
        let h = 1e-6;
        for bins in BINS {
            for _ in 0..10 {
                let raw = random_raw(bins, 1.0, &mut r);
                for _ in 0..40 {
                    let x: f64 = r.random_range(-3.5..3.5);
                    let (_, l) = rq_forward(&raw, 3.0, x);
                    let fd = (rq_forward(&raw, 3.0, x + h).0 - rq_forward(&raw, 3.0, x - h).0)
                        / (2.0 * h);
                    assert!((l - fd.ln()).abs() < 1e-6, "{bins} {x}: {l} vs {}", fd.ln());
                    let (_, li) = rq_inverse(&raw, 3.0, x);
                    let fd = (rq_inverse(&raw, 3.0, x + h).0 - rq_inverse(&raw, 3.0, x - h).0)
                        / (2.0 * h);
                    assert!(
                        (li - fd.ln()).abs() < 1e-6,
                        "{bins} {x}: {li} vs {}",
                        fd.ln()
                    );
                }
            }
        }
    }

    #[test]
    fn boundary_derivatives_are_one_and_the_map_is_continuous_there() {
        let mut r = rng(4);
        for bins in BINS {
            let raw = random_raw(bins, 2.0, &mut r);
            for edge in [-2.0, 2.0] {
                let (y, l) = rq_forward(&raw, 2.0, edge);
                assert!(close(y, edge, 1e-15), "{bins}: {y}");
                assert!(l.abs() < 1e-12, "{bins}: {l}");
                let inside = edge * (1.0 - 1e-12);
                assert!(rq_forward(&raw, 2.0, inside).1.abs() < 1e-6, "{bins}");
            }
        }
    }

    /// `J(y, raw) = x̄·x + w·log|dx/dy|`.
    fn objective(raw: &[f64], bound: f64, y: f64, x_bar: f64, w: f64) -> f64 {
        let (x, l) = rq_inverse(raw, bound, y);
        x_bar * x + w * l
    }

    #[test]
    fn inverse_backward_matches_finite_differences() {
        let mut r = rng(5);
        let h = 1e-6;
        for bins in BINS {
            for _ in 0..15 {
                let mut raw = random_raw(bins, 1.0, &mut r);
                let bound = 2.5;
                for _ in 0..10 {
                    // Mostly inside, sometimes in the tails.
                    let y: f64 = r.random_range(-3.0..3.0);
                    let x_bar = f64::standard_normal(&mut r);
                    let w = r.random_range(-2.0..2.0);
                    let mut grad = vec![0.0; raw.len()];
                    let y_bar = rq_inverse_backward(&raw, bound, y, x_bar, w, &mut grad);
                    let fd = (objective(&raw, bound, y + h, x_bar, w)
                        - objective(&raw, bound, y - h, x_bar, w))
                        / (2.0 * h);
                    assert!(grad_close(y_bar, fd), "{bins} y={y}: {y_bar} vs {fd}");
                    for p in 0..raw.len() {
                        let v = raw[p];
                        raw[p] = v + h;
                        let up = objective(&raw, bound, y, x_bar, w);
                        raw[p] = v - h;
                        let down = objective(&raw, bound, y, x_bar, w);
                        raw[p] = v;
                        let fd = (up - down) / (2.0 * h);
                        assert!(
                            grad_close(grad[p], fd),
                            "{bins} y={y} ∂J/∂raw[{p}]: {} vs {fd}",
                            grad[p]
                        );
                    }
                    if y.abs() > bound {
                        assert_eq!(y_bar, x_bar);
                        assert!(grad.iter().all(|&g| g == 0.0));
                    }
                }
            }
        }
    }

    /// `J(x, raw) = ȳ·y + w·log|dy/dx|` of the forward.
    fn forward_objective(raw: &[f64], bound: f64, x: f64, y_bar: f64, w: f64) -> f64 {
        let (y, l) = rq_forward(raw, bound, x);
        y_bar * y + w * l
    }

    /// A point of `(−1.2B, 1.2B)` at least `4h` from every knot and from `±B` (so that a
    /// central difference of step `h` stays in one bin).
    fn point_off_the_knots(raw: &[f64], bound: f64, h: f64, r: &mut StdRng) -> f64 {
        let mut knots = vec![-bound, bound];
        for_each_bin(Raw::split(raw), bound, |_, b| knots.push(b.x1));
        loop {
            let x: f64 = r.random_range(-1.2 * bound..1.2 * bound);
            if knots.iter().all(|k| (x - k).abs() > 4.0 * h) {
                return x;
            }
        }
    }

    #[test]
    fn forward_backward_matches_finite_differences() {
        let mut r = rng(25);
        let h = 1e-6;
        let bound = 2.5;
        // Both sides of each stack-buffer size and above (the recomputing path).
        for bins in [1, 2, 5, 8, 17, 65] {
            for _ in 0..8 {
                let mut raw = random_raw(bins, 1.0, &mut r);
                for _ in 0..6 {
                    let x = point_off_the_knots(&raw, bound, h, &mut r);
                    let y_bar = f64::standard_normal(&mut r);
                    let w = r.random_range(-2.0..2.0);
                    let mut grad = vec![0.0; raw.len()];
                    let x_bar = rq_forward_backward(&raw, bound, x, y_bar, w, &mut grad);
                    let fd = (forward_objective(&raw, bound, x + h, y_bar, w)
                        - forward_objective(&raw, bound, x - h, y_bar, w))
                        / (2.0 * h);
                    assert!(grad_close(x_bar, fd), "{bins} x={x}: {x_bar} vs {fd}");
                    for p in 0..raw.len() {
                        let v = raw[p];
                        raw[p] = v + h;
                        let up = forward_objective(&raw, bound, x, y_bar, w);
                        raw[p] = v - h;
                        let down = forward_objective(&raw, bound, x, y_bar, w);
                        raw[p] = v;
                        let fd = (up - down) / (2.0 * h);
                        assert!(
                            grad_close(grad[p], fd),
                            "{bins} x={x} ∂J/∂raw[{p}]: {} vs {fd}",
                            grad[p]
                        );
                    }
                    if x.abs() > bound {
                        assert_eq!(x_bar, y_bar);
                        assert!(grad.iter().all(|&g| g == 0.0));
                    }
                }
            }
        }
    }

    #[test]
    fn forward_backward_adds_and_rejects_non_finite_input() {
        let mut r = rng(26);
        let raw = random_raw(5, 1.0, &mut r);
        let mut fresh = vec![0.0; raw.len()];
        let g = rq_forward_backward(&raw, 2.0, 0.3, 0.7, -1.1, &mut fresh);
        let start: Vec<f64> = (0..raw.len()).map(|_| r.random_range(-3.0..3.0)).collect();
        let mut acc = start.clone();
        assert_eq!(rq_forward_backward(&raw, 2.0, 0.3, 0.7, -1.1, &mut acc), g);
        for ((a, s), f) in acc.iter().zip(&start).zip(&fresh) {
            assert!(close(*a, s + f, 1e-14));
        }
        assert!(fresh.iter().filter(|&&g| g != 0.0).count() > 3);
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut pg = start.clone();
            assert!(rq_forward_backward(&raw, 2.0, bad, 1.0, 1.0, &mut pg).is_nan());
            assert_eq!(pg, start);
        }
        // Extreme finite inputs (the bounds, the tails, huge values) stay finite.
        for scale in [1.0, 1e2] {
            let raw = random_raw(5, scale, &mut r);
            for x in [-1e300, -2.0, -1.999_999, 0.0, 1.999_999, 2.0, 1e300] {
                let mut pg = vec![0.0; raw.len()];
                let g = rq_forward_backward(&raw, 2.0, x, 0.5, 1.0, &mut pg);
                assert!(g.is_finite() && pg.iter().all(|v| v.is_finite()), "{x}");
            }
        }
    }

    /// The knots `(x_k, y_k)`, `k = 0..=K`, computed independently of [`for_each_bin`]:
    /// each exponential recomputed where used, sums in order (the formula of the module
    /// docs, in the operation order the kernels promise).
    fn reference_knots(raw: &[f64], bound: f64) -> Vec<(f64, f64)> {
        let raw = Raw::split(raw);
        let k = raw.widths.len();
        let stats = |v: &[f64]| {
            let max = v.iter().fold(f64::NEG_INFINITY, |m, &r| m.max(r));
            let sum: f64 = v
                .iter()
                .fold(0.0, |s, &r| s + crate::fastmath::exp(r - max));
            (max, 1.0 / sum)
        };
        let ((max_w, inv_w), (max_h, inv_h)) = (stats(raw.widths), stats(raw.heights));
        let scale_w = 1.0 - k as f64 * MIN_BIN_WIDTH;
        let scale_h = 1.0 - k as f64 * MIN_BIN_HEIGHT;
        let (mut cw, mut ch) = (0.0, 0.0);
        let mut knots = vec![(-bound, -bound)];
        for i in 0..k {
            cw += MIN_BIN_WIDTH + scale_w * (crate::fastmath::exp(raw.widths[i] - max_w) * inv_w);
            ch += MIN_BIN_HEIGHT + scale_h * (crate::fastmath::exp(raw.heights[i] - max_h) * inv_h);
            knots.push(if i + 1 == k {
                (bound, bound)
            } else {
                (-bound + 2.0 * bound * cw, -bound + 2.0 * bound * ch)
            });
        }
        knots
    }

    /// Bin counts on both sides of each stack-buffer size (16, 64) and above the largest
    /// (the recomputing path): the same knots bit for bit, round trips, and the backward
    /// against finite differences.
    #[test]
    fn every_buffer_size_gives_the_same_knots_and_correct_gradients() {
        let mut r = rng(15);
        let h = 1e-6;
        let bound = 2.5;
        for bins in [1, 8, 16, 17, 40, 64, 65, 100] {
            let mut raw = random_raw(bins, 1.0, &mut r);
            let mut knots = vec![(0.0, 0.0); bins + 1];
            for_each_bin(Raw::split(&raw), bound, |i, b| {
                (knots[i], knots[i + 1]) = ((b.x0, b.y0), (b.x1, b.y1));
            });
            let want = reference_knots(&raw, bound);
            for (a, b) in knots.iter().zip(&want) {
                assert_eq!(
                    (a.0.to_bits(), a.1.to_bits()),
                    (b.0.to_bits(), b.1.to_bits())
                );
            }
            for _ in 0..3 {
                let y: f64 = r.random_range(-2.4..2.4);
                let (x, l) = rq_inverse(&raw, bound, y);
                let (y2, l2) = rq_forward(&raw, bound, x);
                assert!(
                    close(y2, y, 1e-9) && close(l, -l2, 1e-9),
                    "{bins}: {y} {y2}"
                );
                let (x_bar, w) = (r.random_range(-1.0..1.0), r.random_range(-2.0..2.0));
                let mut grad = vec![0.0; raw.len()];
                let y_bar = rq_inverse_backward(&raw, bound, y, x_bar, w, &mut grad);
                let fd = (objective(&raw, bound, y + h, x_bar, w)
                    - objective(&raw, bound, y - h, x_bar, w))
                    / (2.0 * h);
                assert!(grad_close(y_bar, fd), "{bins} y={y}: {y_bar} vs {fd}");
                for p in 0..raw.len() {
                    let v = raw[p];
                    raw[p] = v + h;
                    let up = objective(&raw, bound, y, x_bar, w);
                    raw[p] = v - h;
                    let down = objective(&raw, bound, y, x_bar, w);
                    raw[p] = v;
                    let fd = (up - down) / (2.0 * h);
                    assert!(
                        grad_close(grad[p], fd),
                        "{bins} ∂J/∂raw[{p}]: {} vs {fd}",
                        grad[p]
                    );
                }
            }
        }
    }

    #[test]
    fn inverse_backward_adds_and_rejects_non_finite_input() {
        let mut r = rng(6);
        let raw = random_raw(5, 1.0, &mut r);
        let mut fresh = vec![0.0; raw.len()];
        let g = rq_inverse_backward(&raw, 2.0, 0.3, 0.7, -1.1, &mut fresh);
        let start: Vec<f64> = (0..raw.len()).map(|_| r.random_range(-3.0..3.0)).collect();
        let mut acc = start.clone();
        assert_eq!(rq_inverse_backward(&raw, 2.0, 0.3, 0.7, -1.1, &mut acc), g);
        for ((a, s), f) in acc.iter().zip(&start).zip(&fresh) {
            assert!(close(*a, s + f, 1e-14));
        }
        assert!(fresh.iter().filter(|&&g| g != 0.0).count() > 3);
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut pg = start.clone();
            assert!(rq_inverse_backward(&raw, 2.0, bad, 1.0, 1.0, &mut pg).is_nan());
            assert_eq!(pg, start);
        }
    }

    #[test]
    fn extreme_inputs_and_huge_raw_parameters_stay_finite() {
        let mut r = rng(7);
        let ys = [
            -1e300, -1e10, -2.0, -1.999_999, -1.0, -1e-300, 0.0, 0.5, 1.999_999, 2.0, 1e300,
        ];
        for bins in BINS {
            for scale in [1.0, 1e2, 1e4, 1e30] {
                let raw = random_raw(bins, scale, &mut r);
                for &v in &ys {
                    let (y, l) = rq_forward(&raw, 2.0, v);
                    assert!(
                        y.is_finite() && l.is_finite(),
                        "{bins} {scale} {v}: {y} {l}"
                    );
                    let (x, l) = rq_inverse(&raw, 2.0, v);
                    assert!(
                        x.is_finite() && l.is_finite(),
                        "{bins} {scale} {v}: {x} {l}"
                    );
                    let mut pg = vec![0.0; raw.len()];
                    let g = rq_inverse_backward(&raw, 2.0, v, 0.5, 1.0, &mut pg);
                    if scale <= 1e4 {
                        assert!(g.is_finite(), "{bins} {scale} {v}: {g}");
                        assert!(pg.iter().all(|g| g.is_finite()), "{bins} {scale} {v}");
                    }
                    if !(v as f32).is_finite() {
                        continue;
                    }
                    let raw32: Vec<f32> = raw.iter().map(|&v| v as f32).collect();
                    let (y, l) = rq_forward(&raw32, 2.0, v as f32);
                    assert!(y.is_finite() && l.is_finite(), "f32 {bins} {scale} {v}");
                    let (x, l) = rq_inverse(&raw32, 2.0, v as f32);
                    assert!(x.is_finite() && l.is_finite(), "f32 {bins} {scale} {v}");
                }
            }
        }
        // Non-finite values: NaN stays NaN, ±∞ pass through the forward, the inverse
        // rejects them.
        let raw = random_raw(4, 1.0, &mut r);
        assert!(rq_forward(&raw, 2.0, f64::NAN).0.is_nan());
        assert_eq!(rq_forward(&raw, 2.0, f64::INFINITY), (f64::INFINITY, 0.0));
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let (x, l) = rq_inverse(&raw, 2.0, bad);
            assert!(x.is_nan() && l == f64::NEG_INFINITY);
        }
    }

    #[test]
    #[should_panic(expected = "expected 3·bins − 1")]
    fn rejects_a_raw_slice_of_the_wrong_length() {
        rq_forward(&[0.0f64; 4], 1.0, 0.0);
    }

    // ----- the layer ---------------------------------------------------------------

    #[test]
    fn cached_kernels_equal_the_slice_kernels_bit_for_bit() {
        let mut r = rng(10);
        for bins in BINS {
            let sp = random_spline(4, bins, 2.0, &mut r);
            for j in 0..4 {
                let raw = sp.raw_params(j);
                for _ in 0..200 {
                    let v: f64 = r.random_range(-2.5..2.5);
                    let a = sp.forward(j, v);
                    let b = rq_forward(&raw, 2.0, v);
                    assert_eq!(
                        (a.0.to_bits(), a.1.to_bits()),
                        (b.0.to_bits(), b.1.to_bits())
                    );
                    let a = sp.inverse(j, v);
                    let b = rq_inverse(&raw, 2.0, v);
                    assert_eq!(
                        (a.0.to_bits(), a.1.to_bits()),
                        (b.0.to_bits(), b.1.to_bits())
                    );
                    // The layer's forward backward: the slice kernel's bits, at row j.
                    let (y_bar, w) = (r.random_range(-1.0..1.0), r.random_range(-1.0..1.0));
                    let mut pg = vec![0.0; sp.param_len()];
                    let a = sp.forward_backward(j, v, y_bar, w, &mut pg);
                    let mut raw_grad = vec![0.0; raw.len()];
                    let b = rq_forward_backward(&raw, 2.0, v, y_bar, w, &mut raw_grad);
                    assert_eq!(a.to_bits(), b.to_bits());
                    let (k, m) = (bins, 4 * bins);
                    let rows = [
                        &pg[j * k..(j + 1) * k],
                        &pg[m + j * k..m + (j + 1) * k],
                        &pg[2 * m + j * (k - 1)..2 * m + (j + 1) * (k - 1)],
                    ]
                    .concat();
                    assert_eq!(bits(&rows), bits(&raw_grad));
                    assert_eq!(pg.iter().filter(|&&g| g != 0.0).count(), {
                        raw_grad.iter().filter(|&&g| g != 0.0).count()
                    });
                }
            }
        }
    }

    #[test]
    fn new_layer_accessors_and_kind() {
        let sp: Spline<f64> = Spline::new(3, 7, 4.5);
        assert_eq!((sp.dim(), sp.bins(), sp.bound()), (3, 7, 4.5));
        assert_eq!(Layer::<f64>::kind(&sp), "spline");
        assert_eq!(Layer::<f64>::param_len(&sp), 3 * 7 + 3 * 7 + 3 * 6);
        assert_eq!(Layer::<f64>::point_scratch(&sp), 0);
    }

    #[test]
    #[should_panic(expected = "bins = 0")]
    fn rejects_zero_bins() {
        let _: Spline<f64> = Spline::new(2, 0, 1.0);
    }

    #[test]
    #[should_panic(expected = "bound = -1")]
    fn rejects_a_negative_bound() {
        let _: Spline<f64> = Spline::new(2, 3, -1.0);
    }

    #[test]
    fn params_are_visited_in_layout_order_and_mutation_refreshes_the_knots() {
        let mut r = rng(11);
        let mut sp = random_spline(3, 4, 2.0, &mut r);
        let mut seen = Vec::new();
        sp.visit_params(&mut |name, shape, v| {
            assert_eq!(shape.iter().product::<usize>(), v.len());
            seen.push((name.to_string(), shape.to_vec()));
        });
        let expected = [
            ("widths", vec![3, 4]),
            ("heights", vec![3, 4]),
            ("derivatives", vec![3, 3]),
        ]
        .map(|(n, s)| (n.to_string(), s));
        assert_eq!(seen, expected);
        // Write 0, 1, 2, … (scaled) in layout order; each coordinate's raw slice follows.
        let mut k = 0.0;
        sp.visit_params_mut(&mut |_, _, v| {
            for x in v {
                *x = 0.01 * k;
                k += 1.0;
            }
        });
        let raw1 = sp.raw_params(1);
        let expected: Vec<f64> = [4..8, 16..20, 27..30]
            .into_iter()
            .flatten()
            .map(|i| 0.01 * i as f64)
            .collect();
        assert_eq!(raw1, expected);
        // The cache follows the new values.
        for v in [-1.9, -0.4, 0.0, 0.7, 1.95] {
            assert_eq!(sp.forward(1, v), rq_forward(&raw1, 2.0, v));
        }
        // Back to zero: the identity again.
        sp.visit_params_mut(&mut |_, _, v| v.iter_mut().for_each(|x| *x = 0.0));
        assert_eq!(sp, Spline::new(3, 4, 2.0));
    }

    fn block(sp: &Spline<f64>, x: &Array2<f64>, inverse: bool) -> (Array2<f64>, Array1<f64>) {
        let mut y = x.clone();
        let mut ld = Array1::zeros(x.nrows());
        let ws = &mut Workspace::default();
        if inverse {
            sp.inverse_block(y.view_mut(), ld.view_mut(), ws);
        } else {
            sp.forward_block(y.view_mut(), ld.view_mut(), ws);
        }
        (y, ld)
    }

    #[test]
    fn block_point_and_kernels_agree_and_round_trip() {
        let mut r = rng(12);
        for bins in BINS {
            let sp = random_spline(5, bins, 1.5, &mut r);
            let x = Array2::from_shape_simple_fn((37, 5), || r.random_range(-2.0..2.0));
            let (y, ld) = block(&sp, &x, false);
            let (back, ld_back) = block(&sp, &y, true);
            for (a, b) in back.iter().zip(&x) {
                assert!(close(*a, *b, 1e-12), "{a} vs {b}");
            }
            for (a, b) in ld.iter().zip(&ld_back) {
                assert!(close(*a, -*b, 1e-9), "{a} vs {b}");
            }
            let mut scratch = [];
            for i in 0..37 {
                let mut p = x.row(i).to_vec();
                let pl = sp.forward_point(&mut p, &mut scratch);
                assert_eq!((&p[..], pl), (&y.row(i).to_vec()[..], ld[i]));
                // Log-det against finite differences of the whole map.
                let fd = crate::testing::log_abs_det_fd(
                    |q| {
                        let mut q = q.to_vec();
                        sp.forward_point(&mut q, &mut []);
                        q
                    },
                    x.row(i).as_slice().unwrap(),
                );
                assert!(
                    (ld[i] - fd).abs() < 1e-6 * fd.abs().max(1.0),
                    "{} vs {fd}",
                    ld[i]
                );
            }
            // Log-dets are added to what is there.
            let mut z = x.clone();
            let mut acc = Array1::from_elem(37, 2.5);
            sp.forward_block(z.view_mut(), acc.view_mut(), &mut Workspace::default());
            for (a, l) in acc.iter().zip(&ld) {
                assert_eq!(*a, 2.5 + l);
            }
        }
    }

    #[test]
    fn big_block_equals_blocks_of_256_and_views_work() {
        let mut r = rng(13);
        let sp = random_spline(6, 5, 2.0, &mut r);
        let x = Array2::from_shape_simple_fn((1000, 6), || r.random_range(-2.5..2.5));
        for inverse in [false, true] {
            let (whole, ld_whole) = block(&sp, &x, inverse);
            let mut pieces = x.clone();
            let mut ld = Array1::zeros(1000);
            for start in (0..1000).step_by(256) {
                let end = (start + 256).min(1000);
                let (b, l) = (
                    pieces.slice_mut(s![start..end, ..]),
                    ld.slice_mut(s![start..end]),
                );
                if inverse {
                    sp.inverse_block(b, l, &mut Workspace::default());
                } else {
                    sp.forward_block(b, l, &mut Workspace::default());
                }
            }
            assert_eq!(pieces, whole);
            assert_eq!(ld, ld_whole);
            // Column-major and strided views.
            let mut fortran = Array2::zeros((1000, 6).f());
            fortran.assign(&x);
            let mut ld_f = Array1::zeros(1000);
            if inverse {
                sp.inverse_block(
                    fortran.view_mut(),
                    ld_f.view_mut(),
                    &mut Workspace::default(),
                );
            } else {
                sp.forward_block(
                    fortran.view_mut(),
                    ld_f.view_mut(),
                    &mut Workspace::default(),
                );
            }
            assert_eq!(fortran, whole);
            assert_eq!(ld_f, ld_whole);
        }
    }

    #[test]
    fn non_finite_entries_stay_in_their_row() {
        let mut r = rng(14);
        let sp = random_spline(3, 4, 2.0, &mut r);
        let y = Array2::from_shape_simple_fn((20, 3), || r.random_range(-2.5..2.5));
        let mut bad = y.clone();
        bad[[4, 1]] = f64::NAN;
        bad[[9, 0]] = f64::INFINITY;
        let (x, ld) = block(&sp, &y, true);
        let (xb, ldb) = block(&sp, &bad, true);
        for i in 0..20 {
            if i == 4 || i == 9 {
                assert_eq!(ldb[i], f64::NEG_INFINITY);
            } else {
                assert_eq!(xb.row(i), x.row(i));
                assert_eq!(ldb[i], ld[i]);
            }
        }
    }

    #[test]
    fn layer_backward_matches_finite_differences_and_adds() {
        check_layer_backward(true, 15);
    }

    #[test]
    fn layer_forward_backward_matches_finite_differences_and_adds() {
        check_layer_backward(false, 27);
    }

    /// `inverse_backward_block` (or `forward_backward_block` unless `inverse`) of the layer
    /// against central differences of its block objective, at points inside and outside
    /// `[−B, B]`, in the input and in every flat parameter; and it adds to `param_grad`.
    fn check_layer_backward(inverse: bool, seed: u64) {
        let mut r = rng(seed);
        let h = 1e-6;
        for bins in BINS {
            let mut sp = random_spline(3, bins, 1.5, &mut r);
            let y = Array2::from_shape_simple_fn((6, 3), || r.random_range(-2.0..2.0));
            let x_bar = Array2::from_shape_simple_fn((6, 3), || f64::standard_normal(&mut r));
            let w = Array1::from_shape_simple_fn(6, || r.random_range(-2.0..2.0));
            let objective = |sp: &Spline<f64>, y: &Array2<f64>| {
                let (x, ld) = block(sp, y, inverse);
                (x * &x_bar).sum() + ld.dot(&w)
            };
            let run = |sp: &Spline<f64>, pg: &mut [f64]| {
                let mut grad = x_bar.clone();
                let (g, ws) = (grad.view_mut(), &mut Workspace::default());
                if inverse {
                    sp.inverse_backward_block(y.view(), g, w.view(), pg, ws);
                } else {
                    sp.forward_backward_block(y.view(), g, w.view(), pg, ws);
                }
                grad
            };
            let mut pg = vec![0.0; sp.param_len()];
            let grad = run(&sp, &mut pg);
            for i in 0..6 {
                for j in 0..3 {
                    let (mut up, mut down) = (y.clone(), y.clone());
                    up[[i, j]] += h;
                    down[[i, j]] -= h;
                    let fd = (objective(&sp, &up) - objective(&sp, &down)) / (2.0 * h);
                    assert!(
                        grad_close(grad[[i, j]], fd),
                        "{bins} inverse {inverse} ∂J/∂v: {} vs {fd}",
                        grad[[i, j]]
                    );
                }
            }
            let n = sp.param_len();
            let flat = |sp: &Spline<f64>| {
                let mut out = Vec::new();
                sp.visit_params(&mut |_, _, v| out.extend_from_slice(v));
                out
            };
            let set = |sp: &mut Spline<f64>, p: usize, value: f64| {
                let mut offset = 0;
                sp.visit_params_mut(&mut |_, _, v| {
                    if (offset..offset + v.len()).contains(&p) {
                        v[p - offset] = value;
                    }
                    offset += v.len();
                });
            };
            for (p, v) in flat(&sp).into_iter().enumerate().take(n) {
                set(&mut sp, p, v + h);
                let up = objective(&sp, &y);
                set(&mut sp, p, v - h);
                let down = objective(&sp, &y);
                set(&mut sp, p, v);
                let fd = (up - down) / (2.0 * h);
                assert!(
                    grad_close(pg[p], fd),
                    "{bins} ∂J/∂θ[{p}]: {} vs {fd}",
                    pg[p]
                );
            }
            // Adds to what is in param_grad.
            let start: Vec<f64> = (0..n).map(|_| r.random_range(-3.0..3.0)).collect();
            let mut acc = start.clone();
            assert_eq!(run(&sp, &mut acc), grad);
            for ((a, s), f) in acc.iter().zip(&start).zip(&pg) {
                assert!(close(*a, s + f, 1e-13));
            }
        }
    }

    #[test]
    fn works_in_f32() {
        let mut r = rng(16);
        let sp64 = random_spline(4, 6, 2.0, &mut r);
        let mut sp32: Spline<f32> = Spline::new(4, 6, 2.0);
        let mut flat = Vec::new();
        sp64.visit_params(&mut |_, _, v| flat.extend_from_slice(v));
        let mut it = flat.iter();
        sp32.visit_params_mut(&mut |_, _, v| {
            v.iter_mut().for_each(|x| *x = *it.next().unwrap() as f32)
        });
        let x = Array2::from_shape_simple_fn((50, 4), || r.random_range(-2.5..2.5));
        let (y, ld) = block(&sp64, &x, false);
        let mut y32 = x.mapv(|v| v as f32);
        let mut ld32 = Array1::<f32>::zeros(50);
        sp32.forward_block(y32.view_mut(), ld32.view_mut(), &mut Workspace::default());
        for (a, b) in y32.iter().zip(&y) {
            assert!(close(*a as f64, *b, 1e-5), "{a} vs {b}");
        }
        for (a, b) in ld32.iter().zip(&ld) {
            assert!((*a as f64 - b).abs() < 1e-4, "{a} vs {b}");
        }
        let mut back = y32.clone();
        sp32.inverse_block(
            back.view_mut(),
            Array1::zeros(50).view_mut(),
            &mut Workspace::default(),
        );
        for (a, b) in back.iter().zip(&x) {
            assert!(close(*a as f64, *b, 1e-4), "{a} vs {b}");
        }
        let mut pg = vec![0f32; sp32.param_len()];
        let mut g = y32.mapv(|_| 1.0f32);
        sp32.inverse_backward_block(
            y32.view(),
            g.view_mut(),
            Array1::from_elem(50, 1.0f32).view(),
            &mut pg,
            &mut Workspace::default(),
        );
        assert!(g.iter().chain(&pg).all(|v| v.is_finite()));
    }
}
