//! Gradients of weighted sums of log-densities — with respect to every parameter of every
//! layer kind and to the input rows — against central finite differences in f64, and the
//! mean-NLL gradient used by training.

mod common;

use common::*;
use flowgen::Trainable;
use flowgen::prelude::*;

/// `J = Σ_i w_i · log p(x_i)`.
fn objective<M: Density<f64>>(model: &M, x: &Array2<f64>, w: &Array1<f64>) -> f64 {
    let lp = model.log_prob(x.view()).expect("valid batch");
    lp.iter().zip(w).map(|(l, w)| l * w).sum()
}

/// Central differences in f64 with a step relative to the value; a combined
/// absolute/relative tolerance for gradients that are tiny.
fn fd_close(analytic: f64, fd: f64) -> bool {
    (analytic - fd).abs() <= 1e-5 * fd.abs().max(analytic.abs()) + 1e-6
}

fn gradients_match_finite_differences<M: Case + Trainable<f64>>() {
    for seed in 0..2 {
        let mut model = M::perturbed(seed);
        let mut rng = rng(50 + seed);
        let x = data_points(&model, 6, &mut rng);
        let w = Array1::from_shape_fn(6, |_| normal(&mut rng));
        let n = model.param_len();
        let mut grad = vec![0.0; n];
        let mut grad_x = Array2::zeros(x.raw_dim());
        let lp = model
            .log_prob_and_grad(x.view(), w.view(), &mut grad, Some(grad_x.view_mut()))
            .unwrap();
        let expected = model.log_prob(x.view()).unwrap();
        assert!(
            max_rel_diff(&lp, &expected) < 1e-12,
            "{}: log_prob_and_grad's values differ from log_prob",
            M::NAME
        );

        // Every parameter (or an evenly spread sample of 400 of them for big flows).
        let mut params = vec![0.0; n];
        model.params_to_slice(&mut params);
        let stride = n.div_ceil(400).max(1);
        for k in (0..n).step_by(stride) {
            let original = params[k];
            let h = 1e-6 * original.abs().max(1.0);
            params[k] = original + h;
            model.params_from_slice(&params);
            let up = objective(&model, &x, &w);
            params[k] = original - h;
            model.params_from_slice(&params);
            let down = objective(&model, &x, &w);
            params[k] = original;
            model.params_from_slice(&params);
            let fd = (up - down) / (2.0 * h);
            assert!(
                fd_close(grad[k], fd),
                "{} seed {seed}: ∂J/∂θ[{k}] = {} but finite differences give {fd}",
                M::NAME,
                grad[k]
            );
        }

        // Every input coordinate.
        for r in 0..x.nrows() {
            for c in 0..x.ncols() {
                let h = 1e-6 * x[[r, c]].abs().max(1.0);
                let mut xp = x.clone();
                xp[[r, c]] += h;
                let up = objective(&model, &xp, &w);
                xp[[r, c]] -= 2.0 * h;
                let down = objective(&model, &xp, &w);
                let fd = (up - down) / (2.0 * h);
                assert!(
                    fd_close(grad_x[[r, c]], fd),
                    "{} seed {seed}: ∂J/∂x[{r}, {c}] = {} but finite differences give {fd}",
                    M::NAME,
                    grad_x[[r, c]]
                );
            }
        }
    }
}
case_tests!(gradients_match_finite_differences);

/// The mean NLL and its gradient equal `log_prob_and_grad` with weights −1/N, gradients
/// accumulate into the buffer, and the parameter visitors agree with `param_len`.
fn nll_is_the_mean_negative_log_prob<M: Case + Trainable<f64>>() {
    let model = M::perturbed(7);
    let mut rng = rng(70);
    let x = data_points(&model, 600, &mut rng);
    let n = model.param_len();
    let mut visited = 0;
    model.visit_params(&mut |_, _, shape, values| {
        assert_eq!(shape.iter().product::<usize>(), values.len());
        visited += values.len();
    });
    assert_eq!(visited, n, "{}: visit_params covers param_len", M::NAME);

    let mut g1 = vec![0.0; n];
    let nll = model.nll_and_grad(x.view(), &mut g1).unwrap();
    let lp = model.log_prob(x.view()).unwrap();
    assert!(close(nll, -lp.mean().unwrap(), 1e-12), "{}: nll", M::NAME);
    let w = Array1::from_elem(600, -1.0 / 600.0);
    let mut g2 = vec![0.0; n];
    model
        .log_prob_and_grad(x.view(), w.view(), &mut g2, None)
        .unwrap();
    assert!(max_rel_diff(&g1, &g2) < 1e-12, "{}: nll gradient", M::NAME);
    // The named views of the gradient tile the flat buffer in the parameters' order.
    let mut names = Vec::new();
    let mut params = Vec::new();
    model.visit_params(&mut |layer, tensor, _, _| params.push(format!("{layer}.{tensor}")));
    let mut offset = 0;
    model.visit_grads(&g1, &mut |layer, tensor, shape, grad| {
        assert_eq!(shape.iter().product::<usize>(), grad.len());
        assert_eq!(grad, &g1[offset..offset + grad.len()]);
        offset += grad.len();
        names.push(format!("{layer}.{tensor}"));
    });
    assert_eq!(
        (offset, &names),
        (n, &params),
        "{}: gradient views",
        M::NAME
    );
    model.nll_and_grad(x.view(), &mut g1).unwrap();
    let doubled: Vec<f64> = g2.iter().map(|g| 2.0 * g).collect();
    assert!(
        max_rel_diff(&g1, &doubled) < 1e-12,
        "{}: gradients accumulate",
        M::NAME
    );
}
case_tests!(nll_is_the_mean_negative_log_prob);

#[test]
fn wrong_buffer_lengths_are_errors() {
    let model = RealNvp::perturbed(1);
    let x = Array2::zeros((3, 4));
    let mut short = vec![0.0; 2];
    assert!(matches!(
        model.nll_and_grad(x.view(), &mut short),
        Err(FlowError::WrongLength { .. })
    ));
    let mut grad = vec![0.0; model.param_len()];
    let w = Array1::zeros(2);
    assert!(matches!(
        model.log_prob_and_grad(x.view(), w.view(), &mut grad, None),
        Err(FlowError::WrongLength { .. })
    ));
}

#[test]
fn f32_flows_train_too() {
    let model = flow![dim = 2; affine; coupling(mask = even, hidden = [8]); tanh];
    let x = Array2::from_shape_vec((2, 2), vec![0.1f32, -0.2, 0.3, 0.5]).unwrap();
    let mut grad = vec![0.0f32; model.param_len()];
    let nll = model.nll_and_grad(x.view(), &mut grad).unwrap();
    assert!(nll.is_finite() && grad.iter().all(|g| g.is_finite()));
}
