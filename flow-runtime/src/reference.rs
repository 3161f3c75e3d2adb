//! The plain per-layer (unfused) evaluation of a chain: each layer over the whole batch,
//! one after another, and the plain reverse-mode pass through it. It is the test oracle
//! for the fused code and usable on its own.
//!
//! The values and log-dets go row by row through each layer's point methods
//! ([`Layer::forward_point`], [`Layer::inverse_point`]): no row blocks, no tiles, no fused
//! elementwise runs and no blocked matrix kernels, so the fused block path the macro
//! generates is checked against code that shares only the scalar kernels with it.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2, Axis};

use crate::base::BaseDistribution;
use crate::float::Float;
use crate::layers::Layer;
use crate::trainable::base_backward;
use crate::workspace::Workspace;

/// Which way a chain is applied.
#[derive(Clone, Copy)]
enum Way {
    Forward,
    Inverse,
}

/// Applies one layer to every row of `x` through its point method, adding the row's
/// log-det to `log_det`.
fn layer_rows<F: Float>(
    layer: &dyn Layer<F>,
    mut x: ArrayViewMut2<'_, F>,
    log_det: &mut Array1<F>,
    way: Way,
) {
    let mut row = vec![F::zero(); x.ncols()];
    let mut scratch = vec![F::zero(); layer.point_scratch()];
    for (mut xr, ld) in x.axis_iter_mut(Axis(0)).zip(log_det.iter_mut()) {
        row.iter_mut().zip(xr.iter()).for_each(|(r, &v)| *r = v);
        *ld += match way {
            Way::Forward => layer.forward_point(&mut row, &mut scratch),
            Way::Inverse => layer.inverse_point(&mut row, &mut scratch),
        };
        xr.iter_mut().zip(&row).for_each(|(v, &r)| *v = r);
    }
}

/// Applies `layers` (listed base → data) forward; returns the points and log-dets.
pub fn forward_and_log_det<F: Float>(
    layers: &[&dyn Layer<F>],
    z: ArrayView2<'_, F>,
) -> (Array2<F>, Array1<F>) {
    let mut x = z.to_owned();
    let mut log_det = Array1::zeros(x.nrows());
    for layer in layers {
        layer_rows(*layer, x.view_mut(), &mut log_det, Way::Forward);
    }
    (x, log_det)
}

/// Applies `layers` (listed base → data) inverse, last layer first.
pub fn inverse_and_log_det<F: Float>(
    layers: &[&dyn Layer<F>],
    x: ArrayView2<'_, F>,
) -> (Array2<F>, Array1<F>) {
    let mut z = x.to_owned();
    let mut log_det = Array1::zeros(z.nrows());
    for layer in layers.iter().rev() {
        layer_rows(*layer, z.view_mut(), &mut log_det, Way::Inverse);
    }
    (z, log_det)
}

