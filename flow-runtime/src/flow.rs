//! The traits every generated flow implements. The generated code supplies the fused
//! block kernels; the batch API, input checks, blocking and sampling live here once.

use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::base::BaseDistribution;
use crate::error::FlowError;
use crate::float::Float;
use crate::layers::Layer;
use crate::workspace::Workspace;

/// Rows per block: the chain runs one block at a time so intermediates stay in cache.
pub const BLOCK_ROWS: usize = 256;

/// The smallest block a batch is split into so that two threads can share it.
pub const MIN_SPLIT_ROWS: usize = 64;

/// Rows per block for a batch of `n` rows: [`BLOCK_ROWS`], or for a batch of fewer than
/// two full blocks, about half of it (a multiple of 8, at least [`MIN_SPLIT_ROWS`]) so that
/// two threads can share it. Depends on `n` alone, never on the number of threads: the
/// blocks, and so the results, are the same whether they run on one thread or many.
pub fn block_rows(n: usize) -> usize {
    if n >= 2 * BLOCK_ROWS {
        BLOCK_ROWS
    } else {
        n.div_ceil(2).next_multiple_of(8).max(MIN_SPLIT_ROWS)
    }
}

/// Views that a batch is cut into row blocks through (a tuple of views is cut row-wise
/// at the same place).
pub trait SplitRows: Sized + Send {
    /// The first `mid` rows and the rest.
    fn split_rows(self, mid: usize) -> (Self, Self);
}

impl<F: Float> SplitRows for ArrayViewMut2<'_, F> {
    fn split_rows(self, mid: usize) -> (Self, Self) {
        self.split_at(Axis(0), mid)
    }
}

impl<F: Float> SplitRows for ArrayView2<'_, F> {
    fn split_rows(self, mid: usize) -> (Self, Self) {
        self.split_at(Axis(0), mid)
    }
}

impl<F: Float> SplitRows for ArrayViewMut1<'_, F> {
    fn split_rows(self, mid: usize) -> (Self, Self) {
        self.split_at(Axis(0), mid)
    }
}

impl<A: SplitRows, B: SplitRows> SplitRows for (A, B) {
    fn split_rows(self, mid: usize) -> (Self, Self) {
        let (a0, a1) = self.0.split_rows(mid);
        let (b0, b1) = self.1.split_rows(mid);
        ((a0, b0), (a1, b1))
    }
}

/// The index of a block's first row in the batch, carried through [`for_each_block`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirstRow(pub usize);

impl SplitRows for FirstRow {
    fn split_rows(self, mid: usize) -> (Self, Self) {
        (self, FirstRow(self.0 + mid))
    }
}

/// Runs `f` on each block of [`block_rows`]`(rows)` rows of `parts` (a batch of `rows`
/// rows), on the threads of rayon's pool when there are at least two blocks and two
/// threads, else in order on this thread. The blocks are the same either way and each is
/// computed independently, so the results do not depend on the number of threads.
pub fn for_each_block<P: SplitRows>(parts: P, rows: usize, f: &(impl Fn(P) + Sync)) {
    if rows == 0 {
        return;
    }
    let block = block_rows(rows);
    if rows > block && rayon::current_num_threads() > 1 {
        split_in_parallel(parts, rows, block, f);
    } else {
        let mut rest = parts;
        let mut left = rows;
        while left > block {
            let (head, tail) = rest.split_rows(block);
            f(head);
            rest = tail;
            left -= block;
        }
        f(rest);
    }
}

