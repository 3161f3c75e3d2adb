//! In 2-D, `exp(log_prob)` integrates to 1 ± 1e-3 over a grid covering the support, for
//! randomised flows: a RealNVP-style flow on ℝ², a flow ending in `sigmoid` on (0, 1)², and
//! a flow with `base = uniform`. The integrals use the batch `log_prob` on every grid point.

mod common;

use common::*;
use flowgen::ndarray::Array2;
use flowgen::prelude::*;
use flowgen::reference;

flowgen::flow! {
    /// RealNVP in 2-D with smooth (tanh / silu) conditioners, so the density is smooth and
    /// the midpoint rule converges quickly.
    pub struct RealNvp2 {
        dim = 2; float = f64;
        affine;
        repeat(2) {
            coupling(mask = even, hidden = [16, 16], activation = tanh);
            coupling(mask = odd, hidden = [16, 16], activation = silu)
        }
    }
}

flowgen::flow! {
    /// The same with ReLU conditioners (the DSL's default activation): a density with kinks.
    pub struct RealNvpRelu2 {
        dim = 2; float = f64;
        affine;
        coupling(mask = even, hidden = [16, 16]);
        coupling(mask = odd, hidden = [16, 16], transform = additive);
        coupling(mask = even, hidden = [16])
    }
}

flowgen::flow! {
    /// Normal base, data in (0, 1)².
    pub struct Sigmoid2 {
        dim = 2; float = f64;
        affine;
        coupling(mask = even, hidden = [16], activation = silu);
        coupling(mask = odd, hidden = [16], activation = elu);
        sigmoid
    }
}

flowgen::flow! {
    /// Uniform base, data in (0, 1)².
    pub struct Uniform2 {
        dim = 2; float = f64; base = uniform;
        logit;
        coupling(mask = even, hidden = [16], activation = tanh);
        coupling(mask = odd, hidden = [16], activation = silu);
        sigmoid
    }
}

/// The midpoint rule over `[lo0, hi0] × [lo1, hi1]` with `n × n` cells of
/// `exp(log_prob(map(u))) · jacobian(u)`, where `map` takes grid coordinates to data
/// coordinates and `jacobian` is `|det ∂map/∂u|` (1 for the identity).
fn integrate<M: Density<f64>>(
    model: &M,
    (lo0, hi0): (f64, f64),
    (lo1, hi1): (f64, f64),
    n: usize,
    map: impl Fn(f64) -> f64,
    jacobian: impl Fn(f64) -> f64,
) -> f64 {
    let (h0, h1) = ((hi0 - lo0) / n as f64, (hi1 - lo1) / n as f64);
    let mut total = 0.0;
    // One grid row (n points) per batch call is small; 64 grid rows per call.
    for chunk in (0..n).collect::<Vec<_>>().chunks(64) {
        let mut x = Array2::zeros((chunk.len() * n, 2));
        let mut weight = Vec::with_capacity(chunk.len() * n);
        for (k, &i) in chunk.iter().enumerate() {
            let u0 = lo0 + (i as f64 + 0.5) * h0;
            for j in 0..n {
                let u1 = lo1 + (j as f64 + 0.5) * h1;
                x[[k * n + j, 0]] = map(u0);
                x[[k * n + j, 1]] = map(u1);
                weight.push(jacobian(u0) * jacobian(u1));
            }
        }
        let lp = model.log_prob(x.view()).unwrap();
        for (l, w) in lp.iter().zip(&weight) {
            assert!(!l.is_nan(), "log_prob NaN on the grid");
            total += l.exp() * w;
        }
    }
    total * h0 * h1
}

/// The bounding box of the image under `forward` of the boundary of the square
/// `[lo, hi]²` in base coordinates: since the flow is a homeomorphism, the image of the
/// square lies inside it.
fn image_box(
    forward: impl Fn(&Array2<f64>) -> Array2<f64>,
    lo: f64,
    hi: f64,
) -> ((f64, f64), (f64, f64)) {
    let m = 4000;
    let mut z = Array2::zeros((4 * m, 2));
    for k in 0..m {
        let t = lo + (hi - lo) * k as f64 / (m - 1) as f64;
        for (r, (a, b)) in [(t, lo), (t, hi), (lo, t), (hi, t)].into_iter().enumerate() {
            z[[r * m + k, 0]] = a;
            z[[r * m + k, 1]] = b;
        }
    }
    let x = forward(&z);
    let range = |c: usize| {
        x.column(c)
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            })
    };
    (range(0), range(1))
}

fn identity(u: f64) -> f64 {
    u
}

fn one(_: f64) -> f64 {
    1.0
}

/// Normal base: the grid covers the image of [−6, 6]² in base coordinates, which holds all
/// but 4e-9 of the mass, padded by 2% on each side.
fn check_real_line<M: Density<f64>>(model: &M, n: usize) -> f64 {
    let ((a0, b0), (a1, b1)) = image_box(|z| model.forward(z.view()).unwrap(), -6.0, 6.0);
    let pad = |a: f64, b: f64| (a - 0.02 * (b - a), b + 0.02 * (b - a));
    let l = [a0, b0, a1, b1].iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(
        l < 200.0,
        "the randomised flow spreads too far for the grid: L = {l}"
    );
    eprintln!("grid [{a0:.2}, {b0:.2}] × [{a1:.2}, {b1:.2}]");
    integrate(model, pad(a0, b0), pad(a1, b1), n, identity, one)
}

