//! Masked autoregressive layers: MAF (Papamakarios et al. 2017) and IAF (Kingma et al.
//! 2016), with a [`Made`] conditioner (Germain et al. 2015).
//!
//! Both transform every coordinate `c` from parameters that the conditioner computes from
//! the coordinates before `c` in an autoregressive order, with the transform of the coupling
//! layers ([`CouplingTransform`]), written in the density direction (data `y` → base `x`):
//!
//! * affine: `x_c = y_c·exp(s_c) + t_c`, `s_c = raw_c/(1 + |raw_c|/C)` bounded as in the
//!   coupling (`C =` [`crate::layers::coupling::LOG_SCALE_BOUND`]); inverse log-det `Σ s_c`;
//! * additive: `x_c = y_c − t_c`, log-det 0.
//!
//! They differ in which side the conditioner reads ([`Side`]):
//!
//! * MAF ([`Autoregressive::masked`]): the data side, `(t_c, s_c) = made(y)_c`. The density
//!   direction (`inverse`) is one pass of the conditioner; sampling (`forward`) is `D`
//!   passes, one per coordinate in the order.
//! * IAF ([`Autoregressive::inverse`]): the base side, `(t_c, s_c) = made(x)_c`. Sampling
//!   is one pass, the density direction `D` passes.
//!
//! Reverse mode ([`Layer::inverse_backward_block`], [`Layer::forward_backward_block`])
//! follows the direction's shape, not the side: through a one-pass direction (MAF's
//! inverse, IAF's forward) it is one taped conditioner pass and its backward pass; through
//! a sequential one (IAF's inverse, MAF's forward) it solves the adjoint of the triangular
//! system `out = h(in, made(out))` by `D − 1` fixed-point sweeps (exact after `D − 1`: the
//! system's Jacobian is nilpotent), so no per-pass tape is kept.
//!
//! The Jacobian `∂(output)/∂(input)` is triangular in the order and the log-det is the sum
//! of the per-coordinate ones. Extending to another [`CouplingTransform`] means adding an
//! arm to [`per_coordinate`] and to the private `step` and `step_backward`, the only
//! places that read a coordinate's parameters.

use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Zip};
use rand::Rng;

use crate::float::Float;
use crate::layers::coupling::{affine_scale, affine_step, bounded_log_scale_slope, param_name};
use crate::layers::spline::{rq_forward, rq_forward_backward, rq_inverse, rq_inverse_backward};
use crate::layers::{CouplingTransform, Layer};
use crate::made::{Made, Order};
use crate::nets::{Activation, MlpTape};
use crate::workspace::Workspace;

/// The side of the layer its conditioner reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The data side (MAF): fast density, sequential sampling.
    Data,
    /// The base side (IAF): fast sampling, sequential density.
    Base,
}

/// A masked autoregressive layer, MAF or IAF (see the module docs).
///
/// Conditioner outputs, coordinate-major: for the affine transform outputs `2c` and
/// `2c + 1` are `t_c` and the raw log-scale of coordinate `c`; for the additive one output
/// `c` is `t_c`.
#[derive(Debug, Clone, PartialEq)]
pub struct Autoregressive<F> {
    made: Made<F>,
    transform: CouplingTransform,
    side: Side,
}

/// Conditioner outputs per coordinate for `transform`.
pub fn per_coordinate(transform: CouplingTransform) -> usize {
    transform.outputs_per_coordinate()
}

/// One coordinate's step from its parameters `p`: `(new value, log-det)`, towards the base
/// (`inverse`) or towards the data.
#[inline(always)]
fn step<F: Float>(transform: CouplingTransform, inverse: bool, v: F, p: &[F]) -> (F, F) {
    match transform {
        CouplingTransform::Affine => affine_step(inverse, v, p[0], p[1]),
        CouplingTransform::Additive => (if inverse { v - p[0] } else { v + p[0] }, F::zero()),
        CouplingTransform::Spline { bound, .. } if inverse => rq_inverse(p, F::of(bound), v),
        CouplingTransform::Spline { bound, .. } => rq_forward(p, F::of(bound), v),
    }
}

/// Reverse mode through [`step`] at `v`, towards the base (`inverse`) or towards the data,
/// for the objective `ō·o + w·(log-det)` (`o` the step's new value): writes its gradient
/// with respect to the parameters into `p_bar` and returns its derivative with respect to
/// `v`.
///
/// Affine towards the base (`o = v·e^{s} + t`, log-det `s`): `v̄ = ō·e^{s}`, `t̄ = ō`,
/// `raw̄ = (ō·v·e^{s} + w)·ds/draw`; towards the data (`o = (v − t)·e^{−s}`, log-det `−s`):
/// `v̄ = ō·e^{−s}`, `t̄ = −v̄`, `raw̄ = −(v̄·(v − t) + w)·ds/draw`. Additive (`o = v ∓ t`):
/// `v̄ = ō`, `t̄ = ∓ō`. Spline: the rational-quadratic kernel's reverse mode towards the
/// base (`spline::rq_inverse_backward`), and [`rq_forward_backward`] towards the data.
#[inline(always)]
fn step_backward<F: Float>(
    transform: CouplingTransform,
    inverse: bool,
    v: F,
    p: &[F],
    o_bar: F,
    w: F,
    p_bar: &mut [F],
) -> F {
    match transform {
        CouplingTransform::Affine => {
            let raw = p[1];
            let e = affine_scale(inverse, raw);
            let slope = bounded_log_scale_slope(raw);
            if inverse {
                p_bar[0] = o_bar;
                p_bar[1] = (o_bar * v * e + w) * slope;
            } else {
                let v_bar = o_bar * e;
                p_bar[0] = -v_bar;
                p_bar[1] = -(v_bar * (v - p[0]) + w) * slope;
            }
            o_bar * e
        }
        CouplingTransform::Additive => {
            p_bar[0] = if inverse { -o_bar } else { o_bar };
            o_bar
        }
        CouplingTransform::Spline { bound, .. } => {
            p_bar.fill(F::zero());
            if inverse {
                rq_inverse_backward(p, F::of(bound), v, o_bar, w, p_bar)
            } else {
                rq_forward_backward(p, F::of(bound), v, o_bar, w, p_bar)
            }
        }
    }
}

/// Copies the rows of `x` into the row-major `dst`.
fn gather<F: Float>(x: ArrayView2<'_, F>, dst: &mut [F]) {
    match x.to_slice() {
        Some(x) => dst.copy_from_slice(x),
        None => {
            for (d, &v) in dst.iter_mut().zip(x.iter()) {
                *d = v;
            }
        }
    }
}

/// Copies the block `x` into the feature-major `xt`: `xt[c·rows + r] = x[r, c]`.
fn to_feature_major<F: Float>(x: ArrayView2<'_, F>, xt: &mut [F]) {
    let rows = x.nrows();
    for (r, row) in x.rows().into_iter().enumerate() {
        for (c, &v) in row.iter().enumerate() {
            xt[c * rows + r] = v;
        }
    }
}

/// Copies the feature-major `xt` back into the block `x` (the inverse of
/// [`to_feature_major`]).
fn from_feature_major<F: Float>(xt: &[F], mut x: ArrayViewMut2<'_, F>) {
    let rows = x.nrows();
    for (r, mut row) in x.rows_mut().into_iter().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = xt[c * rows + r];
        }
    }
}

/// Coordinate `c` of every row of the feature-major block `xt` of `rows` rows.
fn column<F>(xt: &mut [F], c: usize, rows: usize) -> &mut [F] {
    &mut xt[c * rows..][..rows]
}

/// [`step`] for one coordinate of every row of a feature-major block: `v` its values,
/// `params` its parameters (parameter `i` of row `r` at `params[i·rows + r]`), the
/// log-dets added to `acc`; `p` (`P` elements) holds one row's parameters for the
/// transforms without a loop of their own. Compiled for AVX2 where the processor has it,
/// so that the affine loop vectorises; the arithmetic is [`step`]'s either way.
fn steps_t<F: Float>(
    transform: CouplingTransform,
    inverse: bool,
    v: &mut [F],
    params: &[F],
    acc: &mut [F],
    p: &mut [F],
) {
    #[cfg(target_arch = "x86_64")]
    if crate::nets::has_avx2_fma() {
        // SAFETY: the processor has the features `steps_t_avx2` is compiled for.
        unsafe { steps_t_avx2(transform, inverse, v, params, acc, p) };
        return;
    }
    steps_t_with(transform, inverse, v, params, acc, p);
}

