//! The traits every generated flow implements. The generated code supplies the fused
//! block kernels; the batch API, input checks, blocking and sampling live here once.

use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis};
use rand::Rng;

use crate::base::BaseDistribution;
use crate::error::FlowError;
use crate::float::Float;
use crate::layers::Layer;
use crate::workspace::Workspace;

/// Rows per block: the chain runs one block at a time so intermediates stay in cache.
pub const BLOCK_ROWS: usize = 256;

/// A normalizing flow: a base distribution pushed through a chain of bijections, listed
/// from the base to the data. Implemented by every type the `flow!` macro generates.
pub trait Flow<F: Float>: Send + Sync {
    /// The base distribution's type.
    type Base: BaseDistribution<F>;

    /// The number of coordinates.
    fn dim(&self) -> usize;

    /// The base distribution.
    fn base(&self) -> &Self::Base;

    /// The layers in order from the base to the data, for the unfused reference path
    /// ([`crate::reference`]) and for inspection.
    fn layers(&self) -> Vec<&dyn Layer<F>>;

    /// The fused forward pass over one block of rows, in place; adds log-dets to `log_det`.
    /// Inputs are not checked: use [`Flow::forward_and_log_det`].
    fn forward_block(
        &self,
        x: ArrayViewMut2<'_, F>,
        log_det: ArrayViewMut1<'_, F>,
        ws: &mut Workspace<F>,
    );

    /// Maps base points `z` (one per row) to data points, with `log|det ∂f/∂z|` per row.
    fn forward_and_log_det(
        &self,
        z: ArrayView2<'_, F>,
    ) -> Result<(Array2<F>, Array1<F>), FlowError> {
        check_batch(z, self.dim())?;
        let mut x = z.as_standard_layout().into_owned();
        let mut log_det = Array1::zeros(x.nrows());
        self.forward_in_place(x.view_mut(), log_det.view_mut());
        Ok((x, log_det))
    }

    /// Maps base points to data points.
    fn forward(&self, z: ArrayView2<'_, F>) -> Result<Array2<F>, FlowError> {
        self.forward_and_log_det(z).map(|(x, _)| x)
    }

    /// The forward pass over a whole batch in place, block by block (unchecked).
    fn forward_in_place(&self, mut x: ArrayViewMut2<'_, F>, mut log_det: ArrayViewMut1<'_, F>) {
        F::with_scratch(|scratch| {
            for (xb, lb) in x
                .axis_chunks_iter_mut(Axis(0), BLOCK_ROWS)
                .zip(log_det.axis_chunks_iter_mut(Axis(0), BLOCK_ROWS))
            {
                self.forward_block(xb, lb, &mut scratch.layers);
            }
        })
    }

    /// Draws `n` points from the flow.
    fn sample<R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Array2<F>
    where
        Self: Sized,
    {
        self.sample_and_log_prob(n, rng).0
    }

    /// Draws `n` points and their log-densities, `log p_Z(z) − log|det ∂f/∂z|`.
    fn sample_and_log_prob<R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> (Array2<F>, Array1<F>)
    where
        Self: Sized,
    {
        let mut x = Array2::zeros((n, self.dim()));
        let mut log_prob = Array1::zeros(n);
        for (mut row, lp) in x.axis_iter_mut(Axis(0)).zip(log_prob.iter_mut()) {
            let row = row.as_slice_mut().expect("fresh arrays are contiguous");
            self.base().sample_point(row, rng);
            *lp = self.base().log_prob_point(row);
        }
        let mut log_det = Array1::zeros(n);
        self.forward_in_place(x.view_mut(), log_det.view_mut());
        log_prob -= &log_det;
        (x, log_prob)
    }
}

/// A flow whose every layer has an analytic inverse, so it has a density at any point.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no tractable density at arbitrary points",
    label = "this flow has a layer without an analytic inverse",
    note = "use `sample_and_log_prob`, which only needs the forward direction"
)]
pub trait Density<F: Float>: Flow<F> {
    /// The fused inverse pass over one block of rows, in place; adds inverse log-dets.
    /// Rows that leave a layer's domain get a log-det of `-inf`.
    fn inverse_block(
        &self,
        y: ArrayViewMut2<'_, F>,
        log_det: ArrayViewMut1<'_, F>,
        ws: &mut Workspace<F>,
    );

