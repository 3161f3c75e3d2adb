//! Branch-free `exp`, `expm1`, `ln`, `ln_1p`, `tanh` and `softplus` for `f32` and `f64`,
//! written so that loops calling them vectorise.
//!
//! The elementwise kernels call these instead of the platform's libm: a libm call is
//! opaque to the optimiser, so a loop containing one runs one element at a time, and the
//! fused loops of [`crate::layers::map_rows`] chain a dozen of them per element. Each
//! function here is straight-line arithmetic on the value and its bits (Cody–Waite range
//! reduction by `ln 2` and a polynomial for the exponentials; exponent extraction and a
//! rational approximation of `log1p` on `[√½ − 1, √2 − 1]` for the logarithms, the
//! scheme of fdlibm/musl), with no table lookups, no calls and no branches: special
//! inputs are handled by selects, so a loop over independent elements compiles to SIMD.
//!
//! Special values follow IEEE/libm: `exp` overflows to `+∞` and underflows gradually to
//! `0`; `expm1(−∞) = −1`; `ln(0) = −∞`, `ln(x < 0) = NaN`, `ln(+∞) = +∞`;
//! `ln_1p(−1) = −∞`; `tanh` saturates to exactly `±1` and keeps the sign of zero;
//! `softplus(−∞) = 0`, `softplus(+∞) = +∞`; NaN gives NaN everywhere.
//!
//! # Accuracy
//!
//! Largest error in ulps, measured by the ignored test `accuracy_table` (`FASTMATH_STRIDE=1
//! cargo test --release -p flow-runtime --lib accuracy_table -- --ignored --nocapture`, ~11
//! minutes): for `f32`, over every one of the 2³² inputs, against the
//! `f64` libm value (so: ulps of the exact result); for `f64`, over 10⁷ inputs per function
//! (dense sweeps of the interesting ranges, inputs near 0 on a log scale and random bit
//! patterns of every magnitude) against the platform libm (glibc), so integral, and off by
//! up to libm's own error (≤ 1 ulp) from the exact result.
//!
//! | function | `f32`, all inputs | `f64`, vs libm |
//! |---|---|---|
//! | `exp` | 0.99 | 1 |
//! | `exp_m1` | 1.36 | 2 |
//! | `ln` | 0.89 | 1 |
//! | `ln_1p` | 0.94 | 1 |
//! | `tanh` | 1.99 | 3 |
//! | `softplus` | 1.70 | 2 |
//!
//! The kernels' pairs (2·10⁵ random `f32` inputs, test `variants_and_pairs`):
//! [`atanh_with_log_det`] 1.34 ulps for the value and 1.47 ulps of `max(|x|, |log-det|)` for
//! the log-det; [`tanh_with_log_det`] 1.91 ulps for the value and 1.79 ulps of
//! `max(1, |log-det|)` for the log-det. [`ln_1p_in_domain`] and [`ln_two_sum_normal`] return
//! exactly what [`ln_1p`] and [`ln_two_sum`] do inside their domains. Subnormal results of
//! `exp` are within one subnormal step. The fast tests of this module check samples of the
//! same sweeps (and random bit patterns, by proptest) against these bounds.
//!
//! The generic entry points (`exp::<F>` …) dispatch at compile time on [`Float::NAME`];
//! a [`Float`] other than `f32`/`f64` is computed in `f64` and converted.

use crate::float::Float;

/// `f32` and `f64` implementations of the functions of this module, as methods.
pub trait FastMath: Copy {
    /// `eˣ`.
    fn fast_exp(self) -> Self;
    /// `eˣ − 1`, accurate near 0.
    fn fast_exp_m1(self) -> Self;
    /// The natural logarithm.
    fn fast_ln(self) -> Self;
    /// `ln(1 + x)`, accurate near 0.
    fn fast_ln_1p(self) -> Self;
    /// `ln(hi + lo)` of an unevaluated sum with `|lo| ≤ ulp(hi)` (e.g. the rounded value
    /// and the error of an exact two-sum).
    fn fast_ln_two_sum(self, lo: Self) -> Self;
    /// The hyperbolic tangent.
    fn fast_tanh(self) -> Self;
    /// `ln(1 + eˣ)`, without overflow.
    fn fast_softplus(self) -> Self;
}

macro_rules! fast_math_impl {
    ($t:ty, $imp:ident) => {
        impl FastMath for $t {
            #[inline(always)]
            fn fast_exp(self) -> Self {
                $imp::exp(self)
            }
            #[inline(always)]
            fn fast_exp_m1(self) -> Self {
                $imp::exp_m1(self)
            }
            #[inline(always)]
            fn fast_ln(self) -> Self {
                $imp::ln(self)
            }
            #[inline(always)]
            fn fast_ln_1p(self) -> Self {
                $imp::ln_1p(self)
            }
            #[inline(always)]
            fn fast_ln_two_sum(self, lo: Self) -> Self {
                $imp::ln_two_sum(self, lo)
            }
            #[inline(always)]
            fn fast_tanh(self) -> Self {
                $imp::tanh(self)
            }
            #[inline(always)]
            fn fast_softplus(self) -> Self {
                $imp::softplus(self)
            }
        }
    };
}

fast_math_impl!(f32, imp32);
fast_math_impl!(f64, imp64);

