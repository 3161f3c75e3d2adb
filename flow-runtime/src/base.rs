//! Base distributions: where a flow's samples start and its densities end.

use ndarray::{ArrayView1, ArrayViewMut1};
use rand::Rng;

use crate::fastmath;
use crate::float::Float;
use crate::layers::elementwise::{logit, sigmoid_log_det};
use crate::support::Support;

/// `½·log 2π`.
const HALF_LOG_TWO_PI: f64 = 0.918_938_533_204_672_8;

/// A base distribution on ℝ^D (or a subset), factorised over coordinates.
pub trait BaseDistribution<F: Float>: Send + Sync {
    /// The support of every coordinate.
    fn support(&self) -> Support;
    /// `log p(z)` of one point; `-inf` outside the support.
    fn log_prob_point(&self, z: &[F]) -> F;
    /// Overwrites `z` with one draw.
    fn sample_point<R: Rng + ?Sized>(&self, z: &mut [F], rng: &mut R);

    /// `log p(z)` of one point, writing `∇_z log p(z)` into `grad`.
    fn log_prob_and_grad(&self, z: ArrayView1<'_, F>, grad: ArrayViewMut1<'_, F>) -> F;

    /// The number of learnable parameters (0 for a fixed base).
    fn param_len(&self) -> usize {
        0
    }

    /// Visits each learnable tensor as `(name, shape, values)`, in the order of the flat
    /// parameter layout (as [`Layer::visit_params`](crate::layers::Layer::visit_params)).
    #[allow(clippy::type_complexity)]
    fn visit_params(&self, _visit: &mut dyn FnMut(&str, &[usize], &[F])) {}

    /// Visits each learnable tensor mutably, in the same order.
    #[allow(clippy::type_complexity)]
    fn visit_params_mut(&mut self, _visit: &mut dyn FnMut(&str, &[usize], &mut [F])) {}

    /// `log p(z)` of one point, writing `∇_z log p(z)` into `grad` and adding
    /// `weight·∇_θ log p(z)` into `param_grad` (length [`BaseDistribution::param_len`], the
    /// layout of [`BaseDistribution::visit_params`]). The default, for a base without
    /// parameters, is [`BaseDistribution::log_prob_and_grad`].
    fn log_prob_backward(
        &self,
        z: ArrayView1<'_, F>,
        grad: ArrayViewMut1<'_, F>,
        _weight: F,
        _param_grad: &mut [F],
    ) -> F {
        self.log_prob_and_grad(z, grad)
    }

    /// Reverse mode through a draw of [`BaseDistribution::sample_point`], seen as a
    /// reparametrised map `z = T_θ(ε)` of parameter-free noise `ε`: given the draw `z` and
    /// `z_bar = ∂J/∂z` for the rest of the objective, adds `∂J/∂θ` of
    /// `J = (terms of z) + weight·log p(z)` (with `ε` held fixed) into `param_grad` (length
    /// [`BaseDistribution::param_len`]). The default is right for a base without parameters:
    /// there is nothing to add.
    fn sample_backward(&self, _z: &[F], _z_bar: &[F], _weight: F, param_grad: &mut [F]) {
        debug_assert!(
            param_grad.is_empty(),
            "a base with parameters overrides this"
        );
    }
}

/// The standard normal distribution N(0, I), the default base.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StandardNormal;

/// The uniform distribution on the open unit cube (0, 1)^D.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StandardUniform;

impl<F: Float> BaseDistribution<F> for StandardNormal {
    fn support(&self) -> Support {
        Support::Real
    }

    #[inline]
    fn log_prob_point(&self, z: &[F]) -> F {
        // −½‖z‖² − (D/2)·log 2π
        let half_log_two_pi = F::of(HALF_LOG_TWO_PI);
        let sq: F = z.iter().map(|&v| v * v).sum();
        -(F::of(0.5) * sq) - F::of(z.len() as f64) * half_log_two_pi
    }

    fn sample_point<R: Rng + ?Sized>(&self, z: &mut [F], rng: &mut R) {
        for v in z {
            *v = F::standard_normal(rng);
        }
    }

