//! Bad input: wrong column counts and non-finite values are errors (for every batch method
//! and the point API) naming the first bad entry; points outside the support have
//! `log_prob = -inf`; and `log_prob` never returns NaN for finite input, however extreme.

mod common;

use common::*;
use flowgen::ndarray::{Array2, arr2};
use flowgen::prelude::*;

flowgen::flow! {
    pub struct Sig2 { dim = 2; float = f64; affine; coupling(mask = even, hidden = [8]); sigmoid }
}

flowgen::flow! {
    pub struct Sig2F32 { dim = 2; float = f32; affine; coupling(mask = odd, hidden = [8]); sigmoid }
}

fn sig2() -> Sig2 {
    let mut m = Sig2::new(&mut rng(1));
    perturb_fields!(m, &mut rng(2); affine_0, coupling_1, sigmoid_2);
    m
}

fn sig2_f32() -> Sig2F32 {
    let mut m = Sig2F32::new(&mut rng(1));
    perturb_fields!(m, &mut rng(2); affine_0, coupling_1, sigmoid_2);
    m
}

/// Every batch method's error for the batch `x`, in a fixed order.
fn all_batch_errors<M: Density<f64>>(
    model: &M,
    x: &Array2<f64>,
) -> Vec<(&'static str, Option<FlowError>)> {
    vec![
        ("forward", model.forward(x.view()).err()),
        (
            "forward_and_log_det",
            model.forward_and_log_det(x.view()).err(),
        ),
        ("inverse", model.inverse(x.view()).err()),
        (
            "inverse_and_log_det",
            model.inverse_and_log_det(x.view()).err(),
        ),
        ("log_prob", model.log_prob(x.view()).err()),
    ]
}

fn wrong_column_count_is_an_error<M: Case>() {
    let model = M::perturbed(0);
    let d = model.dim();
    for cols in [0, d - 1, d + 1, 3 * d] {
        if cols == d {
            continue;
        }
        let x = Array2::from_elem((5, cols), 0.5);
        for (method, err) in all_batch_errors(&model, &x) {
            assert_eq!(
                err,
                Some(FlowError::WrongDim {
                    expected: d,
                    found: cols
                }),
                "{}::{method} with {cols} columns",
                M::NAME
            );
        }
    }
}
case_tests!(wrong_column_count_is_an_error);

/// NaN, +inf and −inf at (row, col) — also in a later row block — give `NonFinite` with
/// that row, column and value, for every batch method; the first bad entry in row-major
/// order is the one reported.
fn non_finite_values_are_errors_naming_the_entry<M: Case>() {
    let model = M::perturbed(0);
    let d = model.dim();
    let good = data_points(&model, 700, &mut rng(3));
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        for (r, c) in [(0, 0), (3, d - 1), (699, d / 2), (300, 0)] {
            let mut x = good.clone();
            x[[r, c]] = bad;
            if r + 1 < 700 {
                // A later bad value must not be the one reported.
                x[[r + 1, 0]] = f64::NAN;
            }
            for (method, err) in all_batch_errors(&model, &x) {
                match err {
                    Some(FlowError::NonFinite { row, col, value }) => {
                        assert_eq!((row, col), (r, c), "{}::{method}", M::NAME);
                        assert!(
                            value.to_bits() == bad.to_bits() || (bad.is_nan() && value.is_nan()),
                            "{}::{method}: value {value} for {bad}",
                            M::NAME
                        );
                    }
                    other => panic!("{}::{method} with {bad} at ({r}, {c}): {other:?}", M::NAME),
                }
            }
            // The point API on the bad row.
            if r < 700 {
                let p = row(&x, r);
                match model.lp(&p) {
                    Err(FlowError::NonFinite { row: 0, col, .. }) => assert_eq!(col, c),
                    other => panic!("{}::log_prob_point({p:?}): {other:?}", M::NAME),
                }
            }
        }
    }
}
case_tests!(non_finite_values_are_errors_naming_the_entry);