/// Whether `F::NAME` is `name` (evaluated at compile time).
const fn is_named<F: Float>(name: &str) -> bool {
    let (a, b) = (F::NAME.as_bytes(), name.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Runs the `f32` or the `f64` implementation on `x` as `F`. For `F = f32` the widening
/// and narrowing conversions cancel (the optimiser removes them).
#[inline(always)]
fn via<F: Float>(x: F, on_f32: impl Fn(f32) -> f32, on_f64: impl Fn(f64) -> f64) -> F {
    if const { is_named::<F>("f32") } {
        F::of(f64::from(on_f32(x.to_f64_lossless() as f32)))
    } else {
        F::of(on_f64(x.to_f64_lossless()))
    }
}

/// `eˣ`: `+∞` above `ln(MAX)`, gradual underflow to `0`.
#[inline(always)]
pub fn exp<F: Float>(x: F) -> F {
    via(x, imp32::exp, imp64::exp)
}

/// `eˣ − 1`, accurate near 0; `−1` below about `−17` (`f32`) / `−37` (`f64`).
#[inline(always)]
pub fn exp_m1<F: Float>(x: F) -> F {
    via(x, imp32::exp_m1, imp64::exp_m1)
}

/// `ln x`: `−∞` at `±0`, NaN below 0, `+∞` at `+∞`.
#[inline(always)]
pub fn ln<F: Float>(x: F) -> F {
    via(x, imp32::ln, imp64::ln)
}

/// `ln(1 + x)`, accurate near 0: `−∞` at `−1`, NaN below `−1`, keeps the sign of zero.
#[inline(always)]
pub fn ln_1p<F: Float>(x: F) -> F {
    via(x, imp32::ln_1p, imp64::ln_1p)
}

/// `ln(hi + lo)` of an unevaluated sum with `|lo| ≤ ulp(hi)`: as accurate as the sum is,
/// e.g. `ln_two_sum(u, c)` with `u = 1 + x` rounded and `c` its exact rounding error is
/// `ln_1p(x)`. Special values follow `ln(hi)`.
#[inline(always)]
pub fn ln_two_sum<F: Float>(hi: F, lo: F) -> F {
    via2(hi, lo, imp32::ln_two_sum, imp64::ln_two_sum)
}

/// [`ln_1p`] for finite `x > −1` only, without the special cases: cheaper inside loops
/// whose arguments are known to be in range. NaN and `+∞` give NaN; `x ≤ −1` gives an
/// unspecified value (no panic).
#[inline(always)]
pub fn ln_1p_in_domain<F: Float>(x: F) -> F {
    via(x, imp32::ln_1p_in_domain, imp64::ln_1p_in_domain)
}

/// [`ln_two_sum`] for a positive, normal, finite `hi` only, without the special cases.
/// NaN gives NaN; other arguments outside that range give an unspecified value (no panic).
#[inline(always)]
pub fn ln_two_sum_normal<F: Float>(hi: F, lo: F) -> F {
    via2(hi, lo, imp32::ln_two_sum_normal, imp64::ln_two_sum_normal)
}

/// [`via`] for functions of two arguments.
#[inline(always)]
fn via2<F: Float>(
    a: F,
    b: F,
    on_f32: impl Fn(f32, f32) -> f32,
    on_f64: impl Fn(f64, f64) -> f64,
) -> F {
    if const { is_named::<F>("f32") } {
        let (a, b) = (a.to_f64_lossless() as f32, b.to_f64_lossless() as f32);
        F::of(f64::from(on_f32(a, b)))
    } else {
        F::of(on_f64(a.to_f64_lossless(), b.to_f64_lossless()))
    }
}

/// `tanh x`, exactly `±1` where the true value rounds there; keeps the sign of zero.
#[inline(always)]
pub fn tanh<F: Float>(x: F) -> F {
    via(x, imp32::tanh, imp64::tanh)
}

/// `(tanh x, ln(1 − tanh² x))`, the value and log-derivative of the tanh layer, from one
/// exponential `e = e^{−2|x|}`: `((1 − e)/(1 + e), 2(ln 2 − |x| − ln(1 + e)))`. The log is
/// finite for every finite `x` (no `1 − tanh²` cancellation) and `−∞` at `±∞`.
#[inline(always)]
pub fn tanh_with_log_det<F: Float>(x: F) -> (F, F) {
    via_pair(x, imp32::tanh_with_log_det, imp64::tanh_with_log_det)
}

/// `(atanh x, −ln(1 − x²))`, the value and log-derivative of the inverse of tanh, for
/// `|x| < 1` (NaN gives NaN; other inputs give unspecified values, no panic), from the two
/// logarithms `ln(1 + |x|)` and `ln(1 − |x|)` (each of an exact two-term sum):
/// `atanh = ½(ln(1 + |x|) − ln(1 − |x|))` with the sign of `x`, accurate to a few ulps
/// relative; the log-det `−(ln(1 + |x|) + ln(1 − |x|))` to a few ulps of `max(|x|, its
/// value)` (it is `≈ x²` near 0, where the two logs cancel).
#[inline(always)]
pub fn atanh_with_log_det<F: Float>(x: F) -> (F, F) {
    via_pair(x, imp32::atanh_with_log_det, imp64::atanh_with_log_det)
}

/// [`via`] for functions returning a pair.
#[inline(always)]
fn via_pair<F: Float>(
    x: F,
    on_f32: impl Fn(f32) -> (f32, f32),
    on_f64: impl Fn(f64) -> (f64, f64),
) -> (F, F) {
    if const { is_named::<F>("f32") } {
        let (a, b) = on_f32(x.to_f64_lossless() as f32);
        (F::of(f64::from(a)), F::of(f64::from(b)))
    } else {
        let (a, b) = on_f64(x.to_f64_lossless());
        (F::of(a), F::of(b))
    }
}

/// `ln(1 + eˣ)`: `max(x, 0) + ln_1p(e^{−|x|})`, so nothing overflows.
#[inline(always)]
pub fn softplus<F: Float>(x: F) -> F {
    via(x, imp32::softplus, imp64::softplus)
}

/// The shared structure of the two implementations, instantiated with each type's
/// constants, integer type and polynomials.
macro_rules! implementation {
    (
        mod $imp:ident: $t:ty, bits $u:ty;
        mantissa $mant:expr, bias $bias:expr;
        shift $shift:expr;
        ln2 $ln2_hi:expr, $ln2_lo:expr, bits $ln2_bits:expr;
        exp range $exp_lo:expr, $exp_hi:expr;
        expm1 low $expm1_lo:expr, tiny $tiny:expr;
        subnormal scale $sub_scale:expr, $sub_k:expr;
        sqrt_half_bits $sqrt_half:expr;
        exp_reduced $exp_reduced:item
        expm1_reduced $expm1_reduced:item
        log1p_tail $log1p_tail:item
    ) => {
        #[allow(clippy::excessive_precision, clippy::unreadable_literal)]
        pub(crate) mod $imp {
            /// `a` where `c`, else `b` (a select once vectorised).
            #[inline(always)]
            fn pick(c: bool, a: $t, b: $t) -> $t {
                if c { a } else { b }
            }

            /// `2^k` for `k` in the normal exponent range.
            #[inline(always)]
            fn pow2i(k: i32) -> $t {
                <$t>::from_bits(((k.wrapping_add($bias) as u32) as $u) << $mant)
            }

            /// `x = k·ln 2 + r` with `k` the nearest integer to `x·log₂e` and
            /// `|r| ≲ ½ ln 2` (Cody–Waite: `k·LN2_HI` is exact). `|x|` must be below
            /// `2^(mantissa − 2)·ln 2`.
            #[inline(always)]
            fn reduce(x: $t) -> (i32, $t) {
                const SHIFT: $t = $shift;
                let t = x * core::f64::consts::LOG2_E as $t + SHIFT;
                let kf = t - SHIFT;
                // `t = SHIFT + k` exactly, so its low bits hold `k`.
                let k = (t.to_bits().wrapping_sub(SHIFT.to_bits())) as i32;
                let r = (x - kf * $ln2_hi) - kf * $ln2_lo;
                (k, r)
            }

            $exp_reduced
            $expm1_reduced
            $log1p_tail

            /// `eˣ`, scaled by two powers of two so that results near overflow and in
            /// the subnormal range come out right.
            #[inline(always)]
            pub fn exp(x: $t) -> $t {
                let x = pick(x < $exp_lo, $exp_lo, x);
                let x = pick(x > $exp_hi, $exp_hi, x);
                let (k, r) = reduce(x);
                let p = exp_reduced(r);
                let k1 = k >> 1;
                p * pow2i(k1) * pow2i(k.wrapping_sub(k1))
            }

            /// `eˣ − 1 = 2·(s·q + (s − ½))` with `s = 2^(k−1)` and `q = e^r − 1`: exact
            /// scaling, and `s` stays finite up to the `k` of the largest finite result
            /// (128 for `f32`, 1024 for `f64`), so only the final doubling overflows.
            #[inline(always)]
            pub fn exp_m1(x: $t) -> $t {
                let xc = pick(x < $expm1_lo, $expm1_lo, x);
                let xc = pick(xc > $exp_hi, $exp_hi, xc);
                let (k, r) = reduce(xc);
                // q = r + r²·p; s·r and s − ½ are exact and only cancel (for k = 1)
                // where their sum is exact too.
                let p = expm1_reduced(r);
                let s = pow2i(k.wrapping_sub(1));
                let y = 2.0 * ((s * r + (s - 0.5)) + s * (r * r * p));
                // Below `2^−(mantissa+5)`, `x` itself (and ±0, subnormals) is the answer.
                pick(x.abs() < $tiny, x, y)
            }

            /// `ln(hi + lo)` (`lo` ignored unless `LO`): `hi = 2^k·m` with
            /// `m ∈ [√½, √2)`, `f = m − 1`, `ln = k·ln 2 + log1p(f) + c/m` with
            /// `c = lo·2^−k`. Without `CHECKED`, `hi` must be positive, normal and finite
            /// (NaN still propagates); with it, subnormals, `0`, negatives, `+∞` and NaN
            /// give the libm results.
            #[inline(always)]
            fn ln_impl<const LO: bool, const CHECKED: bool>(hi: $t, lo: $t) -> $t {
                const ONE_BITS: $u = (1.0 as $t).to_bits();
                const MANT_MASK: $u = ((1 as $u) << $mant) - 1;
                let tiny = CHECKED && hi < <$t>::MIN_POSITIVE;
                let (h, l) = if CHECKED {
                    (pick(tiny, hi * $sub_scale, hi), pick(tiny, lo * $sub_scale, lo))
                } else {
                    (hi, lo)
                };
                let ix = h.to_bits().wrapping_add(ONE_BITS - $sqrt_half);
                let kh = (ix >> $mant) as i32 - $bias;
                let m = <$t>::from_bits((ix & MANT_MASK) + $sqrt_half);
                let f = m - 1.0;
                let mut tail = log1p_tail(f);
                if LO {
                    // c/m ≈ c·(1 − f + f²); 2^−kh is out of range (and c·2^−kh
                    // negligible) only for kh ≥ bias, where it is taken as 0.
                    let scale = pick(kh >= $bias, 0.0, pow2i(kh.wrapping_neg()));
                    tail += (l * scale) * (1.0 - f * (1.0 - f));
                }
                let k = if CHECKED { kh - if tiny { $sub_k } else { 0 } } else { kh };
                let dk = k as $t;
                let y = tail + dk * $ln2_lo + f + dk * $ln2_hi;
                if CHECKED {
                    let y = pick(hi == <$t>::INFINITY, hi, y);
                    pick(
                        hi > 0.0,
                        y,
                        pick(hi == 0.0, <$t>::NEG_INFINITY, <$t>::NAN),
                    )
                } else {
                    // `hi − hi` is 0, or NaN where `hi` is.
                    y + (hi - hi)
                }
            }

            /// `ln x`.
            #[inline(always)]
            pub fn ln(x: $t) -> $t {
                ln_impl::<false, true>(x, 0.0)
            }

            /// `ln(hi + lo)`.
            #[inline(always)]
            pub fn ln_two_sum(hi: $t, lo: $t) -> $t {
                ln_impl::<true, true>(hi, lo)
            }

            /// `ln(hi + lo)` for a positive normal finite `hi`.
            #[inline(always)]
            pub fn ln_two_sum_normal(hi: $t, lo: $t) -> $t {
                ln_impl::<true, false>(hi, lo)
            }

            /// `1 + x` rounded and its exact rounding error (TwoSum, either order).
            #[inline(always)]
            fn one_plus(x: $t) -> ($t, $t) {
                let u = 1.0 + x;
                let b = u - x;
                (u, (1.0 - b) + (x - (u - b)))
            }

            /// `ln_1p(x) = ln(u + c)` with `u = 1 + x` and `c` its exact rounding error: for
            /// `|x| < 0.29`, `f + c = x` exactly.
            #[inline(always)]
            pub fn ln_1p(x: $t) -> $t {
                let (u, c) = one_plus(x);
                pick(x == 0.0, x, ln_impl::<true, true>(u, c))
            }

            /// `ln_1p(x)` for finite `x > −1` (so that `1 + x` is normal; NaN propagates).
            #[inline(always)]
            pub fn ln_1p_in_domain(x: $t) -> $t {
                let (u, c) = one_plus(x);
                ln_impl::<true, false>(u, c)
            }

            /// `(tanh |x|, 1 + e)` for `e = e^{−2|x|}`: with `−2|x| = k·ln 2 + r` and
            /// `e = 2^k·(1 + q)`, `1 ± e = (1 ± 2^k) ± 2^k·q` where `1 ± 2^k` is exact
            /// (one rounding each). `tanh = (1 − e)/(1 + e)` where `e ≥ ⅓`, else
            /// `1 − 2e/(1 + e)`, whose error is that of the final subtraction, so that the
            /// values near ±1 are nearly correctly rounded. Saturates at `(1, 1)`.
            #[inline(always)]
            fn abs_tanh_and_one_plus_exp_m2(x: $t) -> ($t, $t) {
                let v = -2.0 * x.abs();
                let v = pick(v < $expm1_lo, $expm1_lo, v);
                let (k, r) = reduce(v);
                let q = r + r * r * expm1_reduced(r);
                let s = pow2i(k);
                let sq = s * q;
                let e = s + sq;
                let den = (1.0 + s) + sq;
                let near_one = e < 1.0 / 3.0;
                let ratio = pick(near_one, e + e, (1.0 - s) - sq) / den;
                // `1 − ratio` or `ratio` (each exact but for one rounding), written with
                // selects of constants only: a select of the two results gets turned into
                // branches around two divisions, which keeps the loops from vectorising.
                (pick(near_one, 1.0, 0.0) + pick(near_one, -1.0, 1.0) * ratio, den)
            }

            /// `tanh x`, signed like `x`.
            #[inline(always)]
            pub fn tanh(x: $t) -> $t {
                abs_tanh_and_one_plus_exp_m2(x).0.copysign(x)
            }

            /// `(tanh x, ln(1 − tanh² x))` from one exponential: with `e = e^{−2|x|}`,
            /// `1 − tanh² x = 4e/(1 + e)²`, so the log is `2(ln 2 − |x| − ln(1 + e))`.
            #[inline(always)]
            pub fn tanh_with_log_det(x: $t) -> ($t, $t) {
                let (t, den) = abs_tanh_and_one_plus_exp_m2(x);
                let ln_2 = <$t>::from_bits($ln2_bits);
                let l = 2.0 * ((ln_2 - x.abs()) - ln_impl::<false, false>(den, 0.0));
                (t.copysign(x), l)
            }

            /// `(atanh x, −ln(1 − x²))` for `|x| < 1` from `ln(1 ± |x|)`, each of the
            /// rounded sum and its exact error (Fast2Sum: `1 ≥ |x|`).
            #[inline(always)]
            pub fn atanh_with_log_det(x: $t) -> ($t, $t) {
                let a = x.abs();
                let p = 1.0 + a;
                let q = 1.0 - a;
                let lp = ln_impl::<true, false>(p, a - (p - 1.0));
                let lq = ln_impl::<true, false>(q, (1.0 - q) - a);
                ((0.5 * (lp - lq)).copysign(x), -(lp + lq))
            }

            /// `max(x, 0) + ln_1p(e^{−|x|})`.
            #[inline(always)]
            pub fn softplus(x: $t) -> $t {
                let l = ln_1p_in_domain(exp(-x.abs()));
                pick(x > 0.0, x, 0.0) + l
            }
        }
    };
}

implementation! {
    mod imp32: f32, bits u32;
    mantissa 23, bias 127;
    shift 12_582_912.0; // 1.5·2²³
    ln2 6.931_457_519_5e-1, 1.428_606_765_3e-6, bits 0x3f31_7218;
    exp range -104.0, 88.8;
    expm1 low -30.0, tiny 1.0 / 268_435_456.0; // 2⁻²⁸
    subnormal scale 33_554_432.0, 25; // 2²⁵
    sqrt_half_bits 0x3f35_04f3;
    exp_reduced
    /// `e^r` on `|r| ≤ ½ ln 2` (Cephes `expf`).
    #[inline(always)]
    fn exp_reduced(r: f32) -> f32 {
        let p = ((((1.987_569_150_0e-4 * r + 1.398_199_950_7e-3) * r + 8.333_451_907_3e-3) * r
            + 4.166_579_589_4e-2)
            * r
            + 1.666_666_545_9e-1)
            * r
            + 5.000_000_120_1e-1;
        p * (r * r) + r + 1.0
    }
    expm1_reduced
    /// `p` with `e^r − 1 = r + r²·p(r)` on `|r| ≤ ½ ln 2`: Taylor to degree 7 (truncation
    /// below 0.2 ulp).
    #[inline(always)]
    fn expm1_reduced(r: f32) -> f32 {
        const C: [f32; 6] = [
            1.0 / 2.0,
            1.0 / 6.0,
            1.0 / 24.0,
            1.0 / 120.0,
            1.0 / 720.0,
            1.0 / 5040.0,
        ];
        // Estrin's scheme: the value path of tanh runs through this, so latency counts.
        let r2 = r * r;
        (C[0] + r * C[1]) + r2 * ((C[2] + r * C[3]) + r2 * (C[4] + r * C[5]))
    }
    log1p_tail
    /// `log1p(f) − f` for `f ∈ [√½ − 1, √2 − 1]` (musl `logf`): `s = f/(2 + f)`,
    /// `log1p(f) = f − f²/2 + s·(f²/2 + R(s²))`.
    #[inline(always)]
    fn log1p_tail(f: f32) -> f32 {
        const LG1: f32 = 0.666_666_626_93;
        const LG2: f32 = 0.400_009_721_52;
        const LG3: f32 = 0.284_987_866_88;
        const LG4: f32 = 0.242_790_788_41;
        let s = f / (2.0 + f);
        let z = s * s;
        let w = z * z;
        let t1 = w * (LG2 + w * LG4);
        let t2 = z * (LG1 + w * LG3);
        let hfsq = 0.5 * f * f;
        s * (hfsq + (t2 + t1)) - hfsq
    }
}

implementation! {
    mod imp64: f64, bits u64;
    mantissa 52, bias 1023;
    shift 6_755_399_441_055_744.0; // 1.5·2⁵²
    ln2 6.931_471_803_691_238_164_90e-1, 1.908_214_929_270_587_700_02e-10,
        bits 0x3fe6_2e42_fefa_39ef;
    exp range -746.0, 709.9;
    expm1 low -40.0, tiny 1.0 / 144_115_188_075_855_872.0; // 2⁻⁵⁷
    subnormal scale 18_014_398_509_481_984.0, 54; // 2⁵⁴
    sqrt_half_bits 0x3fe6_a09e_0000_0000;
    exp_reduced
    /// `e^r` on `|r| ≤ ½ ln 2` (fdlibm `exp`): `c = r − r²·P(r²)`,
    /// `e^r = 1 + r + r·c/(2 − c)`.
    #[inline(always)]
    fn exp_reduced(r: f64) -> f64 {
        const P1: f64 = 1.666_666_666_666_660_190_37e-1;
        const P2: f64 = -2.777_777_777_701_559_338_42e-3;
        const P3: f64 = 6.613_756_321_437_934_361_17e-5;
        const P4: f64 = -1.653_390_220_546_525_153_90e-6;
        const P5: f64 = 4.138_136_797_057_238_460_39e-8;
        let z = r * r;
        let c = r - z * (P1 + z * (P2 + z * (P3 + z * (P4 + z * P5))));
        1.0 + (r + r * c / (2.0 - c))
    }
    expm1_reduced
    /// `p` with `e^r − 1 = r + r²·p(r)` on `|r| ≤ ½ ln 2`: Taylor to degree 13 (truncation
    /// below 0.1 ulp).
    #[inline(always)]
    fn expm1_reduced(r: f64) -> f64 {
        const C: [f64; 12] = [
            1.0 / 2.0,
            1.0 / 6.0,
            1.0 / 24.0,
            1.0 / 120.0,
            1.0 / 720.0,
            1.0 / 5_040.0,
            1.0 / 40_320.0,
            1.0 / 362_880.0,
            1.0 / 3_628_800.0,
            1.0 / 39_916_800.0,
            1.0 / 479_001_600.0,
            1.0 / 6_227_020_800.0,
        ];
        // Estrin's scheme (shorter dependency chains than Horner's).
        let r2 = r * r;
        let r4 = r2 * r2;
        let pair = |i: usize| C[i] + r * C[i + 1];
        let q0 = pair(0) + r2 * pair(2);
        let q1 = pair(4) + r2 * pair(6);
        let q2 = pair(8) + r2 * pair(10);
        q0 + r4 * (q1 + r4 * q2)
    }
    log1p_tail
    /// `log1p(f) − f` for `f ∈ [√½ − 1, √2 − 1]` (musl `log`).
    #[inline(always)]
    fn log1p_tail(f: f64) -> f64 {
        const LG1: f64 = 6.666_666_666_666_735_130e-1;
        const LG2: f64 = 3.999_999_999_940_941_908e-1;
        const LG3: f64 = 2.857_142_874_366_239_149e-1;
        const LG4: f64 = 2.222_219_843_214_978_396e-1;
        const LG5: f64 = 1.818_357_216_161_805_012e-1;
        const LG6: f64 = 1.531_383_769_920_937_332e-1;
        const LG7: f64 = 1.479_819_860_511_658_591e-1;
        let s = f / (2.0 + f);
        let z = s * s;
        let w = z * z;
        let t1 = w * (LG2 + w * (LG4 + w * LG6));
        let t2 = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7)));
        let hfsq = 0.5 * f * f;
        s * (hfsq + (t2 + t1)) - hfsq
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::*;

    /// `2^e` for `e ≥ −1074` (`powi` underflows on the way to the subnormals).
    fn pow2(e: i32) -> f64 {
        if e >= -1022 {
            f64::from_bits(((e + 1023) as u64) << 52)
        } else {
            f64::from_bits(1u64 << (e + 1074))
        }
    }

    /// The binary exponent of a normal `w`.
    fn exponent(w: f64) -> i32 {
        ((w.to_bits() >> 52) & 0x7ff) as i32 - 1023
    }

    /// The error of `got` in ulps of `want` (the exact value, in `f64`) rounded to `f32`.
    fn ulps32(got: f32, want: f64) -> f64 {
        if got.is_nan() && want.is_nan() {
            return 0.0;
        }
        if (want as f32).is_infinite() || got.is_infinite() {
            return if f64::from(got) == want as f32 as f64 {
                0.0
            } else {
                f64::INFINITY
            };
        }
        let w = want.abs().max(f64::from(f32::MIN_POSITIVE));
        let ulp = pow2(exponent(w) - 23);
        (f64::from(got) - want).abs() / ulp
    }

    /// The error of `got` in ulps of the libm value `want`.
    fn ulps64(got: f64, want: f64) -> f64 {
        if got.is_nan() && want.is_nan() {
            return 0.0;
        }
        if want.is_infinite() || got.is_infinite() {
            return if got == want { 0.0 } else { f64::INFINITY };
        }
        let w = want.abs().max(f64::MIN_POSITIVE);
        let ulp = pow2(exponent(w) - 52);
        (got - want).abs() / ulp
    }

    fn softplus_ref(x: f64) -> f64 {
        x.max(0.0) + (-x.abs()).exp().ln_1p()
    }

    type Case32 = (&'static str, fn(f32) -> f32, fn(f64) -> f64);
    type Case64 = (&'static str, fn(f64) -> f64, fn(f64) -> f64);

    const CASES32: [Case32; 6] = [
        ("exp", imp32::exp, f64::exp),
        ("exp_m1", imp32::exp_m1, f64::exp_m1),
        ("ln", imp32::ln, f64::ln),
        ("ln_1p", imp32::ln_1p, f64::ln_1p),
        ("tanh", imp32::tanh, f64::tanh),
        ("softplus", imp32::softplus, softplus_ref),
    ];

    const CASES64: [Case64; 6] = [
        ("exp", imp64::exp, f64::exp),
        ("exp_m1", imp64::exp_m1, f64::exp_m1),
        ("ln", imp64::ln, f64::ln),
        ("ln_1p", imp64::ln_1p, f64::ln_1p),
        ("tanh", imp64::tanh, f64::tanh),
        ("softplus", imp64::softplus, softplus_ref),
    ];

    /// The bounds of the table of the module docs: for `f32` the exhaustive maxima rounded
    /// up, for `f64` (measured on a sample, against a reference with its own ulp of error)
    /// one ulp more.
    const BOUND32: [f64; 6] = [1.0, 1.4, 0.9, 1.0, 2.0, 1.75];
    const BOUND64: [f64; 6] = [2.0, 3.0, 2.0, 2.0, 4.0, 3.0];

    /// Inputs of `f64` worth sweeping for function `i`: dense grids over the interesting
    /// range, then random bit patterns of every magnitude.
    fn inputs64(i: usize, dense: usize, random: usize, seed: u64) -> Vec<f64> {
        let (lo, hi) = match i {
            0 => (-746.0, 710.0),
            1 => (-40.0, 710.0),
            2 => (0.0, 4.0),
            3 => (-1.0, 4.0),
            4 => (-20.0, 20.0),
            _ => (-750.0, 750.0),
        };
        let mut xs: Vec<f64> = (0..dense)
            .map(|k| lo + (hi - lo) * (k as f64 + 0.5) / dense as f64)
            .collect();
        // Near zero, on a log scale, both signs.
        xs.extend((0..dense / 4).flat_map(|k| {
            let v = 10f64.powf(-320.0 + 320.0 * k as f64 / (dense / 4) as f64);
            [v, -v]
        }));
        let mut rng = StdRng::seed_from_u64(seed);
        xs.extend((0..random).map(|_| f64::from_bits(rng.random::<u64>())));
        xs.extend((0..random).map(|_| rng.random_range(lo..hi)));
        xs
    }

    /// Max ulps of every function over a sample: every `stride`-th `f32` bit pattern and
    /// the `f64` sweeps of [`inputs64`].
    fn max_errors(stride: usize, dense: usize, random: usize) -> ([f64; 6], [f64; 6]) {
        let mut e32 = [0.0f64; 6];
        let mut e64 = [0.0f64; 6];
        for (i, (name, fast, reference)) in CASES32.iter().enumerate() {
            for bits in (0..=u32::MAX).step_by(stride) {
                let x = f32::from_bits(bits);
                let e = ulps32(fast(x), reference(f64::from(x)));
                assert!(e.is_finite(), "f32 {name}({x:e}) = {}", fast(x));
                if e > e32[i] && std::env::var("FASTMATH_WHERE").is_ok() {
                    println!("f32 {name}({x:e}): {e:.2} ulps");
                }
                e32[i] = e32[i].max(e);
            }
        }
        for (i, (name, fast, reference)) in CASES64.iter().enumerate() {
            for x in inputs64(i, dense, random, i as u64) {
                let e = ulps64(fast(x), reference(x));
                assert!(e.is_finite(), "f64 {name}({x:e}) = {}", fast(x));
                if e > e64[i] && std::env::var("FASTMATH_WHERE").is_ok() {
                    println!("f64 {name}({x:e}): {e:.2} ulps");
                }
                e64[i] = e64[i].max(e);
            }
        }
        (e32, e64)
    }

    #[test]
    fn accuracy_on_samples() {
        let (e32, e64) = max_errors(40_009, 20_000, 10_000);
        for (i, (name, _, _)) in CASES32.iter().enumerate() {
            assert!(e32[i] <= BOUND32[i], "f32 {name}: {} ulps", e32[i]);
            assert!(e64[i] <= BOUND64[i], "f64 {name}: {} ulps", e64[i]);
        }
    }

    /// Special values of every function, in `F`, through the generic entry points.
    fn special_values_in<F: Float>() {
        let (inf, nan) = (F::infinity(), F::nan());
        let (zero, one) = (F::zero(), F::one());
        let big = F::of(1e4);
        let same = |a: F, b: F| (a.is_nan() && b.is_nan()) || (a == b && a.signum() == b.signum());
        for (name, got, want) in [
            ("exp(+inf)", exp(inf), inf),
            ("exp(-inf)", exp(-inf), zero),
            ("exp(big)", exp(big), inf),
            ("exp(-big)", exp(-big), zero),
            ("exp(0)", exp(zero), one),
            ("exp(-0)", exp(-zero), one),
            ("exp(nan)", exp(nan), nan),
            ("exp_m1(+inf)", exp_m1(inf), inf),
            ("exp_m1(-inf)", exp_m1(-inf), -one),
            ("exp_m1(big)", exp_m1(big), inf),
            ("exp_m1(-big)", exp_m1(-big), -one),
            ("exp_m1(0)", exp_m1(zero), zero),
            ("exp_m1(-0)", exp_m1(-zero), -zero),
            ("exp_m1(nan)", exp_m1(nan), nan),
            ("ln(0)", ln(zero), -inf),
            ("ln(-0)", ln(-zero), -inf),
            ("ln(-1)", ln(-one), nan),
            ("ln(-inf)", ln(-inf), nan),
            ("ln(+inf)", ln(inf), inf),
            ("ln(1)", ln(one), zero),
            ("ln(nan)", ln(nan), nan),
            ("ln_1p(-1)", ln_1p(-one), -inf),
            ("ln_1p(-2)", ln_1p(-one - one), nan),
            ("ln_1p(-inf)", ln_1p(-inf), nan),
            ("ln_1p(+inf)", ln_1p(inf), inf),
            ("ln_1p(0)", ln_1p(zero), zero),
            ("ln_1p(-0)", ln_1p(-zero), -zero),
            ("ln_1p(nan)", ln_1p(nan), nan),
            ("tanh(+inf)", tanh(inf), one),
            ("tanh(-inf)", tanh(-inf), -one),
            ("tanh(big)", tanh(big), one),
            ("tanh(-big)", tanh(-big), -one),
            ("tanh(0)", tanh(zero), zero),
            ("tanh(-0)", tanh(-zero), -zero),
            ("tanh(nan)", tanh(nan), nan),
            ("softplus(+inf)", softplus(inf), inf),
            ("softplus(-inf)", softplus(-inf), zero),
            ("softplus(big)", softplus(big), big),
            ("softplus(-big)", softplus(-big), zero),
            ("softplus(nan)", softplus(nan), nan),
        ] {
            assert!(
                same(got, want),
                "{} {name} = {got:?}, want {want:?}",
                F::NAME
            );
        }
        // ln(2) and softplus(0) = ln 2 round correctly; ln_two_sum of an exact sum is ln.
        let ln2 = F::LN_2();
        assert_eq!(ln(one + one), ln2);
        assert_eq!(ln_1p(one), ln2);
        assert_eq!(softplus(zero), ln2);
        assert_eq!(ln_two_sum(one + one, zero), ln2);
        // The extremes of the range: the least subnormal and the largest value.
        let least = F::min_positive_value() * F::epsilon();
        let want = least.to_f64_lossless().ln();
        assert!((ln(least).to_f64_lossless() - want).abs() <= 1e-6 * want.abs());
        let want = F::max_value().to_f64_lossless().ln();
        assert!((ln(F::max_value()).to_f64_lossless() - want).abs() <= 1e-6 * want);
        assert!((ln_1p(F::max_value()).to_f64_lossless() - want).abs() <= 1e-6 * want);
        // exp just below overflow is finite, just above it infinite.
        let ln_max = F::max_value().to_f64_lossless().ln();
        assert!(exp(F::of(ln_max * (1.0 - 1e-6))).is_finite());
        assert!(exp(F::of(ln_max * (1.0 + 1e-6))).is_infinite());
        assert!(exp_m1(F::of(ln_max * (1.0 - 1e-6))).is_finite());
        assert!(exp_m1(F::of(ln_max * (1.0 + 1e-6))).is_infinite());
        // Subnormal arguments: expm1, ln_1p and tanh return them unchanged.
        for x in [least, -least, F::min_positive_value() * F::of(0.75)] {
            assert_eq!(exp_m1(x), x);
            assert_eq!(ln_1p(x), x);
            assert_eq!(tanh(x), x);
        }
        // Gradual underflow: exp of ln(least subnormal) is that subnormal.
        assert_eq!(exp(F::of(least.to_f64_lossless().ln())), least);
    }

    #[test]
    fn special_values() {
        special_values_in::<f32>();
        special_values_in::<f64>();
    }

    /// The classification (NaN, ±∞, zero, sign) of `got` matches that of the reference
    /// (where the reference's own rounding cannot tip it), and finite values are close.
    fn agrees(got: f64, want: f64, tol_ulps: f64, ulps: f64) -> bool {
        if want.is_nan() {
            return got.is_nan();
        }
        if want.is_infinite() || got.is_infinite() {
            return got == want;
        }
        (got == 0.0) == (want == 0.0) && got.signum() == want.signum() && ulps <= tol_ulps
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn prop_every_f32_bit_pattern(bits in any::<u32>()) {
            let x = f32::from_bits(bits);
            for (i, (name, fast, reference)) in CASES32.iter().enumerate() {
                let (got, want) = (fast(x), reference(f64::from(x)));
                let rounded = want as f32;
                prop_assert!(
                    agrees(f64::from(got), f64::from(rounded), BOUND32[i], ulps32(got, want))
                        || (got == 0.0 && rounded.abs() <= f32::MIN_POSITIVE * f32::EPSILON),
                    "f32 {}({:e}) = {:e}, libm {:e}", name, x, got, want
                );
            }
        }

        #[test]
        fn prop_every_f64_bit_pattern(bits in any::<u64>()) {
            let x = f64::from_bits(bits);
            for (i, (name, fast, reference)) in CASES64.iter().enumerate() {
                let (got, want) = (fast(x), reference(x));
                prop_assert!(
                    agrees(got, want, BOUND64[i], ulps64(got, want)),
                    "f64 {}({:e}) = {:e}, libm {:e}", name, x, got, want
                );
            }
        }

        #[test]
        fn prop_special_inputs_of_both_types(
            pick in 0usize..8, sign in any::<bool>(),
        ) {
            // ±0, ±∞, NaN, the least subnormal, the least normal, the largest finite value.
            let v64 =
                [0.0, f64::INFINITY, f64::NAN, 5e-324, f64::MIN_POSITIVE, f64::MAX, 1.0, 0.5][pick];
            let v32 =
                [0.0, f32::INFINITY, f32::NAN, 1e-45, f32::MIN_POSITIVE, f32::MAX, 1.0, 0.5][pick];
            let (x64, x32) = if sign { (-v64, -v32) } else { (v64, v32) };
            for (i, (name, fast, reference)) in CASES64.iter().enumerate() {
                let (got, want) = (fast(x64), reference(x64));
                prop_assert!(
                    agrees(got, want, BOUND64[i], ulps64(got, want)),
                    "f64 {}({:e}) = {:e}", name, x64, got
                );
            }
            for (i, (name, fast, reference)) in CASES32.iter().enumerate() {
                let (got, want) = (fast(x32), reference(f64::from(x32)));
                prop_assert!(
                    agrees(f64::from(got), f64::from(want as f32), BOUND32[i], ulps32(got, want))
                        || (got == 0.0 && (want as f32) == 0.0),
                    "f32 {}({:e}) = {:e}", name, x32, got
                );
            }
        }
    }

    /// The unchecked variants agree with the checked ones inside their domains, and the
    /// value/log-det pairs with `f64` references.
    #[test]
    fn variants_and_pairs() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut worst = [0.0f64; 4];
        for i in 0..200_000 {
            // x in (−1, 1) on a mixed linear/log scale, and |x| up to 20 for tanh.
            let u: f64 = rng.random_range(-1.0..1.0);
            let x = if i % 2 == 0 {
                u
            } else {
                u.signum() * 10f64.powf(-30.0 * u.abs())
            };
            let x32 = x as f32;
            if x32.abs() < 1.0 {
                assert_eq!(ln_1p_in_domain(x32), ln_1p(x32), "ln_1p_in_domain({x32:e})");
                assert_eq!(ln_1p_in_domain(x), ln_1p(x), "ln_1p_in_domain({x:e})");
                // atanh and −ln(1 − x²): the value in ulps, the log-det in ulps of
                // max(|x|, |log-det|) (the two logs cancel near 0).
                let (v, l) = atanh_with_log_det(x32);
                let xf = f64::from(x32);
                let (want_v, want_l) = (xf.atanh(), -(-xf * xf).ln_1p());
                worst[0] = worst[0].max(ulps32(v, want_v));
                let scale = f64::from(x32.abs())
                    .max(want_l.abs())
                    .max(f64::from(f32::MIN_POSITIVE));
                worst[1] =
                    worst[1].max((f64::from(l) - want_l).abs() / (scale * f64::from(f32::EPSILON)));
            }
            let h = 20.0 * u;
            let (t, l) = tanh_with_log_det(h as f32);
            let hf = f64::from(h as f32);
            worst[2] = worst[2].max(ulps32(t, hf.tanh()));
            let want_l = 2.0 * (2f64.ln() - hf.abs() - (-2.0 * hf.abs()).exp().ln_1p());
            worst[3] = worst[3].max(
                (f64::from(l) - want_l).abs() / (want_l.abs().max(1.0) * f64::from(f32::EPSILON)),
            );
            let hi = 10f64.powf(rng.random_range(-300.0..300.0));
            let lo = hi * f64::EPSILON * rng.random_range(-0.5..0.5);
            assert_eq!(
                ln_two_sum_normal(hi, lo),
                ln_two_sum(hi, lo),
                "ln_two_sum_normal({hi:e}, {lo:e})"
            );
        }
        println!(
            "atanh {:.2}, its log-det {:.2}, tanh {:.2}, its log-det {:.2}",
            worst[0], worst[1], worst[2], worst[3]
        );
        assert!(worst[0] <= 2.0, "atanh: {} ulps", worst[0]);
        assert!(
            worst[1] <= 4.0,
            "atanh log-det: {} ulps of the scale",
            worst[1]
        );
        assert!(worst[2] <= BOUND32[4], "tanh: {} ulps", worst[2]);
        assert!(
            worst[3] <= 4.0,
            "tanh log-det: {} ulps of max(1, |value|)",
            worst[3]
        );
        // NaN propagates through the unchecked variants and the pairs.
        assert!(ln_1p_in_domain(f32::NAN).is_nan() && ln_two_sum_normal(f64::NAN, 0.0).is_nan());
        let (v, l) = atanh_with_log_det(f32::NAN);
        assert!(v.is_nan() && l.is_nan());
        let (v, l) = tanh_with_log_det(f64::NAN);
        assert!(v.is_nan() && l.is_nan());
        assert_eq!(tanh_with_log_det(f32::INFINITY), (1.0, f32::NEG_INFINITY));
        assert_eq!(tanh_with_log_det(-0.0f64).0.to_bits(), (-0.0f64).to_bits());
    }

    /// The table of the module docs: `FASTMATH_STRIDE=1` for every `f32` input.
    #[test]
    #[ignore = "slow: run in release with --ignored --nocapture"]
    fn accuracy_table() {
        let stride = std::env::var("FASTMATH_STRIDE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(7);
        let (e32, e64) = max_errors(stride, 4_000_000, 3_000_000);
        println!("| function | f32 | f64 |");
        for (i, (name, _, _)) in CASES32.iter().enumerate() {
            println!("| {name} | {:.2} | {:.2} |", e32[i], e64[i]);
        }
    }
}
