//! Training generated flows end to end: `fit` lowers the NLL towards the truth on data with
//! a known density, is bit-for-bit reproducible from its seed (whatever the number of
//! threads: `nll_and_grad` gives the same bits on one rayon thread and on two), and skips
//! (and counts) steps whose loss is not finite instead of writing NaN into the parameters.

use flowgen::prelude::*;
use flowgen::rand::RngExt;
use flowgen::rand::rngs::StdRng;

flowgen::flow! {
    pub struct Gauss { dim = 2; float = f64; coupling(mask = even, hidden = [16]); coupling(mask = odd, hidden = [16]); affine }
}
flowgen::flow! {
    pub struct Unit { dim = 2; coupling(mask = even, hidden = [8]); coupling(mask = odd, hidden = [8]); sigmoid }
}

/// Rows of a correlated Gaussian: x0 ~ N(1, 0.5²), x1 = 0.8·x0 + N(0, 0.3²).
fn correlated(n: usize, seed: u64) -> Array2<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut normal = move || {
        // Box–Muller from two uniforms, so the test needs nothing beyond rand.
        let (u, v): (f64, f64) = (rng.random(), rng.random());
        (-2.0 * (1.0 - u).ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    };
    let mut data = Array2::zeros((n, 2));
    for mut row in data.rows_mut() {
        let x0 = 1.0 + 0.5 * normal();
        row[0] = x0;
        row[1] = 0.8 * x0 + 0.3 * normal();
    }
    data
}

/// The true entropy of that Gaussian: ½·log((2πe)²·det Σ), det Σ = 0.5²·0.3².
fn true_entropy() -> f64 {
    let det: f64 = 0.25 * 0.09;
    (2.0 * std::f64::consts::PI * std::f64::consts::E).ln() + 0.5 * det.ln()
}

fn options(seed: u64) -> FitOptions {
    FitOptions {
        max_steps: Some(600),
        max_epochs: None,
        learning_rate: 5e-3,
        batch_size: 128,
        progress: false,
        seed,
        ..Default::default()
    }
}

#[test]
fn fit_approaches_the_true_density() {
    let data = correlated(8000, 1);
    let test = correlated(8000, 2);
    let mut model = Gauss::new(&mut StdRng::seed_from_u64(0));
    let before = -model.log_prob(test.view()).unwrap().mean().unwrap();
    let report = fit(&mut model, data.view(), &options(0)).unwrap();
    let after = -model.log_prob(test.view()).unwrap().mean().unwrap();
    let floor = true_entropy();
    assert!(report.skipped_steps == 0 && report.steps > 0, "{report:?}");
    assert!(
        after < before - 0.5 && after < floor + 0.05,
        "test NLL went from {before:.3} to {after:.3}; the true entropy is {floor:.3}"
    );
    assert!(after > floor - 0.05, "below the entropy: {after} < {floor}");
}

#[test]
fn the_same_seed_gives_bit_identical_parameters() {
    let data = correlated(4000, 3);
    let run = |seed| {
        let mut model = Gauss::new(&mut StdRng::seed_from_u64(7));
        fit(
            &mut model,
            data.view(),
            &FitOptions {
                max_steps: Some(100),
                ..options(seed)
            },
        )
        .unwrap();
        let mut p = vec![0.0; model.param_len()];
        model.params_to_slice(&mut p);
        p.iter().map(|v| v.to_bits()).collect::<Vec<u64>>()
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}

#[test]
fn steps_with_infinite_loss_are_skipped_not_applied() {
    // Every row lies outside (0, 1)²: log p = -inf, the loss is +inf at every step.
    let data = Array2::from_elem((512, 2), 1.5f32);
    let mut model = Unit::new(&mut StdRng::seed_from_u64(0));
    let before = Unit::new(&mut StdRng::seed_from_u64(0));
    let report = fit(
        &mut model,
        data.view(),
        &FitOptions {
            max_steps: Some(20),
            max_epochs: None,
            validation_fraction: 0.0,
            progress: false,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(report.skipped_steps, 20, "{report:?}");
    assert_eq!(model, before, "no update was applied");
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

/// Every parameter moved by U(−0.3, 0.3), so that no gradient is zero by construction (a
/// fresh coupling's hidden layers get none through its zero output layer).
fn perturb<F: flowgen::Float, M: Trainable<F>>(model: &mut M, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut p = vec![F::zero(); model.param_len()];
    model.params_to_slice(&mut p);
    for v in &mut p {
        *v += F::of(rng.random_range(-0.3..0.3));
    }
    model.params_from_slice(&p);
}

/// `nll_and_grad` on one thread and on two: the loss and every gradient entry agree bit
/// for bit, for a batch of one block (split in halves) and of several.
fn same_bits_on_any_thread_count<F: flowgen::Float, M: Trainable<F> + Sync>(
    model: &M,
    x: &Array2<F>,
) {
    for n in [256, 1000] {
        let rows = x.slice(flowgen::ndarray::s![..n, ..]);
        let run = |threads| {
            pool(threads).install(|| {
                let mut grad = vec![F::zero(); model.param_len()];
                let loss = model.nll_and_grad(rows, &mut grad).unwrap();
                assert!(loss.is_finite() && grad.iter().any(|g| *g != F::zero()));
                let bits = |v: F| v.to_f64_lossless().to_bits();
                (bits(loss), grad.into_iter().map(bits).collect::<Vec<_>>())
            })
        };
        let one = run(1);
        assert!(one == run(2), "batch {n}: 1 and 2 threads differ");
        assert!(one == run(1), "batch {n}: not reproducible");
    }
}

#[test]
fn nll_and_grad_is_bit_identical_on_one_and_two_threads() {
    let mut gauss = Gauss::new(&mut StdRng::seed_from_u64(1));
    perturb(&mut gauss, 2);
    same_bits_on_any_thread_count(&gauss, &correlated(1000, 4));

    let mut unit = Unit::new(&mut StdRng::seed_from_u64(3));
    perturb(&mut unit, 4);
    let mut rng = StdRng::seed_from_u64(5);
    let x = Array2::from_shape_simple_fn((1000, 2), || rng.random_range(0.05f32..0.95));
    same_bits_on_any_thread_count(&unit, &x);
}

/// `fit` from one seed gives the same parameters, bit for bit, on one thread and on two.
#[test]
fn fit_is_bit_identical_on_one_and_two_threads() {
    let data = correlated(2000, 6);
    let run = |threads| {
        pool(threads).install(|| {
            let mut model = Gauss::new(&mut StdRng::seed_from_u64(7));
            fit(
                &mut model,
                data.view(),
                &FitOptions {
                    max_steps: Some(50),
                    batch_size: 256,
                    ..options(8)
                },
            )
            .unwrap();
            let mut p = vec![0.0; model.param_len()];
            model.params_to_slice(&mut p);
            p.iter().map(|v| v.to_bits()).collect::<Vec<u64>>()
        })
    };
    assert!(run(1) == run(2), "fit differs between 1 and 2 threads");
}