    fn log_prob_and_grad(&self, z: ArrayView1<'_, F>, mut grad: ArrayViewMut1<'_, F>) -> F {
        let half_log_two_pi = F::of(HALF_LOG_TWO_PI);
        let mut sq = F::zero();
        for (g, &v) in grad.iter_mut().zip(z.iter()) {
            sq += v * v;
            *g = -v;
        }
        -(F::of(0.5) * sq) - F::of(z.len() as f64) * half_log_two_pi
    }
}

impl<F: Float> BaseDistribution<F> for StandardUniform {
    fn support(&self) -> Support {
        Support::UnitInterval
    }

    #[inline]
    fn log_prob_point(&self, z: &[F]) -> F {
        if z.iter().all(|&v| v > F::zero() && v < F::one()) {
            F::zero()
        } else {
            F::neg_infinity()
        }
    }

    fn sample_point<R: Rng + ?Sized>(&self, z: &mut [F], rng: &mut R) {
        for v in z {
            *v = F::open_unit(rng);
        }
    }

    fn log_prob_and_grad(&self, z: ArrayView1<'_, F>, mut grad: ArrayViewMut1<'_, F>) -> F {
        grad.fill(F::zero());
        if z.iter().all(|&v| v > F::zero() && v < F::one()) {
            F::zero()
        } else {
            F::neg_infinity()
        }
    }
}

/// The product of `D` independent standard Student-t distributions with `df` degrees of
/// freedom: per coordinate
/// `log p(z) = lnΓ((ν+1)/2) − lnΓ(ν/2) − ½·log(νπ) − (ν+1)/2 · log(1 + z²/ν)`.
/// Heavier tails than the normal (the Cauchy distribution at `ν = 1`), which suits flows
/// of heavy-tailed data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StudentT {
    df: f64,
    /// `lnΓ((ν+1)/2) − lnΓ(ν/2) − ½·log(νπ)`, the log-normaliser of one coordinate.
    log_norm: f64,
    sampler: rand_distr::StudentT<f64>,
}

impl StudentT {
    /// The standard Student-t with `df` degrees of freedom.
    ///
    /// # Panics
    /// Unless `df` is finite and `> 0`.
    pub fn new(df: f64) -> Self {
        assert!(
            df > 0.0 && df.is_finite(),
            "student_t: df must be finite and > 0, not {df}"
        );
        let log_norm = ln_gamma(0.5 * (df + 1.0))
            - ln_gamma(0.5 * df)
            - 0.5 * (df * std::f64::consts::PI).ln();
        Self {
            df,
            log_norm,
            sampler: rand_distr::StudentT::new(df).expect("df > 0"),
        }
    }

    /// The degrees of freedom `ν`.
    pub fn df(&self) -> f64 {
        self.df
    }

    /// `(log(1 + z²/ν), d/dz of it)`, without overflow for any finite `z`: for
    /// `a = |z|/√ν > 1` as `2·log a + log1p(1/a²)` and `2/(z + ν/z)`.
    #[inline]
    fn log1p_square<F: Float>(&self, z: F) -> (F, F) {
        let nu = F::of(self.df);
        let a = z.abs() / nu.sqrt();
        if a <= F::one() {
            let two_z = z + z;
            (fastmath::ln_1p(a * a), two_z / (nu + z * z))
        } else {
            let two = F::one() + F::one();
            let inv = F::one() / a;
            (
                two * fastmath::ln(a) + fastmath::ln_1p(inv * inv),
                two / (z + nu / z),
            )
        }
    }
}

impl<F: Float> BaseDistribution<F> for StudentT {
    fn support(&self) -> Support {
        Support::Real
    }

    #[inline]
    fn log_prob_point(&self, z: &[F]) -> F {
        let half_nu1 = F::of(0.5 * (self.df + 1.0));
        let sum: F = z.iter().map(|&v| self.log1p_square(v).0).sum();
        F::of(z.len() as f64 * self.log_norm) - half_nu1 * sum
    }

