//! Sampling: moments of 200 000 samples of a known affine flow (batch `sample`, the point
//! API's `sample_point`, and `rand`'s `Distribution<[f64; 2]>` via `rng.sample(&model)`),
//! and `sample_and_log_prob`'s log-probs equal to `log_prob` of the samples.

mod common;

use common::*;
use flowgen::ndarray::Array2;
use flowgen::prelude::*;
use flowgen::rand::RngExt;

flowgen::flow! {
    pub struct Known { dim = 2; float = f64; affine }
}

const SHIFT: [f64; 2] = [1.5, -0.7];
const LOG_SCALE: [f64; 2] = [0.3, -0.5];
const N: usize = 200_000;

fn known() -> Known {
    let mut model = Known::default();
    model.affine_0.shift = SHIFT.to_vec();
    model.affine_0.log_scale = LOG_SCALE.to_vec();
    model
}

/// Column means and standard deviations of `x`, asserted against the affine flow's
/// `shift` and `exp(log_scale)` within 5 standard errors (σ/√n for the mean, σ/√(2n) for
/// the standard deviation of a normal sample).
fn assert_moments(x: &Array2<f64>, what: &str) {
    let n = x.nrows() as f64;
    for j in 0..2 {
        let col = x.column(j);
        let mean = col.sum() / n;
        let var = col.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0);
        let std = var.sqrt();
        let sigma = LOG_SCALE[j].exp();
        let se_mean = sigma / n.sqrt();
        let se_std = sigma / (2.0 * n).sqrt();
        assert!(
            (mean - SHIFT[j]).abs() < 5.0 * se_mean,
            "{what}: mean of column {j} is {mean}, expected {} ± {se_mean}",
            SHIFT[j]
        );
        assert!(
            (std - sigma).abs() < 5.0 * se_std,
            "{what}: std of column {j} is {std}, expected {sigma} ± {se_std}"
        );
    }
    // The two coordinates are independent.
    let (m0, m1) = (x.column(0).sum() / n, x.column(1).sum() / n);
    let cov = x
        .rows()
        .into_iter()
        .map(|r| (r[0] - m0) * (r[1] - m1))
        .sum::<f64>()
        / (n - 1.0);
    let corr = cov / (LOG_SCALE[0].exp() * LOG_SCALE[1].exp());
    assert!(corr.abs() < 5.0 / n.sqrt(), "{what}: correlation {corr}");
}

#[test]
fn batch_samples_have_the_affine_moments() {
    let model = known();
    let x = model.sample(N, &mut rng(1));
    assert_eq!(x.dim(), (N, 2));
    assert_moments(&x, "sample");
}

#[test]
fn point_samples_have_the_affine_moments() {
    let model = known();
    let mut r = rng(2);
    let x = Array2::from_shape_vec(
        (N, 2),
        (0..N).flat_map(|_| model.sample_point(&mut r)).collect(),
    )
    .unwrap();
    assert_moments(&x, "sample_point");
}

#[test]
fn distribution_samples_have_the_affine_moments() {
    let model = known();
    let mut r = rng(3);
    let draws: Vec<[f64; 2]> = (0..N).map(|_| r.sample(&model)).collect();
    let x = Array2::from_shape_fn((N, 2), |(i, j)| draws[i][j]);
    assert_moments(&x, "rng.sample(&model)");
    // `Distribution::sample_iter` works too. (Called by path: with `Distribution` in scope,
    // `model.sample(n, rng)` would be ambiguous between `Flow::sample` and
    // `Distribution::sample`.)
    let via_iter: Vec<[f64; 2]> = flowgen::rand::distr::Distribution::sample_iter(&model, rng(3))
        .take(5)
        .collect();
    assert_eq!(via_iter, draws[..5].to_vec());
}

