//! Gradients of random chains of runtime layers through the plain reference
//! (`flowgen::reference::log_prob_and_grad`), and the generated (fused) gradients against it.
//!
//! 1. A proptest (256 cases): random chains from `tests/common/chains.rs` (random
//!    elementwise kinds whose domains contain the support they receive, random
//!    permutations, random couplings with random masks, transforms, activations and hidden
//!    widths; every parameter randomised), random data points in the chain's image (base
//!    draws mapped forward) and random row weights. The reference's values must equal
//!    `reference::inverse_and_log_det` plus the base log-density, and its parameter and
//!    input gradients must match central finite differences in f64.
//! 2. For declared `flow!` flows with random parameters, the generated
//!    `Trainable::log_prob_and_grad` equals the reference over `model.layers()` on 600
//!    rows (more than one 256-row block): fused == unfused, for gradients.

mod common;

use common::chains::{Filter, Step, describe, layers, params_of, random_chain, tame_points};
use common::{max_rel_diff, normal};
use flowgen::ndarray::{Array1, Array2};
use flowgen::rand::RngExt;
use flowgen::reference;
use flowgen::{BaseDistribution, StandardNormal, StandardUniform};
use flowgen::{Support, Trainable};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------
// Random chains (the generator of `tests/common/chains.rs`, shared with
// `tests/random_chains.rs`).
// ---------------------------------------------------------------------------------------

/// Sets the chain's parameters from a flat slice (list order).
fn set_params(steps: &mut [Step], values: &[f64]) {
    let mut offset = 0;
    for s in steps {
        s.layer.visit_params_mut(&mut |_, _, p| {
            p.copy_from_slice(&values[offset..offset + p.len()]);
            offset += p.len();
        });
    }
    assert_eq!(offset, values.len(), "the visitors cover the parameters");
}

/// `Σ_i w_i·log p(x_i)` through the value path (`reference::inverse_and_log_det` and the
/// base's `log_prob_point`).
fn objective<B: BaseDistribution<f64>>(
    steps: &[Step],
    base: &B,
    x: &Array2<f64>,
    w: &[f64],
) -> f64 {
    let (z, ld) = reference::inverse_and_log_det(&layers(steps), x.view());
    (0..x.nrows())
        .map(|i| w[i] * (ld[i] + base.log_prob_point(&z.row(i).to_vec())))
        .sum()
}

/// A gradient against finite differences of `f` at `t`: passes if one of four estimates
/// is within a combined absolute/relative 1e-5 — the central differences of steps
/// `h = 1e-6·max(|t|, 1)` and `h/10`, each alone and Richardson-extrapolated with half
/// its step (`(4·D(h/2) − D(h))/3`, error O(h⁴)). One rule is not enough: where a chain is
/// steep (a value 3e-4 from an edge, the gradient 2e4), the plain difference of step 1e-6
/// is 1e-5 off from truncation; elsewhere the smallest steps drown in rounding. A wrong
/// gradient is off for all of them. Returns the closest estimate, for the message.
fn fd_check(analytic: f64, mut f: impl FnMut(f64) -> f64, t: f64) -> Result<(), f64> {
    let mut central = |h: f64| (f(t + h) - f(t - h)) / (2.0 * h);
    let mut estimates = Vec::with_capacity(4);
    for h in [1e-6, 1e-7] {
        let h = h * t.abs().max(1.0);
        let (d1, d2) = (central(h), central(h / 2.0));
        estimates.push(d1);
        estimates.push((4.0 * d2 - d1) / 3.0);
    }
    let error = |fd: f64| (analytic - fd).abs() / (1.0 + analytic.abs().max(fd.abs()));
    let best = estimates
        .into_iter()
        .min_by(|&a, &b| error(a).total_cmp(&error(b)))
        .expect("four estimates");
    if error(best) <= 1e-5 {
        Ok(())
    } else {
        Err(best)
    }
}

/// Points per chain, and the most parameters checked per chain.
const POINTS: usize = 5;
const MAX_PARAMS: usize = 60;

fn check_chain(seed: u64, dim: usize, len: usize, uniform_base: bool) -> Result<(), TestCaseError> {
    if uniform_base {
        check_chain_with(seed, dim, len, StandardUniform, Support::UnitInterval)
    } else {
        check_chain_with(seed, dim, len, StandardNormal, Support::Real)
    }
}

