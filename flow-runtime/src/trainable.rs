//! Gradients of log-densities: the trait generated flows implement so they can be trained.
//! The generated code supplies the reverse-mode pass over one row block (written out layer
//! by layer, reusing the values its inverse pass kept); blocking, input checks and the
//! loss functions live here.

use ndarray::{Array1, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis};

use crate::base::BaseDistribution;
use crate::error::FlowError;
use crate::float::Float;
use crate::flow::{BLOCK_ROWS, Density, check_batch};
use crate::workspace::Workspace;

/// A flow whose parameters can be learned: gradients of weighted sums of log-densities
/// with respect to every parameter and to the input rows.
pub trait Trainable<F: Float>: Density<F> {
    /// The number of learnable parameters: the length of the flat gradient buffer.
    fn param_len(&self) -> usize;

    /// Visits each learnable tensor as `(layer field, tensor name, shape, values)`, in the
    /// order of the flat parameter layout.
    #[allow(clippy::type_complexity)]
    fn visit_params(&self, visit: &mut dyn FnMut(&str, &str, &[usize], &[F]));

    /// Visits each learnable tensor mutably, in the same order.
    #[allow(clippy::type_complexity)]
    fn visit_params_mut(&mut self, visit: &mut dyn FnMut(&str, &str, &[usize], &mut [F]));

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
    /// `param_grad` (length [`Trainable::param_len`]) and, if given, writes `∂J/∂x` into
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
        F::with_scratch(|s| {
            for (start, xb) in x.axis_chunks_iter(Axis(0), BLOCK_ROWS).enumerate() {
                let rows = start * BLOCK_ROWS..start * BLOCK_ROWS + xb.nrows();
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
        let total = if n >= 2 * PARALLEL_MIN_ROWS {
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

    /// The flat gradient buffer `grad` (length [`Trainable::param_len`]) as named views:
    /// visits `(layer field, tensor name, shape, gradient)` tensor by tensor, in the layout
    /// of [`Trainable::visit_params`].
    ///
    /// # Panics
    /// If `grad` is shorter than [`Trainable::param_len`].
    #[allow(clippy::type_complexity)]
    fn visit_grads(&self, grad: &[F], visit: &mut dyn FnMut(&str, &str, &[usize], &[F])) {
        let mut offset = 0;
        self.visit_params(&mut |layer, tensor, shape, values| {
            visit(layer, tensor, shape, &grad[offset..offset + values.len()]);
            offset += values.len();
        });
    }

    /// Copies the parameters into `out` (length [`Trainable::param_len`]), flat.
    fn params_to_slice(&self, out: &mut [F]) {
        let mut offset = 0;
        self.visit_params(&mut |_, _, _, values| {
            out[offset..offset + values.len()].copy_from_slice(values);
            offset += values.len();
        });
    }

    /// Sets the parameters from a flat slice (length [`Trainable::param_len`]).
    fn params_from_slice(&mut self, values: &[F]) {
        let mut offset = 0;
        self.visit_params_mut(&mut |_, _, _, p| {
            p.copy_from_slice(&values[offset..offset + p.len()]);
            offset += p.len();
        });
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
    F::with_scratch(|s| {
        for xb in x.axis_chunks_iter(Axis(0), BLOCK_ROWS) {
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
/// `log_prob` and sets `grad` to `weight[i]·∇ log p_Z(z_i)`.
pub fn base_backward<F: Float, B: BaseDistribution<F>>(
    base: &B,
    z: ArrayView2<'_, F>,
    mut log_prob: ArrayViewMut1<'_, F>,
    weight: ArrayView1<'_, F>,
    mut grad: ArrayViewMut2<'_, F>,
) {
    ndarray::Zip::from(z.rows())
        .and(grad.rows_mut())
        .and(&mut log_prob)
        .and(&weight)
        .for_each(|z, mut g, lp, &w| {
            *lp += base.log_prob_and_grad(z, g.view_mut());
            g.mapv_inplace(|v| v * w);
        });
}
