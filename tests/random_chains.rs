//! Random chains of runtime layers (proptest, 256 cases): random elementwise kinds chosen
//! so that each layer's domain contains the support it receives (logit only on (0, 1),
//! atanh only on (−1, 1), log only on (0, ∞)), random permutations, and random couplings
//! (random masks, transforms, activations and hidden widths) with randomised conditioners
//! (the generator of `tests/common/chains.rs`, shared with `tests/random_chain_gradients.rs`).
//! Through `flowgen::reference`: round trips both ways, forward and inverse log-dets
//! negatives, the point path equal to the batch path, and the log-det against finite
//! differences.

mod common;

use common::chains::{
    Filter, assert_generator_covers_every_kind, describe, forward, layers, random_chain,
    scratch_len, tame_points,
};
use common::close;
use flowgen::Support;
use flowgen::ndarray::Array2;
use flowgen::reference;
use flowgen::testing::{jacobian_fd, log_abs_det, log_abs_det_fd};
use proptest::prelude::*;

/// How far `log_det` is from `log|det J|` by central finite differences at `x`, taking
/// the best of several step rules: `flowgen::testing::log_abs_det_fd` (steps
/// `1e-6·max(|x_j|, 1)`), the same with `h = 1e-4, 1e-5`, and relative steps `h·|x_j|`
/// (finite differences of `u ↦ f(x ⊙ u)` at `u = 1`, whose Jacobian is `J·diag(x)`). A
/// fixed rule fails somewhere: an absolute step is too coarse for `log` at 4e-5, a
/// relative one drowns in rounding for `sigmoid` near 0, a small one in rounding when
/// the Jacobian's entries are tiny next to the outputs. A wrong log-det is off for all.
fn fd_error(f: impl Fn(&[f64]) -> Vec<f64>, x: &[f64], log_det: f64) -> f64 {
    let mut best = (log_abs_det_fd(&f, x) - log_det).abs();
    for h in [1e-4, 1e-5] {
        best = best.min((log_abs_det(&jacobian_fd(&f, x, h)) - log_det).abs());
    }
    if x.iter().all(|&v| v != 0.0) {
        let scaled = |u: &[f64]| f(&u.iter().zip(x).map(|(a, b)| a * b).collect::<Vec<_>>());
        let ones = vec![1.0; x.len()];
        let log_abs_x: f64 = x.iter().map(|v| v.abs().ln()).sum();
        for h in [1e-5, 1e-6] {
            let fd = log_abs_det(&jacobian_fd(scaled, &ones, h)) - log_abs_x;
            best = best.min((fd - log_det).abs());
        }
    }
    best
}

/// `close(a, b, tol)`, or a failure naming `what` and the chain.
fn assert_close(what: &str, a: f64, b: f64, tol: f64, chain: &str) -> Result<(), TestCaseError> {
    prop_assert!(close(a, b, tol), "{what}: {a} vs {b} in {chain}");
    Ok(())
}

/// Points checked per chain.
const POINTS: usize = 6;

fn check_chain(seed: u64, dim: usize, len: usize, uniform_base: bool) -> Result<(), TestCaseError> {
    let mut rng = common::rng(seed);
    let start = if uniform_base {
        Support::UnitInterval
    } else {
        Support::Real
    };
    let (steps, support) = random_chain(dim, len, start, &mut rng);
    let chain = describe(&steps);
    let layers = layers(&steps);
    let n_scratch = scratch_len(&steps);

    // Tame base points, several per chain.
    let (points, _) = tame_points(&steps, dim, start, POINTS, Filter::Tame, &mut rng);
    prop_assume!(!points.is_empty(), "no tame point for {}", chain);

    let z = Array2::from_shape_fn((points.len(), dim), |(r, j)| points[r][j]);
    let (x, ld_f) = reference::forward_and_log_det(&layers, z.view());
    let (z_back, ld_i) = reference::inverse_and_log_det(&layers, x.view());
    for (r, p) in points.iter().enumerate() {
        let (xp, ldp) = forward(&steps, p, Filter::None).expect("unfiltered");
        for j in 0..dim {
            assert_close("point vs batch x", xp[j], x[[r, j]], 1e-12, &chain)?;
            assert_close("round trip z", z_back[[r, j]], p[j], 1e-8, &chain)?;
            prop_assert!(
                Support::contains(support[j], x[[r, j]]),
                "x = {} outside the tracked support in {chain}",
                x[[r, j]]
            );
        }
        assert_close("point vs batch log-det", ldp, ld_f[r], 1e-12, &chain)?;
        prop_assert!(
            (ld_f[r] + ld_i[r]).abs() <= 1e-9 * (1.0 + ld_f[r].abs()),
            "forward {} vs inverse {} log-det in {chain}",
            ld_f[r],
            ld_i[r]
        );
        // Each layer's log-det against finite differences of that layer alone, at the point
        // it sees: well-conditioned Jacobians, so a tight tolerance.
        let mut scratch = vec![0.0; n_scratch];
        let mut v = p.clone();
        for s in &steps {
            let at = v.clone();
            let ld = s.layer.forward_point(&mut v, &mut scratch);
            let err = fd_error(
                |q| {
                    let mut q = q.to_vec();
                    let mut scratch = vec![0.0; n_scratch];
                    s.layer.forward_point(&mut q, &mut scratch);
                    q
                },
                &at,
                ld,
            );
            prop_assert!(
                err <= 1e-6 * (1.0 + ld.abs()),
                "{}: log-det {ld} vs finite differences: off by {err:e} at {at:?} in {chain}",
                s.what
            );
        }
        // The whole chain's log-det against finite differences of the whole chain. The
        // composite Jacobian can be ill-conditioned (tiny entries next to large outputs, a
        // determinant of e^-20 from O(1) entries), which makes central differences noisy:
        // 1e-5 relative here, the per-layer checks above are the tight ones.
        let err = fd_error(
            |q| forward(&steps, q, Filter::None).expect("unfiltered").0,
            p,
            ld_f[r],
        );
        prop_assert!(
            err <= 1e-5 * (1.0 + ld_f[r].abs()),
            "log-det {} vs finite differences: off by {err:e} at {p:?} in {chain}",
            ld_f[r]
        );

        // forward(inverse(x)) ≈ x, point by point through the inverse kernels.
        let mut scratch = vec![0.0; n_scratch];
        let mut v = x.row(r).to_vec();
        for s in steps.iter().rev() {
            s.layer.inverse_point(&mut v, &mut scratch);
        }
        let (x_again, _) = forward(&steps, &v, Filter::None).expect("unfiltered");
        for j in 0..dim {
            assert_close("round trip x", x_again[j], x[[r, j]], 1e-9, &chain)?;
        }
    }
    Ok(())
}

proptest! {
    // Random seeds on every run (pin one with PROPTEST_RNG_SEED); failures print the
    // minimal input, nothing is written to the source tree.
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_chains_round_trip_and_log_det(
        seed in any::<u64>(),
        dim in 1usize..=5,
        len in 1usize..=10,
        uniform_base in any::<bool>(),
    ) {
        check_chain(seed, dim, len, uniform_base)?;
    }
}

/// The generator does produce every kind, and learnable parameters (a guard against a
/// silently narrow generator).
#[test]
fn generator_covers_every_kind() {
    assert_generator_covers_every_kind();
}