/// [`steps_t_with`] compiled for AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn steps_t_avx2<F: Float>(
    transform: CouplingTransform,
    inverse: bool,
    v: &mut [F],
    params: &[F],
    acc: &mut [F],
    p: &mut [F],
) {
    steps_t_with(transform, inverse, v, params, acc, p);
}

/// The loops of [`steps_t`]: the affine step over contiguous shifts and raw log-scales,
/// the other transforms a row at a time through [`step`].
#[inline(always)]
fn steps_t_with<F: Float>(
    transform: CouplingTransform,
    inverse: bool,
    v: &mut [F],
    params: &[F],
    acc: &mut [F],
    p: &mut [F],
) {
    let rows = v.len();
    assert!(
        acc.len() >= rows && params.len() >= p.len() * rows,
        "autoregressive: feature-major buffers too small"
    );
    if matches!(transform, CouplingTransform::Affine) {
        let (t, raw) = params.split_at(rows);
        for ((v, a), (&t, &raw)) in v.iter_mut().zip(acc).zip(t.iter().zip(raw)) {
            let (o, l) = affine_step(inverse, *v, t, raw);
            *v = o;
            *a += l;
        }
        return;
    }
    for (r, (v, a)) in v.iter_mut().zip(acc).enumerate() {
        for (i, q) in p.iter_mut().enumerate() {
            *q = params[i * rows + r];
        }
        let (o, l) = step(transform, inverse, *v, p);
        *v = o;
        *a += l;
    }
}

impl<F: Float> Autoregressive<F> {
    /// MAF: a masked autoregressive layer on `dim` coordinates whose conditioner reads the
    /// data side, in the autoregressive order `order`. It starts as the identity (the
    /// conditioner's output layer is zero). Panics if `dim` is 0 or a hidden width is below
    /// `dim − 1`; `flow!` checks both at compile time.
    pub fn masked<R: Rng + ?Sized>(
        dim: usize,
        transform: CouplingTransform,
        hidden: &[usize],
        activation: Activation,
        order: Order,
        rng: &mut R,
    ) -> Self {
        Self::new(Side::Data, dim, transform, hidden, activation, order, rng)
    }

    /// IAF: as [`Autoregressive::masked`], but the conditioner reads the base side.
    pub fn inverse<R: Rng + ?Sized>(
        dim: usize,
        transform: CouplingTransform,
        hidden: &[usize],
        activation: Activation,
        order: Order,
        rng: &mut R,
    ) -> Self {
        Self::new(Side::Base, dim, transform, hidden, activation, order, rng)
    }

    fn new<R: Rng + ?Sized>(
        side: Side,
        dim: usize,
        transform: CouplingTransform,
        hidden: &[usize],
        activation: Activation,
        order: Order,
        rng: &mut R,
    ) -> Self {
        assert!(dim > 0, "autoregressive: dim must be at least 1");
        let made = Made::new(
            &order.coordinates(dim),
            hidden,
            per_coordinate(transform),
            activation,
            rng,
        );
        Self {
            made,
            transform,
            side,
        }
    }

    /// The conditioner.
    pub fn made(&self) -> &Made<F> {
        &self.made
    }

    /// Affine or additive.
    pub fn transform(&self) -> CouplingTransform {
        self.transform
    }

    /// Which side the conditioner reads: [`Side::Data`] for MAF, [`Side::Base`] for IAF.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The number of coordinates.
    pub fn dim(&self) -> usize {
        self.made.dim()
    }

    /// `order()[k]`: the coordinate at position `k` of the autoregressive order.
    pub fn order(&self) -> &[usize] {
        self.made.order()
    }

    /// Whether the direction (`inverse`: towards the base) takes one pass of the
    /// conditioner (it reads this direction's input), rather than one per coordinate.
    fn one_pass(&self, inverse: bool) -> bool {
        inverse == (self.side == Side::Data)
    }

