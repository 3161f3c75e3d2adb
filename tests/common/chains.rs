//! Random chains of runtime layers, shared by `tests/random_chains.rs` and
//! `tests/random_chain_gradients.rs`: random elementwise kinds chosen so that each layer's
//! domain contains the support it receives (logit only on (0, 1), atanh only on (−1, 1),
//! log only on (0, ∞)), random permutations, and random couplings (random masks,
//! transforms, activations and hidden widths); every parameter is randomised with
//! [`Perturb`], constants included (which keeps the tracked supports valid).
//!
//! Also the forward map of a chain on one point with the filters that keep the numerical
//! checks well conditioned, and tame base points.

use super::{Perturb, normal};
use flowgen::Layer;
use flowgen::Support;
use flowgen::layers::{
    Activation, Affine, Atanh, Coupling, CouplingTransform, Exp, LeakyRelu, Log, Logit, Mask,
    Permute, Scale, Shift, Sigmoid, Softplus, Tanh,
};
use flowgen::rand::RngExt;
use flowgen::rand::rngs::StdRng;

/// One step of a random chain, with what the checks need to know about it.
pub struct Step {
    pub layer: Box<dyn Layer<f64>>,
    /// A readable description, for failure messages.
    pub what: String,
    /// Points are skipped (not checked) when some input value of this step (forward
    /// direction) is outside this range: saturating layers lose precision far out (σ(37)
    /// rounds to 1), `exp` overflows, and a leaky ReLU has a kink at 0 that finite
    /// differences must not straddle.
    pub tame: fn(f64) -> bool,
    /// The tracked support of each coordinate after this step.
    pub after: Vec<Support>,
}

fn any_value(_: f64) -> bool {
    true
}

/// `a ⊆ b` for the tracked supports.
fn within(a: Support, b: Support) -> bool {
    use Support::*;
    a == b || b == Real || matches!((a, b), (UnitInterval, Symmetric | Positive))
}

/// Picks one of `(kind, weight)` with probability proportional to its weight.
fn pick<'a>(kinds: &[(&'a str, u32)], rng: &mut StdRng) -> &'a str {
    let total: u32 = kinds.iter().map(|k| k.1).sum();
    let mut at = rng.random_range(0..total);
    for &(kind, w) in kinds {
        if at < w {
            return kind;
        }
        at -= w;
    }
    unreachable!("a kind is picked")
}

/// A random permutation layer on `dim` coordinates.
fn random_permute(dim: usize, rng: &mut StdRng) -> Permute {
    match rng.random_range(0..3) {
        0 => Permute::reverse(dim),
        1 => Permute::seeded(dim, rng.random()),
        _ => {
            let mut p: Vec<usize> = (0..dim).collect();
            for i in (1..dim).rev() {
                p.swap(i, rng.random_range(0..=i));
            }
            Permute::new(p)
        }
    }
}

/// A random coupling (random mask, transform, activation and hidden widths) with every
/// conditioner weight and bias randomised; returns it with its mask (`true`: kept) and a
/// description.
fn random_coupling(dim: usize, rng: &mut StdRng) -> (Coupling<f64>, Vec<bool>, String) {
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
    let what = format!(
        "coupling(mask = {mask:?}, transform = {transform:?}, hidden = {hidden:?}, activation = {activation:?})"
    );
    (l, mask.kept(dim), what)
}

