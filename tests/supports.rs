//! The generated `SUPPORT` constant against what the flows really produce: samples of a
//! flow lie in its declared support, for the support-preserving rules of the layer table
//! (constant shifts and scales, leaky ReLU), and at saturation.

mod common;

use common::*;
use flowgen::prelude::*;

/// Draws many samples, with the base spread wide (the last layers see the whole real
/// line, not only typical values), and checks each coordinate against `support`.
fn assert_samples_in(
    support: &[Support],
    sample: impl Fn(&mut flowgen::rand::rngs::StdRng) -> Vec<f64>,
    what: &str,
) {
    let mut r = rng(1);
    for _ in 0..5000 {
        let x = sample(&mut r);
        for (j, (&s, &v)) in support.iter().zip(&x).enumerate() {
            assert!(
                s.contains(v),
                "{what}: sample coordinate {j} = {v} outside the declared {s:?}"
            );
        }
    }
}

flowgen::flow! { pub struct TanhScaleHalf { dim = 2; float = f64; affine; tanh; scale(-0.5) } }
flowgen::flow! { pub struct SigmoidScale { dim = 2; float = f64; affine; sigmoid; scale(0.8) } }
flowgen::flow! { pub struct ExpShift { dim = 2; float = f64; affine; exp; shift(1.5); scale } }
flowgen::flow! { pub struct TanhLeakyGentle { dim = 2; float = f64; affine; tanh; leaky_relu(slope = 0.5) } }
flowgen::flow! { pub struct SigmoidLeakySteep { dim = 2; float = f64; affine; sigmoid; leaky_relu(slope = 3.0) } }
flowgen::flow! { pub struct TanhLeakySteep { dim = 1; float = f64; tanh; leaky_relu(slope = 2.0) } }

#[test]
fn support_preserving_layers_keep_the_declared_support() {
    assert_eq!(TanhScaleHalf::SUPPORT, [Support::Symmetric; 2]);
    assert_eq!(SigmoidScale::SUPPORT, [Support::UnitInterval; 2]);
    assert_eq!(ExpShift::SUPPORT, [Support::Positive; 2]);
    assert_eq!(TanhLeakyGentle::SUPPORT, [Support::Symmetric; 2]);
    assert_eq!(SigmoidLeakySteep::SUPPORT, [Support::UnitInterval; 2]);

    let mut m = TanhScaleHalf::default();
    perturb_fields!(m, &mut rng(2); affine_0);
    assert_samples_in(
        &TanhScaleHalf::SUPPORT,
        |r| m.sample_point(r).to_vec(),
        "tanh; scale(-0.5)",
    );
    let mut m = SigmoidScale::default();
    perturb_fields!(m, &mut rng(2); affine_0);
    assert_samples_in(
        &SigmoidScale::SUPPORT,
        |r| m.sample_point(r).to_vec(),
        "sigmoid; scale(0.8)",
    );
    let mut m = ExpShift::default();
    perturb_fields!(m, &mut rng(2); affine_0, scale_3);
    assert_samples_in(
        &ExpShift::SUPPORT,
        |r| m.sample_point(r).to_vec(),
        "exp; shift(1.5); scale",
    );
    let mut m = TanhLeakyGentle::default();
    perturb_fields!(m, &mut rng(2); affine_0);
    assert_samples_in(
        &TanhLeakyGentle::SUPPORT,
        |r| m.sample_point(r).to_vec(),
        "tanh; leaky_relu(slope = 0.5)",
    );
    let mut m = SigmoidLeakySteep::default();
    perturb_fields!(m, &mut rng(2); affine_0);
    assert_samples_in(
        &SigmoidLeakySteep::SUPPORT,
        |r| m.sample_point(r).to_vec(),
        "sigmoid; leaky_relu(slope = 3.0)",
    );
}

/// `leaky_relu(slope = s)` with s > 1 maps (−1, 1) onto (−s, 1), which is not inside
/// (−1, 1): the declared support must widen to ℝ (and `tanh; leaky_relu(slope = 2.0);
/// atanh` must not compile: `tests/ui/steep-leaky-relu-then-atanh.rs`).
#[test]
fn steep_leaky_relu_does_not_keep_the_symmetric_support() {
    let m = TanhLeakySteep::default();
    let (x, _) = m.forward_point([-1.0]);
    assert!(
        TanhLeakySteep::SUPPORT[0].contains(x[0]),
        "tanh; leaky_relu(slope = 2.0): forward(−1) = {} but SUPPORT = {:?}",
        x[0],
        TanhLeakySteep::SUPPORT
    );
}

/// DESIGN §2: a flow ending in `sigmoid` has samples in (0, 1)^D. Past ~16.6 (f32) or
/// ~36.7 (f64) the sigmoid rounds to exactly 1, so its kernel keeps the value at the last
/// number below 1 (and above 0 on the other side): samples stay in the open support and
/// score finitely. (At such points the density `sample_and_log_prob` reports is that of the
/// unrounded value, which `log_prob` cannot recover from the rounded one.)
#[test]
fn saturated_sigmoid_samples_stay_inside_the_support() {
    let mut m32 = flow![dim = 1; float = f32; affine; sigmoid];
    m32.affine_0.shift = vec![20.0];
    let (x, lp) = m32.sample_and_log_prob(100, &mut rng(2));
    let scored = m32.log_prob(x.view()).unwrap();
    for i in 0..100 {
        assert!(
            x[[i, 0]] > 0.0 && x[[i, 0]] < 1.0,
            "f32 sample {i} = {}",
            x[[i, 0]]
        );
        assert!(
            lp[i].is_finite() && scored[i].is_finite(),
            "f32 sample {i}: sample_and_log_prob {} vs log_prob {}",
            lp[i],
            scored[i]
        );
    }
    let mut m64 = flow![dim = 1; float = f64; affine; sigmoid];
    m64.affine_0.shift = vec![40.0];
    let (x, lp) = m64.sample_and_log_prob(100, &mut rng(2));
    let scored = m64.log_prob(x.view()).unwrap();
    for i in 0..100 {
        assert!(
            x[[i, 0]] > 0.0 && x[[i, 0]] < 1.0,
            "f64 sample {i} = {}",
            x[[i, 0]]
        );
        assert!(
            lp[i].is_finite() && scored[i].is_finite(),
            "f64 sample {i}: sample_and_log_prob {} vs log_prob {}",
            lp[i],
            scored[i]
        );
    }
}