    /// The parameters of coordinate `c` in a row of conditioner outputs.
    #[inline(always)]
    fn params<'o>(&self, o: &'o [F], c: usize) -> &'o [F] {
        let p = self.made.per_coordinate();
        &o[c * p..c * p + p]
    }

    /// The batch kernel of both directions.
    fn block(
        &self,
        x: ArrayViewMut2<'_, F>,
        log_det: ArrayViewMut1<'_, F>,
        ws: &mut Workspace<F>,
        inverse: bool,
    ) {
        assert_eq!(
            x.ncols(),
            self.dim(),
            "autoregressive: block has the wrong number of columns"
        );
        assert_eq!(
            log_det.len(),
            x.nrows(),
            "autoregressive: log_det has the wrong length"
        );
        if x.nrows() == 0 {
            return;
        }
        if self.one_pass(inverse) {
            self.one_pass_block(x, log_det, ws, inverse);
        } else {
            self.sequential_block(x, log_det, ws, inverse);
        }
    }

    /// One pass: the block copied feature-major (workspace buffer 0), the conditioner on
    /// it ([`Made::forward_t`]: buffer 1 its hidden values, 2 its outputs), then each
    /// coordinate of every row, the last in the order first, the log-dets summed in that
    /// order (as the point kernel does) in buffer 3; buffer 4 holds one row's parameters
    /// for the spline.
    fn one_pass_block(
        &self,
        mut x: ArrayViewMut2<'_, F>,
        mut log_det: ArrayViewMut1<'_, F>,
        ws: &mut Workspace<F>,
        inverse: bool,
    ) {
        let rows = x.nrows();
        let per = self.made.per_coordinate();
        let n_out = self.made.net().outputs();
        let [xt, hidden, out, acc, p] = ws.slices([
            rows * self.dim(),
            self.made.hidden_t_len(rows),
            rows * n_out,
            rows,
            per,
        ]);
        to_feature_major(x.view(), xt);
        self.made.forward_t(xt, rows, hidden, out);
        acc.fill(F::zero());
        for &c in self.order().iter().rev() {
            let params = &out[c * per * rows..][..per * rows];
            steps_t(self.transform, inverse, column(xt, c, rows), params, acc, p);
        }
        from_feature_major(xt, x.view_mut());
        for (ld, &a) in log_det.iter_mut().zip(&*acc) {
            *ld += a;
        }
    }

    /// One pass per coordinate, on a feature-major copy of the block (workspace buffer 0;
    /// 1 the conditioner's hidden values, 2 one coordinate's parameters, 3 the per-row
    /// log-dets, 4 one row's parameters for the spline).
    fn sequential_block(
        &self,
        mut x: ArrayViewMut2<'_, F>,
        mut log_det: ArrayViewMut1<'_, F>,
        ws: &mut Workspace<F>,
        inverse: bool,
    ) {
        let rows = x.nrows();
        let per = self.made.per_coordinate();
        let [xt, hidden, out, acc, p] = ws.slices([
            rows * self.dim(),
            self.made.hidden_t_len(rows),
            rows * per,
            rows,
            per,
        ]);
        to_feature_major(x.view(), xt);
        self.sequential(xt, rows, hidden, out, acc, p, inverse);
        from_feature_major(xt, x.view_mut());
        for (ld, &a) in log_det.iter_mut().zip(&*acc) {
            *ld += a;
        }
    }

    /// The sequential direction on the feature-major block `xt` of `rows` rows, in place:
    /// for each position `k` of the order, pass `k` of the conditioner ([`Made::pass_t`]:
    /// the hidden units of degree `k` into `hidden`, of [`Made::hidden_t_len`] elements,
    /// and coordinate `c = order[k]`'s parameters into `out`, `P · rows` elements), then
    /// coordinate `c` of every row. The `D` passes together compute every hidden unit
    /// once. The log-dets are summed from zero in the order into `acc` (one per row);
    /// `p` holds one row's parameters.
    #[allow(clippy::too_many_arguments)]
    fn sequential(
        &self,
        xt: &mut [F],
        rows: usize,
        hidden: &mut [F],
        out: &mut [F],
        acc: &mut [F],
        p: &mut [F],
        inverse: bool,
    ) {
        let per = self.made.per_coordinate();
        acc.fill(F::zero());
        for (k, &c) in self.order().iter().enumerate() {
            self.made.pass_t(k, xt, rows, hidden, out);
            let params = &out[..per * rows];
            steps_t(self.transform, inverse, column(xt, c, rows), params, acc, p);
        }
    }

    /// The point kernel of both directions, in place, without the heap: the conditioner's
    /// hidden values in `scratch[..net.point_scratch()]`, one coordinate's parameters in
    /// the next `P` elements.
    fn point(&self, x: &mut [F], scratch: &mut [F], inverse: bool) -> F {
        assert_eq!(
            x.len(),
            self.dim(),
            "autoregressive: point has the wrong dimension"
        );
        assert!(
            scratch.len() >= Layer::<F>::point_scratch(self),
            "autoregressive: point scratch of {} elements, {} needed",
            scratch.len(),
            Layer::<F>::point_scratch(self)
        );
        let net = self.made.net();
        let per = self.made.per_coordinate();
        let no_hidden = net.layers.len() == 1;
        let (net_scratch, rest) = scratch.split_at_mut(net.point_scratch());
        let p = &mut rest[..per];
        let mut acc = F::zero();
        if self.one_pass(inverse) {
            // The last coordinate first: without hidden layers the outputs read `x` itself,
            // whose earlier coordinates are then not yet updated.
            let hidden = net.hidden_point(|j| x[j], net_scratch);
            for &c in self.order().iter().rev() {
                if no_hidden {
                    net.output_point(|j| x[j], c * per, p);
                } else {
                    net.output_point(|j| hidden[j], c * per, p);
                }
                let (v, l) = step(self.transform, inverse, x[c], p);
                x[c] = v;
                acc += l;
            }
        } else {
            for &c in self.order() {
                let hidden = net.hidden_point(|j| x[j], net_scratch);
                if no_hidden {
                    net.output_point(|j| x[j], c * per, p);
                } else {
                    net.output_point(|j| hidden[j], c * per, p);
                }
                let (v, l) = step(self.transform, inverse, x[c], p);
                x[c] = v;
                acc += l;
            }
        }
        acc
    }

    /// Reverse mode through a direction (`inverse`: towards the base) at its input `y`:
    /// checks the shapes, then one pass or sequential as the direction is.
    fn backward_block(
        &self,
        y: ArrayView2<'_, F>,
        grad: ArrayViewMut2<'_, F>,
        weight: ArrayView1<'_, F>,
        param_grad: &mut [F],
        ws: &mut Workspace<F>,
        inverse: bool,
    ) {
        let rows = y.nrows();
        assert_eq!(
            y.ncols(),
            self.dim(),
            "autoregressive: block has the wrong number of columns"
        );
        assert_eq!(
            grad.dim(),
            y.dim(),
            "autoregressive: the gradient block has the wrong shape"
        );
        assert_eq!(
            weight.len(),
            rows,
            "autoregressive: weight has the wrong length"
        );
        assert_eq!(
            param_grad.len(),
            self.param_len(),
            "autoregressive: param_grad has the wrong length"
        );
        if rows == 0 {
            return;
        }
        if self.one_pass(inverse) {
            self.backward_one_pass(y, grad, weight, param_grad, ws, inverse);
        } else {
            self.backward_sequential(y, grad, weight, param_grad, ws, inverse);
        }
    }

    /// Reverse mode through a direction (`inverse`: towards the base) that is one pass:
    /// `x = h(y, made(y))` with `y` the direction's input (MAF's inverse, IAF's forward).
    /// Workspace buffers: 0 `y` row-major, 1 and 2 the conditioner's tape, 3 its outputs,
    /// 4 their gradients, 5 its backward scratch, 6 its input gradient, 7 its parameter
    /// gradient before masking.
    fn backward_one_pass(
        &self,
        y: ArrayView2<'_, F>,
        mut grad: ArrayViewMut2<'_, F>,
        weight: ArrayView1<'_, F>,
        param_grad: &mut [F],
        ws: &mut Workspace<F>,
        inverse: bool,
    ) {
        let rows = y.nrows();
        let dim = self.dim();
        let net = self.made.net();
        let n_out = net.outputs();
        let tape_len = rows * net.hidden_total();
        let [cond, pre, post, out, out_grad, scratch, input_grad, own] = ws.slices([
            rows * dim,
            tape_len,
            tape_len,
            rows * n_out,
            rows * n_out,
            rows * net.max_hidden(),
            rows * dim,
            self.made.param_len(),
        ]);
        gather(y, cond);
        let input = ArrayView2::from_shape((rows, dim), &*cond).expect("workspace buffer 0");
        let mut tape = MlpTape { pre, post };
        net.forward_block_tape(
            input,
            ArrayViewMut2::from_shape((rows, n_out), &mut *out).expect("workspace buffer 3"),
            &mut tape,
        );
        // ∂J/∂(conditioner outputs), and the direct part of ∂J/∂y.
        Zip::from(grad.rows_mut())
            .and(y.rows())
            .and(&weight)
            .and(
                ArrayView2::from_shape((rows, n_out), &*out)
                    .expect("outputs")
                    .rows(),
            )
            .and(
                ArrayViewMut2::from_shape((rows, n_out), &mut *out_grad)
                    .expect("gradients")
                    .rows_mut(),
            )
            .for_each(|mut g, y, &w, o, mut o_bar| {
                let o = o.to_slice().expect("row-major");
                let o_bar = o_bar.as_slice_mut().expect("row-major");
                let per = self.made.per_coordinate();
                for c in 0..dim {
                    let p_bar = &mut o_bar[c * per..c * per + per];
                    let p = self.params(o, c);
                    g[c] = step_backward(self.transform, inverse, y[c], p, g[c], w, p_bar);
                }
            });
        let out_grad = ArrayView2::from_shape((rows, n_out), &*out_grad).expect("gradients");
        let in_grad = ArrayViewMut2::from_shape((rows, dim), &mut *input_grad).expect("input");
        self.made.backward_block(
            input, &mut tape, out_grad, in_grad, param_grad, scratch, own,
        );
        for (g, &d) in grad.iter_mut().zip(&*input_grad) {
            *g += d;
        }
    }

    /// Reverse mode through a direction (`inverse`: towards the base) that is sequential:
    /// `x` solves `x = h(y, made(x))`, `y` the direction's input (IAF's inverse, MAF's
    /// forward). With `c(λ)` the gradient of `λ·h + w·(log-det)` with respect to
    /// the conditioner's outputs (from [`step_backward`] at the final `x`), the adjoint
    /// `λ = ∂J/∂x` (total) solves `λ = x̄ + made_xᵀ·c(λ)`; coordinate `k` of the order
    /// depends only on later ones, so `D − 1` sweeps from `λ = x̄` make it exact. Then
    /// `∂J/∂y = ∂(λ·h + w·ld)/∂y` and `∂J/∂θ = made_θᵀ·c(λ)`.
    ///
    /// Workspace buffers: 0 `x` (the direction's output, recomputed), 1 and 2 the
    /// conditioner's tape, 3 a copy of the tape's pre-activations (a backward pass
    /// consumes them), 4 the conditioner's outputs, 5 their gradients, 6 its backward
    /// scratch, 7 its input gradient, 8 `λ`, 9 the parameter gradient of a sweep, 10 one
    /// row's parameters. The direction itself runs feature-major in buffers 4 (the block),
    /// 1 (the hidden values), 5 (one coordinate's parameters) and 7 (the log-dets, unused).
    fn backward_sequential(
        &self,
        y: ArrayView2<'_, F>,
        mut grad: ArrayViewMut2<'_, F>,
        weight: ArrayView1<'_, F>,
        param_grad: &mut [F],
        ws: &mut Workspace<F>,
        inverse: bool,
    ) {
        let rows = y.nrows();
        let dim = self.dim();
        let net = self.made.net();
        let n_out = net.outputs();
        let per = self.made.per_coordinate();
        let tape_len = rows * net.hidden_total();
        let [
            x,
            pre,
            post,
            saved,
            out,
            out_grad,
            scratch,
            input_grad,
            lambda,
            own,
            p,
        ] = ws.slices([
            rows * dim,
            tape_len,
            tape_len,
            if dim > 1 { tape_len } else { 0 },
            rows * n_out,
            rows * n_out,
            rows * net.max_hidden(),
            rows * dim,
            rows * dim,
            self.made.param_len(),
            per,
        ]);
        // The direction (feature-major, in buffers that are free until the taped pass),
        // then the conditioner at the final x, taped.
        let xt = &mut out[..rows * dim];
        to_feature_major(y, xt);
        let seq_out = &mut out_grad[..rows * per];
        let acc = &mut input_grad[..rows];
        self.sequential(xt, rows, pre, seq_out, acc, p, inverse);
        from_feature_major(
            xt,
            ArrayViewMut2::from_shape((rows, dim), &mut *x).expect("workspace buffer 0"),
        );
        let input = ArrayView2::from_shape((rows, dim), &*x).expect("workspace buffer 0");
        let mut tape = MlpTape { pre, post };
        net.forward_block_tape(
            input,
            ArrayViewMut2::from_shape((rows, n_out), &mut *out).expect("workspace buffer 4"),
            &mut tape,
        );
        if dim > 1 {
            saved.copy_from_slice(tape.pre);
        }
        gather(grad.view(), lambda);
        for sweep in 0..dim {
            let last = sweep + 1 == dim;
            // c(λ) into `out_grad`; on the last sweep also ∂J/∂y into `grad`.
            for (r, (((o, o_bar), l), &w)) in out
                .chunks_exact(n_out)
                .zip(out_grad.chunks_exact_mut(n_out))
                .zip(lambda.chunks_exact(dim))
                .zip(&weight)
                .enumerate()
            {
                for c in 0..dim {
                    let p_bar = &mut o_bar[c * per..c * per + per];
                    let p = self.params(o, c);
                    let y_bar =
                        step_backward(self.transform, inverse, y[[r, c]], p, l[c], w, p_bar);
                    if last {
                        grad[[r, c]] = y_bar;
                    }
                }
            }
            if sweep > 0 {
                tape.pre.copy_from_slice(saved);
            }
            let o_bar = ArrayView2::from_shape((rows, n_out), &*out_grad).expect("gradients");
            let in_grad = ArrayViewMut2::from_shape((rows, dim), &mut *input_grad).expect("input");
            if last {
                self.made
                    .backward_block(input, &mut tape, o_bar, in_grad, param_grad, scratch, own);
                break;
            }
            // A sweep: only the input gradient is kept.
            net.backward_block(input, &mut tape, o_bar, in_grad, own, scratch);
            for ((l, &x_bar), &d) in lambda.iter_mut().zip(grad.iter()).zip(&*input_grad) {
                *l = x_bar + d;
            }
        }
    }
}