/// Halves `parts` at a block boundary until one block is left, the halves in parallel.
fn split_in_parallel<P: SplitRows>(parts: P, rows: usize, block: usize, f: &(impl Fn(P) + Sync)) {
    let blocks = rows.div_ceil(block);
    if blocks <= 1 {
        f(parts);
        return;
    }
    let mid = blocks / 2 * block;
    let (head, tail) = parts.split_rows(mid);
    rayon::join(
        || split_in_parallel(head, mid, block, f),
        || split_in_parallel(tail, rows - mid, block, f),
    );
}

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

    /// [`Flow::forward_block`] for the values alone (sampling): the same new values of `x`,
    /// bit for bit, with `log_det` as scratch (its contents afterwards unspecified), so
    /// that a fused run of elementwise layers can skip its log-dets.
    fn forward_values_block(
        &self,
        x: ArrayViewMut2<'_, F>,
        log_det: ArrayViewMut1<'_, F>,
        ws: &mut Workspace<F>,
    ) {
        self.forward_block(x, log_det, ws);
    }

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

    /// The forward pass over a whole batch in place, block by block (unchecked); large
    /// batches run on rayon's threads (see [`for_each_block`]).
    fn forward_in_place(&self, x: ArrayViewMut2<'_, F>, log_det: ArrayViewMut1<'_, F>) {
        assert_eq!(x.nrows(), log_det.len(), "one log-det per row");
        let rows = x.nrows();
        for_each_block((x, log_det), rows, &|(xb, lb)| {
            F::with_scratch(|scratch| self.forward_block(xb, lb, &mut scratch.layers))
        });
    }

    /// Draws `n` points from the flow.
    fn sample<R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Array2<F>
    where
        Self: Sized,
    {
        let mut x = Array2::zeros((n, self.dim()));
        let mut scratch = Array1::zeros(n);
        sample_blocks(self, x.view_mut(), scratch.view_mut(), None, rng);
        x
    }

    /// Draws `n` points and their log-densities, `log p_Z(z) − log|det ∂f/∂z|`.
    ///
    /// `rng` gives one seed per row block (in order); each block draws its base points from
    /// its own generator seeded from it, so the blocks run in parallel and the draws depend
    /// only on `rng` and `n`, not on the number of threads.
    fn sample_and_log_prob<R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> (Array2<F>, Array1<F>)
    where
        Self: Sized,
    {
        let mut x = Array2::zeros((n, self.dim()));
        let mut log_prob = Array1::zeros(n);
        let mut log_det = Array1::zeros(n);
        sample_blocks(
            self,
            x.view_mut(),
            log_det.view_mut(),
            Some(log_prob.view_mut()),
            rng,
        );
        (x, log_prob)
    }
}

/// Fills `x` with draws, block by block (in parallel; each block from its own generator,
/// seeded from `rng` in order, so the draws do not depend on the number of threads), and,
/// when `log_prob` is given, their log-densities (`log_det` the forward log-dets, else
/// scratch for [`Flow::forward_values_block`]).
fn sample_blocks<F: Float, M: Flow<F>, R: Rng + ?Sized>(
    flow: &M,
    x: ArrayViewMut2<'_, F>,
    log_det: ArrayViewMut1<'_, F>,
    log_prob: Option<ArrayViewMut1<'_, F>>,
    rng: &mut R,
) {
    let n = x.nrows();
    let block = block_rows(n);
    let seeds: Vec<u64> = (0..n.div_ceil(block)).map(|_| rng.next_u64()).collect();
    let draw = |first: usize, mut xb: ArrayViewMut2<'_, F>| {
        let mut block_rng = StdRng::seed_from_u64(seeds[first / block]);
        for mut row in xb.rows_mut() {
            let row = row.as_slice_mut().expect("fresh arrays are contiguous");
            flow.base().sample_point(row, &mut block_rng);
        }
    };
    match log_prob {
        Some(log_prob) => {
            let parts = (FirstRow(0), (x, (log_prob, log_det)));
            for_each_block(parts, n, &|(
                FirstRow(first),
                (mut xb, (mut pb, mut lb)),
            )| {
                draw(first, xb.view_mut());
                for (row, lp) in xb.rows().into_iter().zip(pb.iter_mut()) {
                    let row = row.to_slice().expect("fresh arrays are contiguous");
                    *lp = flow.base().log_prob_point(row);
                }
                F::with_scratch(|scratch| {
                    flow.forward_block(xb.view_mut(), lb.view_mut(), &mut scratch.layers)
                });
                pb -= &lb;
            });
        }
        None => {
            let parts = (FirstRow(0), (x, log_det));
            for_each_block(parts, n, &|(FirstRow(first), (mut xb, mut lb))| {
                draw(first, xb.view_mut());
                F::with_scratch(|scratch| {
                    flow.forward_values_block(xb.view_mut(), lb.view_mut(), &mut scratch.layers)
                });
            });
        }
    }
}