#[test]
fn realnvp_density_integrates_to_one() {
    for seed in 0..2 {
        let mut model = RealNvp2::new(&mut rng(seed));
        let mut r = rng(100 + seed);
        perturb_fields!(model, &mut r; affine_0, coupling_1, coupling_2, coupling_3, coupling_4);
        let total = check_real_line(&model, 300);
        eprintln!("seed {seed}: ∫ p = {total}");
        assert!((total - 1.0).abs() < 1e-3, "seed {seed}: ∫ p = {total}");
    }
}

#[test]
fn realnvp_with_relu_conditioners_integrates_to_one() {
    let mut model = RealNvpRelu2::new(&mut rng(7));
    perturb_fields!(model, &mut rng(107); affine_0, coupling_1, coupling_2, coupling_3);
    let total = check_real_line(&model, 300);
    eprintln!("relu: ∫ p = {total}");
    assert!((total - 1.0).abs() < 1e-3, "∫ p = {total}");
}

/// Support (0, 1)², integrated directly on a midpoint grid of the unit square. No change of
/// variables is needed here: with a normal base, `p(x) = p_U(logit x)/(x(1 − x))` where
/// `p_U` (the density before the sigmoid) has Gaussian-like tails, so `p` and all its
/// derivatives vanish at the edges faster than any power of the distance to them. For
/// such an integrand the Euler–Maclaurin boundary terms vanish and the midpoint rule
/// converges faster than any power of h; the grid points (midpoints) never touch the
/// boundary. The check that the two grid sizes agree guards this reasoning.
#[test]
fn sigmoid_ended_density_integrates_to_one_on_the_unit_square() {
    for seed in 0..2 {
        let mut model = Sigmoid2::new(&mut rng(seed));
        perturb_fields!(model, &mut rng(200 + seed); affine_0, coupling_1, coupling_2, sigmoid_3);
        let coarse = integrate(&model, (0.0, 1.0), (0.0, 1.0), 150, identity, one);
        let fine = integrate(&model, (0.0, 1.0), (0.0, 1.0), 300, identity, one);
        eprintln!("seed {seed}: ∫ p = {coarse} / {fine}");
        assert!((fine - 1.0).abs() < 1e-3, "seed {seed}: ∫ p = {fine}");
        assert!(
            (fine - coarse).abs() < 1e-4,
            "seed {seed}: grid not converged: {coarse} vs {fine}"
        );
    }
}

fn sigmoid(u: f64) -> f64 {
    1.0 / (1.0 + (-u).exp())
}

fn sigmoid_derivative(u: f64) -> f64 {
    let s = sigmoid(u);
    s * (1.0 - s)
}

/// Uniform base, support (0, 1)². Here the density may be unbounded at the edges: near
/// x → 0 a coupling with log-scale s maps `logit u ≈ log u` to `e^s log u + t`, so
/// `p(x) ~ x^(e^(−s) − 1)`, an integrable singularity where the midpoint rule converges
/// only like h^(e^(−s)). So the integral is taken in logit coordinates: with
/// `x = σ(v)` coordinate-wise, `∫ p(x) dx = ∫ p(σ(v)) σ'(v₀) σ'(v₁) dv`, whose integrand
/// (the density of `logit X`) is smooth with exponential tails. The grid covers the image
/// (before the final sigmoid) of the base square [1e-12, 1 − 1e-12]², clipped to
/// |v| ≤ 36: beyond that σ(v) rounds to 1 in f64 and the point is on the boundary.
#[test]
fn uniform_base_density_integrates_to_one_in_logit_coordinates() {
    for seed in 0..2 {
        let mut model = Uniform2::new(&mut rng(seed));
        perturb_fields!(model, &mut rng(300 + seed); logit_0, coupling_1, coupling_2, sigmoid_3);
        let layers = model.layers();
        let before_sigmoid = &layers[..layers.len() - 1];
        let ((a0, b0), (a1, b1)) = image_box(
            |z| reference::forward_and_log_det(before_sigmoid, z.view()).0,
            1e-12,
            1.0 - 1e-12,
        );
        let clip = |a: f64, b: f64| (a.max(-36.0), b.min(36.0));
        let total = integrate(
            &model,
            clip(a0, b0),
            clip(a1, b1),
            400,
            sigmoid,
            sigmoid_derivative,
        );
        eprintln!("seed {seed}: ∫ p = {total} over {:?}", ((a0, b0), (a1, b1)));
        assert!(
            (total - 1.0).abs() < 1e-3,
            "seed {seed}: ∫ p = {total} over {:?}",
            ((a0, b0), (a1, b1))
        );
    }
}

/// The simplest uniform-base flow, `base = uniform; affine`, has density `e^(−Σ log_scale)`
/// on a box and `-inf` outside it.
#[test]
fn uniform_base_affine_is_a_uniform_box() {
    let mut model = flow![dim = 2; float = f64; base = uniform; affine];
    model.affine_0.shift = vec![0.5, -1.0];
    model.affine_0.log_scale = vec![0.3, -0.7];
    let inside = model
        .log_prob_point([0.5 + 0.5 * 0.3f64.exp(), -1.0 + 0.5 * (-0.7f64).exp()])
        .unwrap();
    assert!((inside - 0.4).abs() < 1e-12, "{inside}");
    assert_eq!(
        model.log_prob_point([0.4, -0.9]).unwrap(),
        f64::NEG_INFINITY
    );
    let box0 = (0.5, 0.5 + 0.3f64.exp());
    let box1 = (-1.0, -1.0 + (-0.7f64).exp());
    let total = integrate(&model, box0, box1, 200, identity, one);
    assert!((total - 1.0).abs() < 1e-9, "∫ p = {total}");
}