/// The plain reverse-mode pass of a chain: the oracle for the generated
/// [`Trainable::log_prob_and_grad`](crate::trainable::Trainable::log_prob_and_grad).
///
/// `layers` are listed base → data and `base` is the base distribution. Returns
/// `log p(x_i)` per row (the inverse log-dets plus the base log-density, `-inf` outside the
/// support) and, for `J = Σ_i weight[i]·log p(x_i)`, **adds** `∂J/∂θ` into `param_grad`
/// and **writes** `∂J/∂x` into `grad_x` (the shape of `x`).
///
/// `param_grad` is laid out as the concatenation of the layers' parameters in list order,
/// each layer's slice in the order of its [`Layer::visit_params`], then the base's (length
/// `Σ` [`Layer::param_len`] `+` [`BaseDistribution::param_len`]) — the layout of a
/// generated flow whose `layers()` is `layers` and whose base is `base`.
///
/// How: each layer's [`Layer::inverse_block`] runs over the whole batch, last layer first,
/// on a copy of its input that is kept; then [`base_backward`] adds the base log-density and
/// seeds the gradient with `weight[i]·∇ log p_Z(z_i)`; then each layer's
/// [`Layer::inverse_backward_block`] runs on its kept input, first layer (base side) first,
/// turning the gradient of its output into that of its input. No blocking, no fusion, no
/// tape reuse: it allocates one copy of the batch per layer.
///
/// Panics if `weight`, `param_grad` or `grad_x` do not fit `x` and `layers`.
pub fn log_prob_and_grad<F: Float, B: BaseDistribution<F>>(
    layers: &[&dyn Layer<F>],
    base: &B,
    x: ArrayView2<'_, F>,
    weight: ArrayView1<'_, F>,
    param_grad: &mut [F],
    mut grad_x: ArrayViewMut2<'_, F>,
) -> Array1<F> {
    let layers_len: usize = layers.iter().map(|l| l.param_len()).sum();
    assert_eq!(weight.len(), x.nrows(), "weight: one per row of x");
    assert_eq!(
        param_grad.len(),
        layers_len + base.param_len(),
        "param_grad: the layers' param_len summed, plus the base's"
    );
    assert_eq!(grad_x.dim(), x.dim(), "grad_x: the shape of x");

    let mut ws = Workspace::default();
    let mut log_prob = Array1::zeros(x.nrows());
    // `inputs[i]`: the block layer i's inverse receives (filled data side first).
    let mut inputs: Vec<Array2<F>> = Vec::with_capacity(layers.len());
    let mut z = x.to_owned();
    for layer in layers.iter().rev() {
        inputs.push(z.clone());
        layer.inverse_block(z.view_mut(), log_prob.view_mut(), &mut ws);
    }
    inputs.reverse();

    let (layers_grad, base_grad) = param_grad.split_at_mut(layers_len);
    base_backward(
        base,
        z.view(),
        log_prob.view_mut(),
        weight,
        grad_x.view_mut(),
        base_grad,
    );

    // One slice of the flat gradient per layer, in list order.
    let mut rest = layers_grad;
    for (layer, y) in layers.iter().zip(&inputs) {
        let (own, tail) = std::mem::take(&mut rest).split_at_mut(layer.param_len());
        rest = tail;
        layer.inverse_backward_block(y.view(), grad_x.view_mut(), weight, own, &mut ws);
    }
    log_prob
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::{StandardNormal, StandardUniform};
    use crate::layers::{
        Activation, Affine, Coupling, CouplingTransform, LeakyRelu, Logit, Mask, Permute, Sigmoid,
    };
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// Sets every parameter of `layers` from the flat `values` (list order).
    fn set_params(layers: &mut [Box<dyn Layer<f64>>], values: &[f64]) {
        let mut offset = 0;
        for layer in layers {
            layer.visit_params_mut(&mut |_, _, p| {
                p.copy_from_slice(&values[offset..offset + p.len()]);
                offset += p.len();
            });
        }
        assert_eq!(offset, values.len());
    }

    /// `J = Σ_i w_i·log p(x_i)` through the value path alone.
    fn objective<B: BaseDistribution<f64>>(
        layers: &[Box<dyn Layer<f64>>],
        base: &B,
        x: &Array2<f64>,
        w: &Array1<f64>,
    ) -> f64 {
        let refs: Vec<&dyn Layer<f64>> = layers.iter().map(|l| l.as_ref()).collect();
        let (z, ld) = inverse_and_log_det(&refs, x.view());
        z.rows()
            .into_iter()
            .zip(&ld)
            .zip(w)
            .map(|((z, l), w)| w * (l + base.log_prob_point(z.as_slice().unwrap())))
            .sum()
    }

    /// The reference gradient of a small chain against central differences: values, every
    /// parameter, every input coordinate, and accumulation into `param_grad`.
    fn check<B: BaseDistribution<f64>>(
        mut layers: Vec<Box<dyn Layer<f64>>>,
        base: B,
        z: Array2<f64>,
    ) {
        let n: usize = layers.iter().map(|l| l.param_len()).sum();
        let mut params: Vec<f64> = (0..n).map(|k| 0.4 * (1.7 * k as f64 + 0.4).sin()).collect();
        set_params(&mut layers, &params);
        let refs: Vec<&dyn Layer<f64>> = layers.iter().map(|l| l.as_ref()).collect();
        let (x, _) = forward_and_log_det(&refs, z.view());
        let w = Array1::from_shape_fn(x.nrows(), |i| 0.5 - 0.3 * i as f64);

        let mut grad = vec![0.0; n];
        let mut grad_x = Array2::from_elem(x.raw_dim(), f64::NAN);
        let lp = log_prob_and_grad(
            &refs,
            &base,
            x.view(),
            w.view(),
            &mut grad,
            grad_x.view_mut(),
        );
        let (z_back, ld) = inverse_and_log_det(&refs, x.view());
        for i in 0..x.nrows() {
            let expected = ld[i] + base.log_prob_point(z_back.row(i).as_slice().unwrap());
            assert!(
                (lp[i] - expected).abs() < 1e-12,
                "value {} vs {expected}",
                lp[i]
            );
        }
        // It adds into `param_grad`.
        let mut twice = grad.clone();
        log_prob_and_grad(
            &refs,
            &base,
            x.view(),
            w.view(),
            &mut twice,
            grad_x.view_mut(),
        );
        for (a, b) in twice.iter().zip(&grad) {
            assert!((a - 2.0 * b).abs() <= 1e-12 * (1.0 + b.abs()));
        }
        drop(refs);

        let close = |a: f64, fd: f64| (a - fd).abs() <= 1e-6 * (1.0 + fd.abs());
        for k in 0..n {
            let original = params[k];
            let h = 1e-6 * original.abs().max(1.0);
            params[k] = original + h;
            set_params(&mut layers, &params);
            let up = objective(&layers, &base, &x, &w);
            params[k] = original - h;
            set_params(&mut layers, &params);
            let down = objective(&layers, &base, &x, &w);
            params[k] = original;
            set_params(&mut layers, &params);
            let fd = (up - down) / (2.0 * h);
            assert!(close(grad[k], fd), "∂J/∂θ[{k}] = {} vs {fd}", grad[k]);
        }
        for r in 0..x.nrows() {
            for c in 0..x.ncols() {
                let h = 1e-6 * x[[r, c]].abs().max(1e-3);
                let mut xp = x.clone();
                xp[[r, c]] += h;
                let up = objective(&layers, &base, &xp, &w);
                xp[[r, c]] -= 2.0 * h;
                let down = objective(&layers, &base, &xp, &w);
                let fd = (up - down) / (2.0 * h);
                assert!(
                    close(grad_x[[r, c]], fd),
                    "∂J/∂x[{r}, {c}] = {} vs {fd}",
                    grad_x[[r, c]]
                );
            }
        }
    }

    #[test]
    fn gradient_matches_finite_differences_normal_base() {
        let mut rng = StdRng::seed_from_u64(3);
        let layers: Vec<Box<dyn Layer<f64>>> = vec![
            Box::new(Affine::identity(3)),
            Box::new(Coupling::new(
                3,
                Mask::Even,
                CouplingTransform::Affine,
                &[4],
                Activation::Tanh,
                &mut rng,
            )),
            Box::new(Permute::reverse(3)),
            Box::new(LeakyRelu::<f64>::new(0.5)),
            Box::new(Coupling::new(
                3,
                Mask::FirstHalf,
                CouplingTransform::Additive,
                &[],
                Activation::Silu,
                &mut rng,
            )),
            Box::new(Sigmoid),
        ];
        let z =
            Array2::from_shape_vec((3, 3), vec![0.3, -1.2, 0.8, -0.4, 0.9, 1.5, 1.1, 0.2, -0.7])
                .unwrap();
        check(layers, StandardNormal, z);
    }

    #[test]
    fn gradient_matches_finite_differences_uniform_base() {
        let mut rng = StdRng::seed_from_u64(4);
        let layers: Vec<Box<dyn Layer<f64>>> = vec![
            Box::new(Logit),
            Box::new(Coupling::new(
                2,
                Mask::Odd,
                CouplingTransform::Affine,
                &[5, 3],
                Activation::Elu,
                &mut rng,
            )),
            Box::new(Affine::identity(2)),
        ];
        let z = Array2::from_shape_vec((3, 2), vec![0.2, 0.7, 0.55, 0.1, 0.9, 0.35]).unwrap();
        check(layers, StandardUniform, z);
    }
}
