//! Gradients of log-densities: the trait generated flows implement so they can be trained.
//! The generated code supplies the reverse-mode pass over one row block (written out layer
//! by layer, reusing the values its inverse pass kept); blocking, input checks and the
//! loss functions live here.

use ndarray::{Array1, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis};

use crate::base::BaseDistribution;
use crate::error::FlowError;
use crate::float::Float;
use crate::flow::{BLOCK_ROWS, Density, check_batch};
use crate::parameters::Parameters;
use crate::workspace::Workspace;

/// A flow whose parameters can be learned by maximum likelihood: gradients of weighted
/// sums of log-densities with respect to every parameter and to the input rows.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be fitted to data by maximum likelihood: it has no density at arbitrary points",
    label = "this flow has a forward-only layer (`planar` or `radial`)",
    note = "train it by reverse KL against a target density: `fit_reverse_kl`"
)]
pub trait Trainable<F: Float>: Density<F> + Parameters<F> {
    /// The data-dependent initialisation: runs the inverse pass over the rows of `x` layer
    /// by layer from the data side, and gives each layer that waits for it
    /// ([`Layer::needs_data_init`](crate::Layer::needs_data_init)) the block its inverse is about to receive
    /// ([`Layer::init_from_data`](crate::Layer::init_from_data)), so a layer is initialised on data already transformed
    /// by the (initialised) layers on its data side. Layers already initialised are left
    /// alone, so a second call changes nothing. Checks `x` like the other batch methods
    /// (column count, finite values); rows that leave some layer's domain become NaN there
    /// and are ignored by the layers below.
    fn initialize_from_data(&mut self, x: ArrayView2<'_, F>) -> Result<(), FlowError> {
        check_batch(x, self.dim())?;
        let mut layers = self.layers_mut();
        // The base-most layer to initialise: the pass stops there.
        let Some(last) = layers.iter().position(|l| l.needs_data_init()) else {
            return Ok(());
        };
        let mut block = x.to_owned();
        let mut log_det = Array1::zeros(block.nrows());
        let mut ws = Workspace::default();
        for layer in layers[last..].iter_mut().rev() {
            if layer.needs_data_init() {
                layer.init_from_data(block.view());
            }
            layer.inverse_block(block.view_mut(), log_det.view_mut(), &mut ws);
        }
        Ok(())
    }

    /// Whether some layer normalises with batch statistics (`batch_norm`). Then the
    /// gradient methods run a batch as one block (its statistics are the whole batch's,
    /// and they couple its rows), and [`crate::fit`] updates the running statistics after
    /// each step's gradient ([`Trainable::track_batch_statistics`]). Generated flows
    /// answer with a constant (this default collects the layers, which allocates).
    fn uses_batch_statistics(&self) -> bool {
        self.layers().iter().any(|l| l.uses_batch_statistics())
    }

    /// Updates the running statistics of every layer that uses batch statistics from the
    /// training batch `x`: the training inverse runs layer by layer from the data side and
    /// each such layer sees the block its inverse receives
    /// ([`Layer::track_batch_statistics`](crate::Layer::track_batch_statistics)). Checks
    /// `x` like the other batch methods; does nothing for flows without such layers.
    fn track_batch_statistics(&mut self, x: ArrayView2<'_, F>) -> Result<(), FlowError> {
        check_batch(x, self.dim())?;
        let mut layers = self.layers_mut();
        let Some(last) = layers.iter().position(|l| l.uses_batch_statistics()) else {
            return Ok(());
        };
        let mut block = x.to_owned();
        let mut log_det = Array1::zeros(block.nrows());
        let mut ws = Workspace::default();
        for layer in layers[last..].iter_mut().rev() {
            if layer.uses_batch_statistics() {
                layer.track_batch_statistics(block.view());
            }
            layer.inverse_block_training(block.view_mut(), log_det.view_mut(), &mut ws);
        }
        Ok(())
    }