    fn sample_point<R: Rng + ?Sized>(&self, z: &mut [F], rng: &mut R) {
        for v in z {
            *v = F::of(rand_distr::Distribution::sample(&self.sampler, rng));
        }
    }

    /// `∂/∂z_j = −(ν+1)·z_j/(ν + z_j²)`.
    fn log_prob_and_grad(&self, z: ArrayView1<'_, F>, mut grad: ArrayViewMut1<'_, F>) -> F {
        let half_nu1 = F::of(0.5 * (self.df + 1.0));
        let mut sum = F::zero();
        for (g, &v) in grad.iter_mut().zip(z.iter()) {
            let (l, dl) = self.log1p_square(v);
            sum += l;
            *g = -half_nu1 * dl;
        }
        F::of(z.len() as f64 * self.log_norm) - half_nu1 * sum
    }
}

/// The standard logistic distribution on every coordinate, independently: per coordinate
/// `log p(z) = −z − 2·softplus(−z)`, evaluated as `−|z| − 2·log1p(exp(−|z|))` (the density
/// is even), which is finite for every finite `z`. A flow ending in `sigmoid` maps it to
/// the uniform distribution exactly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Logistic;

impl<F: Float> BaseDistribution<F> for Logistic {
    fn support(&self) -> Support {
        Support::Real
    }

    #[inline]
    fn log_prob_point(&self, z: &[F]) -> F {
        z.iter().map(|&v| sigmoid_log_det(v)).sum()
    }

    /// `logit u` of `u` uniform on the open interval (0, 1).
    fn sample_point<R: Rng + ?Sized>(&self, z: &mut [F], rng: &mut R) {
        for v in z {
            *v = logit(F::open_unit(rng));
        }
    }

    /// `∂/∂z_j = 1 − 2σ(z_j) = −tanh(z_j/2)`.
    fn log_prob_and_grad(&self, z: ArrayView1<'_, F>, mut grad: ArrayViewMut1<'_, F>) -> F {
        let half = F::of(0.5);
        let mut sum = F::zero();
        for (g, &v) in grad.iter_mut().zip(z.iter()) {
            sum += sigmoid_log_det(v);
            *g = -fastmath::tanh(half * v);
        }
        sum
    }
}

/// A normal distribution with a learnable diagonal covariance: coordinate `j` is
/// `N(mean[j], exp(log_std[j])²)`, so with `u = (z − mean)·exp(−log_std)`,
/// `log p(z) = Σ_j −½u_j² − log_std[j] − ½·log 2π`.
///
/// Parameters `mean` (`[D]`) then `log_std` (`[D]`); both start at 0, the standard normal.
#[derive(Debug, Clone, PartialEq)]
pub struct DiagonalNormal<F> {
    /// Per-coordinate mean.
    pub mean: Vec<F>,
    /// Per-coordinate log of the standard deviation.
    pub log_std: Vec<F>,
}

impl<F: Float> DiagonalNormal<F> {
    /// The standard normal on `dim` coordinates, with learnable mean and log-std.
    pub fn new(dim: usize) -> Self {
        Self {
            mean: vec![F::zero(); dim],
            log_std: vec![F::zero(); dim],
        }
    }
}

impl<F: Float> BaseDistribution<F> for DiagonalNormal<F> {
    fn support(&self) -> Support {
        Support::Real
    }

    #[inline]
    fn log_prob_point(&self, z: &[F]) -> F {
        debug_assert_eq!(z.len(), self.mean.len(), "diagonal normal: dimension");
        let half = F::of(0.5);
        let c = F::of(HALF_LOG_TWO_PI);
        let mut sum = F::zero();
        for ((&v, &m), &s) in z.iter().zip(&self.mean).zip(&self.log_std) {
            let u = (v - m) * fastmath::exp(-s);
            sum += -(half * u * u) - s - c;
        }
        sum
    }