fn check_chain_with<B: BaseDistribution<f64>>(
    seed: u64,
    dim: usize,
    len: usize,
    base: B,
    start: Support,
) -> Result<(), TestCaseError> {
    let mut rng = common::rng(seed);
    let (mut steps, support) = random_chain(dim, len, start, &mut rng);
    let chain = describe(&steps);

    // Data points: tame base draws mapped forward; points near a bounded edge (of the
    // image's support or of an intermediate one) are skipped, see `Filter::TameAwayFromEdges`.
    let (_, rows) = tame_points(
        &steps,
        dim,
        start,
        POINTS,
        Filter::TameAwayFromEdges,
        &mut rng,
    );
    debug_assert!(
        rows.iter()
            .all(|x| x.iter().zip(&support).all(|(&v, &s)| s.contains(v)))
    );
    prop_assume!(!rows.is_empty(), "no tame point for {}", chain);
    let n_rows = rows.len();
    let x = Array2::from_shape_fn((n_rows, dim), |(r, j)| rows[r][j]);
    let w: Vec<f64> = (0..n_rows).map(|_| normal(&mut rng)).collect();
    let weight = Array1::from(w.clone());

    // The reference gradient.
    let n_params: usize = steps.iter().map(|s| s.layer.param_len()).sum();
    let mut grad = vec![0.0; n_params];
    let mut grad_x = Array2::from_elem((n_rows, dim), f64::NAN);
    let lp = reference::log_prob_and_grad(
        &layers(&steps),
        &base,
        x.view(),
        weight.view(),
        &mut grad,
        grad_x.view_mut(),
    );

    // Values: the inverse log-det plus the base log-density.
    let (z, ld) = reference::inverse_and_log_det(&layers(&steps), x.view());
    for r in 0..n_rows {
        let expected = ld[r] + base.log_prob_point(&z.row(r).to_vec());
        prop_assert!(
            lp[r].is_finite() && (lp[r] - expected).abs() <= 1e-12 * (1.0 + expected.abs()),
            "row {r}: log p = {} but inverse_and_log_det + base gives {expected} in {chain}",
            lp[r]
        );
    }

    // Parameters: all of them, or an evenly spread sample of at most MAX_PARAMS.
    let params = params_of(&steps);
    prop_assert_eq!(params.len(), n_params);
    let stride = n_params.div_ceil(MAX_PARAMS).max(1);
    for k in (0..n_params).step_by(stride) {
        let original = params[k];
        let check = fd_check(
            grad[k],
            |t| {
                let mut p = params.clone();
                p[k] = t;
                set_params(&mut steps, &p);
                objective(&steps, &base, &x, &w)
            },
            original,
        );
        set_params(&mut steps, &params);
        if let Err(fd) = check {
            prop_assert!(
                false,
                "∂J/∂θ[{k}] = {} but finite differences give {fd} in {chain} at {x:?}",
                grad[k]
            );
        }
    }

    // Every input coordinate (only row r's term of J depends on row r).
    for r in 0..n_rows {
        for c in 0..dim {
            let check = fd_check(
                grad_x[[r, c]],
                |t| {
                    let mut xr = x.slice(flowgen::ndarray::s![r..r + 1, ..]).to_owned();
                    xr[[0, c]] = t;
                    objective(&steps, &base, &xr, &w[r..r + 1])
                },
                x[[r, c]],
            );
            if let Err(fd) = check {
                prop_assert!(
                    false,
                    "∂J/∂x[{r}, {c}] = {} but finite differences give {fd} at {:?} in {chain}",
                    grad_x[[r, c]],
                    x.row(r)
                );
            }
        }
    }
    Ok(())
}

proptest! {
    // Random seeds on every run (pin one with PROPTEST_RNG_SEED); failures print the
    // minimal input, nothing is written to the source tree.
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(256)
    })]

    #[test]
    fn random_chain_gradients_match_finite_differences(
        seed in any::<u64>(),
        dim in 1usize..=5,
        len in 1usize..=8,
        uniform_base in any::<bool>(),
    ) {
        check_chain(seed, dim, len, uniform_base)?;
    }
}

// The guard that the shared generator produces every kind and learnable parameters,
// `chains::assert_generator_covers_every_kind`, runs in `tests/random_chains.rs`.

// ---------------------------------------------------------------------------------------
// Fused (generated) == unfused (reference) gradients.
// ---------------------------------------------------------------------------------------

flowgen::flow! {
    pub struct MixedNormal {
        dim = 3; float = f64;
        affine;
        coupling(mask = even, hidden = [8]);
        permute(reverse);
        shift; scale; leaky_relu(slope = 0.3);
        coupling(mask = [0, 1, 1], transform = additive, activation = tanh, hidden = [6, 4]);
        permute(seed = 5);
        coupling(mask = second_half, activation = elu, hidden = []);
        sigmoid
    }
}