    /// Maps data points `x` (one per row) to base points, with `log|det ∂f⁻¹/∂x|` per row.
    fn inverse_and_log_det(
        &self,
        x: ArrayView2<'_, F>,
    ) -> Result<(Array2<F>, Array1<F>), FlowError> {
        check_batch(x, self.dim())?;
        let mut z = x.as_standard_layout().into_owned();
        let mut log_det = Array1::zeros(z.nrows());
        self.inverse_in_place(z.view_mut(), log_det.view_mut());
        Ok((z, log_det))
    }

    /// Maps data points to base points.
    fn inverse(&self, x: ArrayView2<'_, F>) -> Result<Array2<F>, FlowError> {
        self.inverse_and_log_det(x).map(|(z, _)| z)
    }

    /// The inverse pass over a whole batch in place, block by block (unchecked).
    fn inverse_in_place(&self, mut y: ArrayViewMut2<'_, F>, mut log_det: ArrayViewMut1<'_, F>) {
        F::with_scratch(|scratch| {
            for (yb, lb) in y
                .axis_chunks_iter_mut(Axis(0), BLOCK_ROWS)
                .zip(log_det.axis_chunks_iter_mut(Axis(0), BLOCK_ROWS))
            {
                self.inverse_block(yb, lb, &mut scratch.layers);
            }
        });
        // A row that left some layer's domain may carry NaN past that layer: it is -inf.
        log_det.mapv_inplace(finite_or_minus_infinity);
    }

    /// `log p(x)` of each row: finite inside the flow's support, `-inf` outside it, never
    /// NaN. Wrong column counts and non-finite inputs are errors.
    fn log_prob(&self, x: ArrayView2<'_, F>) -> Result<Array1<F>, FlowError> {
        let d = self.dim();
        check_batch(x, d)?;
        let mut out = Array1::zeros(x.nrows());
        F::with_scratch(|scratch| {
            for (xb, mut ob) in x
                .axis_chunks_iter(Axis(0), BLOCK_ROWS)
                .zip(out.axis_chunks_iter_mut(Axis(0), BLOCK_ROWS))
            {
                let rows = xb.nrows();
                scratch.rows.clear();
                scratch.rows.extend(xb.iter().copied());
                let mut block = ArrayViewMut2::from_shape((rows, d), &mut scratch.rows[..])
                    .expect("block buffer has rows × dim elements");
                ob.fill(F::zero());
                self.inverse_block(block.view_mut(), ob.view_mut(), &mut scratch.layers);
                for (z, lp) in block.axis_iter(Axis(0)).zip(ob.iter_mut()) {
                    let z = z.to_slice().expect("block rows are contiguous");
                    *lp = finite_or_minus_infinity(*lp + self.base().log_prob_point(z));
                }
            }
        });
        Ok(out)
    }
}

/// Maps NaN (a point that left some layer's domain on the way back) to `-inf`.
#[inline]
pub fn finite_or_minus_infinity<F: Float>(lp: F) -> F {
    if lp.is_nan() { F::neg_infinity() } else { lp }
}

/// Checks a batch's column count and that every value is finite.
pub fn check_batch<F: Float>(x: ArrayView2<'_, F>, dim: usize) -> Result<(), FlowError> {
    if x.ncols() != dim {
        return Err(FlowError::WrongDim {
            expected: dim,
            found: x.ncols(),
        });
    }
    check_finite_rows(x)
}

fn check_finite_rows<F: Float>(x: ArrayView2<'_, F>) -> Result<(), FlowError> {
    for (row, values) in x.axis_iter(Axis(0)).enumerate() {
        if let Some(col) = values.iter().position(|v| !v.is_finite()) {
            return Err(FlowError::NonFinite {
                row,
                col,
                value: values[col].to_f64_lossless(),
            });
        }
    }
    Ok(())
}

/// Checks one point for non-finite values (row 0).
pub fn check_point<F: Float>(x: &[F]) -> Result<(), FlowError> {
    match x.iter().position(|v| !v.is_finite()) {
        Some(col) => Err(FlowError::NonFinite {
            row: 0,
            col,
            value: x[col].to_f64_lossless(),
        }),
        None => Ok(()),
    }
}