/// `rng.sample(&model)` is `sample_point`; the batch `sample` draws each row block from a
/// generator seeded by the next `u64` of the caller's, row by row and coordinates in order,
/// so a one-block batch agrees draw for draw with points drawn from that generator.
#[test]
fn point_batch_and_distribution_draws_agree() {
    let model = RealNvp::perturbed(4);
    let batch = model.sample(50, &mut rng(5));
    let block_seed = flowgen::rand::Rng::next_u64(&mut rng(5));
    let mut r = rng(block_seed);
    let mut r2 = rng(block_seed);
    for i in 0..50 {
        let p = model.sample_point(&mut r);
        let d: [f64; 4] = r2.sample(&model);
        assert_eq!(p, d);
        for j in 0..4 {
            assert!(
                close(p[j], batch[[i, j]], 1e-12),
                "row {i}: {p:?} vs {:?}",
                batch.row(i)
            );
        }
    }
}

/// `sample_and_log_prob` returns `log_prob` of its samples (1e-10), for every catalogue
/// flow, over several row blocks; and its samples are the ones `sample` draws.
fn sample_and_log_prob_matches_log_prob<M: Case>() {
    let model = M::perturbed(9);
    let (x, lp) = model.sample_and_log_prob(1000, &mut rng(10));
    let x_only = model.sample(1000, &mut rng(10));
    assert_eq!(
        x,
        x_only,
        "{}: sample and sample_and_log_prob draw differently",
        M::NAME
    );
    let scored = model.log_prob(x.view()).unwrap();
    for r in 0..1000 {
        assert!(
            lp[r].is_finite(),
            "{} row {r}: log-prob of a sample {}",
            M::NAME,
            lp[r]
        );
        assert!(
            (lp[r] - scored[r]).abs() <= 1e-10 * (1.0 + lp[r].abs()),
            "{} row {r}: sample_and_log_prob {} vs log_prob {}",
            M::NAME,
            lp[r],
            scored[r]
        );
    }
}
case_tests!(sample_and_log_prob_matches_log_prob);

#[test]
fn sample_and_log_prob_of_the_known_affine_flow() {
    let model = known();
    let (x, lp) = model.sample_and_log_prob(1000, &mut rng(11));
    for r in 0..1000 {
        let expected: f64 = (0..2)
            .map(|j| {
                let z = (x[[r, j]] - SHIFT[j]) * (-LOG_SCALE[j]).exp();
                -0.5 * z * z - 0.5 * (2.0 * std::f64::consts::PI).ln() - LOG_SCALE[j]
            })
            .sum();
        assert!(
            close(lp[r], expected, 1e-12),
            "row {r}: {} vs {expected}",
            lp[r]
        );
    }
}

/// Samples of a uniform-base flow lie in its support and follow it: `base = uniform;
/// affine` samples the box `shift + exp(log_scale)·(0, 1)`.
#[test]
fn uniform_base_samples_fill_the_box() {
    let mut model = flow![dim = 2; float = f64; base = uniform; affine];
    model.affine_0.shift = SHIFT.to_vec();
    model.affine_0.log_scale = LOG_SCALE.to_vec();
    let x = model.sample(N, &mut rng(12));
    let n = N as f64;
    for j in 0..2 {
        let width = LOG_SCALE[j].exp();
        let col = x.column(j);
        assert!(col.iter().all(|&v| v > SHIFT[j] && v < SHIFT[j] + width));
        let mean = col.sum() / n;
        let se = width / 12f64.sqrt() / n.sqrt();
        assert!(
            (mean - (SHIFT[j] + width / 2.0)).abs() < 5.0 * se,
            "column {j}: mean {mean}"
        );
    }
    let lp = model.log_prob(x.view()).unwrap();
    let expected = -(LOG_SCALE[0] + LOG_SCALE[1]);
    assert!(lp.iter().all(|&l| (l - expected).abs() < 1e-12));
}

/// Samples of every catalogue flow lie in its declared `SUPPORT`.
fn samples_lie_in_the_support<M: Case>() {
    let model = M::perturbed(13);
    let x = model.sample(2000, &mut rng(14));
    let support = M::support();
    for (r, row) in x.rows().into_iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            assert!(
                support[j].contains(v),
                "{} sample {r}: x[{j}] = {v} outside {:?}",
                M::NAME,
                support[j]
            );
        }
    }
}
case_tests!(samples_lie_in_the_support);
