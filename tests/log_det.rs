//! Log-determinants of whole flows: against `log|det J|` of the point map by central
//! finite differences and LU (`flowgen::testing::log_abs_det_fd`), forward and inverse
//! log-dets exact negatives, and the batch API equal to the point API.

mod common;

use common::*;
use flowgen::BaseDistribution;
use flowgen::prelude::*;
use flowgen::testing::log_abs_det_fd;

/// Central differences with h = 1e-6 leave O(1e-10) truncation error per Jacobian entry,
/// plus rounding of intermediates divided by h (observed: ≤ 2e-9 forward).
const FD_TOL: f64 = 1e-7;
/// The inverse of a sigmoid-ended flow near the boundary of (0, 1) is steep: at 1e-4 from
/// the boundary a step of 1e-6 is 1% of the distance, so the truncation error of central
/// differences grows (observed: ≤ 2e-6 at x₄ = 0.99989).
const FD_TOL_INVERSE: f64 = 1e-5;

/// `forward_and_log_det`'s log-det against FD of `forward_point` at random base points,
/// and `inverse_and_log_det`'s against FD of `inverse_point` at their images.
fn log_det_matches_finite_differences<M: Case>() {
    for seed in 0..3 {
        let model = M::perturbed(seed);
        let mut rng = rng(10 + seed);
        let z = base_points(&model, 12, &mut rng);
        let (x, ld_f) = model.forward_and_log_det(z.view()).unwrap();
        let (_, ld_i) = model.inverse_and_log_det(x.view()).unwrap();
        for r in 0..z.nrows() {
            let fd = log_abs_det_fd(|p| model.fwd(p).0, &row(&z, r));
            assert!(
                close(ld_f[r], fd, FD_TOL),
                "{} seed {seed} row {r}: forward log-det {} vs finite differences {fd} at z = {:?}",
                M::NAME,
                ld_f[r],
                row(&z, r)
            );
            // Central differences need room on both sides: a point within 1e-4 of the edge of
            // a bounded support (a sigmoid-ended flow's image can be) is not checked here.
            let near_edge = row(&x, r).iter().zip(M::support()).any(|(&v, s)| match s {
                Support::UnitInterval => v.min(1.0 - v) < 1e-4,
                Support::Symmetric => 1.0 - v.abs() < 1e-4,
                Support::Positive => v < 1e-4,
                Support::Real => false,
            });
            if near_edge {
                continue;
            }
            let fd_inv = log_abs_det_fd(|p| model.inv(p).0, &row(&x, r));
            assert!(
                close(ld_i[r], fd_inv, FD_TOL_INVERSE),
                "{} seed {seed} row {r}: inverse log-det {} vs finite differences {fd_inv} at x = {:?}",
                M::NAME,
                ld_i[r],
                row(&x, r)
            );
        }
    }
}
case_tests!(log_det_matches_finite_differences);

/// The log-det of `inverse_and_log_det(x)` is minus that of `forward_and_log_det(z)`
/// for `x = forward(z)` (1e-10), in the batch and the point API.
fn forward_and_inverse_log_dets_are_negatives<M: Case>() {
    let model = M::perturbed(4);
    let mut rng = rng(20);
    let z = base_points(&model, 600, &mut rng);
    let (x, ld_f) = model.forward_and_log_det(z.view()).unwrap();
    let (_, ld_i) = model.inverse_and_log_det(x.view()).unwrap();
    for r in 0..z.nrows() {
        assert!(
            (ld_f[r] + ld_i[r]).abs() < 1e-10,
            "{} row {r}: forward {} inverse {}",
            M::NAME,
            ld_f[r],
            ld_i[r]
        );
        let (xp, lf) = model.fwd(&row(&z, r));
        let (_, li) = model.inv(&xp);
        assert!(
            (lf + li).abs() < 1e-10,
            "{} row {r}: point forward {lf} inverse {li}",
            M::NAME
        );
    }
}
case_tests!(forward_and_inverse_log_dets_are_negatives);

/// Every batch method equals the point API row by row (up to the summation order of
/// the matrix products: 1e-12), across several row blocks.
fn batch_equals_point<M: Case>() {
    let model = M::perturbed(5);
    let mut rng = rng(30);
    let z = base_points(&model, 700, &mut rng);
    let (x, ld_f) = model.forward_and_log_det(z.view()).unwrap();
    let (zb, ld_i) = model.inverse_and_log_det(x.view()).unwrap();
    let lp = model.log_prob(x.view()).unwrap();
    for r in 0..z.nrows() {
        let (xp, lf) = model.fwd(&row(&z, r));
        assert!(
            max_rel_diff(&xp, x.row(r)) < 1e-12,
            "{} row {r}: forward",
            M::NAME
        );
        assert!(
            close(lf, ld_f[r], 1e-12),
            "{} row {r}: forward log-det {lf} vs {}",
            M::NAME,
            ld_f[r]
        );
        let (zp, li) = model.inv(&row(&x, r));
        assert!(
            max_rel_diff(&zp, zb.row(r)) < 1e-12,
            "{} row {r}: inverse",
            M::NAME
        );
        assert!(
            close(li, ld_i[r], 1e-12),
            "{} row {r}: inverse log-det {li} vs {}",
            M::NAME,
            ld_i[r]
        );
        let lpp = model.lp(&row(&x, r)).unwrap();
        assert!(
            close(lpp, lp[r], 1e-12),
            "{} row {r}: log_prob {lpp} vs {}",
            M::NAME,
            lp[r]
        );
        assert!(
            lpp.is_finite(),
            "{} row {r}: log_prob of a sample is {lpp}",
            M::NAME
        );
    }
}
case_tests!(batch_equals_point);

/// `log_prob(x) = log p_Z(inverse(x)) + log|det ∂f⁻¹/∂x|`, with the base density written
/// out by hand.
fn log_prob_is_the_change_of_variables<M: Case>() {
    let model = M::perturbed(6);
    let mut rng = rng(40);
    let x = data_points(&model, 300, &mut rng);
    let (z, ld) = model.inverse_and_log_det(x.view()).unwrap();
    let lp = model.log_prob(x.view()).unwrap();
    let uniform = matches!(model.base().support(), Support::UnitInterval);
    // The standard normal's and uniform's densities written out; the other bases' (unit-
    // tested against their formulas in flow-runtime) from the base itself.
    let standard_normal =
        std::any::type_name::<<M as Flow<f64>>::Base>().ends_with("::StandardNormal");
    for r in 0..x.nrows() {
        let z_row = z.row(r).to_vec();
        let base: f64 = if uniform {
            assert!(z_row.iter().all(|&v| v > 0.0 && v < 1.0));
            0.0
        } else if standard_normal {
            z_row
                .iter()
                .map(|v| -0.5 * v * v - 0.5 * (2.0 * std::f64::consts::PI).ln())
                .sum()
        } else {
            model.base().log_prob_point(&z_row)
        };
        assert!(
            close(lp[r], base + ld[r], 1e-12),
            "{} row {r}: {} vs {}",
            M::NAME,
            lp[r],
            base + ld[r]
        );
    }
}
case_tests!(log_prob_is_the_change_of_variables);