impl<F: Float> Layer<F> for Autoregressive<F> {
    /// `"autoregressive"` (MAF) or `"inverse_autoregressive"` (IAF).
    fn kind(&self) -> &'static str {
        match self.side {
            Side::Data => "autoregressive",
            Side::Base => "inverse_autoregressive",
        }
    }
    fn forward_block(
        &self,
        x: ArrayViewMut2<'_, F>,
        log_det: ArrayViewMut1<'_, F>,
        ws: &mut Workspace<F>,
    ) {
        self.block(x, log_det, ws, false);
    }
    fn inverse_block(
        &self,
        y: ArrayViewMut2<'_, F>,
        log_det: ArrayViewMut1<'_, F>,
        ws: &mut Workspace<F>,
    ) {
        self.block(y, log_det, ws, true);
    }
    fn forward_point(&self, x: &mut [F], scratch: &mut [F]) -> F {
        self.point(x, scratch, false)
    }
    fn inverse_point(&self, y: &mut [F], scratch: &mut [F]) -> F {
        self.point(y, scratch, true)
    }
    /// The conditioner's [`crate::nets::Mlp::point_scratch`] (the widest even-numbered
    /// plus the widest odd-numbered hidden layer, at most the sum of the two largest
    /// hidden widths) plus the parameters of one coordinate (2 affine, 1 additive).
    fn point_scratch(&self) -> usize {
        self.made.net().point_scratch() + self.made.per_coordinate()
    }
    /// Every weight and bias of the conditioner, masked ones included (always zero).
    fn param_len(&self) -> usize {
        self.made.param_len()
    }
    /// `net.0.weight` (shape `[dim, hidden[0]]`, row-major), `net.0.bias`, …, up to the
    /// output layer `net.{L}.weight` (`[hidden[L−1], dim·P]`) and `net.{L}.bias`
    /// (`[dim·P]`), outputs coordinate-major (see [`Autoregressive`]).
    fn visit_params(&self, visit: &mut dyn FnMut(&str, &[usize], &[F])) {
        self.made
            .visit_params(|l, kind, shape, values| visit(&param_name(l, kind), shape, values));
    }
    /// As [`Layer::visit_params`]; masked weights are reset to zero after the visit.
    fn visit_params_mut(&mut self, visit: &mut dyn FnMut(&str, &[usize], &mut [F])) {
        self.made
            .visit_params_mut(|l, kind, shape, values| visit(&param_name(l, kind), shape, values));
    }
    /// MAF: one taped pass of the conditioner and its backward pass. IAF: the sequential
    /// inverse, one taped pass at its result and `D` backward passes (see
    /// `backward_sequential`). Masked weights get zero gradient. Allocates nothing once the
    /// workspace has grown.
    fn inverse_backward_block(
        &self,
        y: ArrayView2<'_, F>,
        grad: ArrayViewMut2<'_, F>,
        weight: ArrayView1<'_, F>,
        param_grad: &mut [F],
        ws: &mut Workspace<F>,
    ) {
        self.backward_block(y, grad, weight, param_grad, ws, true);
    }
    /// The mirror of [`Layer::inverse_backward_block`]. IAF: one taped pass of the
    /// conditioner on `z` and its backward pass. MAF: the sequential forward, one taped
    /// pass at its result `x` and `D` backward passes, solving the adjoint of
    /// `x = h(z, made(x))` by fixed-point sweeps (see `backward_sequential`). Masked weights
    /// get zero gradient. Allocates nothing once the workspace has grown.
    fn forward_backward_block(
        &self,
        z: ArrayView2<'_, F>,
        grad: ArrayViewMut2<'_, F>,
        weight: ArrayView1<'_, F>,
        param_grad: &mut [F],
        ws: &mut Workspace<F>,
    ) {
        self.backward_block(z, grad, weight, param_grad, ws, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{jacobian_fd, log_abs_det_fd};
    use ndarray::{Array1, Array2, ShapeBuilder, s};
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    const SIDES: [Side; 2] = [Side::Data, Side::Base];
    const ORDERS: [Order; 3] = [Order::Natural, Order::Reverse, Order::Seeded(3)];
    const TRANSFORMS: [CouplingTransform; 3] = [
        CouplingTransform::Affine,
        CouplingTransform::Additive,
        CouplingTransform::Spline {
            bins: 3,
            bound: 2.0,
        },
    ];
    const ACTIVATIONS: [Activation; 4] = [
        Activation::Relu,
        Activation::Tanh,
        Activation::Elu,
        Activation::Silu,
    ];
    const HIDDEN: [&[usize]; 3] = [&[], &[4], &[6, 5]];

    type Config = (
        Side,
        usize,
        Order,
        CouplingTransform,
        Activation,
        &'static [usize],
    );

    fn rng(seed: u64) -> StdRng {
        StdRng::seed_from_u64(seed)
    }

    /// Both sides, dims 1, 2 and 5, every order, transform and hidden shape (the
    /// activation cycles through all four).
    fn configs() -> Vec<Config> {
        let mut out = Vec::new();
        let mut a = 0;
        for side in SIDES {
            for dim in [1, 2, 5] {
                for order in ORDERS {
                    for transform in TRANSFORMS {
                        for hidden in HIDDEN {
                            out.push((side, dim, order, transform, ACTIVATIONS[a % 4], hidden));
                            a += 1;
                        }
                    }
                }
            }
        }
        out
    }

    fn build<F: Float>(
        (side, dim, order, transform, activation, hidden): Config,
        r: &mut StdRng,
    ) -> Autoregressive<F> {
        match side {
            Side::Data => Autoregressive::masked(dim, transform, hidden, activation, order, r),
            Side::Base => Autoregressive::inverse(dim, transform, hidden, activation, order, r),
        }
    }

    /// Every parameter drawn ~ N(0, 0.5²) through `visit_params_mut` (which keeps the
    /// masked ones zero).
    fn randomise<F: Float>(a: &mut Autoregressive<F>, r: &mut StdRng) {
        a.visit_params_mut(&mut |_, _, v| {
            for x in v {
                *x = F::of(0.5 * f64::standard_normal(r));
            }
        });
    }

    fn random_layer(config: Config, r: &mut StdRng) -> Autoregressive<f64> {
        let mut a = build(config, r);
        randomise(&mut a, r);
        a
    }

    fn random_rows(rows: usize, dim: usize, r: &mut StdRng) -> Array2<f64> {
        Array2::from_shape_simple_fn((rows, dim), || r.random_range(-2.0..2.0))
    }

    fn run(a: &Autoregressive<f64>, x: &Array2<f64>, inverse: bool) -> (Array2<f64>, Array1<f64>) {
        let mut y = x.clone();
        let mut ld = Array1::zeros(x.nrows());
        let ws = &mut Workspace::default();
        if inverse {
            a.inverse_block(y.view_mut(), ld.view_mut(), ws);
        } else {
            a.forward_block(y.view_mut(), ld.view_mut(), ws);
        }
        (y, ld)
    }

    fn point(a: &Autoregressive<f64>, x: &[f64], inverse: bool) -> (Vec<f64>, f64) {
        let mut y = x.to_vec();
        let mut scratch = vec![f64::NAN; a.point_scratch()];
        let ld = if inverse {
            a.inverse_point(&mut y, &mut scratch)
        } else {
            a.forward_point(&mut y, &mut scratch)
        };
        (y, ld)
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
    }

    #[test]
    fn kinds_orders_and_shapes() {
        let mut r = rng(0);
        for config in configs() {
            let (side, dim, order, transform, _, hidden) = config;
            let a: Autoregressive<f64> = build(config, &mut r);
            let kind = Layer::<f64>::kind(&a);
            match side {
                Side::Data => assert_eq!(kind, "autoregressive"),
                Side::Base => assert_eq!(kind, "inverse_autoregressive"),
            }
            assert_eq!((a.side(), a.dim(), a.transform()), (side, dim, transform));
            assert_eq!(a.order(), order.coordinates(dim));
            let per = per_coordinate(transform);
            assert_eq!(a.made().net().outputs(), dim * per);
            let widths: Vec<usize> = std::iter::once(dim)
                .chain(hidden.iter().copied())
                .chain([dim * per])
                .collect();
            assert_eq!(a.made().net().layers.len(), hidden.len() + 1);
            for (layer, w) in a.made().net().layers.iter().zip(widths.windows(2)) {
                assert_eq!((layer.inputs(), layer.outputs()), (w[0], w[1]));
            }
        }
    }

    #[test]
    fn params_are_visited_in_layout_order() {
        let mut r = rng(1);
        for side in SIDES {
            let config = (
                side,
                4,
                Order::Reverse,
                CouplingTransform::Affine,
                Activation::Elu,
                &[6, 5][..],
            );
            let mut a = random_layer(config, &mut r);
            let mut seen = Vec::new();
            let mut flat = Vec::new();
            a.visit_params(&mut |name, shape, v| {
                assert_eq!(shape.iter().product::<usize>(), v.len(), "{name}");
                seen.push((name.to_string(), shape.to_vec()));
                flat.extend_from_slice(v);
            });
            let expected = [
                ("net.0.weight", vec![4, 6]),
                ("net.0.bias", vec![6]),
                ("net.1.weight", vec![6, 5]),
                ("net.1.bias", vec![5]),
                ("net.2.weight", vec![5, 8]),
                ("net.2.bias", vec![8]),
            ]
            .map(|(n, s)| (n.to_string(), s));
            assert_eq!(seen, expected);
            assert_eq!(flat.len(), a.param_len());
            assert_eq!(a.param_len(), 24 + 6 + 30 + 5 + 40 + 8);
            let net = a.made().net();
            assert_eq!(flat[30 + 3 * 5 + 2], net.layers[1].weight[[3, 2]]);
            assert_eq!(flat[flat.len() - 1], net.layers[2].bias[7]);
            // visit_params_mut writes through in the same order (masked weights excepted).
            let mut k = 0.0;
            a.visit_params_mut(&mut |_, _, v| {
                for x in v {
                    k += 1.0;
                    *x = k;
                }
            });
            let mut again = Vec::new();
            a.visit_params(&mut |_, _, v| again.extend_from_slice(v));
            for (i, v) in again.iter().enumerate() {
                let expected = if a.made().is_free(i) {
                    (i + 1) as f64
                } else {
                    0.0
                };
                assert_eq!(*v, expected, "parameter {i}");
            }
        }
    }

    #[test]
    fn masked_weights_stay_zero_and_get_no_gradient() {
        let mut r = rng(2);
        for side in SIDES {
            for order in ORDERS {
                let config = (
                    side,
                    5,
                    order,
                    CouplingTransform::Affine,
                    Activation::Tanh,
                    &[7, 4][..],
                );
                let mut a = random_layer(config, &mut r);
                a.visit_params_mut(&mut |_, _, v| v.fill(0.25));
                let mut flat = Vec::new();
                a.visit_params(&mut |_, _, v| flat.extend_from_slice(v));
                let masked: Vec<usize> =
                    (0..flat.len()).filter(|&i| !a.made().is_free(i)).collect();
                assert!(!masked.is_empty());
                assert!(masked.iter().all(|&i| flat[i] == 0.0));
                assert!(
                    (0..flat.len())
                        .filter(|i| !masked.contains(i))
                        .all(|i| flat[i] == 0.25)
                );
                // Their gradient is exactly zero (added to what is there), both ways.
                randomise(&mut a, &mut r);
                for inverse in DIRECTIONS {
                    let (y, x_bar, w) = random_backward_inputs(9, 5, &mut r);
                    let mut pg = vec![7.0; a.param_len()];
                    let mut grad = x_bar.clone();
                    let ws = &mut Workspace::default();
                    backward_block(
                        &a,
                        inverse,
                        y.view(),
                        grad.view_mut(),
                        w.view(),
                        &mut pg,
                        ws,
                    );
                    let what = format!("{side:?} {order:?} inverse={inverse}");
                    assert!(masked.iter().all(|&i| pg[i] == 7.0), "{what}");
                    assert!(pg.iter().filter(|&&g| g != 7.0).count() > 0, "{what}");
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "hidden layer 0 has 3 units but dim = 5 needs at least dim − 1 = 4")]
    fn a_hidden_layer_narrower_than_dim_minus_one_panics() {
        let _: Autoregressive<f64> = Autoregressive::masked(
            5,
            CouplingTransform::Affine,
            &[3, 8],
            Activation::Relu,
            Order::Natural,
            &mut rng(0),
        );
    }

    #[test]
    #[should_panic(expected = "hidden layer 1 has 1 units but dim = 3 needs at least dim − 1 = 2")]
    fn an_iaf_hidden_layer_narrower_than_dim_minus_one_panics() {
        let _: Autoregressive<f64> = Autoregressive::inverse(
            3,
            CouplingTransform::Additive,
            &[4, 1],
            Activation::Relu,
            Order::Reverse,
            &mut rng(0),
        );
    }

    #[test]
    fn point_scratch_is_the_mlp_scratch_plus_one_coordinate() {
        let mut r = rng(3);
        for side in SIDES {
            for (transform, per) in [
                (CouplingTransform::Affine, 2),
                (CouplingTransform::Additive, 1),
                (
                    CouplingTransform::Spline {
                        bins: 4,
                        bound: 1.0,
                    },
                    11,
                ),
            ] {
                let a: Autoregressive<f64> = build(
                    (
                        side,
                        6,
                        Order::Natural,
                        transform,
                        Activation::Relu,
                        &[12, 30, 7],
                    ),
                    &mut r,
                );
                // max(12, 7) + 30 for the MLP.
                assert_eq!(a.point_scratch(), 42 + per);
                let lin: Autoregressive<f64> = build(
                    (side, 6, Order::Natural, transform, Activation::Relu, &[]),
                    &mut r,
                );
                assert_eq!(lin.point_scratch(), per);
            }
        }
    }

    #[test]
    fn fresh_layer_is_the_identity() {
        let mut r = rng(4);
        for config in configs() {
            let a: Autoregressive<f64> = build(config, &mut r);
            let x = random_rows(20, config.1, &mut r);
            // A zero-parameter spline is the identity up to rounding; the others exactly.
            let tol = match config.3 {
                CouplingTransform::Spline { .. } => 1e-14,
                _ => 0.0,
            };
            for inverse in [false, true] {
                let (y, ld) = run(&a, &x, inverse);
                for (a, b) in y.iter().zip(&x) {
                    assert!((a - b).abs() <= tol, "{config:?}: {a} vs {b}");
                }
                assert!(ld.iter().all(|&l| l.abs() <= tol), "{config:?}");
                let row = x.row(0).to_vec();
                let (p, l) = point(&a, &row, inverse);
                for (a, b) in p.iter().zip(&row) {
                    assert!((a - b).abs() <= tol, "{config:?}: {a} vs {b}");
                }
                assert!(l.abs() <= tol, "{config:?}");
            }
        }
    }

    #[test]
    fn round_trip_both_ways() {
        let mut r = rng(5);
        for config in configs() {
            let a = random_layer(config, &mut r);
            let x = random_rows(30, config.1, &mut r);
            for inverse in [false, true] {
                let (y, _) = run(&a, &x, inverse);
                assert!(y != x, "{config:?}: a randomised layer should move points");
                let (back, _) = run(&a, &y, !inverse);
                for (p, q) in back.iter().zip(&x) {
                    assert!(
                        close(*p, *q, 1e-10),
                        "{config:?} inverse={inverse}: {p} vs {q}"
                    );
                }
            }
        }
    }

    #[test]
    fn log_dets_match_finite_differences() {
        let mut r = rng(6);
        for config in configs() {
            let a = random_layer(config, &mut r);
            let x = random_rows(4, config.1, &mut r);
            for inverse in [false, true] {
                let (_, ld) = run(&a, &x, inverse);
                for (row, &l) in x.rows().into_iter().zip(&ld) {
                    let fd = log_abs_det_fd(|p| point(&a, p, inverse).0, row.as_slice().unwrap());
                    assert!(
                        (l - fd).abs() < 1e-6 * fd.abs().max(1.0),
                        "{config:?} inverse={inverse}: {l} vs fd {fd}"
                    );
                    if config.3 == CouplingTransform::Additive {
                        assert_eq!(l, 0.0);
                    }
                }
            }
        }
    }

    #[test]
    fn inverse_log_det_is_minus_forward_log_det_at_the_image() {
        let mut r = rng(7);
        for config in configs() {
            let a = random_layer(config, &mut r);
            let x = random_rows(25, config.1, &mut r);
            let (y, ld_forward) = run(&a, &x, false);
            let (_, ld_inverse) = run(&a, &y, true);
            for (f, i) in ld_forward.iter().zip(&ld_inverse) {
                assert!(close(*i, -*f, 1e-12), "{config:?}: {i} vs {f}");
            }
        }
    }

    #[test]
    fn jacobian_is_triangular_in_the_order() {
        let mut r = rng(8);
        for config in configs() {
            let a = random_layer(config, &mut r);
            let dim = config.1;
            let mut position = vec![0; dim];
            for (k, &c) in a.order().iter().enumerate() {
                position[c] = k;
            }
            let x = random_rows(1, dim, &mut r);
            for inverse in [false, true] {
                let jac = jacobian_fd(
                    |p| point(&a, p, inverse).0,
                    x.row(0).as_slice().unwrap(),
                    1e-6,
                );
                let mut below = 0;
                for i in 0..dim {
                    assert!(jac[i][i].abs() > 1e-6, "{config:?}: ∂y_{i}/∂x_{i} = 0");
                    for j in 0..dim {
                        if position[j] > position[i] {
                            assert_eq!(
                                jac[i][j], 0.0,
                                "{config:?} inverse={inverse}: ∂y_{i}/∂x_{j}"
                            );
                        } else if position[j] < position[i] && jac[i][j] != 0.0 {
                            below += 1;
                        }
                    }
                }
                // The earlier coordinates do matter (the conditioner is not degenerate).
                if dim > 1 {
                    assert!(below > 0, "{config:?} inverse={inverse}");
                }
            }
        }
    }

    #[test]
    fn log_dets_are_added_to_what_is_there() {
        let mut r = rng(9);
        for side in SIDES {
            let config = (
                side,
                5,
                Order::Seeded(1),
                CouplingTransform::Affine,
                Activation::Tanh,
                &[8][..],
            );
            let a = random_layer(config, &mut r);
            let x = random_rows(10, 5, &mut r);
            for inverse in [false, true] {
                let (_, ld) = run(&a, &x, inverse);
                let mut y = x.clone();
                let mut acc = Array1::from_elem(10, 3.0);
                let ws = &mut Workspace::default();
                if inverse {
                    a.inverse_block(y.view_mut(), acc.view_mut(), ws);
                } else {
                    a.forward_block(y.view_mut(), acc.view_mut(), ws);
                }
                for (p, l) in acc.iter().zip(&ld) {
                    assert_eq!(*p, 3.0 + l);
                }
                // And the point paths return the log-det alone.
                let (_, pl) = point(&a, &x.row(0).to_vec(), inverse);
                assert_eq!(pl, ld[0]);
            }
        }
    }

    #[test]
    fn point_path_equals_block_path_bit_for_bit() {
        let mut r = rng(10);
        for config in configs() {
            let a = random_layer(config, &mut r);
            for rows in [1, 3, 13] {
                let x = random_rows(rows, config.1, &mut r);
                for inverse in [false, true] {
                    let (y, ld) = run(&a, &x, inverse);
                    for i in 0..rows {
                        let (p, pl) = point(&a, &x.row(i).to_vec(), inverse);
                        assert_eq!((&p[..], pl), (&y.row(i).to_vec()[..], ld[i]), "{config:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn one_big_block_equals_blocks_of_256() {
        let mut r = rng(11);
        for side in SIDES {
            for transform in TRANSFORMS {
                let config = (
                    side,
                    6,
                    Order::Seeded(9),
                    transform,
                    Activation::Silu,
                    &[16, 12][..],
                );
                let a = random_layer(config, &mut r);
                let x = random_rows(1000, 6, &mut r);
                for inverse in [false, true] {
                    let (whole, ld_whole) = run(&a, &x, inverse);
                    let mut pieces = x.clone();
                    let mut ld_pieces = Array1::zeros(1000);
                    let mut ws = Workspace::default();
                    for start in (0..1000).step_by(256) {
                        let end = (start + 256).min(1000);
                        let block = pieces.slice_mut(s![start..end, ..]);
                        let ld = ld_pieces.slice_mut(s![start..end]);
                        if inverse {
                            a.inverse_block(block, ld, &mut ws);
                        } else {
                            a.forward_block(block, ld, &mut ws);
                        }
                    }
                    for (p, q) in whole
                        .iter()
                        .zip(&pieces)
                        .chain(ld_whole.iter().zip(&ld_pieces))
                    {
                        assert!(
                            close(*p, *q, 1e-13),
                            "{config:?} inverse={inverse}: {p} vs {q}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn works_on_non_contiguous_blocks() {
        let mut r = rng(12);
        for side in SIDES {
            for hidden in HIDDEN {
                let config = (
                    side,
                    4,
                    Order::Reverse,
                    CouplingTransform::Affine,
                    Activation::Elu,
                    hidden,
                );
                let a = random_layer(config, &mut r);
                let x = random_rows(30, 4, &mut r);
                for inverse in [false, true] {
                    let (y, ld) = run(&a, &x, inverse);
                    let mut fortran = Array2::zeros((30, 4).f());
                    fortran.assign(&x);
                    let mut ld_f = Array1::zeros(30);
                    let mut tall = Array2::zeros((60, 4));
                    tall.slice_mut(s![..;2, ..]).assign(&x);
                    let mut ld_t = Array1::zeros(60);
                    let ws = &mut Workspace::default();
                    if inverse {
                        a.inverse_block(fortran.view_mut(), ld_f.view_mut(), ws);
                        a.inverse_block(tall.slice_mut(s![..;2, ..]), ld_t.slice_mut(s![..;2]), ws);
                    } else {
                        a.forward_block(fortran.view_mut(), ld_f.view_mut(), ws);
                        a.forward_block(tall.slice_mut(s![..;2, ..]), ld_t.slice_mut(s![..;2]), ws);
                    }
                    assert_eq!(fortran, y, "{config:?}");
                    assert_eq!(ld_f, ld);
                    assert_eq!(tall.slice(s![..;2, ..]), y);
                    assert_eq!(ld_t.slice(s![..;2]), ld);
                }
            }
        }
    }

    #[test]
    fn workspace_does_not_grow_on_repeated_calls() {
        let mut r = rng(13);
        for side in SIDES {
            for hidden in HIDDEN {
                let config = (
                    side,
                    5,
                    Order::Natural,
                    CouplingTransform::Affine,
                    Activation::Relu,
                    hidden,
                );
                let a = random_layer(config, &mut r);
                // Each reverse mode with a workspace of its own (their buffers match).
                for inverse in DIRECTIONS {
                    let (y, x_bar, w) = random_backward_inputs(256, 5, &mut r);
                    let mut ws = Workspace::default();
                    let mut x = y.clone();
                    let mut ld = Array1::zeros(256);
                    let mut grad = x_bar.clone();
                    let mut pg = vec![0.0; a.param_len()];
                    a.forward_block(x.view_mut(), ld.view_mut(), &mut ws);
                    a.inverse_block(x.view_mut(), ld.view_mut(), &mut ws);
                    let (yv, gv, wv) = (y.view(), grad.view_mut(), w.view());
                    backward_block(&a, inverse, yv, gv, wv, &mut pg, &mut ws);
                    let capacity = ws.capacity();
                    assert!(capacity > 0);
                    for rows in [256, 100, 1] {
                        a.forward_block(
                            x.slice_mut(s![..rows, ..]),
                            ld.slice_mut(s![..rows]),
                            &mut ws,
                        );
                        a.inverse_block(
                            x.slice_mut(s![..rows, ..]),
                            ld.slice_mut(s![..rows]),
                            &mut ws,
                        );
                        backward_block(
                            &a,
                            inverse,
                            y.slice(s![..rows, ..]),
                            grad.slice_mut(s![..rows, ..]),
                            w.slice(s![..rows]),
                            &mut pg,
                            &mut ws,
                        );
                        assert_eq!(ws.capacity(), capacity, "{config:?} inverse={inverse}");
                    }
                }
            }
        }
    }

    #[test]
    fn huge_raw_scales_stay_finite() {
        let mut r = rng(14);
        for side in SIDES {
            for activation in ACTIVATIONS {
                let config = (
                    side,
                    5,
                    Order::Seeded(4),
                    CouplingTransform::Affine,
                    activation,
                    &[8, 8][..],
                );
                let mut a = random_layer(config, &mut r);
                // Output biases of the raw log-scales (odd outputs) at ±1e4.
                a.visit_params_mut(&mut |name, _, v| {
                    if name == "net.2.bias" {
                        for (o, b) in v.iter_mut().enumerate().filter(|(o, _)| o % 2 == 1) {
                            *b = if o % 4 == 1 { 1e4 } else { -1e4 };
                        }
                    }
                });
                let x = random_rows(50, 5, &mut r);
                for inverse in [false, true] {
                    let (y, ld) = run(&a, &x, inverse);
                    assert!(y.iter().all(|v| v.is_finite()), "{config:?}");
                    assert!(
                        ld.iter()
                            .all(|l| l.is_finite() && l.abs() <= 5.0 * LOG_SCALE_BOUND)
                    );
                    let (back, _) = run(&a, &y, !inverse);
                    for (p, q) in back.iter().zip(&x) {
                        assert!(close(*p, *q, 1e-8), "{config:?}: {p} vs {q}");
                    }
                }
                for inverse in DIRECTIONS {
                    let (y, x_bar, w) = random_backward_inputs(20, 5, &mut r);
                    let (grad, pg) = backward(&a, &y, &x_bar, &w, inverse);
                    assert!(grad.iter().chain(&pg).all(|g| g.is_finite()), "{config:?}");
                }
            }
        }
    }

    use crate::layers::coupling::LOG_SCALE_BOUND;

    #[test]
    fn non_finite_values_stay_in_their_row() {
        let mut r = rng(15);
        for side in SIDES {
            for transform in TRANSFORMS {
                let config = (
                    side,
                    4,
                    Order::Reverse,
                    transform,
                    Activation::Tanh,
                    &[8, 4][..],
                );
                let a = random_layer(config, &mut r);
                let x = random_rows(20, 4, &mut r);
                let mut bad = x.clone();
                bad[[7, 0]] = f64::NAN;
                bad[[11, 3]] = f64::INFINITY;
                bad[[12, 1]] = -f64::INFINITY;
                for inverse in [false, true] {
                    let (y, ld) = run(&a, &x, inverse);
                    let (y_bad, ld_bad) = run(&a, &bad, inverse);
                    for i in 0..20 {
                        if [7, 11, 12].contains(&i) {
                            continue;
                        }
                        assert_eq!(y_bad.row(i), y.row(i), "{config:?} row {i}");
                        assert_eq!(ld_bad[i], ld[i]);
                    }
                    assert!(y_bad.row(7).iter().any(|v| v.is_nan()));
                    let (_, x_bar, w) = random_backward_inputs(20, 4, &mut r);
                    let (g, _) = backward(&a, &x, &x_bar, &w, inverse);
                    let (g_bad, _) = backward(&a, &bad, &x_bar, &w, inverse);
                    for i in (0..20).filter(|i| ![7, 11, 12].contains(i)) {
                        assert_eq!(g_bad.row(i), g.row(i), "{config:?} row {i}");
                    }
                }
            }
        }
    }

    #[test]
    fn works_in_f32() {
        let mut r = rng(16);
        for side in SIDES {
            let config = (
                side,
                5,
                Order::Seeded(2),
                CouplingTransform::Affine,
                Activation::Silu,
                &[8, 8][..],
            );
            let a64 = random_layer(config, &mut r);
            let a32 = to_f32(&a64, config, &mut r);
            let x = random_rows(64, 5, &mut r);
            let x32 = x.mapv(|v| v as f32);
            for inverse in [false, true] {
                let (y, ld) = run(&a64, &x, inverse);
                let mut y32 = x32.clone();
                let mut ld32 = Array1::zeros(64);
                let ws = &mut Workspace::default();
                if inverse {
                    a32.inverse_block(y32.view_mut(), ld32.view_mut(), ws);
                } else {
                    a32.forward_block(y32.view_mut(), ld32.view_mut(), ws);
                }
                for (p, q) in y32.iter().zip(&y).chain(ld32.iter().zip(&ld)) {
                    assert!(close(*p as f64, *q, 1e-4), "{config:?}: {p} vs {q}");
                }
                let mut scratch = vec![0f32; a32.point_scratch()];
                let mut p = x32.row(3).to_vec();
                let pl = if inverse {
                    a32.inverse_point(&mut p, &mut scratch)
                } else {
                    a32.forward_point(&mut p, &mut scratch)
                };
                assert_eq!((&p[..], pl), (&y32.row(3).to_vec()[..], ld32[3]));
            }
        }
    }

    fn to_f32(a64: &Autoregressive<f64>, config: Config, r: &mut StdRng) -> Autoregressive<f32> {
        let mut a32: Autoregressive<f32> = build(config, r);
        let flat = flat_params(a64);
        let mut offset = 0;
        a32.visit_params_mut(&mut |_, _, v| {
            for x in v.iter_mut() {
                *x = flat[offset] as f32;
                offset += 1;
            }
        });
        a32
    }

    // ---- reverse mode -------------------------------------------------------------

    const DIRECTIONS: [bool; 2] = [false, true];

    fn grad_close(g: f64, fd: f64) -> bool {
        (g - fd).abs() <= 1e-5 * g.abs().max(fd.abs()) + 1e-7
    }

    /// `f'(0)` by central differences at `h` and `h/2`, Richardson-extrapolated (error
    /// `O(h⁴)`: the sequential directions through a spline can be strongly curved).
    fn derivative_fd(f: impl Fn(f64) -> f64) -> f64 {
        let h = 1e-5;
        let central = |h: f64| (f(h) - f(-h)) / (2.0 * h);
        (4.0 * central(h / 2.0) - central(h)) / 3.0
    }

    /// `J(y) = Σ_i ⟨x̄_i, x_i(y)⟩ + w_i·ld_i(y)` through `inverse_block` (`inverse`) or
    /// `forward_block`.
    fn objective(
        a: &Autoregressive<f64>,
        y: &Array2<f64>,
        x_bar: &Array2<f64>,
        w: &Array1<f64>,
        inverse: bool,
    ) -> f64 {
        let (x, ld) = run(a, y, inverse);
        (x * x_bar).sum() + ld.dot(w)
    }

    /// `inverse_backward_block` (`inverse`) or `forward_backward_block`.
    fn backward_block<F: Float>(
        a: &Autoregressive<F>,
        inverse: bool,
        y: ArrayView2<'_, F>,
        grad: ArrayViewMut2<'_, F>,
        w: ArrayView1<'_, F>,
        param_grad: &mut [F],
        ws: &mut Workspace<F>,
    ) {
        if inverse {
            a.inverse_backward_block(y, grad, w, param_grad, ws);
        } else {
            a.forward_backward_block(y, grad, w, param_grad, ws);
        }
    }

    /// `(∂J/∂y, ∂J/∂θ)` of [`objective`] from the layer's reverse mode.
    fn backward(
        a: &Autoregressive<f64>,
        y: &Array2<f64>,
        x_bar: &Array2<f64>,
        w: &Array1<f64>,
        inverse: bool,
    ) -> (Array2<f64>, Vec<f64>) {
        let mut grad = x_bar.clone();
        let mut pg = vec![0.0; a.param_len()];
        let ws = &mut Workspace::default();
        backward_block(a, inverse, y.view(), grad.view_mut(), w.view(), &mut pg, ws);
        (grad, pg)
    }

    fn random_backward_inputs(
        rows: usize,
        dim: usize,
        r: &mut StdRng,
    ) -> (Array2<f64>, Array2<f64>, Array1<f64>) {
        let y = random_rows(rows, dim, r);
        let x_bar = Array2::from_shape_simple_fn((rows, dim), || f64::standard_normal(r));
        let w = Array1::from_shape_simple_fn(rows, || r.random_range(-2.0..2.0));
        (y, x_bar, w)
    }

    fn flat_params<F: Float>(a: &Autoregressive<F>) -> Vec<F> {
        let mut out = Vec::new();
        a.visit_params(&mut |_, _, v| out.extend_from_slice(v));
        out
    }

    fn set_param(a: &mut Autoregressive<f64>, p: usize, value: f64) {
        let mut offset = 0;
        a.visit_params_mut(&mut |_, _, v| {
            if (offset..offset + v.len()).contains(&p) {
                v[p - offset] = value;
            }
            offset += v.len();
        });
    }

    #[test]
    fn backward_input_gradient_matches_finite_differences() {
        let mut r = rng(20);
        for config in configs() {
            let a = random_layer(config, &mut r);
            for inverse in DIRECTIONS {
                let (y, x_bar, w) = random_backward_inputs(3, config.1, &mut r);
                let (grad, _) = backward(&a, &y, &x_bar, &w, inverse);
                let j = |y: &Array2<f64>| objective(&a, y, &x_bar, &w, inverse);
                for i in 0..y.nrows() {
                    for c in 0..y.ncols() {
                        let fd = derivative_fd(|h| {
                            let mut moved = y.clone();
                            moved[[i, c]] += h;
                            j(&moved)
                        });
                        assert!(
                            grad_close(grad[[i, c]], fd),
                            "{config:?} inverse={inverse} ∂J/∂y[{i},{c}]: {} vs fd {fd}",
                            grad[[i, c]]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn backward_param_gradient_matches_finite_differences() {
        let mut r = rng(21);
        for config in configs() {
            let a = random_layer(config, &mut r);
            for inverse in DIRECTIONS {
                let (y, x_bar, w) = random_backward_inputs(3, config.1, &mut r);
                let (_, pg) = backward(&a, &y, &x_bar, &w, inverse);
                // Every entry of every tensor, masked ones included (their gradient is 0).
                for (p, v) in flat_params(&a).into_iter().enumerate() {
                    let fd = derivative_fd(|h| {
                        let mut moved = a.clone();
                        set_param(&mut moved, p, v + h);
                        objective(&moved, &y, &x_bar, &w, inverse)
                    });
                    assert!(
                        grad_close(pg[p], fd),
                        "{config:?} inverse={inverse} ∂J/∂θ[{p}]: {} vs fd {fd}",
                        pg[p]
                    );
                    if !a.made().is_free(p) {
                        assert_eq!(pg[p], 0.0);
                    }
                }
            }
        }
    }

    #[test]
    fn backward_adds_to_param_grad() {
        let mut r = rng(22);
        for side in SIDES {
            for transform in TRANSFORMS {
                let config = (
                    side,
                    5,
                    Order::Seeded(6),
                    transform,
                    Activation::Tanh,
                    &[8, 6][..],
                );
                let a = random_layer(config, &mut r);
                for inverse in DIRECTIONS {
                    let (y, x_bar, w) = random_backward_inputs(17, 5, &mut r);
                    let (grad, fresh) = backward(&a, &y, &x_bar, &w, inverse);
                    let start: Vec<f64> = (0..a.param_len())
                        .map(|_| r.random_range(-3.0..3.0))
                        .collect();
                    let mut acc = start.clone();
                    let mut grad_again = x_bar.clone();
                    backward_block(
                        &a,
                        inverse,
                        y.view(),
                        grad_again.view_mut(),
                        w.view(),
                        &mut acc,
                        &mut Workspace::default(),
                    );
                    assert_eq!(grad_again, grad);
                    for ((p, s), f) in acc.iter().zip(&start).zip(&fresh) {
                        assert!(close(*p, s + f, 1e-13), "{config:?}: {p} vs {s} + {f}");
                    }
                }
            }
        }
    }

    #[test]
    fn backward_one_big_block_equals_blocks_of_256() {
        let mut r = rng(23);
        for side in SIDES {
            for transform in TRANSFORMS {
                let config = (
                    side,
                    6,
                    Order::Reverse,
                    transform,
                    Activation::Silu,
                    &[16, 12][..],
                );
                let a = random_layer(config, &mut r);
                for inverse in DIRECTIONS {
                    let (y, x_bar, w) = random_backward_inputs(1000, 6, &mut r);
                    let (grad_whole, pg_whole) = backward(&a, &y, &x_bar, &w, inverse);
                    let mut grad_pieces = x_bar.clone();
                    let mut pg_pieces = vec![0.0; a.param_len()];
                    let mut ws = Workspace::default();
                    for start in (0..1000).step_by(256) {
                        let end = (start + 256).min(1000);
                        backward_block(
                            &a,
                            inverse,
                            y.slice(s![start..end, ..]),
                            grad_pieces.slice_mut(s![start..end, ..]),
                            w.slice(s![start..end]),
                            &mut pg_pieces,
                            &mut ws,
                        );
                    }
                    for (p, q) in grad_whole.iter().zip(&grad_pieces) {
                        assert!(close(*p, *q, 1e-13), "{config:?}: {p} vs {q}");
                    }
                    for (p, q) in pg_whole.iter().zip(&pg_pieces) {
                        assert!(close(*p, *q, 1e-11), "{config:?}: {p} vs {q}");
                    }
                }
            }
        }
    }

    #[test]
    fn backward_works_on_non_contiguous_blocks() {
        let mut r = rng(24);
        for side in SIDES {
            let config = (
                side,
                4,
                Order::Seeded(8),
                CouplingTransform::Affine,
                Activation::Elu,
                &[6, 5][..],
            );
            let a = random_layer(config, &mut r);
            for inverse in DIRECTIONS {
                let (y, x_bar, w) = random_backward_inputs(30, 4, &mut r);
                let (grad, pg) = backward(&a, &y, &x_bar, &w, inverse);
                let mut tall = Array2::zeros((60, 4));
                tall.slice_mut(s![..;2, ..]).assign(&y);
                let mut w_tall = Array1::zeros(60);
                w_tall.slice_mut(s![..;2]).assign(&w);
                let mut fortran = Array2::zeros((30, 4).f());
                fortran.assign(&x_bar);
                let mut pg_strided = vec![0.0; a.param_len()];
                backward_block(
                    &a,
                    inverse,
                    tall.slice(s![..;2, ..]),
                    fortran.view_mut(),
                    w_tall.slice(s![..;2]),
                    &mut pg_strided,
                    &mut Workspace::default(),
                );
                assert_eq!(fortran, grad);
                for (p, q) in pg_strided.iter().zip(&pg) {
                    assert!(close(*p, *q, 1e-13), "{p} vs {q}");
                }
            }
        }
    }

    #[test]
    fn backward_works_in_f32() {
        let mut r = rng(25);
        for side in SIDES {
            for transform in TRANSFORMS {
                let config = (
                    side,
                    5,
                    Order::Natural,
                    transform,
                    Activation::Silu,
                    &[8, 6][..],
                );
                let a64 = random_layer(config, &mut r);
                let a32 = to_f32(&a64, config, &mut r);
                for inverse in DIRECTIONS {
                    let (y, x_bar, w) = random_backward_inputs(40, 5, &mut r);
                    let (grad, pg) = backward(&a64, &y, &x_bar, &w, inverse);
                    let mut grad32 = x_bar.mapv(|v| v as f32);
                    let mut pg32 = vec![0f32; a32.param_len()];
                    backward_block(
                        &a32,
                        inverse,
                        y.mapv(|v| v as f32).view(),
                        grad32.view_mut(),
                        w.mapv(|v| v as f32).view(),
                        &mut pg32,
                        &mut Workspace::default(),
                    );
                    for (p, q) in grad32
                        .iter()
                        .zip(&grad)
                        .map(|(p, q)| (*p as f64, *q))
                        .chain(pg32.iter().zip(&pg).map(|(p, q)| (*p as f64, *q)))
                    {
                        assert!(
                            close(p, q, 1e-3),
                            "{config:?} inverse={inverse}: {p} vs {q}"
                        );
                    }
                }
            }
        }
    }
}