flowgen::flow! {
    pub struct MixedUniform {
        dim = 4; float = f64; base = uniform;
        logit;
        coupling(mask = first_half, activation = silu, hidden = [10, 6]);
        permute([2, 0, 3, 1]);
        affine; tanh; scale(0.5); atanh;
        coupling(mask = odd, transform = additive, activation = relu, hidden = [7]);
        softplus; log
    }
}

flowgen::flow! {
    pub struct Stacked {
        dim = 5; float = f64;
        repeat(2) {
            coupling(mask = even, hidden = [12, 12]);
            permute(seed = 11);
            coupling(mask = odd, transform = additive, activation = silu, hidden = [9])
        };
        exp; shift(0.5); log; affine
    }
}

const ROWS: usize = 600;

fn fused_equals_reference<M: Trainable<f64>>(mut model: M, name: &str, seed: u64) {
    let mut rng = common::rng(seed);
    let n = model.param_len();
    let params: Vec<f64> = (0..n).map(|_| 0.3 * normal(&mut rng)).collect();
    model.params_from_slice(&params);
    let dim = model.dim();

    // Data: base draws (normal clipped to ±3, uniform in (0.001, 0.999)) mapped forward.
    let z = match model.base().support() {
        Support::UnitInterval => {
            Array2::from_shape_simple_fn((ROWS, dim), || rng.random_range(0.001..0.999))
        }
        _ => Array2::from_shape_simple_fn((ROWS, dim), || normal(&mut rng).clamp(-3.0, 3.0)),
    };
    let x = model.forward(z.view()).expect("finite base points");
    let weight = Array1::from_shape_simple_fn(ROWS, || normal(&mut rng));

    let mut grad_fused = vec![0.0; n];
    let mut grad_x_fused = Array2::zeros((ROWS, dim));
    let lp_fused = model
        .log_prob_and_grad(
            x.view(),
            weight.view(),
            &mut grad_fused,
            Some(grad_x_fused.view_mut()),
        )
        .expect("valid batch");

    let mut grad_ref = vec![0.0; n];
    let mut grad_x_ref = Array2::zeros((ROWS, dim));
    let layers = model.layers();
    let ref_len: usize = layers.iter().map(|l| l.param_len()).sum();
    assert_eq!(
        ref_len, n,
        "{name}: the layers' param_len sums to the flow's"
    );
    let lp_ref = reference::log_prob_and_grad(
        &layers,
        model.base(),
        x.view(),
        weight.view(),
        &mut grad_ref,
        grad_x_ref.view_mut(),
    );

    assert!(
        lp_ref.iter().all(|v| v.is_finite()),
        "{name}: non-finite log p"
    );
    assert!(
        grad_ref.iter().any(|&g| g != 0.0),
        "{name}: the parameter gradient vanishes"
    );
    let d = max_rel_diff(&lp_fused, &lp_ref);
    assert!(d < 1e-10, "{name}: log p fused vs reference off by {d:e}");
    let d = max_rel_diff(&grad_fused, &grad_ref);
    assert!(d < 1e-10, "{name}: ∂J/∂θ fused vs reference off by {d:e}");
    let d = max_rel_diff(&grad_x_fused, &grad_x_ref);
    assert!(d < 1e-10, "{name}: ∂J/∂x fused vs reference off by {d:e}");
}

#[test]
fn fused_gradients_equal_the_reference() {
    for seed in 0..3 {
        fused_equals_reference(
            MixedNormal::new(&mut common::rng(seed)),
            "MixedNormal",
            seed,
        );
        fused_equals_reference(
            MixedUniform::new(&mut common::rng(seed)),
            "MixedUniform",
            seed,
        );
        fused_equals_reference(Stacked::new(&mut common::rng(seed)), "Stacked", seed);
    }
}

/// Cases that once failed through the finite differences (an intermediate value 6e-6 from
/// the edge of (0, ∞), a value 3e-4 from 1 under a steep chain, a data point 8e-4 from −1):
/// the edge rule and the step ladder of `fd_check` must keep handling them. The seeds pin
/// chains of the shared generator as it draws today.
#[test]
fn former_finite_difference_failures() {
    for (seed, dim, len, uniform_base) in [
        (12431587668963610571, 4, 8, true),
        (3673794408819852760, 5, 7, false),
        (3290543058068990207, 5, 8, false),
    ] {
        check_chain(seed, dim, len, uniform_base).unwrap();
    }
}
