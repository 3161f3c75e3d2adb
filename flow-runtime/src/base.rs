//! Base distributions: where a flow's samples start and its densities end.

use ndarray::{ArrayView1, ArrayViewMut1};
use rand::Rng;

use crate::float::Float;
use crate::support::Support;

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
        let half_log_two_pi = F::of(0.918_938_533_204_672_8);
        let sq: F = z.iter().map(|&v| v * v).sum();
        -(F::of(0.5) * sq) - F::of(z.len() as f64) * half_log_two_pi
    }

    fn sample_point<R: Rng + ?Sized>(&self, z: &mut [F], rng: &mut R) {
        for v in z {
            *v = F::standard_normal(rng);
        }
    }

    fn log_prob_and_grad(&self, z: ArrayView1<'_, F>, mut grad: ArrayViewMut1<'_, F>) -> F {
        let half_log_two_pi = F::of(0.918_938_533_204_672_8);
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

#[cfg(test)]
mod tests {
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
}
