//! Random chains of runtime layers (proptest, 256 cases): random elementwise kinds chosen
//! so that each layer's domain contains the support it receives (logit only on (0, 1),
//! atanh only on (−1, 1), log only on (0, ∞)), random permutations, and random couplings
//! (random masks, transforms, activations and hidden widths) with randomised conditioners.
//! Through `flowgen::reference`: round trips both ways, forward and inverse log-dets
//! negatives, the point path equal to the batch path, and the log-det against finite
//! differences.

mod common;

use common::{Perturb, close, normal};
use flowgen::Layer;
use flowgen::Support;
use flowgen::layers::{
    Activation, Affine, Atanh, Coupling, CouplingTransform, Exp, LeakyRelu, Log, Logit, Mask,
    Permute, Scale, Shift, Sigmoid, Softplus, Tanh,
};
use flowgen::ndarray::Array2;
use flowgen::rand::RngExt;
use flowgen::rand::rngs::StdRng;
use flowgen::reference;
use flowgen::testing::{jacobian_fd, log_abs_det, log_abs_det_fd};
use proptest::prelude::*;

/// `a ⊆ b` for the tracked supports.
fn within(a: Support, b: Support) -> bool {
    use Support::*;
    a == b || b == Real || matches!((a, b), (UnitInterval, Symmetric | Positive))
}

/// One step of a random chain, with what the checks need to know about it.
struct Step {
    layer: Box<dyn Layer<f64>>,
    /// A readable description, for failure messages.
    what: String,
    /// Points are skipped (not checked) when some input value of this step is outside this
    /// range: saturating layers lose precision far out (σ(37) rounds to 1), `exp`
    /// overflows, and a leaky ReLU has a kink at 0 that finite differences must not straddle.
    tame: fn(f64) -> bool,
}

fn any_value(_: f64) -> bool {
    true
}