    /// `mean + exp(log_std)·ε` with `ε` standard normal.
    fn sample_point<R: Rng + ?Sized>(&self, z: &mut [F], rng: &mut R) {
        for ((v, &m), &s) in z.iter_mut().zip(&self.mean).zip(&self.log_std) {
            *v = m + fastmath::exp(s) * F::standard_normal(rng);
        }
    }

    /// `∂/∂z_j = −u_j·exp(−log_std[j])`.
    fn log_prob_and_grad(&self, z: ArrayView1<'_, F>, grad: ArrayViewMut1<'_, F>) -> F {
        self.log_prob_backward(z, grad, F::zero(), &mut [])
    }

    fn param_len(&self) -> usize {
        self.mean.len() + self.log_std.len()
    }

    fn visit_params(&self, visit: &mut dyn FnMut(&str, &[usize], &[F])) {
        visit("mean", &[self.mean.len()], &self.mean);
        visit("log_std", &[self.log_std.len()], &self.log_std);
    }

    fn visit_params_mut(&mut self, visit: &mut dyn FnMut(&str, &[usize], &mut [F])) {
        visit("mean", &[self.mean.len()], &mut self.mean);
        visit("log_std", &[self.log_std.len()], &mut self.log_std);
    }

    /// With `z = mean + exp(log_std)·ε`: `∂z_j/∂mean[j] = 1`, `∂z_j/∂log_std[j] = z_j − mean[j]`,
    /// and `log p(z) = Σ_j −½ε_j² − log_std[j] − ½·log 2π`, whose derivative at fixed `ε` is
    /// `−1` per `log_std[j]` (the entropy term). So `mean[j]` gets `z̄_j` and `log_std[j]`
    /// gets `z̄_j·(z_j − mean[j]) − weight`.
    fn sample_backward(&self, z: &[F], z_bar: &[F], weight: F, param_grad: &mut [F]) {
        let d = self.mean.len();
        assert_eq!(
            param_grad.len(),
            2 * d,
            "diagonal normal: param_grad length"
        );
        let (mean_grad, log_std_grad) = param_grad.split_at_mut(d);
        for j in 0..d {
            mean_grad[j] += z_bar[j];
            log_std_grad[j] += z_bar[j] * (z[j] - self.mean[j]) - weight;
        }
    }

    /// `∂/∂mean[j] = u_j·exp(−log_std[j])` at `param_grad[j]`, `∂/∂log_std[j] = u_j² − 1`
    /// at `param_grad[D + j]`, each times `weight` (nothing is added when `param_grad` is
    /// empty, as [`BaseDistribution::log_prob_and_grad`] passes it).
    fn log_prob_backward(
        &self,
        z: ArrayView1<'_, F>,
        mut grad: ArrayViewMut1<'_, F>,
        weight: F,
        param_grad: &mut [F],
    ) -> F {
        let d = self.mean.len();
        debug_assert_eq!(z.len(), d, "diagonal normal: dimension");
        let with_params = !param_grad.is_empty();
        if with_params {
            assert_eq!(
                param_grad.len(),
                2 * d,
                "diagonal normal: param_grad length"
            );
        }
        let half = F::of(0.5);
        let c = F::of(HALF_LOG_TWO_PI);
        let mut sum = F::zero();
        for (j, (g, &v)) in grad.iter_mut().zip(z.iter()).enumerate() {
            let s = self.log_std[j];
            let inv_std = fastmath::exp(-s);
            let u = (v - self.mean[j]) * inv_std;
            sum += -(half * u * u) - s - c;
            let du = u * inv_std;
            *g = -du;
            if with_params {
                param_grad[j] += weight * du;
                param_grad[d + j] += weight * (u * u - F::one());
            }
        }
        sum
    }
}