    /// The reverse-mode pass over one block: writes `log p(x_i)` into `log_prob`, and for
    /// `J = Σ_i weight[i]·log p(x_i)` writes `∂J/∂x` into `grad_x` and adds `∂J/∂θ` into
    /// `param_grad`. Inputs are not checked: use [`Trainable::log_prob_and_grad`].
    #[allow(clippy::too_many_arguments)]
    fn log_prob_backward_block(
        &self,
        x: ArrayView2<'_, F>,
        log_prob: ArrayViewMut1<'_, F>,
        weight: ArrayView1<'_, F>,
        grad_x: ArrayViewMut2<'_, F>,
        param_grad: &mut [F],
        tape: &mut Vec<F>,
        ws: &mut Workspace<F>,
    );

    /// `log p(x_i)` per row; adds `∂J/∂θ` of `J = Σ_i weight[i]·log p(x_i)` into
    /// `param_grad` (length [`Parameters::param_len`]) and, if given, writes `∂J/∂x` into
    /// `grad_x` (the shape of `x`). Runs on the calling thread, block by block; allocates
    /// only the returned array once this thread's scratch has grown to the batch size.
    fn log_prob_and_grad(
        &self,
        x: ArrayView2<'_, F>,
        weight: ArrayView1<'_, F>,
        param_grad: &mut [F],
        mut grad_x: Option<ArrayViewMut2<'_, F>>,
    ) -> Result<Array1<F>, FlowError> {
        check_batch(x, self.dim())?;
        check_len("weight", weight.len(), x.nrows())?;
        check_len("param_grad", param_grad.len(), self.param_len())?;
        if let Some(g) = &grad_x {
            check_len("grad_x rows", g.nrows(), x.nrows())?;
            check_len("grad_x columns", g.ncols(), x.ncols())?;
        }
        let mut log_prob = Array1::zeros(x.nrows());
        let block = block_size(self, x.nrows());
        F::with_scratch(|s| {
            for (start, xb) in x.axis_chunks_iter(Axis(0), block).enumerate() {
                let rows = start * block..start * block + xb.nrows();
                let lp = log_prob.slice_mut(ndarray::s![rows.clone()]);
                let w = weight.slice(ndarray::s![rows.clone()]);
                match grad_x.as_mut() {
                    Some(g) => {
                        let gb = g.slice_mut(ndarray::s![rows, ..]);
                        self.log_prob_backward_block(
                            xb,
                            lp,
                            w,
                            gb,
                            param_grad,
                            &mut s.tape,
                            &mut s.layers,
                        );
                    }
                    None => {
                        let gb = block_buffer(&mut s.grad, xb.nrows(), xb.ncols());
                        self.log_prob_backward_block(
                            xb,
                            lp,
                            w,
                            gb,
                            param_grad,
                            &mut s.tape,
                            &mut s.layers,
                        );
                    }
                }
            }
        });
        Ok(log_prob)
    }

    /// The mean negative log-likelihood of the rows of `x`, adding its gradient with
    /// respect to the parameters into `param_grad`. A row outside the support makes the
    /// loss `+inf` (and the gradient non-finite).
    ///
    /// A batch of at least 2·64 rows is cut in two halves, run through `rayon::join` (on
    /// two threads when the pool has them, one after the other on the calling thread
    /// otherwise), the second half's gradient in a spare buffer that is then added. The
    /// split and the order of the sums depend only on the batch size, so the loss and the
    /// gradient are the same, bit for bit, whatever the number of threads.
    ///
    /// Allocates nothing in steady state (once this thread's scratch has grown to the
    /// batch size) when run on one thread, e.g. inside a one-thread rayon pool; across
    /// threads, rayon's job queues allocate now and then.
    fn nll_and_grad(&self, x: ArrayView2<'_, F>, param_grad: &mut [F]) -> Result<F, FlowError> {
        check_batch(x, self.dim())?;
        check_len("param_grad", param_grad.len(), self.param_len())?;
        let n = x.nrows();
        if n == 0 {
            return Ok(F::zero());
        }
        let weight = -F::one() / F::of(n as f64);
        let total = if n >= 2 * PARALLEL_MIN_ROWS && !self.uses_batch_statistics() {
            let (first, second) = x.split_at(Axis(0), n / 2);
            let mut spare = F::with_scratch(|s| std::mem::take(&mut s.spare_grad));
            spare.clear();
            spare.resize(param_grad.len(), F::zero());
            let (a, b) = rayon::join(
                || weighted_log_prob_and_grad(self, first, weight, param_grad),
                || weighted_log_prob_and_grad(self, second, weight, &mut spare),
            );
            for (g, &extra) in param_grad.iter_mut().zip(&spare) {
                *g += extra;
            }
            F::with_scratch(|s| s.spare_grad = spare);
            a + b
        } else {
            weighted_log_prob_and_grad(self, x, weight, param_grad)
        };
        Ok(-total / F::of(n as f64))
    }
}