#[test]
fn errors_display_what_went_wrong() {
    let model = sig2();
    let err = model.log_prob(Array2::zeros((2, 3)).view()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains('2') && text.contains('3'), "{text}");
    let err = model
        .log_prob(arr2(&[[0.5, 0.5], [0.5, f64::INFINITY]]).view())
        .unwrap_err();
    assert_eq!(
        err,
        FlowError::NonFinite {
            row: 1,
            col: 1,
            value: f64::INFINITY
        }
    );
    let text = err.to_string();
    assert!(
        text.contains("row 1") && text.contains("column 1") && text.contains("inf"),
        "{text}"
    );
    let _: &dyn std::error::Error = &err;
}

#[test]
fn empty_batches_are_fine() {
    let model = sig2();
    let x = Array2::<f64>::zeros((0, 2));
    assert_eq!(model.log_prob(x.view()).unwrap().len(), 0);
    assert_eq!(model.forward(x.view()).unwrap().dim(), (0, 2));
    assert_eq!(model.inverse_and_log_det(x.view()).unwrap().1.len(), 0);
    assert_eq!(model.sample(0, &mut rng(0)).dim(), (0, 2));
}

/// A flow ending in `sigmoid` scored outside (0, 1)², on its boundary, and at the
/// boundary values f32 rounds to: `-inf`, never NaN, never a panic — batch and point API.
#[test]
fn outside_the_support_log_prob_is_minus_infinity() {
    let model = sig2();
    let outside = [
        1.5,
        0.0,
        1.0,
        -0.2,
        -1e30,
        1e30,
        1.0 + f64::EPSILON,
        -f64::MIN_POSITIVE,
    ];
    for &v in &outside {
        for p in [[v, 0.5], [0.5, v], [v, v]] {
            assert_eq!(model.log_prob_point(p).unwrap(), f64::NEG_INFINITY, "{p:?}");
            let lp = model.log_prob(arr2(&[p, [0.3, 0.6]]).view()).unwrap();
            assert_eq!(lp[0], f64::NEG_INFINITY, "{p:?}");
            assert!(lp[1].is_finite());
        }
    }
    // Also the catalogue's 5-D sigmoid flow and the uniform-base one.
    let m5 = DefaultSigmoid::perturbed(1);
    let mu = UniformBase::perturbed(1);
    for &v in &outside {
        assert_eq!(m5.lp(&[0.5, 0.5, 0.5, 0.5, v]).unwrap(), f64::NEG_INFINITY);
        assert_eq!(m5.lp(&[v, 0.5, 0.5, 0.5, 0.5]).unwrap(), f64::NEG_INFINITY);
        assert_eq!(mu.lp(&[0.5, v]).unwrap(), f64::NEG_INFINITY);
        assert_eq!(mu.lp(&[v, 0.5]).unwrap(), f64::NEG_INFINITY);
    }
}

/// The same in f32, where values near 1 round onto the boundary.
#[test]
fn f32_boundary_values_are_minus_infinity_and_interior_values_finite() {
    let model = sig2_f32();
    for v in [0.0f32, 1.0, -0.0, 1.5, -0.2, 1.0 + f32::EPSILON] {
        for p in [[v, 0.5], [0.5, v]] {
            let lp = model.log_prob_point(p).unwrap();
            assert_eq!(lp, f32::NEG_INFINITY, "{p:?}: {lp}");
            let lp = model.log_prob(arr2(&[p]).view()).unwrap()[0];
            assert_eq!(lp, f32::NEG_INFINITY, "{p:?}: {lp}");
        }
    }
    let interior = [
        1e-45f32,
        f32::MIN_POSITIVE,
        1e-30,
        1e-7,
        0.5,
        1.0 - f32::EPSILON,
        1.0 - f32::EPSILON / 2.0,
    ];
    for &a in &interior {
        for &b in &interior {
            let lp = model.log_prob_point([a, b]).unwrap();
            assert!(!lp.is_nan(), "[{a}, {b}]: NaN");
            let batch = model.log_prob(arr2(&[[a, b]]).view()).unwrap()[0];
            assert!(!batch.is_nan(), "[{a}, {b}]: NaN (batch)");
            // The true log-density is finite and representable in f32 here.
            assert!(lp.is_finite(), "[{a}, {b}]: {lp}");
        }
    }
}