/// `ln Γ(x)` for `x > 0`, in `f64` (the normaliser of [`StudentT`]): Stirling's series
/// through the `x⁻⁹` term after shifting `x` to at least 15 with `Γ(x) = Γ(x+1)/x`
/// (truncation error below 1e-15).
fn ln_gamma(x: f64) -> f64 {
    debug_assert!(x > 0.0);
    let mut shift = 0.0;
    let mut x = x;
    let mut product = 1.0;
    while x < 15.0 {
        product *= x;
        x += 1.0;
        // Keep the product in range for tiny x (each factor is < 15).
        if product > 1e250 {
            shift += product.ln();
            product = 1.0;
        }
    }
    shift += product.ln();
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    // Σ B_2k / (2k(2k−1)·x^(2k−1)), k = 1..5.
    let series = inv
        * (1.0 / 12.0
            - inv2 * (1.0 / 360.0 - inv2 * (1.0 / 1260.0 - inv2 * (1.0 / 1680.0 - inv2 / 1188.0))));
    (x - 0.5) * x.ln() - x + HALF_LOG_TWO_PI + series - shift
}

#[cfg(test)]
mod tests {
    use ndarray::Array1;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::*;

    #[test]
    fn normal_log_prob_matches_the_formula() {
        let z = [0.5f64, -1.0];
        let expected = -0.5 * (0.25 + 1.0) - (2.0 * std::f64::consts::PI).ln();
        let got = BaseDistribution::<f64>::log_prob_point(&StandardNormal, &z);
        assert!((got - expected).abs() < 1e-12);
    }

    #[test]
    fn uniform_is_zero_inside_and_minus_infinity_outside() {
        let b = StandardUniform;
        assert_eq!(
            BaseDistribution::<f64>::log_prob_point(&b, &[0.3, 0.9]),
            0.0
        );
        assert_eq!(
            BaseDistribution::<f64>::log_prob_point(&b, &[0.3, 1.0]),
            f64::NEG_INFINITY
        );
    }

    #[test]
    fn ln_gamma_known_values() {
        let sqrt_pi = std::f64::consts::PI.sqrt();
        for (x, expected) in [
            (1.0, 0.0),
            (2.0, 0.0),
            (5.0, 24f64.ln()),
            (0.5, sqrt_pi.ln()),
            (1.5, (0.5 * sqrt_pi).ln()),
            (20.0, (1..20).map(|k| (k as f64).ln()).sum::<f64>()),
            (1e-3, 6.907_178_885_383_854),
            (150.5, 602.513_954_870_585_5),
        ] {
            let got = ln_gamma(x);
            assert!(
                (got - expected).abs() < 1e-12 * (1.0 + expected.abs()),
                "{x}: {got}"
            );
        }
    }

    /// `log p` of one coordinate through the trait (1-D point).
    fn log_density<B: BaseDistribution<f64>>(b: &B, z: f64) -> f64 {
        b.log_prob_point(&[z])
    }

    #[test]
    fn student_t_log_prob_matches_the_formula() {
        // ν = 1: Cauchy, 1/(π(1 + z²)); ν = 2: (2 + z²)^(−3/2); ν = 3: 6√3/(π(3 + z²)²).
        let pi = std::f64::consts::PI;
        type Density = fn(f64) -> f64;
        let cases: [(f64, Density); 3] = [
            (1.0, |z| 1.0 / (std::f64::consts::PI * (1.0 + z * z))),
            (2.0, |z| (2.0 + z * z).powf(-1.5)),
            (3.0, |z| {
                6.0 * 3f64.sqrt() / (std::f64::consts::PI * (3.0 + z * z).powi(2))
            }),
        ];
        for (df, density) in cases {
            let b = StudentT::new(df);
            assert_eq!(b.df(), df);
            for z in [0.0, 0.3, -1.7, 4.0, -25.0, 1e3] {
                let got = log_density(&b, z);
                let expected = density(z).ln();
                assert!(
                    (got - expected).abs() < 1e-12 * (1.0 + expected.abs()),
                    "{df} {z}"
                );
            }
            // A point is the sum over its coordinates.
            let two = BaseDistribution::<f64>::log_prob_point(&b, &[0.3, -1.7]);
            assert!((two - density(0.3).ln() - density(-1.7).ln()).abs() < 1e-12);
        }
        // Far out: finite, the asymptote −(ν+1)·log|z| + const, no overflow of z².
        let b = StudentT::new(3.0);
        let far = log_density(&b, 1e200);
        let expected = (6.0 * 3f64.sqrt() / pi).ln() - 4.0 * 1e200f64.ln();
        assert!((far - expected).abs() < 1e-12 * expected.abs(), "{far}");
        assert_eq!(log_density(&b, f64::INFINITY), f64::NEG_INFINITY);
    }