/// Builds a random chain of `len` layers on `dim` coordinates starting from `start`;
/// returns it with the support of each coordinate after it.
fn random_chain(
    dim: usize,
    len: usize,
    start: Support,
    rng: &mut StdRng,
) -> (Vec<Step>, Vec<Support>) {
    let mut support = vec![start; dim];
    let mut steps = Vec::with_capacity(len);
    for _ in 0..len {
        let all = |s: Support| support.iter().all(|&c| within(c, s));
        // (kind, weight): kinds with a restricted domain are favoured when allowed.
        let mut kinds: Vec<(&str, u32)> = vec![
            ("affine", 2),
            ("shift", 1),
            ("shift_const", 1),
            ("scale", 1),
            ("scale_const", 1),
            ("leaky_relu", 2),
            ("sigmoid", 2),
            ("tanh", 2),
            ("softplus", 2),
        ];
        if !support.contains(&Support::Positive) {
            // exp after exp (or softplus) overflows quickly; keep it to unbounded inputs.
            kinds.push(("exp", 2));
        }
        if all(Support::UnitInterval) {
            kinds.push(("logit", 6));
        }
        if all(Support::Symmetric) {
            kinds.push(("atanh", 6));
        }
        if all(Support::Positive) {
            kinds.push(("log", 6));
        }
        if dim >= 2 {
            kinds.push(("permute", 2));
            kinds.push(("coupling", 6));
        }
        let total: u32 = kinds.iter().map(|k| k.1).sum();
        let mut pick = rng.random_range(0..total);
        let kind = kinds
            .iter()
            .find(|(_, w)| {
                if pick < *w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .expect("a kind is picked")
            .0;

        let step = match kind {
            "affine" => {
                let mut l = Affine::identity(dim);
                l.perturb(rng);
                support.fill(Support::Real);
                Step {
                    what: format!("affine {l:?}"),
                    layer: Box::new(l),
                    tame: any_value,
                }
            }
            "shift" => {
                let mut l = Shift::learnable(dim);
                l.perturb(rng);
                support.fill(Support::Real);
                Step {
                    what: format!("shift {l:?}"),
                    layer: Box::new(l),
                    tame: any_value,
                }
            }
            "shift_const" => {
                let c = rng.random_range(-1.0..1.5);
                let l = Shift::constant(dim, c);
                for s in &mut support {
                    *s = if c >= 0.0 && *s == Support::Positive {
                        Support::Positive
                    } else {
                        Support::Real
                    };
                }
                Step {
                    what: format!("shift({c})"),
                    layer: Box::new(l),
                    tame: any_value,
                }
            }
            "scale" => {
                let mut l = Scale::learnable(dim);
                l.perturb(rng);
                for s in &mut support {
                    if *s != Support::Positive {
                        *s = Support::Real;
                    }
                }
                Step {
                    what: format!("scale {l:?}"),
                    layer: Box::new(l),
                    tame: any_value,
                }
            }
            "scale_const" => {
                let c = rng.random_range(0.5..2.0) * if rng.random::<bool>() { 1.0 } else { -1.0 };
                let l = Scale::constant(dim, c);
                for s in &mut support {
                    *s = match *s {
                        Support::Positive if c > 0.0 => Support::Positive,
                        Support::UnitInterval if c > 0.0 && c <= 1.0 => Support::UnitInterval,
                        Support::UnitInterval | Support::Symmetric if c.abs() <= 1.0 => {
                            Support::Symmetric
                        }
                        _ => Support::Real,
                    };
                }
                Step {
                    what: format!("scale({c})"),
                    layer: Box::new(l),
                    tame: any_value,
                }
            }
            "leaky_relu" => {
                let slope = rng.random_range(0.1..3.0);
                for s in &mut support {
                    // Identity on positives; (−1, 1) is kept only when slope ≤ 1.
                    if *s == Support::Symmetric && slope > 1.0 {
                        *s = Support::Real;
                    }
                }
                Step {
                    what: format!("leaky_relu(slope = {slope})"),
                    layer: Box::new(LeakyRelu::<f64>::new(slope)),
                    tame: |v| v.abs() > 1e-4,
                }
            }
            "sigmoid" => {
                support.fill(Support::UnitInterval);
                Step {
                    what: "sigmoid".into(),
                    layer: Box::new(Sigmoid),
                    tame: |v| v.abs() <= 8.0,
                }
            }
            "tanh" => {
                support.fill(Support::Symmetric);
                Step {
                    what: "tanh".into(),
                    layer: Box::new(Tanh),
                    tame: |v| v.abs() <= 4.0,
                }
            }
            "softplus" => {
                support.fill(Support::Positive);
                Step {
                    what: "softplus".into(),
                    layer: Box::new(Softplus),
                    tame: |v| v >= -12.0,
                }
            }
            "exp" => {
                support.fill(Support::Positive);
                Step {
                    what: "exp".into(),
                    layer: Box::new(Exp),
                    tame: |v| (-12.0..=4.5).contains(&v),
                }
            }
            "logit" => {
                support.fill(Support::Real);
                Step {
                    what: "logit".into(),
                    layer: Box::new(Logit),
                    tame: any_value,
                }
            }
            "atanh" => {
                support.fill(Support::Real);
                Step {
                    what: "atanh".into(),
                    layer: Box::new(Atanh),
                    tame: any_value,
                }
            }
            "log" => {
                support.fill(Support::Real);
                Step {
                    what: "log".into(),
                    layer: Box::new(Log),
                    tame: any_value,
                }
            }
            "permute" => {
                let l = match rng.random_range(0..3) {
                    0 => Permute::reverse(dim),
                    1 => Permute::seeded(dim, rng.random()),
                    _ => {
                        let mut p: Vec<usize> = (0..dim).collect();
                        for i in (1..dim).rev() {
                            p.swap(i, rng.random_range(0..=i));
                        }
                        Permute::new(p)
                    }
                };
                support = l.as_slice().iter().map(|&p| support[p]).collect();
                Step {
                    what: format!("permute({:?})", l.as_slice()),
                    layer: Box::new(l),
                    tame: any_value,
                }
            }
            "coupling" => {
                let explicit: Vec<bool> = loop {
                    let m: Vec<bool> = (0..dim).map(|_| rng.random()).collect();
                    if m.contains(&true) && m.contains(&false) {
                        break m;
                    }
                };
                let mask = match rng.random_range(0..5) {
                    0 => Mask::Even,
                    1 => Mask::Odd,
                    2 => Mask::FirstHalf,
                    3 => Mask::SecondHalf,
                    _ => Mask::Explicit(&explicit),
                };
                let transform = if rng.random() {
                    CouplingTransform::Affine
                } else {
                    CouplingTransform::Additive
                };
                let activation = [
                    Activation::Relu,
                    Activation::Tanh,
                    Activation::Elu,
                    Activation::Silu,
                ][rng.random_range(0..4)];
                let hidden: Vec<usize> = (0..rng.random_range(0..3))
                    .map(|_| rng.random_range(1..7))
                    .collect();
                let mut l = Coupling::new(dim, mask, transform, &hidden, activation, rng);
                l.perturb(rng);
                let kept = mask.kept(dim);
                for (s, k) in support.iter_mut().zip(kept) {
                    if !k {
                        *s = Support::Real;
                    }
                }
                Step {
                    what: format!(
                        "coupling(mask = {mask:?}, transform = {transform:?}, hidden = {hidden:?}, activation = {activation:?})"
                    ),
                    layer: Box::new(l),
                    tame: any_value,
                }
            }
            _ => unreachable!(),
        };
        steps.push(step);
    }
    (steps, support)
}

/// Points whose intermediate values leave `[−MODERATE, MODERATE]` are skipped: a strongly
/// contracting coupling (log-scale near its bound −5) on large values loses digits that no
/// inverse can recover, which is ill-conditioning of the chain, not an error of the code.
const MODERATE: f64 = 100.0;

/// The chain's forward map on one point through the layers' point kernels; `None` if the
/// point is not tame (see [`Step::tame`]) or leaves the moderate range.
fn forward_point(steps: &[Step], z: &[f64], check_tame: bool) -> Option<(Vec<f64>, f64)> {
    let scratch_len = steps
        .iter()
        .map(|s| s.layer.point_scratch())
        .max()
        .unwrap_or(0);
    let mut scratch = vec![0.0; scratch_len];
    let mut x = z.to_vec();
    let mut ld = 0.0;
    for s in steps {
        if check_tame && !x.iter().all(|&v| (s.tame)(v)) {
            return None;
        }
        ld += s.layer.forward_point(&mut x, &mut scratch);
        if check_tame && !x.iter().all(|v| v.abs() <= MODERATE) {
            return None;
        }
    }
    Some((x, ld))
}

fn describe(steps: &[Step]) -> String {
    steps
        .iter()
        .map(|s| s.what.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

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
    let layers: Vec<&dyn Layer<f64>> = steps.iter().map(|s| s.layer.as_ref()).collect();

    // Tame base points, several per chain.
    let mut points = Vec::new();
    for _ in 0..4 * POINTS {
        let z: Vec<f64> = (0..dim)
            .map(|_| {
                if uniform_base {
                    rng.random_range(0.001..0.999)
                } else {
                    normal(&mut rng).clamp(-3.0, 3.0)
                }
            })
            .collect();
        if forward_point(&steps, &z, true).is_some() {
            points.push(z);
        }
        if points.len() == POINTS {
            break;
        }
    }
    prop_assume!(!points.is_empty(), "no tame point for {}", chain);

    let z = Array2::from_shape_fn((points.len(), dim), |(r, j)| points[r][j]);
    let (x, ld_f) = reference::forward_and_log_det(&layers, z.view());
    let (z_back, ld_i) = reference::inverse_and_log_det(&layers, x.view());
    for (r, p) in points.iter().enumerate() {
        let (xp, ldp) = forward_point(&steps, p, false).expect("unchecked");
        for j in 0..dim {
            prop_assert!(
                close(xp[j], x[[r, j]], 1e-12),
                "point vs batch x: {} vs {} in {chain}",
                xp[j],
                x[[r, j]]
            );
            prop_assert!(
                close(z_back[[r, j]], p[j], 1e-8),
                "round trip z: {} vs {} in {chain}",
                z_back[[r, j]],
                p[j]
            );
            prop_assert!(
                Support::contains(support[j], x[[r, j]]),
                "x = {} outside the tracked support in {chain}",
                x[[r, j]]
            );
        }
        prop_assert!(
            close(ldp, ld_f[r], 1e-12),
            "point vs batch log-det: {ldp} vs {} in {chain}",
            ld_f[r]
        );
        prop_assert!(
            (ld_f[r] + ld_i[r]).abs() <= 1e-9 * (1.0 + ld_f[r].abs()),
            "forward {} vs inverse {} log-det in {chain}",
            ld_f[r],
            ld_i[r]
        );
        // Each layer's log-det against finite differences of that layer alone, at the point
        // it sees: well-conditioned Jacobians, so a tight tolerance.
        let scratch_len = steps
            .iter()
            .map(|s| s.layer.point_scratch())
            .max()
            .unwrap_or(0);
        let mut scratch = vec![0.0; scratch_len];
        let mut v = p.clone();
        for s in &steps {
            let at = v.clone();
            let ld = s.layer.forward_point(&mut v, &mut scratch);
            let err = fd_error(
                |q| {
                    let mut q = q.to_vec();
                    let mut scratch = vec![0.0; scratch_len];
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
            |q| forward_point(&steps, q, false).expect("unchecked").0,
            p,
            ld_f[r],
        );
        prop_assert!(
            err <= 1e-5 * (1.0 + ld_f[r].abs()),
            "log-det {} vs finite differences: off by {err:e} at {p:?} in {chain}",
            ld_f[r]
        );

        // forward(inverse(x)) ≈ x, point by point through the inverse kernels.
        let scratch_len = steps
            .iter()
            .map(|s| s.layer.point_scratch())
            .max()
            .unwrap_or(0);
        let mut scratch = vec![0.0; scratch_len];
        let mut v = x.row(r).to_vec();
        for s in steps.iter().rev() {
            s.layer.inverse_point(&mut v, &mut scratch);
        }
        let (x_again, _) = forward_point(&steps, &v, false).expect("unchecked");
        for j in 0..dim {
            prop_assert!(
                close(x_again[j], x[[r, j]], 1e-9),
                "round trip x: {} vs {} in {chain}",
                x_again[j],
                x[[r, j]]
            );
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

/// The generator does produce every kind (a guard against a silently narrow generator).
#[test]
fn generator_covers_every_kind() {
    let mut seen = std::collections::BTreeSet::new();
    let mut rng = common::rng(9);
    for i in 0..400 {
        let start = if i % 2 == 0 {
            Support::Real
        } else {
            Support::UnitInterval
        };
        for s in random_chain(1 + i % 5, 8, start, &mut rng).0 {
            seen.insert(s.layer.kind());
        }
    }
    for k in [
        "affine",
        "shift",
        "scale",
        "sigmoid",
        "logit",
        "tanh",
        "atanh",
        "softplus",
        "exp",
        "log",
        "leaky_relu",
        "permute",
        "coupling",
    ] {
        assert!(seen.contains(k), "the generator never produced `{k}`");
    }
}
