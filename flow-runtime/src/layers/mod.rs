//! The layers: one file per family, value, inverse and log-det side by side.
//!
//! Every layer implements [`Layer`] (batches in place, and single points without the heap);
//! the elementwise ones also implement [`Elementwise`], the scalar kernel that the generated
//! code fuses: consecutive elementwise layers run in one pass with [`map_rows`].
//!
//! Directions: `forward` maps towards the data (sampling), `inverse` towards the base
//! (density). A log-det is `log|det ∂forward/∂x|` for `forward` and `log|det ∂inverse/∂y|`
//! for `inverse`. An inverse kernel given a value outside its layer's codomain returns a
//! log-det of `-inf` (the point has zero density).

use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis, Zip};

use crate::float::Float;
use crate::workspace::Workspace;

pub mod actnorm;
pub mod autoregressive;
pub mod batch_norm;
#[cfg(test)]
pub(crate) mod checks;
pub mod coupling;
pub mod elementwise;
pub mod linear;
pub mod permute;
pub mod planar;
pub mod radial;
mod row_by_row;
pub mod spline;

pub use crate::made::Order;
pub use actnorm::ActNorm;
pub use autoregressive::{Autoregressive, Side};
pub use batch_norm::BatchNorm;
pub use coupling::{Activation, Coupling, CouplingTransform, Mask};
pub use elementwise::{
    Affine, Atanh, Exp, LeakyRelu, Log, Logit, Scale, Shift, Sigmoid, Softplus, Tanh,
};
pub use linear::{LuLinear, OrthogonalLinear};
pub use permute::Permute;
pub use planar::Planar;
pub use radial::Radial;
pub use spline::Spline;

/// Every layer type with an analytic inverse (all but `Planar` and `Radial`).
macro_rules! analytic_inverse {
    ($($ty:ident $(<$f:ident>)?),* $(,)?) => {
        $(impl<'a, $($f)?> crate::flow::AnalyticInverse<'a> for $ty $(<$f>)? {})*
    };
}
analytic_inverse!(
    Affine<F>,
    Shift<F>,
    Scale<F>,
    Sigmoid,
    Logit,
    Tanh,
    Atanh,
    Softplus,
    Exp,
    Log,
    LeakyRelu<F>,
    Permute,
    Coupling<F>,
    Spline<F>,
    LuLinear<F>,
    OrthogonalLinear<F>,
    Autoregressive<F>,
    ActNorm<F>,
);

/// A bijective layer of a flow.
pub trait Layer<F: Float>: Send + Sync {
    /// The layer's kind as written in the DSL (`"affine"`, `"coupling"`, …).
    fn kind(&self) -> &'static str;

    /// Maps each row of `x` forward in place and adds each row's log-det to `log_det`.
    fn forward_block(
        &self,
        x: ArrayViewMut2<'_, F>,
        log_det: ArrayViewMut1<'_, F>,
        ws: &mut Workspace<F>,
    );

    /// Maps each row of `y` back in place and adds each row's inverse log-det to `log_det`.
    fn inverse_block(
        &self,
        y: ArrayViewMut2<'_, F>,
        log_det: ArrayViewMut1<'_, F>,
        ws: &mut Workspace<F>,
    );

    /// Maps one point forward in place; returns its log-det. `scratch` is caller-provided
    /// stack memory of at least [`Layer::point_scratch`] elements.
    fn forward_point(&self, x: &mut [F], scratch: &mut [F]) -> F;

    /// Maps one point back in place; returns its inverse log-det.
    fn inverse_point(&self, y: &mut [F], scratch: &mut [F]) -> F;

    /// Scratch elements the point methods need (0 for most layers).
    fn point_scratch(&self) -> usize {
        0
    }

    /// The number of learnable parameters (0 for fixed layers and constants).
    fn param_len(&self) -> usize {
        0
    }

    /// Visits each learnable tensor as `(name, shape, values)`, in the order of the flat
    /// parameter layout (the concatenation of the visited slices).
    #[allow(clippy::type_complexity)]
    fn visit_params(&self, _visit: &mut dyn FnMut(&str, &[usize], &[F])) {}

    /// Visits each learnable tensor mutably, in the same order as [`Layer::visit_params`].
    #[allow(clippy::type_complexity)]
    fn visit_params_mut(&mut self, _visit: &mut dyn FnMut(&str, &[usize], &mut [F])) {}