    #[test]
    #[should_panic(expected = "df must be finite and > 0")]
    fn student_t_rejects_non_positive_df() {
        StudentT::new(0.0);
    }

    /// `∫ p` over ℝ by the midpoint rule in `θ` with `z = tan θ` (heavy tails included).
    fn integral_over_the_line(log_p: impl Fn(f64) -> f64) -> f64 {
        let n = 200_000;
        let h = std::f64::consts::PI / n as f64;
        (0..n)
            .map(|k| {
                let theta = -std::f64::consts::FRAC_PI_2 + (k as f64 + 0.5) * h;
                let c = theta.cos();
                log_p(theta.tan()).exp() / (c * c) * h
            })
            .sum()
    }

    #[test]
    fn densities_integrate_to_one_in_one_dimension() {
        for df in [1.0, 2.5, 7.0, 60.0] {
            let b = StudentT::new(df);
            let total = integral_over_the_line(|z| log_density(&b, z));
            assert!((total - 1.0).abs() < 1e-6, "student_t({df}): {total}");
        }
        let total = integral_over_the_line(|z| log_density(&Logistic, z));
        assert!((total - 1.0).abs() < 1e-6, "logistic: {total}");
        let b = DiagonalNormal {
            mean: vec![1.3],
            log_std: vec![-0.6],
        };
        let total = integral_over_the_line(|z| log_density(&b, z));
        assert!((total - 1.0).abs() < 1e-6, "diagonal normal: {total}");
    }

    #[test]
    fn logistic_log_prob_matches_the_formula_and_is_finite_far_out() {
        for z in [0.0f64, 0.5, -2.0, 10.0, -30.0] {
            let e = (-z).exp();
            let expected = (e / ((1.0 + e) * (1.0 + e))).ln();
            let got = log_density(&Logistic, z);
            assert!(
                (got - expected).abs() < 1e-13 * (1.0 + expected.abs()),
                "{z}"
            );
        }
        for z in [800.0, -800.0, 1e300] {
            let got = log_density(&Logistic, z);
            assert!((got + z.abs()).abs() <= 1e-12 * z.abs(), "{z}: {got}");
        }
        let mut g = Array1::zeros(2);
        let lp = Logistic.log_prob_and_grad(Array1::from(vec![800.0, -800.0]).view(), g.view_mut());
        assert_eq!(lp, -1600.0);
        assert_eq!(g.to_vec(), [-1.0, 1.0]);
    }