/// Rows below which [`Trainable::nll_and_grad`] does not split a batch in halves (a
/// half has at least this many rows).
const PARALLEL_MIN_ROWS: usize = 64;

/// `Σ_i log p(x_i)`, adding the gradient of `Σ_i weight·log p(x_i)` into `param_grad`, on
/// the calling thread, block by block.
fn weighted_log_prob_and_grad<F: Float, M: Trainable<F> + ?Sized>(
    model: &M,
    x: ArrayView2<'_, F>,
    weight: F,
    param_grad: &mut [F],
) -> F {
    let mut total = F::zero();
    let block = block_size(model, x.nrows());
    F::with_scratch(|s| {
        for xb in x.axis_chunks_iter(Axis(0), block) {
            let rows = xb.nrows();
            let [w, lp] = &mut s.per_row;
            w.clear();
            w.resize(rows, weight);
            lp.clear();
            lp.resize(rows, F::zero());
            let gb = block_buffer(&mut s.grad, rows, xb.ncols());
            model.log_prob_backward_block(
                xb,
                ArrayViewMut1::from(&mut lp[..]),
                ArrayView1::from(&w[..]),
                gb,
                param_grad,
                &mut s.tape,
                &mut s.layers,
            );
            total += lp.iter().copied().sum::<F>();
        }
    });
    total
}

/// Rows per block of the gradient methods: [`BLOCK_ROWS`], or the whole batch of `rows`
/// for a flow that normalises with batch statistics.
fn block_size<F: Float, M: Trainable<F> + ?Sized>(model: &M, rows: usize) -> usize {
    if model.uses_batch_statistics() {
        rows.max(1)
    } else {
        BLOCK_ROWS
    }
}

fn block_buffer<F: Float>(buf: &mut Vec<F>, rows: usize, cols: usize) -> ArrayViewMut2<'_, F> {
    if buf.len() < rows * cols {
        buf.resize(rows * cols, F::zero());
    }
    ArrayViewMut2::from_shape((rows, cols), &mut buf[..rows * cols]).expect("rows × cols elements")
}

fn check_len(what: &'static str, found: usize, expected: usize) -> Result<(), FlowError> {
    if found == expected {
        Ok(())
    } else {
        Err(FlowError::WrongLength {
            what,
            expected,
            found,
        })
    }
}

/// Splits the flat gradient buffer into one slice per layer (lengths `lens`, in order).
pub fn split_params<const N: usize, F>(mut params: &mut [F], lens: [usize; N]) -> [&mut [F]; N] {
    lens.map(|len| {
        let (head, tail) = std::mem::take(&mut params).split_at_mut(len);
        params = tail;
        head
    })
}

/// The base distribution's part of the backward pass: adds `log p_Z(z)` to each row's
/// `log_prob`, sets `grad` to `weight[i]·∇_z log p_Z(z_i)`, and adds
/// `Σ_i weight[i]·∇_θ log p_Z(z_i)` into `base_param_grad`, the base's own slice of the
/// flat gradient (length [`BaseDistribution::param_len`]: `&mut []` for a fixed base).
///
/// # Panics
/// If `base_param_grad` is not [`BaseDistribution::param_len`] long.
pub fn base_backward<F: Float, B: BaseDistribution<F>>(
    base: &B,
    z: ArrayView2<'_, F>,
    mut log_prob: ArrayViewMut1<'_, F>,
    weight: ArrayView1<'_, F>,
    mut grad: ArrayViewMut2<'_, F>,
    base_param_grad: &mut [F],
) {
    assert_eq!(
        base_param_grad.len(),
        base.param_len(),
        "base_backward: the base's parameter-gradient slice"
    );
    ndarray::Zip::from(z.rows())
        .and(grad.rows_mut())
        .and(&mut log_prob)
        .and(&weight)
        .for_each(|z, mut g, lp, &w| {
            *lp += base.log_prob_backward(z, g.view_mut(), w, base_param_grad);
            g.mapv_inplace(|v| v * w);
        });
}

