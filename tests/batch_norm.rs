//! `batch_norm` in generated flows: batch statistics in the training gradient (the whole
//! batch one block, its rows coupled), running statistics for `log_prob` and sampling,
//! the running statistics updated by `fit` and saved with the parameters.

mod common;

use common::{normal, rng};
use flowgen::prelude::*;

flow! {
    struct Normed { dim = 3; float = f64;
        coupling(mask = even, hidden = [8]); batch_norm;
        coupling(mask = odd, hidden = [8]); batch_norm(momentum = 0.5, eps = 1e-4) }
}

/// Rows with means (5, −3, 1) and variances (4, 0.3125, 1), the first two correlated.
fn data(rows: usize, seed: u64) -> Array2<f64> {
    let mut r = rng(seed);
    let mut x = Array2::zeros((rows, 3));
    for mut row in x.rows_mut() {
        let z = [normal(&mut r), normal(&mut r), normal(&mut r)];
        row[0] = 5.0 + 2.0 * z[0];
        row[1] = -3.0 + 0.5 * (z[1] + 0.5 * z[0]);
        row[2] = 1.0 + z[2];
    }
    x
}

fn perturbed(seed: u64) -> Normed {
    let mut model = Normed::default();
    let mut r = rng(seed);
    let mut p = vec![0.0; model.param_len()];
    model.params_to_slice(&mut p);
    p.iter_mut().for_each(|v| *v += 0.3 * normal(&mut r));
    model.params_from_slice(&p);
    model
}

/// The training loss is the NLL under the batch's own statistics: a smooth function of the
/// parameters whose gradient `nll_and_grad` returns — central differences agree. 300 rows,
/// which a flow without batch statistics would split across threads.
#[test]
fn training_gradient_matches_finite_differences_of_the_batch_statistics_loss() {
    let mut model = perturbed(1);
    let x = data(300, 2);
    let n = model.param_len();
    let mut grad = vec![0.0; n];
    let loss = model.nll_and_grad(x.view(), &mut grad).unwrap();
    // Not the evaluation NLL: the running statistics are still (0, 1).
    let eval = -model.log_prob(x.view()).unwrap().mean().unwrap();
    assert!(
        (loss - eval).abs() > 1.0,
        "training {loss} vs evaluation {eval}"
    );
    let mut params = vec![0.0; n];
    model.params_to_slice(&mut params);
    for k in (0..n).step_by(n.div_ceil(60)) {
        let original = params[k];
        let h = 1e-6 * original.abs().max(1.0);
        let mut at = |v: f64| {
            params[k] = v;
            model.params_from_slice(&params);
            let mut scratch = vec![0.0; n];
            model.nll_and_grad(x.view(), &mut scratch).unwrap()
        };
        let fd = (at(original + h) - at(original - h)) / (2.0 * h);
        params[k] = original;
        model.params_from_slice(&params);
        assert!(
            (fd - grad[k]).abs() <= 1e-5 * fd.abs().max(grad[k].abs()) + 1e-7,
            "∂loss/∂θ[{k}] = {} but finite differences give {fd}",
            grad[k]
        );
    }
}

#[test]
fn training_results_do_not_depend_on_the_thread_count() {
    let model = perturbed(3);
    let x = data(600, 4);
    let run = |threads| {
        flowgen_pool(threads).install(|| {
            let mut g = vec![0.0; model.param_len()];
            let loss = model.nll_and_grad(x.view(), &mut g).unwrap();
            (loss, g)
        })
    };
    assert_eq!(run(1), run(2));
}

fn flowgen_pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

/// `fit` moves the running statistics towards the batches': the data-side `batch_norm`
/// sees the raw data, so its running mean and variance approach the data's. Evaluation
/// then uses them: round trips, finite log-densities, a validation NLL that fell; the
/// statistics are saved and loaded with the parameters.
#[test]
fn fit_tracks_the_running_statistics_and_saves_them() {
    let mut model = Normed::default();
    let x = data(2000, 5);
    let options = FitOptions {
        max_steps: Some(300),
        learning_rate: 3e-3,
        progress: false,
        ..Default::default()
    };
    let report = fit(&mut model, x.view(), &options).unwrap();
    let (first, best) = (report.val_loss[0].1, report.best_val_loss.unwrap());
    assert!(best < first - 1.0, "validation NLL {first} → {best}");
    let bn = &model.batch_norm_3;
    let (mean, var) = (&bn.running_mean, &bn.running_var);
    for (j, (m, v)) in [(5.0f64, 4.0f64), (-3.0, 0.3125), (1.0, 1.0)]
        .into_iter()
        .enumerate()
    {
        assert!(
            (mean[j] - m).abs() < 0.3 * v.sqrt(),
            "running mean {mean:?}"
        );
        assert!((var[j] / v - 1.0).abs() < 0.3, "running var {var:?}");
    }
    let lp = model.log_prob(x.view()).unwrap();
    assert!(lp.iter().all(|v| v.is_finite()));
    let z = model.inverse(x.view()).unwrap();
    let back = model.forward(z.view()).unwrap();
    assert!((&back - &x).iter().all(|d| d.abs() < 1e-9));

    let dir = std::env::temp_dir().join(format!("flowgen-batch-norm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("normed.safetensors");
    model.save(&path).unwrap();
    let mut loaded = Normed::default();
    loaded.load(&path).unwrap();
    assert_eq!(
        loaded, model,
        "parameters and running statistics round-trip"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