/// Values covering every region of the real line, the unit interval and their edges.
const PROBES: [f64; 22] = [
    -f64::MAX,
    -1e300,
    -1e30,
    -50.0,
    -2.0,
    -1.0,
    -0.2,
    -5e-324,
    0.0,
    5e-324,
    1e-300,
    1e-20,
    0.3,
    0.5,
    0.9,
    1.0 - f64::EPSILON / 2.0,
    1.0,
    1.0 + f64::EPSILON,
    1.5,
    40.0,
    1e30,
    f64::MAX,
];

fn assert_no_nan<M: Density<f64>>(model: &M, name: &str, dim: usize) {
    let mut rows = Vec::new();
    for &a in &PROBES {
        for &b in &PROBES {
            rows.push(
                (0..dim)
                    .map(|j| if j % 2 == 0 { a } else { b })
                    .collect::<Vec<_>>(),
            );
        }
    }
    let x = Array2::from_shape_fn((rows.len(), dim), |(r, j)| rows[r][j]);
    let lp = model.log_prob(x.view()).unwrap();
    for (r, l) in lp.iter().enumerate() {
        assert!(!l.is_nan(), "{name}: log_prob({:?}) is NaN", rows[r]);
        assert!(
            *l < f64::INFINITY,
            "{name}: log_prob({:?}) is +inf",
            rows[r]
        );
    }
}

flowgen::flow! { pub struct SigmoidLogitSigmoid { dim = 2; float = f64; sigmoid; logit; sigmoid } }
flowgen::flow! { pub struct ThreeSigmoids { dim = 2; float = f64; sigmoid; sigmoid; sigmoid } }
flowgen::flow! { pub struct SigmoidTanhAtanh { dim = 2; float = f64; affine; sigmoid; atanh; tanh; atanh; sigmoid } }
flowgen::flow! { pub struct AffineExp { dim = 2; float = f64; affine; exp } }
flowgen::flow! { pub struct ExpExp { dim = 2; float = f64; exp; exp } }
flowgen::flow! { pub struct SoftplusLog { dim = 2; float = f64; softplus; log; softplus } }
flowgen::flow! { pub struct UniformAtanh { dim = 2; float = f64; base = uniform; atanh; exp; log } }

/// No NaN from `log_prob` for any finite input, for stacked squashing layers, exp flows,
/// and every catalogue flow, over a grid of extreme and boundary values.
#[test]
fn log_prob_is_never_nan_for_finite_input() {
    assert_no_nan(
        &SigmoidLogitSigmoid::default(),
        "sigmoid; logit; sigmoid",
        2,
    );
    assert_no_nan(&ThreeSigmoids::default(), "sigmoid; sigmoid; sigmoid", 2);
    let mut m = SigmoidTanhAtanh::default();
    perturb_fields!(m, &mut rng(5); affine_0);
    assert_no_nan(&m, "affine; sigmoid; atanh; tanh; atanh; sigmoid", 2);
    let mut m = AffineExp::default();
    perturb_fields!(m, &mut rng(6); affine_0);
    assert_no_nan(&m, "affine; exp", 2);
    assert_no_nan(&ExpExp::default(), "exp; exp", 2);
    assert_no_nan(&SoftplusLog::default(), "softplus; log; softplus", 2);
    assert_no_nan(
        &UniformAtanh::default(),
        "base = uniform; atanh; exp; log",
        2,
    );
    assert_no_nan(&sig2(), "Sig2", 2);
    fn catalogue<M: Case>() {
        for seed in 0..2 {
            assert_no_nan(&M::perturbed(seed), M::NAME, M::support().len());
        }
    }
    catalogue::<ElementwiseReal>();
    catalogue::<Squash>();
    catalogue::<PositiveChain>();
    catalogue::<BoundedChain>();
    catalogue::<Permutations>();
    catalogue::<RealNvp>();
    catalogue::<DefaultSigmoid>();
    catalogue::<UniformBase>();
}