/// A hand-written trainable flow over boxed layers, as `flow!` would generate it (unfused,
/// with the reference backward pass), for the tests of this crate.
#[cfg(test)]
pub(crate) mod mock {
    use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};

    use super::Trainable;
    use crate::base::StandardNormal;
    use crate::float::Float;
    use crate::flow::{Density, Flow};
    use crate::layers::Layer;
    use crate::parameters::Parameters;
    use crate::workspace::Workspace;

    /// Layers listed base → data; tensors visited under the field names `layer_{i}`.
    pub(crate) struct Chain<F> {
        pub dim: usize,
        pub layers: Vec<Box<dyn Layer<F>>>,
    }

    const NAMES: [&str; 4] = ["layer_0", "layer_1", "layer_2", "layer_3"];

    impl<F: Float> Flow<F> for Chain<F> {
        type Base = StandardNormal;
        fn dim(&self) -> usize {
            self.dim
        }
        fn base(&self) -> &StandardNormal {
            &StandardNormal
        }
        fn layers(&self) -> Vec<&dyn Layer<F>> {
            self.layers.iter().map(|l| l.as_ref()).collect()
        }
        fn forward_block(
            &self,
            mut x: ArrayViewMut2<'_, F>,
            mut log_det: ArrayViewMut1<'_, F>,
            ws: &mut Workspace<F>,
        ) {
            for l in &self.layers {
                l.forward_block(x.view_mut(), log_det.view_mut(), ws);
            }
        }
    }

    impl<F: Float> Density<F> for Chain<F> {
        fn inverse_block(
            &self,
            mut y: ArrayViewMut2<'_, F>,
            mut log_det: ArrayViewMut1<'_, F>,
            ws: &mut Workspace<F>,
        ) {
            for l in self.layers.iter().rev() {
                l.inverse_block(y.view_mut(), log_det.view_mut(), ws);
            }
        }
    }

    impl<F: Float> Parameters<F> for Chain<F> {
        fn param_len(&self) -> usize {
            self.layers.iter().map(|l| l.param_len()).sum()
        }
        fn visit_params(&self, visit: &mut dyn FnMut(&str, &str, &[usize], &[F])) {
            for (l, field) in self.layers.iter().zip(NAMES) {
                l.visit_params(&mut |name, shape, values| visit(field, name, shape, values));
            }
        }
        fn visit_params_mut(&mut self, visit: &mut dyn FnMut(&str, &str, &[usize], &mut [F])) {
            for (l, field) in self.layers.iter_mut().zip(NAMES) {
                l.visit_params_mut(&mut |name, shape, values| visit(field, name, shape, values));
            }
        }
        fn layers_mut(&mut self) -> Vec<&mut dyn Layer<F>> {
            self.layers
                .iter_mut()
                .map(|l| l.as_mut() as &mut dyn Layer<F>)
                .collect()
        }
    }

    impl<F: Float> Trainable<F> for Chain<F> {
        fn log_prob_backward_block(
            &self,
            x: ArrayView2<'_, F>,
            mut log_prob: ArrayViewMut1<'_, F>,
            weight: ArrayView1<'_, F>,
            grad_x: ArrayViewMut2<'_, F>,
            param_grad: &mut [F],
            _tape: &mut Vec<F>,
            _ws: &mut Workspace<F>,
        ) {
            let lp = crate::reference::log_prob_and_grad(
                &self.layers(),
                &StandardNormal,
                x,
                weight,
                param_grad,
                grad_x,
            );
            log_prob.assign(&lp);
        }
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{Array1, Array2};
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::mock::Chain;
    use super::*;
    use crate::base::{DiagonalNormal, StandardNormal};
    use crate::flow::Flow;
    use crate::layers::{ActNorm, Affine, Tanh};

    /// `actnorm; affine (random, fixed here); actnorm` on 3 coordinates, base → data.
    fn two_actnorms(seed: u64) -> Chain<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        let affine = Affine {
            shift: (0..3).map(|_| rng.random_range(-2.0..2.0)).collect(),
            log_scale: (0..3).map(|_| rng.random_range(-1.0..1.0)).collect(),
        };
        Chain {
            dim: 3,
            layers: vec![
                Box::new(ActNorm::<f64>::new(3)),
                Box::new(affine),
                Box::new(ActNorm::<f64>::new(3)),
            ],
        }
    }

    /// Correlated, shifted, differently scaled columns.
    fn data(rows: usize, seed: u64) -> Array2<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut x = Array2::zeros((rows, 3));
        for mut row in x.rows_mut() {
            let (a, b): (f64, f64) = (rng.random_range(-1.0..1.0), rng.random_range(0.0..1.0));
            row.assign(&Array1::from(vec![
                7.0 + 3.0 * a,
                -2.0 + a + 0.1 * b * b,
                40.0 * b,
            ]));
        }
        x
    }

    fn flat(model: &impl Trainable<f64>) -> Vec<f64> {
        let mut out = vec![0.0; model.param_len()];
        model.params_to_slice(&mut out);
        out
    }

    fn assert_standardised(z: &Array2<f64>, tol: f64) {
        let n = z.nrows() as f64;
        for c in z.columns() {
            let m = c.sum() / n;
            let sd = (c.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n).sqrt();
            assert!(
                m.abs() < tol && (sd - 1.0).abs() < tol,
                "mean {m}, std {sd}"
            );
        }
    }

    #[test]
    fn initialize_from_data_standardises_the_inverse_output() {
        let mut model = two_actnorms(1);
        let x = data(500, 2);
        assert!(model.needs_data_init());
        model.initialize_from_data(x.view()).unwrap();
        assert!(!model.needs_data_init());
        assert!(model.layers().iter().all(|l| !l.needs_data_init()));
        // The flow's inverse output of the batch, and that of the data-side actnorm alone
        // (it saw the raw data).
        assert_standardised(&model.inverse(x.view()).unwrap(), 1e-5);
        let (mut top, mut ld) = (x.clone(), Array1::zeros(500));
        model.layers()[2].inverse_block(top.view_mut(), ld.view_mut(), &mut Workspace::default());
        assert_standardised(&top, 1e-5);
        assert!(
            model
                .log_prob(x.view())
                .unwrap()
                .iter()
                .all(|v| v.is_finite())
        );
    }

    #[test]
    fn a_second_initialisation_changes_nothing() {
        let mut model = two_actnorms(3);
        model.initialize_from_data(data(300, 4).view()).unwrap();
        let first = flat(&model);
        model.initialize_from_data(data(300, 5).view()).unwrap();
        assert_eq!(flat(&model), first);
    }

    #[test]
    fn constant_columns_give_finite_values() {
        let mut model = two_actnorms(6);
        let mut x = data(100, 7);
        x.column_mut(1).fill(3.5);
        model.initialize_from_data(x.view()).unwrap();
        assert!(flat(&model).iter().all(|v| v.is_finite()));
        let (z, ld) = model.inverse_and_log_det(x.view()).unwrap();
        assert!(z.iter().all(|v| v.is_finite()) && ld.iter().all(|v| v.is_finite()));
        assert!(
            model
                .log_prob(x.view())
                .unwrap()
                .iter()
                .all(|v| v.is_finite())
        );
        let mut grads = vec![0.0; model.param_len()];
        let nll = model.nll_and_grad(x.view(), &mut grads).unwrap();
        assert!(nll.is_finite() && grads.iter().all(|g| g.is_finite()));
    }

    #[test]
    fn rows_that_leave_a_domain_are_ignored_below_it() {
        // actnorm; tanh (data side): the inverse rejects |x| ≥ 1, such rows become NaN.
        let mut model = Chain::<f64> {
            dim: 2,
            layers: vec![Box::new(ActNorm::new(2)), Box::new(Tanh)],
        };
        let mut x =
            Array2::from_shape_fn((200, 2), |(i, j)| 0.9 * ((i * (j + 2)) as f64 * 0.37).sin());
        let inside = x.clone();
        x.row_mut(0).assign(&Array1::from(vec![1.5, 0.0]));
        model.initialize_from_data(x.view()).unwrap();
        let mut clean = Chain::<f64> {
            dim: 2,
            layers: vec![Box::new(ActNorm::new(2)), Box::new(Tanh)],
        };
        clean
            .initialize_from_data(inside.slice(ndarray::s![1.., ..]))
            .unwrap();
        assert_eq!(flat(&model), flat(&clean));
    }

    #[test]
    fn initialisation_checks_the_batch_and_skips_flows_without_actnorm() {
        let mut model = two_actnorms(8);
        assert!(matches!(
            model.initialize_from_data(Array2::zeros((4, 2)).view()),
            Err(FlowError::WrongDim { .. })
        ));
        let mut x = data(10, 9);
        x[[3, 1]] = f64::NAN;
        assert!(matches!(
            model.initialize_from_data(x.view()),
            Err(FlowError::NonFinite { row: 3, col: 1, .. })
        ));
        assert!(model.needs_data_init());
        assert_eq!(flat(&model), flat(&two_actnorms(8)));

        let mut plain = Chain::<f64> {
            dim: 3,
            layers: vec![Box::new(Affine::identity(3))],
        };
        assert!(!plain.needs_data_init());
        plain.initialize_from_data(data(10, 10).view()).unwrap();
        assert_eq!(flat(&plain), vec![0.0; 6]);
    }

    #[test]
    fn load_marks_every_layer_initialised() {
        let dir = std::env::temp_dir().join(format!("flowgen-actnorm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.safetensors");
        let mut trained = two_actnorms(11);
        trained.initialize_from_data(data(200, 12).view()).unwrap();
        crate::io::save(&trained, &path, "chain").unwrap();

        // A failed load leaves the flag alone.
        let mut fresh = two_actnorms(11);
        assert!(crate::io::load(&mut fresh, &path, "another").is_err());
        assert!(fresh.needs_data_init());

        crate::io::load(&mut fresh, &path, "chain").unwrap();
        assert!(!fresh.needs_data_init());
        assert_eq!(flat(&fresh), flat(&trained));
        // So a later initialisation (as fit would run) keeps the loaded parameters.
        fresh.initialize_from_data(data(200, 13).view()).unwrap();
        assert_eq!(flat(&fresh), flat(&trained));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn base_backward_adds_the_base_parameter_gradient() {
        let mut rng = StdRng::seed_from_u64(14);
        let base = DiagonalNormal::<f64> {
            mean: vec![0.5, -1.0],
            log_std: vec![0.3, -0.2],
        };
        let z = Array2::from_shape_fn((5, 2), |_| rng.random_range(-2.0..2.0));
        let w = Array1::from_shape_fn(5, |_| rng.random_range(-1.0..1.0));
        let mut lp = Array1::from_elem(5, 1.0);
        let mut grad = Array2::zeros((5, 2));
        let mut pg = vec![0.25; 4];
        base_backward(
            &base,
            z.view(),
            lp.view_mut(),
            w.view(),
            grad.view_mut(),
            &mut pg,
        );
        let mut expected = vec![0.25; 4];
        for i in 0..5 {
            let mut g = Array1::zeros(2);
            let l = base.log_prob_backward(z.row(i), g.view_mut(), w[i], &mut expected);
            assert_eq!(lp[i], 1.0 + l);
            assert_eq!(grad.row(i), g.mapv(|v| v * w[i]));
        }
        for (a, b) in pg.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-14);
        }
        // A fixed base takes an empty slice.
        base_backward(
            &StandardNormal,
            z.view(),
            lp.view_mut(),
            w.view(),
            grad.view_mut(),
            &mut [],
        );
    }

    #[test]
    #[should_panic(expected = "the base's parameter-gradient slice")]
    fn base_backward_rejects_a_wrong_base_slice() {
        let base = DiagonalNormal::<f64>::new(2);
        let z = Array2::zeros((1, 2));
        let w = Array1::ones(1);
        let (mut lp, mut g) = (Array1::zeros(1), Array2::zeros((1, 2)));
        base_backward(
            &base,
            z.view(),
            lp.view_mut(),
            w.view(),
            g.view_mut(),
            &mut [],
        );
    }
}