    /// Whether this layer waits for a data-dependent initialisation (ActNorm before its
    /// first batch); `false` for every other layer.
    fn needs_data_init(&self) -> bool {
        false
    }

    /// Sets the parameters from `y`, the block this layer's inverse is about to receive
    /// (data side), and marks the layer initialised; a layer without a data-dependent
    /// initialisation ignores it. See [`crate::Trainable::initialize_from_data`].
    fn init_from_data(&mut self, _y: ArrayView2<'_, F>) {}

    /// Marks the layer initialised without changing its parameters (e.g. after loading
    /// them), so that [`Layer::needs_data_init`] becomes `false`.
    fn mark_data_initialized(&mut self) {}

    /// Reverse mode through [`Layer::inverse_block`] for the objective
    /// `J = Σ_i weight[i] · (log-det of row i) + (terms of the inverse's output)`.
    ///
    /// `y` is the block this layer's inverse received (unchanged). On entry `grad` holds
    /// `∂J/∂x` for the inverse's output `x`; on exit it holds `∂J/∂y`. `∂J/∂θ` is added to
    /// `param_grad` (length [`Layer::param_len`], the layout of [`Layer::visit_params`]).
    fn inverse_backward_block(
        &self,
        y: ArrayView2<'_, F>,
        grad: ArrayViewMut2<'_, F>,
        weight: ArrayView1<'_, F>,
        param_grad: &mut [F],
        ws: &mut Workspace<F>,
    );

    /// Reverse mode through [`Layer::forward_block`] for the objective
    /// `J = Σ_i weight[i] · (log-det of row i) + (terms of the forward's output)`, the
    /// mirror of [`Layer::inverse_backward_block`] (reparametrised gradients: variational
    /// inference, sample-based objectives).
    ///
    /// `z` is the block this layer's forward received (unchanged). On entry `grad` holds
    /// `∂J/∂x` for the forward's output `x`; on exit it holds `∂J/∂z`. `∂J/∂θ` is added to
    /// `param_grad` (length [`Layer::param_len`], the layout of [`Layer::visit_params`]).
    fn forward_backward_block(
        &self,
        z: ArrayView2<'_, F>,
        grad: ArrayViewMut2<'_, F>,
        weight: ArrayView1<'_, F>,
        param_grad: &mut [F],
        ws: &mut Workspace<F>,
    );

    /// Whether the layer's training pass differs from its evaluation pass by normalising
    /// with the statistics of the block itself (batch normalisation); `false` for every
    /// other layer.
    fn uses_batch_statistics(&self) -> bool {
        false
    }

    /// [`Layer::inverse_block`] as run in training. A layer that uses batch statistics
    /// computes them from `y` (so the rows are coupled); every other layer runs its
    /// ordinary inverse.
    fn inverse_block_training(
        &self,
        y: ArrayViewMut2<'_, F>,
        log_det: ArrayViewMut1<'_, F>,
        ws: &mut Workspace<F>,
    ) {
        self.inverse_block(y, log_det, ws)
    }

    /// Reverse mode through [`Layer::inverse_block_training`], with the arguments of
    /// [`Layer::inverse_backward_block`]; for a layer that uses batch statistics it
    /// includes their dependence on every row. Every other layer runs its ordinary
    /// inverse backward.
    fn inverse_backward_block_training(
        &self,
        y: ArrayView2<'_, F>,
        grad: ArrayViewMut2<'_, F>,
        weight: ArrayView1<'_, F>,
        param_grad: &mut [F],
        ws: &mut Workspace<F>,
    ) {
        self.inverse_backward_block(y, grad, weight, param_grad, ws)
    }

    /// Updates the running statistics (the buffers) from `y`, a block this layer's
    /// training inverse received; nothing for layers without them.
    fn track_batch_statistics(&mut self, _y: ArrayView2<'_, F>) {}

    /// The number of buffer elements: state saved with the model that is not learnt by
    /// gradient (running statistics); 0 for most layers.
    fn buffer_len(&self) -> usize {
        0
    }

    /// Visits each buffer as `(name, shape, values)` (see [`Layer::buffer_len`]).
    #[allow(clippy::type_complexity)]
    fn visit_buffers(&self, _visit: &mut dyn FnMut(&str, &[usize], &[F])) {}

    /// Visits each buffer mutably, in the same order as [`Layer::visit_buffers`].
    #[allow(clippy::type_complexity)]
    fn visit_buffers_mut(&mut self, _visit: &mut dyn FnMut(&str, &[usize], &mut [F])) {}
}

/// A layer acting on each coordinate separately: the scalar kernels that get fused.
pub trait Elementwise<F: Float> {
    /// `(y, log|dy/dx|)` for coordinate `j`.
    fn forward(&self, j: usize, x: F) -> (F, F);
    /// `(x, log|dx/dy|)` for coordinate `j`; log-det `-inf` when `y` is outside the codomain.
    fn inverse(&self, j: usize, y: F) -> (F, F);

    /// Reverse mode through [`Elementwise::inverse`] at `y`: given `x_bar = ∂J/∂x` and the
    /// weight `w` of this log-det in `J`, returns `∂J/∂y = x_bar·dx/dy + w·d(log-det)/dy`
    /// and adds `∂J/∂θ` for coordinate `j` into `param_grad` (this layer's slice, in the
    /// layout of its `visit_params`; empty for layers without parameters).
    fn inverse_backward(&self, j: usize, y: F, x_bar: F, w: F, param_grad: &mut [F]) -> F;

    /// Reverse mode through [`Elementwise::forward`] at `x`: given `y_bar = ∂J/∂y` and the
    /// weight `w` of this log-det in `J`, returns `∂J/∂x = y_bar·dy/dx + w·d(log-det)/dx`
    /// and adds `∂J/∂θ` for coordinate `j` into `param_grad` (as in
    /// [`Elementwise::inverse_backward`]).
    fn forward_backward(&self, j: usize, x: F, y_bar: F, w: F, param_grad: &mut [F]) -> F;

    /// [`Elementwise::forward`] on coordinate `j` of [`LANES`] rows, adding each log-det to
    /// its row's `acc`: what a fused run calls on a full tile. A layer whose kernel reads
    /// per-coordinate parameters overrides it to read them (and derive from them) once per
    /// tile rather than per row, which also lets the loop vectorise; same bits either way.
    #[inline(always)]
    fn forward_lanes(&self, j: usize, v: &mut [F; LANES], acc: &mut [F; LANES]) {
        for (v, acc) in v.iter_mut().zip(acc.iter_mut()) {
            let (y, l) = self.forward(j, *v);
            *acc += l;
            *v = y;
        }
    }

    /// [`Elementwise::inverse`] on [`LANES`] rows, as [`Elementwise::forward_lanes`].
    #[inline(always)]
    fn inverse_lanes(&self, j: usize, v: &mut [F; LANES], acc: &mut [F; LANES]) {
        for (v, acc) in v.iter_mut().zip(acc.iter_mut()) {
            let (x, l) = self.inverse(j, *v);
            *acc += l;
            *v = x;
        }
    }

    /// [`Elementwise::forward_lanes`] for the values alone (sampling): the same values;
    /// the log-dets are not computed (the compiler drops what only fed them).
    #[inline(always)]
    fn forward_values_lanes(&self, j: usize, v: &mut [F; LANES]) {
        for v in v.iter_mut() {
            *v = self.forward(j, *v).0;
        }
    }
}

/// The backward companion of [`map_rows`]: for every entry, `f(j, y, grad, weight_of_row)`
/// returns the new gradient, replacing `grad` in place (`y` is the value the pass received:
/// the inverse's input for [`Elementwise::inverse_backward`], the forward's for
/// [`Elementwise::forward_backward`]). The generated code passes a closure
/// that recomputes a fused run's intermediate values and chains the kernels'
/// [`Elementwise::inverse_backward`].
#[inline]
pub fn map_rows_backward<F: Float>(
    y: ArrayView2<'_, F>,
    mut grad: ArrayViewMut2<'_, F>,
    weight: ArrayView1<'_, F>,
    mut f: impl FnMut(usize, F, F, F) -> F,
) {
    Zip::from(y.rows())
        .and(grad.rows_mut())
        .and(&weight)
        .for_each(|y_row, mut g_row, &w| {
            for (j, (g, &y)) in g_row.iter_mut().zip(y_row.iter()).enumerate() {
                *g = f(j, y, *g, w);
            }
        });
}

/// The number of rows [`map_rows`] runs through a kernel at once: one column of a tile.
pub const LANES: usize = TILE_ROWS;

/// A scalar map `(j, value) -> (new value, log-det)` that [`map_rows`] and [`map_point`]
/// apply to every entry: a closure, or a fused run of elementwise layers ([`Forward`],
/// [`Inverse`]), whose kernels are always inlined into the loop.
pub trait ScalarMap<F: Float> {
    /// The new value of coordinate `j`; adds its log-det(s) to `acc`.
    fn apply(&self, j: usize, v: F, acc: &mut F) -> F;

    /// [`ScalarMap::apply`] on coordinate `j` of [`LANES`] rows at once: the same values
    /// and the same sums, bit for bit, in a form that vectorises.
    #[inline(always)]
    fn apply_lanes(&self, j: usize, v: &mut [F; LANES], acc: &mut [F; LANES]) {
        for (v, acc) in v.iter_mut().zip(acc.iter_mut()) {
            *v = self.apply(j, *v, acc);
        }
    }

    /// The new value of coordinate `j` alone: [`ScalarMap::apply`]'s, its log-det dropped
    /// (and so, once inlined, not computed).
    #[inline(always)]
    fn apply_value(&self, j: usize, v: F) -> F {
        let mut unused = F::zero();
        self.apply(j, v, &mut unused)
    }

    /// [`ScalarMap::apply_value`] on coordinate `j` of [`LANES`] rows.
    #[inline(always)]
    fn apply_values_lanes(&self, j: usize, v: &mut [F; LANES]) {
        for v in v.iter_mut() {
            *v = self.apply_value(j, *v);
        }
    }
}

impl<F: Float, G: Fn(usize, F) -> (F, F)> ScalarMap<F> for G {
    #[inline(always)]
    fn apply(&self, j: usize, v: F, acc: &mut F) -> F {
        let (y, l) = self(j, v);
        *acc += l;
        y
    }
}

/// A run of elementwise layers listed base → data: a reference to one layer, or a pair
/// `(first, rest)` of runs, nested for longer runs. Every layer's log-det is added to the
/// accumulator in the order the layers are applied.
pub trait Run<F: Float> {
    /// The run towards the data, the first layer first.
    fn run_forward(&self, j: usize, v: F, acc: &mut F) -> F;
    /// The run towards the base, the last layer first.
    fn run_inverse(&self, j: usize, v: F, acc: &mut F) -> F;
    /// [`Run::run_forward`] on [`LANES`] rows: each layer in turn over all of them (a
    /// short loop of one kernel, which vectorises), bit for bit the same.
    #[inline(always)]
    fn forward_lanes(&self, j: usize, v: &mut [F; LANES], acc: &mut [F; LANES]) {
        for (v, acc) in v.iter_mut().zip(acc.iter_mut()) {
            *v = self.run_forward(j, *v, acc);
        }
    }
    /// [`Run::run_inverse`] on [`LANES`] rows, each layer in turn.
    #[inline(always)]
    fn inverse_lanes(&self, j: usize, v: &mut [F; LANES], acc: &mut [F; LANES]) {
        for (v, acc) in v.iter_mut().zip(acc.iter_mut()) {
            *v = self.run_inverse(j, *v, acc);
        }
    }
    /// [`Run::forward_lanes`] for the values alone, each layer in turn.
    #[inline(always)]
    fn forward_values_lanes(&self, j: usize, v: &mut [F; LANES]) {
        for v in v.iter_mut() {
            let mut unused = F::zero();
            *v = self.run_forward(j, *v, &mut unused);
        }
    }
}

impl<F: Float, T: Elementwise<F> + ?Sized> Run<F> for &T {
    #[inline(always)]
    fn run_forward(&self, j: usize, v: F, acc: &mut F) -> F {
        let (y, l) = Elementwise::forward(*self, j, v);
        *acc += l;
        y
    }
    #[inline(always)]
    fn run_inverse(&self, j: usize, v: F, acc: &mut F) -> F {
        let (x, l) = Elementwise::inverse(*self, j, v);
        *acc += l;
        x
    }
    #[inline(always)]
    fn forward_lanes(&self, j: usize, v: &mut [F; LANES], acc: &mut [F; LANES]) {
        Elementwise::forward_lanes(*self, j, v, acc)
    }
    #[inline(always)]
    fn inverse_lanes(&self, j: usize, v: &mut [F; LANES], acc: &mut [F; LANES]) {
        Elementwise::inverse_lanes(*self, j, v, acc)
    }
    #[inline(always)]
    fn forward_values_lanes(&self, j: usize, v: &mut [F; LANES]) {
        Elementwise::forward_values_lanes(*self, j, v)
    }
}

impl<F: Float, A: Run<F>, B: Run<F>> Run<F> for (A, B) {
    #[inline(always)]
    fn run_forward(&self, j: usize, v: F, acc: &mut F) -> F {
        let v = self.0.run_forward(j, v, acc);
        self.1.run_forward(j, v, acc)
    }
    #[inline(always)]
    fn run_inverse(&self, j: usize, v: F, acc: &mut F) -> F {
        let v = self.1.run_inverse(j, v, acc);
        self.0.run_inverse(j, v, acc)
    }
    #[inline(always)]
    fn forward_lanes(&self, j: usize, v: &mut [F; LANES], acc: &mut [F; LANES]) {
        self.0.forward_lanes(j, v, acc);
        self.1.forward_lanes(j, v, acc);
    }
    #[inline(always)]
    fn inverse_lanes(&self, j: usize, v: &mut [F; LANES], acc: &mut [F; LANES]) {
        self.1.inverse_lanes(j, v, acc);
        self.0.inverse_lanes(j, v, acc);
    }
    #[inline(always)]
    fn forward_values_lanes(&self, j: usize, v: &mut [F; LANES]) {
        self.0.forward_values_lanes(j, v);
        self.1.forward_values_lanes(j, v);
    }
}

/// A fused run of elementwise layers applied towards the data.
#[derive(Clone, Copy)]
pub struct Forward<R>(pub R);

/// A fused run of elementwise layers applied towards the base.
#[derive(Clone, Copy)]
pub struct Inverse<R>(pub R);

impl<F: Float, R: Run<F>> ScalarMap<F> for Forward<R> {
    #[inline(always)]
    fn apply(&self, j: usize, v: F, acc: &mut F) -> F {
        self.0.run_forward(j, v, acc)
    }
    #[inline(always)]
    fn apply_lanes(&self, j: usize, v: &mut [F; LANES], acc: &mut [F; LANES]) {
        self.0.forward_lanes(j, v, acc)
    }
    #[inline(always)]
    fn apply_values_lanes(&self, j: usize, v: &mut [F; LANES]) {
        self.0.forward_values_lanes(j, v)
    }
}

impl<F: Float, R: Run<F>> ScalarMap<F> for Inverse<R> {
    #[inline(always)]
    fn apply(&self, j: usize, v: F, acc: &mut F) -> F {
        self.0.run_inverse(j, v, acc)
    }
    #[inline(always)]
    fn apply_lanes(&self, j: usize, v: &mut [F; LANES], acc: &mut [F; LANES]) {
        self.0.inverse_lanes(j, v, acc)
    }
}

/// Rows per tile of [`map_rows`]: the kernels run on one column of (up to) this many rows
/// at a time, as one loop over independent values (`j` fixed, so per-coordinate parameters
/// and whatever the kernels derive from them are loop invariants) that the compiler
/// vectorises.
const TILE_ROWS: usize = 64;

/// A partial tile of at least this many rows is padded to a full one (the vector loops on
/// [`TILE_ROWS`] rows beat the row-by-row loop on a quarter of them); fewer go row by row.
const PADDED_ROWS: usize = TILE_ROWS / 4;

/// Applies the scalar map `f` (new value and log-det of `(j, value)`) to every entry of
/// `x` in one pass, adding each row's summed log-det to `log_det`. The generated code
/// passes [`Forward`] or [`Inverse`] of a nested run of [`Elementwise`] layers, which is
/// how they are fused; a closure works too.
///
/// Each row's log-dets are summed in column order from zero and then added to its
/// `log_det` entry (rows beyond `log_det.len()` are left alone). `f` is called on every
/// entry, in an unspecified order: tiles of [`LANES`] rows, column by column, so that the
/// kernels of independent entries vectorise; the last, partial tile may be padded with
/// copies of its last row, so `f` may see that row's values more than once (the extra
/// results are discarded: `f` should be a pure function, as the layers' kernels are). A batch
/// that is not in standard layout is processed in a standard-layout copy.
///
/// Speed: every tile runs each kernel of a fused run over [`LANES`] rows at a time, a
/// loop that compiles to SIMD; on `x86_64` it is compiled twice, for the baseline (SSE2)
/// and for AVX2, and the processor picks (see [`simd_level`]), so the default target gets
/// 8 `f32` lanes where the processor has them, with the same results.
#[inline]
pub fn map_rows<F: Float>(
    x: ArrayViewMut2<'_, F>,
    log_det: ArrayViewMut1<'_, F>,
    f: impl ScalarMap<F>,
) {
    map_rows_with::<F, true>(x, log_det, f);
}

/// [`map_rows`] for the values alone (sampling): the rows of `x` that `log_det` has
/// entries for get the same new values, bit for bit, but `log_det` is left as it is and
/// the log-dets are not computed (the compiler drops the arithmetic that only fed them).
#[inline]
pub fn map_rows_values<F: Float>(
    x: ArrayViewMut2<'_, F>,
    log_det: ArrayViewMut1<'_, F>,
    f: impl ScalarMap<F>,
) {
    map_rows_with::<F, false>(x, log_det, f);
}

/// [`map_rows`] (`LOG_DETS`) or [`map_rows_values`].
#[inline(always)]
fn map_rows_with<F: Float, const LOG_DETS: bool>(
    x: ArrayViewMut2<'_, F>,
    log_det: ArrayViewMut1<'_, F>,
    f: impl ScalarMap<F>,
) {
    let rows = x.nrows().min(log_det.len());
    let cols = x.ncols();
    let mut x = x.slice_axis_move(Axis(0), ndarray::Slice::from(..rows));
    let mut log_det = log_det.slice_axis_move(Axis(0), ndarray::Slice::from(..rows));
    if cols == 0 {
        // No entries: every row's log-det sum is zero.
        log_det.map_inplace(|l| *l += F::zero());
        return;
    }
    // One call of `map_tiles` (so one call site of `f`, which lets the compiler inline the
    // fused chain into the tile loop), on the batch itself or on a standard-layout copy.
    let mut copy: Option<(Vec<F>, Vec<F>)> = None;
    let (data, lds) = match (x.as_slice_mut(), log_det.as_slice_mut()) {
        (Some(data), Some(lds)) => (data, lds),
        _ => {
            let (xc, lc) = copy.insert((
                x.iter().copied().collect(),
                log_det.iter().copied().collect(),
            ));
            (&mut xc[..], &mut lc[..])
        }
    };
    map_tiles_here::<F, LOG_DETS>(data, lds, cols, &f);
    if let Some((xc, lc)) = copy {
        // `iter_mut` visits in the same (logical, row-major) order as `iter` above.
        x.iter_mut().zip(xc).for_each(|(d, v)| *d = v);
        log_det.iter_mut().zip(lc).for_each(|(d, v)| *d = v);
    }
}

/// Columns per slab of [`map_tiles`]: a tile is transposed [`TILE_ROWS`] × this many
/// entries at a time into a buffer on the stack (4 KiB for `f32`), so nothing is allocated.
const SLAB_COLS: usize = 16;

/// [`map_rows`] on a row-major block `data` (`lds.len()` rows of `cols > 0` entries), in
/// tiles of up to [`TILE_ROWS`] rows. Each tile is transposed, [`SLAB_COLS`] columns at a
/// time, into a column-major buffer; `f` runs down each buffered column (a loop without
/// dependencies between its iterations, which vectorises once `f` is inlined) while
/// per-row accumulators collect the log-dets in column order; the slab is transposed back,
/// and at the end of the tile the accumulators are added to `lds`.
#[inline(always)]
fn map_tiles<F: Float, const LOG_DETS: bool>(
    data: &mut [F],
    lds: &mut [F],
    cols: usize,
    f: &impl ScalarMap<F>,
) {
    const T: usize = TILE_ROWS;
    let mut buffer = [F::zero(); TILE_ROWS * SLAB_COLS];
    for (tile, ld) in data.chunks_mut(T * cols).zip(lds.chunks_mut(T)) {
        let m = ld.len().min(T);
        let mut acc = [F::zero(); T];
        for j0 in (0..cols).step_by(SLAB_COLS) {
            let width = (cols - j0).min(SLAB_COLS);
            let slab = &mut buffer[..width * T];
            for (k, row) in tile.chunks_exact(cols).take(m).enumerate() {
                for (column, &x) in slab.chunks_exact_mut(T).zip(&row[j0..j0 + width]) {
                    column[k] = x;
                }
            }
            for (dj, column) in slab.chunks_exact_mut(T).enumerate() {
                let j = j0 + dj;
                if m < PADDED_ROWS {
                    // A few rows: one at a time.
                    for (v, acc) in column[..m].iter_mut().zip(acc.iter_mut()) {
                        *v = if LOG_DETS {
                            f.apply(j, *v, acc)
                        } else {
                            f.apply_value(j, *v)
                        };
                    }
                    continue;
                }
                // A partial tile is padded with copies of its last row (values in the
                // kernels' domain), whose results are discarded; then the tile goes layer
                // by layer over all its rows (short loops of one kernel, which vectorise
                // at any width).
                let last = column[m - 1];
                column[m..].fill(last);
                let column: &mut [F; T] = column.try_into().expect("slab columns of T rows");
                if LOG_DETS {
                    f.apply_lanes(j, column, &mut acc);
                } else {
                    f.apply_values_lanes(j, column);
                }
            }
            for (k, row) in tile.chunks_exact_mut(cols).take(m).enumerate() {
                for (column, x) in slab.chunks_exact(T).zip(&mut row[j0..j0 + width]) {
                    *x = column[k];
                }
            }
        }
        if LOG_DETS {
            for (ld, acc) in ld.iter_mut().zip(acc.iter()) {
                *ld += *acc;
            }
        }
    }
}

/// [`map_tiles`] compiled for AVX2 when this processor has it (detected once, cached by
/// `std`), else for the target's baseline (SSE2 on the default `x86_64` target). The
/// kernels are plain IEEE arithmetic without fused multiply-adds, so both compilations give
/// the same bits; AVX2 runs 8 `f32` lanes at a time instead of 4. (AVX-512 measured no
/// faster than AVX2 here, on a 2-core Xeon, so it is not used.)
#[inline(always)]
fn map_tiles_here<F: Float, const LOG_DETS: bool>(
    data: &mut [F],
    lds: &mut [F],
    cols: usize,
    f: &impl ScalarMap<F>,
) {
    #[cfg(target_arch = "x86_64")]
    if simd_level() == SimdLevel::Avx2 {
        // SAFETY: `simd_level` found AVX2, which `map_tiles_avx2` is compiled for.
        return unsafe { map_tiles_avx2::<F, LOG_DETS>(data, lds, cols, f) };
    }
    map_tiles::<F, LOG_DETS>(data, lds, cols, f)
}

/// The vector extensions the fused elementwise loops can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimdLevel {
    /// The compilation target's own (SSE2 on the default `x86_64` target).
    Baseline,
    /// AVX2 (256-bit vectors).
    Avx2,
}

/// The vector extension the fused elementwise loops use on this processor:
/// AVX2 where detected, unless `FLOWGEN_SIMD=baseline` (read once) asks for the baseline.
pub fn simd_level() -> SimdLevel {
    static LEVEL: std::sync::OnceLock<SimdLevel> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        if std::env::var("FLOWGEN_SIMD").is_ok_and(|v| v == "baseline") {
            return SimdLevel::Baseline;
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return SimdLevel::Avx2;
        }
        SimdLevel::Baseline
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn map_tiles_avx2<F: Float, const LOG_DETS: bool>(
    data: &mut [F],
    lds: &mut [F],
    cols: usize,
    f: &impl ScalarMap<F>,
) {
    map_tiles::<F, LOG_DETS>(data, lds, cols, f)
}

/// `map_tiles` compiled for the target's baseline whatever the processor has: the
/// reference that tests compare the dispatched compilation against, bit for bit.
#[doc(hidden)]
pub fn map_rows_baseline<F: Float>(
    data: &mut [F],
    lds: &mut [F],
    cols: usize,
    f: impl ScalarMap<F>,
) {
    map_tiles::<F, true>(data, lds, cols, &f)
}

/// Applies `f` to one point in place; returns the summed log-det.
#[inline]
pub fn map_point<F: Float>(x: &mut [F], f: impl ScalarMap<F>) -> F {
    let mut acc = F::zero();
    for (j, v) in x.iter_mut().enumerate() {
        *v = f.apply(j, *v, &mut acc);
    }
    acc
}

/// Implements [`Layer`] for elementwise layers through their [`Elementwise`] kernels.
macro_rules! elementwise_layer {
    ($ty:ident $(<$f:ident>)?, $kind:literal) => {
        impl<F: $crate::float::Float> $crate::layers::Layer<F> for $ty$(<$f>)? {
            fn kind(&self) -> &'static str {
                $kind
            }
            fn forward_block(
                &self,
                x: ndarray::ArrayViewMut2<'_, F>,
                log_det: ndarray::ArrayViewMut1<'_, F>,
                _ws: &mut $crate::workspace::Workspace<F>,
            ) {
                $crate::layers::map_rows(x, log_det, $crate::layers::Forward(self))
            }
            fn inverse_block(
                &self,
                y: ndarray::ArrayViewMut2<'_, F>,
                log_det: ndarray::ArrayViewMut1<'_, F>,
                _ws: &mut $crate::workspace::Workspace<F>,
            ) {
                $crate::layers::map_rows(y, log_det, $crate::layers::Inverse(self))
            }
            fn forward_point(&self, x: &mut [F], _scratch: &mut [F]) -> F {
                $crate::layers::map_point(x, $crate::layers::Forward(self))
            }
            fn inverse_point(&self, y: &mut [F], _scratch: &mut [F]) -> F {
                $crate::layers::map_point(y, $crate::layers::Inverse(self))
            }
            fn param_len(&self) -> usize {
                $crate::layers::elementwise::ElementwiseParams::<F>::param_len(self)
            }
            fn visit_params(&self, visit: &mut dyn FnMut(&str, &[usize], &[F])) {
                $crate::layers::elementwise::ElementwiseParams::<F>::visit_params(self, visit)
            }
            fn visit_params_mut(&mut self, visit: &mut dyn FnMut(&str, &[usize], &mut [F])) {
                $crate::layers::elementwise::ElementwiseParams::<F>::visit_params_mut(self, visit)
            }
            fn needs_data_init(&self) -> bool {
                $crate::layers::elementwise::ElementwiseParams::<F>::needs_data_init(self)
            }
            fn init_from_data(&mut self, y: ndarray::ArrayView2<'_, F>) {
                $crate::layers::elementwise::ElementwiseParams::<F>::init_from_data(self, y)
            }
            fn mark_data_initialized(&mut self) {
                $crate::layers::elementwise::ElementwiseParams::<F>::mark_data_initialized(self)
            }
            fn inverse_backward_block(
                &self,
                y: ndarray::ArrayView2<'_, F>,
                grad: ndarray::ArrayViewMut2<'_, F>,
                weight: ndarray::ArrayView1<'_, F>,
                param_grad: &mut [F],
                _ws: &mut $crate::workspace::Workspace<F>,
            ) {
                $crate::layers::map_rows_backward(y, grad, weight, |j, y, g, w| {
                    $crate::layers::Elementwise::<F>::inverse_backward(self, j, y, g, w, param_grad)
                })
            }
            fn forward_backward_block(
                &self,
                z: ndarray::ArrayView2<'_, F>,
                grad: ndarray::ArrayViewMut2<'_, F>,
                weight: ndarray::ArrayView1<'_, F>,
                param_grad: &mut [F],
                _ws: &mut $crate::workspace::Workspace<F>,
            ) {
                $crate::layers::map_rows_backward(z, grad, weight, |j, z, g, w| {
                    $crate::layers::Elementwise::<F>::forward_backward(self, j, z, g, w, param_grad)
                })
            }
        }
    };
}
pub(crate) use elementwise_layer;

/// Checks the shapes a block method of a `dim`-coordinate layer receives: `cols` columns,
/// and one log-det or weight (`per_row`) for each of `rows` rows.
pub(crate) fn check_block(name: &str, dim: usize, cols: usize, rows: usize, per_row: usize) {
    assert_eq!(
        cols, dim,
        "{name}: the block has {cols} columns, the layer {dim} coordinates"
    );
    assert_eq!(
        per_row, rows,
        "{name}: {per_row} log-dets or weights for {rows} rows"
    );
}