    fn random_diagonal(dim: usize, rng: &mut StdRng) -> DiagonalNormal<f64> {
        DiagonalNormal {
            mean: (0..dim).map(|_| rng.random_range(-2.0..2.0)).collect(),
            log_std: (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect(),
        }
    }

    #[test]
    fn diagonal_normal_log_prob_matches_the_formula() {
        let b = random_diagonal(3, &mut StdRng::seed_from_u64(1));
        let z = [0.4, -1.1, 2.5];
        let expected: f64 = (0..3)
            .map(|j| {
                let sd = b.log_std[j].exp();
                let u = (z[j] - b.mean[j]) / sd;
                -0.5 * u * u - sd.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln()
            })
            .sum();
        assert!((b.log_prob_point(&z) - expected).abs() < 1e-12);
        // The fresh one is the standard normal, value and gradient.
        let fresh = DiagonalNormal::<f64>::new(3);
        assert_eq!(fresh.mean, [0.0; 3]);
        assert_eq!(fresh.log_std, [0.0; 3]);
        let zv = Array1::from(z.to_vec());
        let (mut g1, mut g2) = (Array1::zeros(3), Array1::zeros(3));
        let a = fresh.log_prob_and_grad(zv.view(), g1.view_mut());
        let b = StandardNormal.log_prob_and_grad(zv.view(), g2.view_mut());
        assert!((a - b).abs() < 1e-14);
        assert_eq!(g1, g2);
    }

    fn central_fd(f: impl Fn(f64) -> f64, x: f64) -> f64 {
        let h = 1e-6 * x.abs().max(1.0);
        (f(x + h) - f(x - h)) / (2.0 * h)
    }

    /// `∇_z log p` of `b` at random points against central differences.
    fn check_grad<B: BaseDistribution<f64>>(name: &str, b: &B, dim: usize, scale: f64) {
        let mut rng = StdRng::seed_from_u64(2);
        for _ in 0..50 {
            let z: Vec<f64> = (0..dim)
                .map(|_| scale * rng.random_range(-1.0..1.0))
                .collect();
            let mut g = Array1::zeros(dim);
            let lp = b.log_prob_and_grad(Array1::from(z.clone()).view(), g.view_mut());
            assert!(
                (lp - b.log_prob_point(&z)).abs() < 1e-12 * (1.0 + lp.abs()),
                "{name}"
            );
            for j in 0..dim {
                let fd = central_fd(
                    |v| {
                        let mut p = z.clone();
                        p[j] = v;
                        b.log_prob_point(&p)
                    },
                    z[j],
                );
                assert!(
                    (g[j] - fd).abs() < 1e-6 * (1.0 + fd.abs()),
                    "{name} {z:?} {j}: {} vs {fd}",
                    g[j]
                );
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        for df in [0.5, 3.0, 50.0] {
            check_grad(&format!("student_t({df})"), &StudentT::new(df), 3, 4.0);
            check_grad(
                &format!("student_t({df}), far"),
                &StudentT::new(df),
                2,
                300.0,
            );
        }
        check_grad("logistic", &Logistic, 3, 6.0);
        check_grad(
            "diagonal normal",
            &random_diagonal(3, &mut StdRng::seed_from_u64(3)),
            3,
            3.0,
        );
    }

    #[test]
    fn diagonal_normal_parameter_gradients_match_finite_differences_and_add() {
        let mut rng = StdRng::seed_from_u64(4);
        let b = random_diagonal(3, &mut rng);
        let z = Array1::from(vec![0.7, -2.2, 1.4]);
        let w = -0.8;
        let start: Vec<f64> = (0..6).map(|k| 0.1 * k as f64).collect();
        let mut pg = start.clone();
        let mut g = Array1::zeros(3);
        let lp = b.log_prob_backward(z.view(), g.view_mut(), w, &mut pg);
        assert_eq!(lp, b.log_prob_point(z.as_slice().unwrap()));
        for p in 0..6 {
            let fd = central_fd(
                |v| {
                    let mut m = b.clone();
                    let mut k = 0;
                    m.visit_params_mut(&mut |_, _, values| {
                        for x in values {
                            if k == p {
                                *x = v;
                            }
                            k += 1;
                        }
                    });
                    w * m.log_prob_point(z.as_slice().unwrap())
                },
                if p < 3 { b.mean[p] } else { b.log_std[p - 3] },
            );
            let got = pg[p] - start[p];
            assert!(
                (got - fd).abs() < 1e-6 * (1.0 + fd.abs()),
                "param {p}: {got} vs {fd}"
            );
        }
        // The layout: `mean` [D] then `log_std` [D].
        let mut seen = Vec::new();
        b.visit_params(&mut |name, shape, values| {
            seen.push((name.to_owned(), shape.to_vec(), values.to_vec()))
        });
        assert_eq!(
            seen,
            [
                ("mean".to_owned(), vec![3], b.mean.clone()),
                ("log_std".to_owned(), vec![3], b.log_std.clone())
            ]
        );
        assert_eq!(BaseDistribution::<f64>::param_len(&b), 6);
        assert_eq!(BaseDistribution::<f64>::param_len(&StandardNormal), 0);
    }

    /// Mean, variance and the fraction of draws ≤ `q` of coordinate `j` over `n` draws.
    fn sample_stats<B: BaseDistribution<f64>>(
        b: &B,
        dim: usize,
        j: usize,
        q: f64,
    ) -> (f64, f64, f64) {
        let n = 200_000;
        let mut rng = StdRng::seed_from_u64(5);
        let mut z = vec![0.0; dim];
        let (mut sum, mut sq, mut below) = (0.0, 0.0, 0usize);
        for _ in 0..n {
            b.sample_point(&mut z, &mut rng);
            assert!(z.iter().all(|v| v.is_finite()));
            sum += z[j];
            sq += z[j] * z[j];
            below += usize::from(z[j] <= q);
        }
        let mean = sum / n as f64;
        (mean, sq / n as f64 - mean * mean, below as f64 / n as f64)
    }

    #[test]
    fn sampling_moments() {
        // Student-t(10): mean 0, variance ν/(ν−2) = 1.25; Cauchy: P(z ≤ 1) = 3/4.
        let (m, v, _) = sample_stats(&StudentT::new(10.0), 2, 1, 0.0);
        assert!(m.abs() < 0.015 && (v - 1.25).abs() < 0.04, "{m} {v}");
        let (_, _, p) = sample_stats(&StudentT::new(1.0), 2, 0, 1.0);
        assert!((p - 0.75).abs() < 0.005, "{p}");
        // Logistic: mean 0, variance π²/3, P(z ≤ 1) = σ(1).
        let (m, v, p) = sample_stats(&Logistic, 2, 1, 1.0);
        let sigma1 = 1.0 / (1.0 + (-1.0f64).exp());
        assert!(m.abs() < 0.025, "{m}");
        assert!((v - std::f64::consts::PI.powi(2) / 3.0).abs() < 0.1, "{v}");
        assert!((p - sigma1).abs() < 0.005, "{p}");
        // Diagonal normal: mean[j], exp(log_std[j])², P(z ≤ mean) = ½.
        let b = random_diagonal(3, &mut StdRng::seed_from_u64(6));
        for j in 0..3 {
            let sd = b.log_std[j].exp();
            let (m, v, p) = sample_stats(&b, 3, j, b.mean[j]);
            assert!((m - b.mean[j]).abs() < 0.01 * sd, "{j}: {m}");
            assert!((v / (sd * sd) - 1.0).abs() < 0.02, "{j}: {v}");
            assert!((p - 0.5).abs() < 0.005, "{j}: {p}");
        }
    }

    #[test]
    fn new_bases_work_in_f32_and_on_the_real_line() {
        let z = [0.3f32, -2.0];
        let z64 = [0.3f32 as f64, -2.0];
        let t = StudentT::new(4.0);
        let d32 = DiagonalNormal::<f32> {
            mean: vec![0.5, -0.5],
            log_std: vec![0.2, -0.3],
        };
        let d64 = DiagonalNormal::<f64> {
            mean: vec![0.5, -0.5],
            log_std: vec![0.2f32 as f64, -0.3f32 as f64],
        };
        let pairs = [
            (
                BaseDistribution::<f32>::log_prob_point(&t, &z),
                BaseDistribution::<f64>::log_prob_point(&t, &z64),
            ),
            (
                BaseDistribution::<f32>::log_prob_point(&Logistic, &z),
                BaseDistribution::<f64>::log_prob_point(&Logistic, &z64),
            ),
            (d32.log_prob_point(&z), d64.log_prob_point(&z64)),
        ];
        for (a, b) in pairs {
            assert!((a as f64 - b).abs() < 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
        let mut rng = StdRng::seed_from_u64(7);
        let mut s = [0f32; 2];
        for _ in 0..1000 {
            BaseDistribution::<f32>::sample_point(&Logistic, &mut s, &mut rng);
            assert!(s.iter().all(|v| v.is_finite()));
        }
        assert_eq!(BaseDistribution::<f64>::support(&t), Support::Real);
        assert_eq!(BaseDistribution::<f64>::support(&Logistic), Support::Real);
        assert_eq!(d64.support(), Support::Real);
    }
}
