//! Reverse-KL training through the forward direction (`Variational`), on generated flows
//! of every layer family, forward-only ones (`planar`, `radial`) included:
//!
//! * with the draws fixed by the seed, the estimate is a smooth function of the parameters,
//!   and `reverse_kl_and_grad`'s gradient matches its central differences — which checks
//!   the generated forward tape and every layer's `forward_backward` together;
//! * `fit_reverse_kl` recovers a Gaussian target (KL → 0), and a stack of planar layers
//!   fits Rezende & Mohamed's ring-shaped energy `U1`, whose normaliser is computed on a
//!   grid, to a small KL;
//! * forward-only flows sample, score their own draws, and save and load.

mod common;

use common::{normal, rng};
use flowgen::prelude::*;
use flowgen::rand::rngs::StdRng;
use flowgen::train::Schedule;

flow! {
    /// Every invertible family, each with its parameters moved off the identity.
    struct Mixed { dim = 3; float = f64;
        affine; tanh; shift;
        coupling(mask = even, hidden = [8]);
        permute(reverse);
        coupling(mask = odd, transform = spline(bins = 4, bound = 3.0), hidden = [6], activation = tanh);
        linear; leaky_relu(slope = 0.5); linear(orthogonal); actnorm; softplus }
}

flow! {
    /// MAF (sequential sampling), IAF (one pass) and a learnable base.
    struct Autoregressive { dim = 3; base = normal(learnable); float = f64;
        autoregressive(hidden = [8, 8]);
        inverse_autoregressive(transform = spline(bins = 3, bound = 3.0), hidden = [8]);
        autoregressive(transform = additive, hidden = [6], order = reverse) }
}

flow! {
    /// The forward-only layers, with a learnable base.
    struct Forward { dim = 2; base = normal(learnable); float = f64;
        repeat(3) { planar }; radial; affine; radial }
}

flow! {
    struct Planar8 { dim = 2; float = f64; repeat(8) { planar } }
}

flow! {
    struct Diagonal { dim = 2; float = f64; affine }
}

/// `log N(x; m, diag(s²))` and its gradient.
fn gaussian(m: [f64; 3], s: [f64; 3]) -> impl Fn(&[f64], &mut [f64]) -> f64 + Sync {
    move |x, g| {
        let mut lp = 0.0;
        for j in 0..x.len() {
            let u = (x[j] - m[j]) / s[j];
            lp += -0.5 * u * u - s[j].ln() - 0.5 * (2.0 * std::f64::consts::PI).ln();
            g[j] = -u / s[j];
        }
        lp
    }
}

/// Adds noise of size 0.3 to every parameter.
fn perturb<M: Parameters<f64>>(model: &mut M, seed: u64) {
    let mut r = rng(seed);
    let mut p = vec![0.0; model.param_len()];
    model.params_to_slice(&mut p);
    p.iter_mut().for_each(|v| *v += 0.3 * normal(&mut r));
    model.params_from_slice(&p);
}

fn estimate<M: Variational<f64>>(
    model: &M,
    target: &(impl Fn(&[f64], &mut [f64]) -> f64 + Sync),
) -> (f64, Vec<f64>) {
    let mut grad = vec![0.0; model.param_len()];
    // 300 draws: two blocks, so the two-thread split runs too.
    let loss = model
        .reverse_kl_and_grad(300, &mut StdRng::seed_from_u64(11), target, &mut grad)
        .unwrap();
    (loss, grad)
}

fn gradient_matches_finite_differences<M: Variational<f64>>(mut model: M, name: &str) {
    perturb(&mut model, 3);
    let target = gaussian([0.5, -0.3, 0.2], [1.2, 0.8, 1.5]);
    let (loss, grad) = estimate(&model, &target);
    assert!(loss.is_finite(), "{name}: loss {loss}");
    let n = model.param_len();
    let mut params = vec![0.0; n];
    model.params_to_slice(&mut params);
    let mut checked = 0;
    for k in (0..n).step_by(n.div_ceil(80).max(1)) {
        let original = params[k];
        let h = 1e-6 * original.abs().max(1.0);
        let mut at = |v: f64| {
            params[k] = v;
            model.params_from_slice(&params);
            estimate(&model, &target).0
        };
        let fd = (at(original + h) - at(original - h)) / (2.0 * h);
        params[k] = original;
        model.params_from_slice(&params);
        assert!(
            (fd - grad[k]).abs() <= 1e-5 * fd.abs().max(grad[k].abs()) + 1e-6,
            "{name}: ∂loss/∂θ[{k}] = {} but finite differences give {fd}",
            grad[k]
        );
        checked += 1;
    }
    assert!(checked >= n.min(40), "{name}: {checked} of {n} checked");
}

#[test]
fn gradients_of_every_family_match_finite_differences() {
    gradient_matches_finite_differences(Mixed::default(), "mixed");
    gradient_matches_finite_differences(Autoregressive::default(), "autoregressive");
}

#[test]
fn gradients_of_forward_only_flows_match_finite_differences() {
    // The target is 3-D; the forward-only flow is 2-D: its first two coordinates.
    gradient_matches_finite_differences(Forward::default(), "planar/radial");
}