/// Marks a layer type whose inverse is analytic (exact and cheap): a flow made only of such
/// layers implements [`Density`]. Every layer but the forward-only `planar` and `radial`
/// has it. A forward-only flow's `log_prob`, `inverse`, `log_prob_point` and
/// `inverse_point` require it of the forward-only layer's type, so calling one is a compile
/// error that names the layer. (The lifetime lets the generated methods state the bound
/// without it being checked where they are declared.)
#[diagnostic::on_unimplemented(
    message = "scoring arbitrary points needs an analytic inverse of every layer, and `{Self}` has none",
    label = "this flow has a `{Self}` layer, which is forward-only",
    note = "a flow with a `planar` or `radial` layer has no density at arbitrary points: `sample_and_log_prob` scores its own draws, and `fit_reverse_kl` trains it"
)]
pub trait AnalyticInverse<'a> {}

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

    /// The inverse pass over a whole batch in place, block by block (unchecked); large
    /// batches run on rayon's threads (see [`for_each_block`]).
    fn inverse_in_place(&self, y: ArrayViewMut2<'_, F>, log_det: ArrayViewMut1<'_, F>) {
        assert_eq!(y.nrows(), log_det.len(), "one log-det per row");
        let rows = y.nrows();
        for_each_block((y, log_det), rows, &|(yb, mut lb)| {
            F::with_scratch(|scratch| self.inverse_block(yb, lb.view_mut(), &mut scratch.layers));
            // A row that left some layer's domain may carry NaN past that layer: it is -inf.
            lb.mapv_inplace(finite_or_minus_infinity);
        });
    }

    /// `log p(x)` of each row: finite inside the flow's support, `-inf` outside it, never
    /// NaN. Wrong column counts and non-finite inputs are errors.
    fn log_prob(&self, x: ArrayView2<'_, F>) -> Result<Array1<F>, FlowError> {
        let d = self.dim();
        check_batch(x, d)?;
        let mut out = Array1::zeros(x.nrows());
        for_each_block((x, out.view_mut()), x.nrows(), &|(xb, mut ob)| {
            F::with_scratch(|scratch| {
                let rows = xb.nrows();
                scratch.rows.clear();
                match xb.to_slice() {
                    Some(rows) => scratch.rows.extend_from_slice(rows),
                    None => scratch.rows.extend(xb.iter().copied()),
                }
                let mut block = ArrayViewMut2::from_shape((rows, d), &mut scratch.rows[..])
                    .expect("block buffer has rows × dim elements");
                ob.fill(F::zero());
                self.inverse_block(block.view_mut(), ob.view_mut(), &mut scratch.layers);
                for (z, lp) in block.axis_iter(Axis(0)).zip(ob.iter_mut()) {
                    let z = z.to_slice().expect("block rows are contiguous");
                    *lp = finite_or_minus_infinity(*lp + self.base().log_prob_point(z));
                }
            })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::StandardNormal;
    use crate::layers::{Activation, Coupling, CouplingTransform, Mask};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// Two affine couplings with random conditioners, written by hand as `flow!` would.
    struct TwoCouplings<F> {
        dim: usize,
        layers: [Coupling<F>; 2],
    }

    impl<F: Float> TwoCouplings<F> {
        fn new(dim: usize, seed: u64) -> Self {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut make = |mask| {
                let mut c = Coupling::new(
                    dim,
                    mask,
                    CouplingTransform::Affine,
                    &[16, 16],
                    Activation::Tanh,
                    &mut rng,
                );
                c.net.randomize_output_layer(&mut rng);
                c
            };
            let layers = [make(Mask::Even), make(Mask::Odd)];
            Self { dim, layers }
        }
    }

    impl<F: Float> Flow<F> for TwoCouplings<F> {
        type Base = StandardNormal;
        fn dim(&self) -> usize {
            self.dim
        }
        fn base(&self) -> &StandardNormal {
            &StandardNormal
        }
        fn layers(&self) -> Vec<&dyn Layer<F>> {
            self.layers.iter().map(|l| l as &dyn Layer<F>).collect()
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

    impl<F: Float> Density<F> for TwoCouplings<F> {
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

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool")
    }

    /// Every batch method on `n` rows, in a pool of `threads` threads.
    #[allow(clippy::type_complexity)]
    fn everything(
        flow: &TwoCouplings<f32>,
        n: usize,
        threads: usize,
    ) -> (
        Array1<f32>,
        Array2<f32>,
        Array1<f32>,
        Array2<f32>,
        Array1<f32>,
    ) {
        pool(threads).install(|| {
            let (x, lp) = flow.sample_and_log_prob(n, &mut StdRng::seed_from_u64(n as u64));
            let density = flow.log_prob(x.view()).expect("finite rows");
            let (z, inv_ld) = flow.inverse_and_log_det(x.view()).expect("finite rows");
            (lp, x, density, z, inv_ld)
        })
    }

    #[test]
    fn block_rows_split_small_batches_in_two() {
        assert_eq!(block_rows(1), MIN_SPLIT_ROWS);
        assert_eq!(block_rows(100), MIN_SPLIT_ROWS);
        assert_eq!(block_rows(256), 128);
        assert_eq!(block_rows(300), 152);
        assert_eq!(block_rows(511), 256);
        assert_eq!(block_rows(512), BLOCK_ROWS);
        assert_eq!(block_rows(1 << 20), BLOCK_ROWS);
        for n in 1..2000 {
            let b = block_rows(n);
            assert!(b.is_multiple_of(8) && b <= BLOCK_ROWS, "{n}");
            assert!(n >= 2 * BLOCK_ROWS || n.div_ceil(b) <= 2, "{n}");
        }
    }

    #[test]
    fn for_each_block_visits_every_row_once_in_blocks() {
        for threads in [1, 3] {
            for n in [0, 1, 63, 64, 65, 256, 300, 511, 512, 1000, 4097] {
                let mut seen = Array1::<f32>::zeros(n);
                let mut sizes = Array1::<f32>::zeros(n);
                pool(threads).install(|| {
                    for_each_block((seen.view_mut(), sizes.view_mut()), n, &|(mut s, mut z)| {
                        let rows = s.len() as f32;
                        s.mapv_inplace(|v| v + 1.0);
                        z.fill(rows);
                    })
                });
                assert!(
                    seen.iter().all(|&v| v == 1.0),
                    "{threads} threads, {n} rows"
                );
                let b = block_rows(n);
                for (i, &size) in sizes.iter().enumerate() {
                    let expected = b.min(n - i / b * b);
                    assert_eq!(
                        size as usize, expected,
                        "{threads} threads, {n} rows, row {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn parallel_blocks_give_the_sequential_results_bit_for_bit() {
        for dim in [2, 5] {
            let flow = TwoCouplings::<f32>::new(dim, 7);
            for n in [0, 1, 7, 100, 256, 300, 1000, 3000] {
                let one = everything(&flow, n, 1);
                for threads in [2, 4] {
                    let many = everything(&flow, n, threads);
                    assert_eq!(one, many, "dim {dim}, {n} rows, {threads} threads");
                }
                let (lp, x, density, z, inv_ld) = one;
                // And they are the per-block computations, block by block, by hand.
                let block = block_rows(n);
                let mut ws = Workspace::default();
                for start in (0..n).step_by(block) {
                    let end = (start + block).min(n);
                    let mut zb = x.slice(ndarray::s![start..end, ..]).to_owned();
                    let mut ld = Array1::zeros(end - start);
                    flow.inverse_block(zb.view_mut(), ld.view_mut(), &mut ws);
                    assert_eq!(zb, z.slice(ndarray::s![start..end, ..]));
                    assert_eq!(ld, inv_ld.slice(ndarray::s![start..end]));
                    for (i, row) in zb.rows().into_iter().enumerate() {
                        let base = flow.base().log_prob_point(row.as_slice().unwrap());
                        assert_eq!(density[start + i], ld[i] + base);
                    }
                }
                for (a, b) in lp.iter().zip(&density) {
                    assert!((a - b).abs() <= 1e-4 * (1.0 + a.abs()), "{a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn sampling_does_not_depend_on_the_number_of_threads_in_f64() {
        let flow = TwoCouplings::<f64>::new(3, 11);
        let draw = |threads| {
            pool(threads).install(|| flow.sample_and_log_prob(2000, &mut StdRng::seed_from_u64(5)))
        };
        assert_eq!(draw(1), draw(2));
        // Each block's base draws come from a generator seeded by the next draw of `rng`,
        // then are pushed forward.
        let (x, lp) = draw(2);
        let mut rng = StdRng::seed_from_u64(5);
        let block = block_rows(2000);
        let mut z = Array2::zeros((2000, 3));
        for mut zb in z.axis_chunks_iter_mut(Axis(0), block) {
            let mut block_rng = StdRng::seed_from_u64(rng.next_u64());
            zb.iter_mut()
                .for_each(|v| *v = f64::standard_normal(&mut block_rng));
        }
        let (x_seq, ld) = pool(1).install(|| flow.forward_and_log_det(z.view()).unwrap());
        assert_eq!(x, x_seq);
        for ((row, &l), &p) in z.rows().into_iter().zip(&ld).zip(&lp) {
            assert_eq!(p, flow.base().log_prob_point(row.as_slice().unwrap()) - l);
        }
    }
}