/// Interior points of stacked sigmoids, however close to the edges, have a finite density:
/// `sigmoid; logit; sigmoid` is onto (0, 1)², and its log-density at 5e-324 is about
/// −2.8e5, representable in f64.
#[test]
fn stacked_sigmoids_are_finite_inside_the_support() {
    let model = SigmoidLogitSigmoid::default();
    for a in [5e-324, 1e-300, 1e-20, 0.3, 0.5, 1.0 - f64::EPSILON / 2.0] {
        for b in [1e-10, 0.5, 1.0 - f64::EPSILON] {
            let lp = model.log_prob_point([a, b]).unwrap();
            assert!(lp.is_finite(), "[{a}, {b}]: {lp}");
        }
    }
    // `sigmoid; sigmoid; sigmoid` has image (σ(σ(0)), σ(σ(1)))² ≈ (0.6225, 0.6749)²:
    // finite inside it, -inf outside.
    let model = ThreeSigmoids::default();
    assert!(model.log_prob_point([0.65, 0.63]).unwrap().is_finite());
    assert_eq!(
        model.log_prob_point([0.3, 0.65]).unwrap(),
        f64::NEG_INFINITY
    );
    assert_eq!(
        model.log_prob_point([0.65, 0.9]).unwrap(),
        f64::NEG_INFINITY
    );
}

/// Normal-base flows with only affine-type layers have a finite (if hugely negative)
/// log-density at ±1e30; beyond ~1e154 the squared norm overflows and `-inf` is the
/// correctly rounded answer.
#[test]
fn huge_inputs_to_normal_base_flows() {
    fn check<M: Case>() {
        let model = M::perturbed(1);
        let d = M::support().len();
        for v in [1e30, -1e30] {
            let p: Vec<f64> = (0..d).map(|j| if j % 2 == 0 { v } else { 0.3 }).collect();
            let lp = model.lp(&p).unwrap();
            assert!(lp.is_finite() && lp < -1e50, "{}({p:?}) = {lp}", M::NAME);
            let all: Vec<f64> = vec![v; d];
            let lp = model.lp(&all).unwrap();
            assert!(lp.is_finite() && lp < -1e50, "{}({all:?}) = {lp}", M::NAME);
        }
        for v in [1e300, -1e300, f64::MAX, -f64::MAX] {
            let p: Vec<f64> = vec![v; d];
            let lp = model.lp(&p).unwrap();
            assert!(!lp.is_nan() && lp < 0.0, "{}({p:?}) = {lp}", M::NAME);
        }
    }
    check::<ElementwiseReal>();
    check::<Permutations>();
    check::<RealNvp>();
}

/// Exp flows far out: `affine; exp` at 1e300 and f64::MAX (log ≈ 709.8) and at the
/// smallest subnormal (log ≈ −744.4) has a finite log-density; `exp; exp` is finite above
/// 1 and `-inf` at or below 1 (outside its image (1, ∞)).
#[test]
fn exp_flows_at_huge_and_tiny_values() {
    let mut model = AffineExp::default();
    perturb_fields!(model, &mut rng(6); affine_0);
    for v in [1e300, f64::MAX, 5e-324, 1e-300] {
        let lp = model.log_prob_point([v, 1.0]).unwrap();
        assert!(lp.is_finite(), "affine; exp at {v}: {lp}");
    }
    let model = ExpExp::default();
    for v in [1e300, f64::MAX, 1.0 + 1e-15, 3.0] {
        let lp = model.log_prob_point([v, 3.0]).unwrap();
        assert!(lp.is_finite(), "exp; exp at {v}: {lp}");
    }
    for v in [1.0, 0.5, 1e-300, 0.0, -1.0] {
        assert_eq!(
            model.log_prob_point([v, 3.0]).unwrap(),
            f64::NEG_INFINITY,
            "exp; exp at {v}"
        );
    }
}

/// The trait documents that rows leaving a layer's domain get an inverse log-det of
/// `-inf`; with a coupling after the sigmoid (in the inverse direction: before), the NaN
/// the sigmoid's inverse produces must not turn it into NaN.
#[test]
fn inverse_log_det_outside_the_support_is_minus_infinity() {
    let model = sig2();
    let x = arr2(&[[1.5, 0.5], [0.5, 1.5], [0.0, 0.5], [0.5, 1.0]]);
    let (_, ld) = model.inverse_and_log_det(x.view()).unwrap();
    for (r, l) in ld.iter().enumerate() {
        assert_eq!(
            *l,
            f64::NEG_INFINITY,
            "row {r} = {:?}: inverse log-det {l}",
            x.row(r)
        );
    }
}