#[test]
fn fit_reverse_kl_recovers_a_gaussian() {
    let mut model = Diagonal::default();
    let target = gaussian([1.0, -2.0, 0.0], [0.5, 2.0, 1.0]);
    let options = ReverseKlOptions {
        steps: 2000,
        learning_rate: 2e-2,
        schedule: Schedule::Cosine {
            warmup_steps: 0,
            final_fraction: 0.01,
        },
        progress: false,
        ..Default::default()
    };
    let report = fit_reverse_kl(&mut model, &target, &options).unwrap();
    assert_eq!(report.skipped_steps, 0);
    // A normalised target: the loss is the KL itself.
    let (loss, _) = estimate(&model, &target);
    assert!(loss.abs() < 1e-3, "KL {loss}");
    let shift = &model.affine_0.shift;
    let log_scale = &model.affine_0.log_scale;
    assert!(
        (shift[0] - 1.0).abs() < 0.02 && (shift[1] + 2.0).abs() < 0.02,
        "{shift:?}"
    );
    assert!((log_scale[0] - 0.5f64.ln()).abs() < 0.02, "{log_scale:?}");
    assert!((log_scale[1] - 2.0f64.ln()).abs() < 0.02, "{log_scale:?}");
}

/// Rezende & Mohamed's `U1`: a ring of radius 2 cut by two Gaussian bumps on the `z₁` axis.
fn log_u1(x: &[f64], g: &mut [f64]) -> f64 {
    let (a, b) = (x[0], x[1]);
    let r = (a * a + b * b).sqrt().max(1e-12);
    let ring = (r - 2.0) / 0.4;
    let (e1, e2) = (
        -0.5 * ((a - 2.0) / 0.6).powi(2),
        -0.5 * ((a + 2.0) / 0.6).powi(2),
    );
    let top = e1.max(e2);
    let (w1, w2) = ((e1 - top).exp(), (e2 - top).exp());
    let bumps = top + (w1 + w2).ln();
    // d(bumps)/da: softmax-weighted derivatives of the two exponents.
    let d_bumps = (w1 * (-(a - 2.0) / 0.36) + w2 * (-(a + 2.0) / 0.36)) / (w1 + w2);
    let d_ring = ring / 0.4;
    g[0] = -d_ring * a / r + d_bumps;
    g[1] = -d_ring * b / r;
    -0.5 * ring * ring + bumps
}

/// `log ∫ exp(log_u1)` by the midpoint rule on [−5, 5]² (the density is negligible
/// outside).
fn log_z_u1() -> f64 {
    let n = 1000;
    let h = 10.0 / n as f64;
    let mut sum = 0.0;
    let mut g = [0.0; 2];
    for i in 0..n {
        for j in 0..n {
            let x = [-5.0 + (i as f64 + 0.5) * h, -5.0 + (j as f64 + 0.5) * h];
            sum += log_u1(&x, &mut g).exp();
        }
    }
    (sum * h * h).ln()
}

#[test]
fn u1_gradient_is_right() {
    let mut g = [0.0; 2];
    for x in [[0.3, 1.7], [-2.1, 0.4], [1.0, -1.0]] {
        log_u1(&x, &mut g);
        for k in 0..2 {
            let h = 1e-6;
            let (mut up, mut down) = (x, x);
            up[k] += h;
            down[k] -= h;
            let mut scratch = [0.0; 2];
            let fd = (log_u1(&up, &mut scratch) - log_u1(&down, &mut scratch)) / (2.0 * h);
            assert!((fd - g[k]).abs() < 1e-6, "{x:?} {k}: {} vs {fd}", g[k]);
        }
    }
}

/// Eight planar layers fit the ring: the KL (estimate + log Z, on fresh draws) falls from
/// over 1 nat at the identity to a fraction of one.
#[test]
fn planar_flow_fits_the_u1_energy() {
    let log_z = log_z_u1();
    let kl = |model: &Planar8| {
        let mut grad = vec![0.0; model.param_len()];
        let loss = model
            .reverse_kl_and_grad(20_000, &mut StdRng::seed_from_u64(99), &log_u1, &mut grad)
            .unwrap();
        loss + log_z
    };
    let mut model = Planar8::default();
    let before = kl(&model);
    let options = ReverseKlOptions {
        steps: 3000,
        samples: 256,
        learning_rate: 1e-2,
        progress: false,
        ..Default::default()
    };
    let report = fit_reverse_kl(&mut model, &log_u1, &options).unwrap();
    let after = kl(&model);
    eprintln!("U1: KL {before:.3} → {after:.3} ({:.1} s)", report.seconds);
    assert!(before > 1.0, "{before}");
    assert!(after < 0.3, "KL after training {after}");
}

#[test]
fn forward_only_flows_sample_score_their_draws_and_save() {
    let mut model = Forward::default();
    perturb(&mut model, 8);
    let mut r = StdRng::seed_from_u64(2);
    let (x, log_q) = model.sample_and_log_prob(500, &mut r);
    assert!(x.iter().chain(log_q.iter()).all(|v| v.is_finite()));
    // The point API agrees with the batch one.
    let (z, ld) = model.forward_point([0.3, -0.7]);
    let (zb, ldb) = model
        .forward_and_log_det(
            Array2::from_shape_vec((1, 2), vec![0.3, -0.7])
                .unwrap()
                .view(),
        )
        .unwrap();
    assert!((z[0] - zb[[0, 0]]).abs() < 1e-12 && (ld - ldb[0]).abs() < 1e-12);
    let dir = std::env::temp_dir().join(format!("flowgen-forward-only-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("forward.safetensors");
    model.save(&path).unwrap();
    let mut loaded = Forward::default();
    loaded.load(&path).unwrap();
    assert_eq!(loaded, model);
    std::fs::remove_dir_all(&dir).unwrap();
}