/// Builds a random chain of `len` layers on `dim` coordinates starting from `start`;
/// returns it with the support of each coordinate after it.
///
/// Deterministic in the state of `rng`: seeds pinned by the tests reproduce their chains
/// only as long as this generator draws the same numbers in the same order.
pub fn random_chain(
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
        let step = |layer: Box<dyn Layer<f64>>, what: String, tame: fn(f64) -> bool| Step {
            layer,
            what,
            tame,
            after: Vec::new(),
        };
        let mut s = match pick(&kinds, rng) {
            "affine" => {
                let mut l = Affine::identity(dim);
                l.perturb(rng);
                support.fill(Support::Real);
                step(Box::new(l.clone()), format!("affine {l:?}"), any_value)
            }
            "shift" => {
                let mut l = Shift::learnable(dim);
                l.perturb(rng);
                support.fill(Support::Real);
                step(Box::new(l.clone()), format!("shift {l:?}"), any_value)
            }
            "shift_const" => {
                let c = rng.random_range(-1.0..1.5);
                let mut l = Shift::constant(dim, c);
                l.perturb(rng); // moves up only: a non-negative shift stays non-negative
                for s in &mut support {
                    *s = if c >= 0.0 && *s == Support::Positive {
                        Support::Positive
                    } else {
                        Support::Real
                    };
                }
                step(Box::new(l.clone()), format!("shift {l:?}"), any_value)
            }
            "scale" => {
                let mut l = Scale::learnable(dim);
                l.perturb(rng);
                for s in &mut support {
                    if *s != Support::Positive {
                        *s = Support::Real;
                    }
                }
                step(Box::new(l.clone()), format!("scale {l:?}"), any_value)
            }
            "scale_const" => {
                let c = rng.random_range(0.5..2.0) * if rng.random::<bool>() { 1.0 } else { -1.0 };
                let mut l = Scale::constant(dim, c);
                l.perturb(rng); // shrinks only, keeping the sign
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
                step(Box::new(l.clone()), format!("scale {l:?}"), any_value)
            }
            "leaky_relu" => {
                let slope = rng.random_range(0.1..3.0);
                for s in &mut support {
                    // Identity on positives; (−1, 1) is kept only when slope ≤ 1.
                    if *s == Support::Symmetric && slope > 1.0 {
                        *s = Support::Real;
                    }
                }
                step(
                    Box::new(LeakyRelu::<f64>::new(slope)),
                    format!("leaky_relu(slope = {slope})"),
                    |v| v.abs() > 1e-4,
                )
            }
            "sigmoid" => {
                support.fill(Support::UnitInterval);
                step(Box::new(Sigmoid), "sigmoid".into(), |v| v.abs() <= 8.0)
            }
            "tanh" => {
                support.fill(Support::Symmetric);
                step(Box::new(Tanh), "tanh".into(), |v| v.abs() <= 4.0)
            }
            "softplus" => {
                support.fill(Support::Positive);
                step(Box::new(Softplus), "softplus".into(), |v| v >= -12.0)
            }
            "exp" => {
                support.fill(Support::Positive);
                step(Box::new(Exp), "exp".into(), |v| (-12.0..=4.5).contains(&v))
            }
            "logit" => {
                support.fill(Support::Real);
                step(Box::new(Logit), "logit".into(), any_value)
            }
            "atanh" => {
                support.fill(Support::Real);
                step(Box::new(Atanh), "atanh".into(), any_value)
            }
            "log" => {
                support.fill(Support::Real);
                step(Box::new(Log), "log".into(), any_value)
            }
            "permute" => {
                let l = random_permute(dim, rng);
                support = l.as_slice().iter().map(|&p| support[p]).collect();
                step(
                    Box::new(l.clone()),
                    format!("permute({:?})", l.as_slice()),
                    any_value,
                )
            }
            "coupling" => {
                let (l, kept, what) = random_coupling(dim, rng);
                for (s, k) in support.iter_mut().zip(kept) {
                    if !k {
                        *s = Support::Real;
                    }
                }
                step(Box::new(l), what, any_value)
            }
            _ => unreachable!(),
        };
        s.after = support.clone();
        steps.push(s);
    }
    (steps, support)
}

/// The chain's layers, in order.
pub fn layers(steps: &[Step]) -> Vec<&dyn Layer<f64>> {
    steps.iter().map(|s| s.layer.as_ref()).collect()
}

/// The chain's layer descriptions, for failure messages.
pub fn describe(steps: &[Step]) -> String {
    steps
        .iter()
        .map(|s| s.what.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The scratch length the chain's point kernels need.
pub fn scratch_len(steps: &[Step]) -> usize {
    steps
        .iter()
        .map(|s| s.layer.point_scratch())
        .max()
        .unwrap_or(0)
}

/// The flat parameters of the chain, list order.
pub fn params_of(steps: &[Step]) -> Vec<f64> {
    let mut out = Vec::new();
    for s in steps {
        s.layer
            .visit_params(&mut |_, _, p| out.extend_from_slice(p));
    }
    out
}

/// Points whose intermediate values leave `[−MODERATE, MODERATE]` are skipped: a strongly
/// contracting coupling (log-scale near its bound −5) on large values loses digits that no
/// inverse can recover, which is ill-conditioning of the chain, not an error of the code.
pub const MODERATE: f64 = 100.0;

/// How close to a finite edge of its tracked support a value may come under
/// [`Filter::TameAwayFromEdges`].
pub const EDGE: f64 = 1e-4;

/// Which points [`forward`] rejects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// None.
    None,
    /// Points not tame for some step (see [`Step::tame`]) or whose values leave
    /// `[−MODERATE, MODERATE]` after some step.
    Tame,
    /// As [`Filter::Tame`], and points that come within [`EDGE`] of a finite edge of a
    /// tracked support after some step.
    ///
    /// Near 0 or 1 after a sigmoid, ±1 after a tanh, 0 after exp or softplus (the data
    /// point itself or an intermediate value), the log-density and its derivatives blow up
    /// like powers of 1/distance (the log-dets of logit, atanh and log, and the next
    /// inverses), so a central difference of step ~1e-6 has a truncation error ~(step /
    /// distance)² far above the tolerance, and closer than the step it even leaves the
    /// support (a NaN). That is the finite differences failing, not the code under test.
    TameAwayFromEdges,
}

/// How far `x` is from the nearest finite edge of `support` (∞ for the real line).
pub fn distance_to_edge(support: Support, x: f64) -> f64 {
    match support {
        Support::Real => f64::INFINITY,
        Support::UnitInterval => x.min(1.0 - x),
        Support::Symmetric => (x + 1.0).min(1.0 - x),
        Support::Positive => x,
    }
}

/// The chain's forward map and log-det on one point through the layers' point kernels;
/// `None` if `filter` rejects the point.
pub fn forward(steps: &[Step], z: &[f64], filter: Filter) -> Option<(Vec<f64>, f64)> {
    let mut scratch = vec![0.0; scratch_len(steps)];
    let mut x = z.to_vec();
    let mut ld = 0.0;
    for s in steps {
        if filter != Filter::None && !x.iter().all(|&v| (s.tame)(v)) {
            return None;
        }
        ld += s.layer.forward_point(&mut x, &mut scratch);
        if filter != Filter::None && !x.iter().all(|v| v.abs() <= MODERATE) {
            return None;
        }
        if filter == Filter::TameAwayFromEdges
            && !x
                .iter()
                .zip(&s.after)
                .all(|(&v, &sup)| distance_to_edge(sup, v) >= EDGE)
        {
            return None;
        }
    }
    Some((x, ld))
}

/// Up to `count` base points `z` (normal clipped to ±3 on the real line, uniform in
/// (0.001, 0.999) on the unit interval) that `filter` accepts, out of at most `6·count`
/// draws, and their images `x`: `(zs, xs)`.
pub fn tame_points(
    steps: &[Step],
    dim: usize,
    start: Support,
    count: usize,
    filter: Filter,
    rng: &mut StdRng,
) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let (mut zs, mut xs) = (Vec::new(), Vec::new());
    for _ in 0..6 * count {
        let z: Vec<f64> = (0..dim)
            .map(|_| match start {
                Support::UnitInterval => rng.random_range(0.001..0.999),
                _ => normal(rng).clamp(-3.0, 3.0),
            })
            .collect();
        if let Some((x, _)) = forward(steps, &z, filter) {
            zs.push(z);
            xs.push(x);
        }
        if zs.len() == count {
            break;
        }
    }
    (zs, xs)
}

/// The generator does produce every kind, and learnable parameters (a guard against a
/// silently narrow generator).
pub fn assert_generator_covers_every_kind() {
    let mut seen = std::collections::BTreeSet::new();
    let mut rng = super::rng(9);
    let mut with_params = 0;
    for i in 0..400 {
        let start = if i % 2 == 0 {
            Support::Real
        } else {
            Support::UnitInterval
        };
        let (steps, _) = random_chain(1 + i % 5, 8, start, &mut rng);
        if !params_of(&steps).is_empty() {
            with_params += 1;
        }
        for s in steps {
            seen.insert(s.layer.kind());
        }
    }
    assert!(
        with_params > 300,
        "only {with_params} chains with parameters"
    );
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
