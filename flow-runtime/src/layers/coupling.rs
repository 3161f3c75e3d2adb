//! Coupling layers (RealNVP, NICE, neural spline flows): the kept coordinates pass through
//! unchanged and feed a conditioner MLP whose outputs transform the others.

use std::borrow::Cow;

use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};
use rand::Rng;

use crate::float::Float;
use crate::layers::Layer;
use crate::layers::spline::{
    params_per_coordinate, rq_forward, rq_forward_backward, rq_inverse, rq_inverse_backward,
};
pub use crate::nets::Activation;
use crate::nets::{Mlp, MlpTape};
use crate::workspace::Workspace;

/// Which coordinates a coupling keeps (passes through and conditions on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mask<'a> {
    /// Keeps coordinates 0, 2, 4, …
    Even,
    /// Keeps coordinates 1, 3, 5, …
    Odd,
    /// Keeps coordinates `0..⌈dim/2⌉`.
    FirstHalf,
    /// Keeps coordinates `⌈dim/2⌉..dim`.
    SecondHalf,
    /// Keeps the coordinates marked `true` (length `dim`).
    Explicit(&'a [bool]),
}

impl Mask<'_> {
    /// `kept[j]` for `j in 0..dim`.
    pub fn kept(&self, dim: usize) -> Vec<bool> {
        let half = dim.div_ceil(2);
        (0..dim)
            .map(|j| match self {
                Mask::Even => j % 2 == 0,
                Mask::Odd => j % 2 == 1,
                Mask::FirstHalf => j < half,
                Mask::SecondHalf => j >= half,
                Mask::Explicit(m) => m[j],
            })
            .collect()
    }
}

/// How the transformed coordinates are changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CouplingTransform {
    /// RealNVP's affine map, written in the density direction (data → base), where training
    /// runs: `x = y·exp(s) + t`, so towards the data `y = (x − t)·exp(−s)`; the log-scale
    /// `s = raw/(1 + |raw|/C)` is bounded. (Scale-then-shift in the density direction, as zuko
    /// does, trains markedly better than shift-then-scale: measured on two moons.)
    Affine,
    /// `y = x + t`, volume preserving (NICE).
    Additive,
    /// A rational-quadratic spline of `bins` bins on `[−bound, bound]` per transformed
    /// coordinate, the identity outside (Durkan et al. 2019; see
    /// [`crate::layers::spline`]): towards the data `y = RQ(x)`, towards the base its
    /// inverse. The conditioner gives each transformed coordinate `3·bins − 1` raw
    /// parameters. Needs `1 ≤ bins < 1000` and a positive finite `bound`.
    Spline {
        /// The number of bins `K`.
        bins: usize,
        /// The half-width `B` of the interval the spline acts on.
        bound: f64,
    },
}

impl CouplingTransform {
    /// The conditioner outputs per transformed coordinate: 2 (affine), 1 (additive),
    /// `3·bins − 1` (spline).
    pub fn outputs_per_coordinate(&self) -> usize {
        match *self {
            CouplingTransform::Affine => 2,
            CouplingTransform::Additive => 1,
            CouplingTransform::Spline { bins, .. } => params_per_coordinate(bins),
        }
    }
}

/// A coupling layer.
///
/// The kept coordinates pass through unchanged and are the conditioner's input (in
/// increasing index order); the transformed ones (also in increasing order, `m` of them)
/// become, towards the data:
///
/// * affine: `y_i = (x_i − t_i)·exp(−s_i)`, i.e. `x_i = y_i·exp(s_i) + t_i` towards the
///   base, forward log-det `−Σ s_i`. The conditioner's outputs `0..m` are the shifts `t_i`,
///   outputs `m..2m` the raw log-scales, bounded as `s_i = raw_i/(1 + |raw_i|/C)` with
///   `C =` [`LOG_SCALE_BOUND`] (= ln 1000: a coupling's slope stays within [1e-3, 1e3]);
/// * additive: `y_i = x_i + t_i` (log-det 0), the outputs `0..m` being the shifts;
/// * spline: `y_i = RQ_i(x_i)`, a rational-quadratic spline of `K` bins on `[−B, B]`
///   ([`rq_forward`]; its inverse [`rq_inverse`] towards the base). Coordinate-major
///   outputs: `P = 3K − 1` per transformed coordinate, outputs `i·P..(i + 1)·P` being
///   those of the `i`-th transformed coordinate in the layout of [`rq_forward`] (`K` raw
///   widths, `K` raw heights, `K − 1` raw interior derivatives).
///
/// The conditioner's last layer starts at zero, so a fresh coupling is the identity (for
/// the spline: uniform bins, derivative 1, to rounding).
#[derive(Debug, Clone, PartialEq)]
pub struct Coupling<F> {
    kept: Vec<usize>,
    transformed: Vec<usize>,
    transform: CouplingTransform,
    /// The conditioner: kept coordinates → the transform's raw parameters of the
    /// transformed ones (layout in the type's docs).
    pub net: Mlp<F>,
}

/// The bound `C` of the affine log-scale: `s = raw/(1 + |raw|/C)`, so `|s| < C` and one bad
/// step cannot overflow `exp(s)`.
pub const LOG_SCALE_BOUND: f64 = 6.9;

/// The bounded log-scale `raw / (1 + |raw|/C)` of a raw conditioner output (a soft clip to
/// (−C, C) whose slope decays like 1/raw², not exponentially as `C·tanh(raw/C)` would, so
/// a large raw output still gets a gradient; zuko bounds its affine layers the same way).
#[inline(always)]
pub(crate) fn bounded_log_scale<F: Float>(raw: F) -> F {
    raw / (F::one() + (raw / F::of(LOG_SCALE_BOUND)).abs())
}

/// `d bounded_log_scale / d raw = 1 / (1 + |raw|/C)²`.
#[inline(always)]
pub(crate) fn bounded_log_scale_slope<F: Float>(raw: F) -> F {
    let q = F::one() + (raw / F::of(LOG_SCALE_BOUND)).abs();
    F::one() / (q * q)
}

/// The log-det of one affine step, `±s` (`s` the bounded log-scale of `raw`): `s` towards
/// the base (`inverse`), `−s` towards the data.
#[inline(always)]
pub(crate) fn affine_log_det<F: Float>(inverse: bool, raw: F) -> F {
    let s = bounded_log_scale(raw);
    if inverse { s } else { -s }
}

/// The factor of one affine step, `exp(±s)`: a branch-free exponential, so that a loop
/// over many raw log-scales vectorises.
#[inline(always)]
pub(crate) fn affine_scale<F: Float>(inverse: bool, raw: F) -> F {
    crate::fastmath::exp(affine_log_det(inverse, raw))
}

/// One affine step on a transformed coordinate from its shift `t` and its factor
/// `e =` [`affine_scale`]: `v·e + t` towards the base, `(v − t)·e` towards the data.
#[inline(always)]
pub(crate) fn affine_apply<F: Float>(inverse: bool, v: F, t: F, e: F) -> F {
    if inverse { v * e + t } else { (v - t) * e }
}

/// For each row of `out` (`n_out` values: `m` shifts, then `m` raw log-scales): adds the
/// log-dets [`affine_log_det`] to the row's `log_det` (in order, as [`affine_step`] does)
/// and replaces the raw log-scales by the factors [`affine_scale`]. The same values as
/// [`affine_step`], in passes that vectorise (compiled for AVX2 where the processor has
/// it; the arithmetic is the same either way).
fn affine_factors<F: Float>(
    out: &mut [F],
    n_out: usize,
    m: usize,
    log_det: ArrayViewMut1<'_, F>,
    inverse: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if crate::nets::has_avx2_fma() {
        // SAFETY: the processor has the features `affine_factors_avx2` is compiled for.
        unsafe { affine_factors_avx2(out, n_out, m, log_det, inverse) };
        return;
    }
    affine_factors_with(out, n_out, m, log_det, inverse);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn affine_factors_avx2<F: Float>(
    out: &mut [F],
    n_out: usize,
    m: usize,
    log_det: ArrayViewMut1<'_, F>,
    inverse: bool,
) {
    affine_factors_with(out, n_out, m, log_det, inverse);
}

#[inline(always)]
fn affine_factors_with<F: Float>(
    out: &mut [F],
    n_out: usize,
    m: usize,
    mut log_det: ArrayViewMut1<'_, F>,
    inverse: bool,
) {
    if let (1, Some(log_det)) = (m, log_det.as_slice_mut()) {
        // One transformed coordinate (a coupling on 2 coordinates): one pass whose loop
        // runs across rows and vectorises, the sum started from zero as below.
        for (o, ld) in out.chunks_exact_mut(2).zip(log_det) {
            let l = affine_log_det(inverse, o[1]);
            *ld += F::zero() + l;
            o[1] = crate::fastmath::exp(l);
        }
        return;
    }
    for o in out.chunks_exact_mut(n_out) {
        for raw in &mut o[m..] {
            *raw = affine_log_det(inverse, *raw);
        }
    }
    for (o, ld) in out.chunks_exact(n_out).zip(log_det.iter_mut()) {
        let mut acc = F::zero();
        for &l in &o[m..] {
            acc += l;
        }
        *ld += acc;
    }
    for o in out.chunks_exact_mut(n_out) {
        for l in &mut o[m..] {
            *l = crate::fastmath::exp(*l);
        }
    }
}

/// One affine step on a transformed coordinate: `(new value, log-det)` from the shift `t`
/// and the raw log-scale (the arithmetic of the batch kernel, one value at a time).
#[inline(always)]
pub(crate) fn affine_step<F: Float>(inverse: bool, v: F, t: F, raw: F) -> (F, F) {
    let e = affine_scale(inverse, raw);
    (affine_apply(inverse, v, t, e), affine_log_det(inverse, raw))
}

/// `"net.{l}.weight"` / `"net.{l}.bias"` for the first [`NAMED_LAYERS`] conditioner
/// layers, so visiting parameters does not allocate.
macro_rules! param_names {
    ($($l:literal)*) => {
        [$([concat!("net.", $l, ".weight"), concat!("net.", $l, ".bias")]),*]
    };
}

/// How many conditioner layers have a static parameter name.
const NAMED_LAYERS: usize = 16;

static PARAM_NAMES: [[&str; 2]; NAMED_LAYERS] =
    param_names!("0" "1" "2" "3" "4" "5" "6" "7" "8" "9" "10" "11" "12" "13" "14" "15");

/// The name of tensor `kind` (`"weight"` or `"bias"`) of conditioner layer `l`: static for
/// the first [`NAMED_LAYERS`] layers, formatted (allocating) beyond.
pub(crate) fn param_name(l: usize, kind: &'static str) -> Cow<'static, str> {
    match (PARAM_NAMES.get(l), kind) {
        (Some([weight, _]), "weight") => Cow::Borrowed(weight),
        (Some([_, bias]), "bias") => Cow::Borrowed(bias),
        _ => Cow::Owned(format!("net.{l}.{kind}")),
    }
}

impl<F: Float> Coupling<F> {
    /// A coupling on `dim` coordinates that starts as the identity (last layer zero).
    /// Panics if the mask keeps or transforms nothing; `flow!` checks that at compile time.
    pub fn new<R: Rng + ?Sized>(
        dim: usize,
        mask: Mask<'_>,
        transform: CouplingTransform,
        hidden: &[usize],
        activation: Activation,
        rng: &mut R,
    ) -> Self {
        if let Mask::Explicit(m) = mask {
            assert_eq!(
                m.len(),
                dim,
                "coupling: the explicit mask has length {} but dim = {dim}",
                m.len()
            );
        }
        let is_kept = mask.kept(dim);
        let kept: Vec<usize> = (0..dim).filter(|&j| is_kept[j]).collect();
        let transformed: Vec<usize> = (0..dim).filter(|&j| !is_kept[j]).collect();
        assert!(
            !kept.is_empty(),
            "coupling: mask {mask:?} on dim = {dim} keeps no coordinate, so the conditioner \
             has no input; use a mask that keeps at least one coordinate"
        );
        assert!(
            !transformed.is_empty(),
            "coupling: mask {mask:?} on dim = {dim} transforms no coordinate, so the layer \
             is the identity; use a mask that leaves at least one coordinate to transform"
        );
        if let CouplingTransform::Spline { bins, bound } = transform {
            assert!(
                (1..1000).contains(&bins),
                "coupling: spline bins = {bins}, expected 1 ≤ bins < 1000"
            );
            assert!(
                bound > 0.0 && bound.is_finite(),
                "coupling: spline bound = {bound}, expected a positive finite value"
            );
        }
        let n_out = transformed.len() * transform.outputs_per_coordinate();
        let net = Mlp::new(kept.len(), hidden, n_out, activation, rng);
        Self {
            kept,
            transformed,
            transform,
            net,
        }
    }

    /// The kept coordinates (passed through, the conditioner's input), increasing.
    pub fn kept(&self) -> &[usize] {
        &self.kept
    }

    /// The transformed coordinates, increasing.
    pub fn transformed(&self) -> &[usize] {
        &self.transformed
    }

    /// Affine, additive or spline.
    pub fn transform(&self) -> CouplingTransform {
        self.transform
    }

    /// The number of coordinates.
    pub fn dim(&self) -> usize {
        self.kept.len() + self.transformed.len()
    }

    /// The batch kernel of both directions: gathers the kept columns into workspace
    /// buffer 0, runs the conditioner (hidden scratch in buffers 1 and 2, outputs in
    /// buffer 3), then updates the transformed columns row by row.
    fn block(
        &self,
        mut x: ArrayViewMut2<'_, F>,
        mut log_det: ArrayViewMut1<'_, F>,
        ws: &mut Workspace<F>,
        inverse: bool,
    ) {
        let rows = x.nrows();
        assert_eq!(
            x.ncols(),
            self.dim(),
            "coupling: block has the wrong number of columns"
        );
        assert_eq!(
            log_det.len(),
            rows,
            "coupling: log_det has the wrong length"
        );
        if rows == 0 {
            return;
        }
        let k = self.kept.len();
        let m = self.transformed.len();
        let n_out = self.net.outputs();
        let [cond, hidden_a, hidden_b, out] = ws.slices([
            rows * k,
            rows * self.net.max_hidden(),
            self.net.hidden_b_len(rows),
            rows * n_out,
        ]);

        self.gather_kept(x.view(), cond);
        let input = ArrayView2::from_shape((rows, k), &*cond).expect("workspace buffer 0");
        let outputs =
            ArrayViewMut2::from_shape((rows, n_out), &mut *out).expect("workspace buffer 3");
        self.net.forward_block(input, outputs, hidden_a, hidden_b);

        if let CouplingTransform::Spline { bound, .. } = self.transform {
            let bound = F::of(bound);
            let out = &*out;
            let spline_rows = log_det.iter_mut().zip(out.chunks_exact(n_out));
            match x.as_slice_mut() {
                Some(x) => {
                    for (row, (ld, o)) in x.chunks_exact_mut(self.dim()).zip(spline_rows) {
                        *ld += self.spline_update(row, &self.transformed, o, bound, inverse);
                    }
                }
                None => {
                    for (mut row, (ld, o)) in x.rows_mut().into_iter().zip(spline_rows) {
                        *ld += self.spline_update(&mut row, &self.transformed, o, bound, inverse);
                    }
                }
            }
            return;
        }
        if self.transform == CouplingTransform::Affine {
            affine_factors(out, n_out, m, log_det.view_mut(), inverse);
        }
        match x.as_slice_mut() {
            Some(x) => {
                for (row, o) in x.chunks_exact_mut(self.dim()).zip(out.chunks_exact(n_out)) {
                    self.update_row(row, o, inverse);
                }
            }
            None => {
                for (mut row, o) in x.rows_mut().into_iter().zip(out.chunks_exact(n_out)) {
                    self.update_row(&mut row, o, inverse);
                }
            }
        }
    }

    /// Applies the splines of the coordinates `transformed` of one row (towards the base
    /// when `inverse`) from their raw parameters `o` (`3K − 1` per coordinate, in order);
    /// returns the sum of their log-dets, added in order from zero.
    #[inline(always)]
    fn spline_update<R>(
        &self,
        row: &mut R,
        transformed: &[usize],
        o: &[F],
        bound: F,
        inverse: bool,
    ) -> F
    where
        R: std::ops::IndexMut<usize, Output = F> + ?Sized,
    {
        let p = self.transform.outputs_per_coordinate();
        let mut acc = F::zero();
        for (&c, raw) in transformed.iter().zip(o.chunks_exact(p)) {
            let (v, l) = if inverse {
                rq_inverse(raw, bound, row[c])
            } else {
                rq_forward(raw, bound, row[c])
            };
            row[c] = v;
            acc += l;
        }
        acc
    }

    /// Updates the transformed coordinates of one row from the conditioner's outputs
    /// `o`: the shifts, then (affine) the factors [`affine_scale`].
    #[inline(always)]
    fn update_row<R>(&self, row: &mut R, o: &[F], inverse: bool)
    where
        R: std::ops::IndexMut<usize, Output = F> + ?Sized,
    {
        let m = self.transformed.len();
        let (shift, scale) = o.split_at(m);
        match self.transform {
            CouplingTransform::Additive => {
                for (&c, &t) in self.transformed.iter().zip(shift) {
                    if inverse {
                        row[c] -= t;
                    } else {
                        row[c] += t;
                    }
                }
            }
            CouplingTransform::Affine => {
                for ((&c, &t), &e) in self.transformed.iter().zip(shift).zip(scale) {
                    row[c] = affine_apply(inverse, row[c], t, e);
                }
            }
            CouplingTransform::Spline { .. } => unreachable!("splines use spline_update"),
        }
    }

    /// Reverse mode through [`Coupling::block`] towards the base when `inverse` (see
    /// [`Layer::inverse_backward_block`]; `y` is the inverse's input), else towards the
    /// data (see [`Layer::forward_backward_block`]; `y` is the forward's input). The kept
    /// columns are the same on both sides, so either way it is one conditioner pass and
    /// its backward. Workspace buffers: 0 the kept columns of `y` (the conditioner's
    /// input), 1 and 2 the conditioner's tape (pre-activations and activations of its
    /// hidden layers), 3 its outputs and then (affine, additive) their gradients, 4 the
    /// conditioner's backward scratch, 5 the gradient of its input, 6 (spline only) the
    /// gradients of its outputs.
    fn backward(
        &self,
        y: ArrayView2<'_, F>,
        mut grad: ArrayViewMut2<'_, F>,
        weight: ArrayView1<'_, F>,
        param_grad: &mut [F],
        ws: &mut Workspace<F>,
        inverse: bool,
    ) {
        let rows = y.nrows();
        assert_eq!(
            y.ncols(),
            self.dim(),
            "coupling: block has the wrong number of columns"
        );
        assert_eq!(
            grad.dim(),
            y.dim(),
            "coupling: the gradient block has the wrong shape"
        );
        assert_eq!(weight.len(), rows, "coupling: weight has the wrong length");
        assert_eq!(
            param_grad.len(),
            self.net.param_len(),
            "coupling: param_grad has the wrong length"
        );
        if rows == 0 {
            return;
        }
        let k = self.kept.len();
        let m = self.transformed.len();
        let n_out = self.net.outputs();
        let tape_len = rows * self.net.hidden_total();
        let spline = matches!(self.transform, CouplingTransform::Spline { .. });
        let [cond, pre, post, out, scratch, cond_grad, spline_grad] = ws.slices([
            rows * k,
            tape_len,
            tape_len,
            rows * n_out,
            rows * self.net.max_hidden(),
            rows * k,
            if spline { rows * n_out } else { 0 },
        ]);
        self.gather_kept(y, cond);
        let input = ArrayView2::from_shape((rows, k), &*cond).expect("workspace buffer 0");
        let mut tape = MlpTape { pre, post };
        self.net.forward_block_tape(
            input,
            ArrayViewMut2::from_shape((rows, n_out), &mut *out).expect("workspace buffer 3"),
            &mut tape,
        );

        // ∂J/∂(conditioner outputs) into `out`, ∂J/∂y of the transformed columns in `grad`
        // (the comments name the inverse's variables, `y → x`; towards the data it is
        // `y → (the forward's output)`).
        let rows_iter = y
            .rows()
            .into_iter()
            .zip(grad.rows_mut())
            .zip(&weight)
            .zip(out.chunks_exact_mut(n_out));
        match self.transform {
            CouplingTransform::Additive => {
                // x = y − t: ∂J/∂y = x̄, ∂J/∂t = −x̄ (towards the data, y + t: ∂J/∂t = x̄).
                for (((_, g), _), o) in rows_iter {
                    for (&c, t_bar) in self.transformed.iter().zip(o) {
                        *t_bar = if inverse { -g[c] } else { g[c] };
                    }
                }
            }
            CouplingTransform::Affine if !inverse => {
                // Towards the data u = (y − t)·e^{−s}, log-det −Σ s: ∂J/∂y = ū·e^{−s},
                // ∂J/∂t = −ū·e^{−s}, ∂J/∂s = −(ū·u + w), ∂J/∂raw = ∂J/∂s / (1 + |raw|/C)².
                for (((y_row, mut g), &w), o) in rows_iter {
                    let (shift, raw) = o.split_at_mut(m);
                    for ((&c, t), r) in self.transformed.iter().zip(shift).zip(raw) {
                        let e = affine_scale(false, *r);
                        let u_bar = g[c];
                        let u = affine_apply(false, y_row[c], *t, e);
                        g[c] = u_bar * e;
                        *t = -g[c];
                        *r = -(u_bar * u + w) * bounded_log_scale_slope(*r);
                    }
                }
            }
            CouplingTransform::Affine => {
                // x = y·e^{s} + t, log-det Σ s, s = raw/(1 + |raw|/C):
                // ∂J/∂y = x̄·e^{s}, ∂J/∂t = x̄, ∂J/∂s = x̄·y·e^{s} + w,
                // ∂J/∂raw = ∂J/∂s / (1 + |raw|/C)².
                for (((y_row, mut g), &w), o) in rows_iter {
                    let (shift, raw) = o.split_at_mut(m);
                    for ((&c, t), r) in self.transformed.iter().zip(shift).zip(raw) {
                        let e = affine_scale(true, *r);
                        let x_bar = g[c];
                        let ye = y_row[c] * e;
                        g[c] = x_bar * e;
                        *t = x_bar;
                        *r = (x_bar * ye + w) * bounded_log_scale_slope(*r);
                    }
                }
            }
            CouplingTransform::Spline { bound, .. } => {
                // Each coordinate's kernel: ∂J/∂y from x̄ = ∂J/∂x, ∂J/∂raw into buffer 6.
                let bound = F::of(bound);
                let p = self.transform.outputs_per_coordinate();
                spline_grad.fill(F::zero());
                for ((((y_row, mut g), &w), o), og) in
                    rows_iter.zip(spline_grad.chunks_exact_mut(n_out))
                {
                    let params = self.transformed.iter().zip(o.chunks_exact(p));
                    for ((&c, raw), raw_grad) in params.zip(og.chunks_exact_mut(p)) {
                        g[c] = if inverse {
                            rq_inverse_backward(raw, bound, y_row[c], g[c], w, raw_grad)
                        } else {
                            rq_forward_backward(raw, bound, y_row[c], g[c], w, raw_grad)
                        };
                    }
                }
            }
        }

        let out_grad = if spline { &*spline_grad } else { &*out };
        let out_grad =
            ArrayView2::from_shape((rows, n_out), out_grad).expect("workspace buffer 3 or 6");
        let input_grad =
            ArrayViewMut2::from_shape((rows, k), &mut *cond_grad).expect("workspace buffer 5");
        self.net
            .backward_block(input, &mut tape, out_grad, input_grad, param_grad, scratch);

        // The kept columns of x are those of y: add the conditioner's input gradient.
        for (mut g, src) in grad.rows_mut().into_iter().zip(cond_grad.chunks_exact(k)) {
            for (&c, &d) in self.kept.iter().zip(src) {
                g[c] += d;
            }
        }
    }

    /// Copies the kept columns of `x` into `dst` (row-major `rows × kept`).
    fn gather_kept(&self, x: ArrayView2<'_, F>, dst: &mut [F]) {
        let k = self.kept.len();
        match x.to_slice() {
            Some(x) => {
                for (row, dst) in x.chunks_exact(self.dim()).zip(dst.chunks_exact_mut(k)) {
                    for (d, &c) in dst.iter_mut().zip(&self.kept) {
                        *d = row[c];
                    }
                }
            }
            None => {
                for (row, dst) in x.rows().into_iter().zip(dst.chunks_exact_mut(k)) {
                    for (d, &c) in dst.iter_mut().zip(&self.kept) {
                        *d = row[c];
                    }
                }
            }
        }
    }

    /// The point kernel of both directions, without the heap.
    fn point(&self, x: &mut [F], scratch: &mut [F], inverse: bool) -> F {
        assert_eq!(
            x.len(),
            self.dim(),
            "coupling: point has the wrong dimension"
        );
        assert!(
            scratch.len() >= self.point_scratch(),
            "coupling: point scratch of {} elements, {} needed",
            scratch.len(),
            self.point_scratch()
        );
        let kept = &self.kept;
        let m = self.transformed.len();
        let n_out = self.net.outputs();
        let (scratch, raw_buf) = scratch.split_at_mut(self.net.point_scratch());
        let hidden = self.net.hidden_point(|j| x[kept[j]], scratch);
        let no_hidden = self.net.layers.len() == 1;
        // Conditioner outputs `first..first + out.len()`; with no hidden layer they read the
        // kept coordinates, which the update never modifies.
        let outputs = |x: &[F], first: usize, out: &mut [F]| {
            if no_hidden {
                self.net.output_point(|j| x[kept[j]], first, out);
            } else {
                self.net.output_point(|j| hidden[j], first, out);
            }
        };
        if let CouplingTransform::Spline { bound, .. } = self.transform {
            // One coordinate's raw parameters at a time, in the scratch after the
            // conditioner's: the same kernels, in the same order, as the batch path.
            let p = self.transform.outputs_per_coordinate();
            let raw = &mut raw_buf[..p];
            let mut acc = F::zero();
            for (i, c) in self.transformed.iter().enumerate() {
                outputs(x, i * p, raw);
                acc += self.spline_update(x, std::slice::from_ref(c), raw, F::of(bound), inverse);
            }
            return acc;
        }
        let mut buf = [F::zero(); 2 * POINT_CHUNK];
        let mut acc = F::zero();
        if n_out <= buf.len() {
            // All outputs in one pass over the weights.
            let out = &mut buf[..n_out];
            outputs(x, 0, out);
            let (shift, raw) = out.split_at(m);
            self.update_point(x, &self.transformed, shift, raw, inverse, &mut acc);
        } else {
            // A window of shifts (and their log-scales) at a time, in stack memory.
            let (shift, raw) = buf.split_at_mut(POINT_CHUNK);
            for start in (0..m).step_by(POINT_CHUNK) {
                let len = POINT_CHUNK.min(m - start);
                let (shift, raw) = (&mut shift[..len], &mut raw[..len]);
                outputs(x, start, shift);
                let raw: &[F] = match self.transform {
                    CouplingTransform::Affine => {
                        outputs(x, m + start, raw);
                        raw
                    }
                    CouplingTransform::Additive => &[],
                    CouplingTransform::Spline { .. } => unreachable!("splines return above"),
                };
                let transformed = &self.transformed[start..start + len];
                self.update_point(x, transformed, shift, raw, inverse, &mut acc);
            }
        }
        acc
    }

    /// Updates the coordinates `transformed` of `x` from their shifts and (affine) raw
    /// log-scales, adding their log-dets to `acc` in order (as the batch kernel does).
    #[inline(always)]
    fn update_point(
        &self,
        x: &mut [F],
        transformed: &[usize],
        shift: &[F],
        raw: &[F],
        inverse: bool,
        acc: &mut F,
    ) {
        match self.transform {
            CouplingTransform::Additive => {
                for (&c, &t) in transformed.iter().zip(shift) {
                    if inverse {
                        x[c] -= t;
                    } else {
                        x[c] += t;
                    }
                }
            }
            CouplingTransform::Affine => {
                for ((&c, &t), &r) in transformed.iter().zip(shift).zip(raw) {
                    let (v, l) = affine_step(inverse, x[c], t, r);
                    x[c] = v;
                    *acc += l;
                }
            }
            CouplingTransform::Spline { .. } => unreachable!("splines use spline_update"),
        }
    }
}

/// Transformed coordinates whose conditioner outputs the point kernel computes per pass
/// (a stack buffer of twice this many values: shifts and log-scales).
const POINT_CHUNK: usize = 32;

impl<F: Float> Layer<F> for Coupling<F> {
    /// Recomputes the conditioner from the kept columns of `y` (they are its input),
    /// keeping its hidden values in the workspace, then backpropagates through the
    /// transform and the conditioner. Allocates nothing once the workspace has grown.
    fn inverse_backward_block(
        &self,
        y: ArrayView2<'_, F>,
        grad: ArrayViewMut2<'_, F>,
        weight: ArrayView1<'_, F>,
        param_grad: &mut [F],
        ws: &mut Workspace<F>,
    ) {
        self.backward(y, grad, weight, param_grad, ws, true);
    }
    /// Recomputes the conditioner from the kept columns of `z` (the same in the forward's
    /// output), then backpropagates through the transform towards the data and the
    /// conditioner, as [`Layer::inverse_backward_block`] does. Allocates nothing once the
    /// workspace has grown.
    fn forward_backward_block(
        &self,
        z: ArrayView2<'_, F>,
        grad: ArrayViewMut2<'_, F>,
        weight: ArrayView1<'_, F>,
        param_grad: &mut [F],
        ws: &mut Workspace<F>,
    ) {
        self.backward(z, grad, weight, param_grad, ws, false);
    }
    /// Every weight and bias of the conditioner.
    fn param_len(&self) -> usize {
        self.net.param_len()
    }
    /// `net.0.weight` (shape `[inputs, outputs]`, row-major), `net.0.bias` (`[outputs]`),
    /// `net.1.weight`, … in the conditioner's layer order.
    fn visit_params(&self, visit: &mut dyn FnMut(&str, &[usize], &[F])) {
        self.net
            .visit_params(|l, kind, shape, values| visit(&param_name(l, kind), shape, values));
    }
    fn visit_params_mut(&mut self, visit: &mut dyn FnMut(&str, &[usize], &mut [F])) {
        self.net
            .visit_params_mut(|l, kind, shape, values| visit(&param_name(l, kind), shape, values));
    }
    fn kind(&self) -> &'static str {
        "coupling"
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
    /// The conditioner's [`Mlp::point_scratch`] (at most the sum of the two largest hidden
    /// widths), plus for a spline one coordinate's `3K − 1` raw parameters: independent of
    /// `dim`.
    fn point_scratch(&self) -> usize {
        let spline = match self.transform {
            CouplingTransform::Spline { bins, .. } => params_per_coordinate(bins),
            _ => 0,
        };
        self.net.point_scratch() + spline
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::checks::{
        Direction, all_entries, backward, check_input_gradient, check_param_gradient, flat_params,
    };
    use crate::testing::log_abs_det_fd;
    use ndarray::{Array1, Array2, ShapeBuilder, s};
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    const ACTIVATIONS: [Activation; 4] = [
        Activation::Relu,
        Activation::Tanh,
        Activation::Elu,
        Activation::Silu,
    ];
    /// A spline on [−1.5, 1.5]: the test points (in [−2, 2]) also reach its identity tails.
    const SPLINE: CouplingTransform = CouplingTransform::Spline {
        bins: 5,
        bound: 1.5,
    };
    /// A two-bin spline on [−3, 3], every test point inside.
    const SPLINE_2: CouplingTransform = CouplingTransform::Spline {
        bins: 2,
        bound: 3.0,
    };
    const TRANSFORMS: [CouplingTransform; 4] = [
        CouplingTransform::Affine,
        CouplingTransform::Additive,
        SPLINE,
        SPLINE_2,
    ];

    fn is_spline(transform: CouplingTransform) -> bool {
        matches!(transform, CouplingTransform::Spline { .. })
    }
    const HIDDEN: [&[usize]; 3] = [&[], &[8], &[8, 6, 5]];
    const EXPLICIT_2: [bool; 2] = [false, true];
    const EXPLICIT_5: [bool; 5] = [true, false, false, true, false];

    fn rng(seed: u64) -> StdRng {
        StdRng::seed_from_u64(seed)
    }

    fn masks(dim: usize) -> [Mask<'static>; 5] {
        let explicit: &'static [bool] = if dim == 2 { &EXPLICIT_2 } else { &EXPLICIT_5 };
        [
            Mask::Even,
            Mask::Odd,
            Mask::FirstHalf,
            Mask::SecondHalf,
            Mask::Explicit(explicit),
        ]
    }

    /// Every coupling configuration the tests sweep: dims, masks, transforms, activations
    /// and hidden shapes.
    fn configs() -> Vec<(
        usize,
        Mask<'static>,
        CouplingTransform,
        Activation,
        &'static [usize],
    )> {
        let mut out = Vec::new();
        for dim in [2, 5] {
            for mask in masks(dim) {
                for transform in TRANSFORMS {
                    for activation in ACTIVATIONS {
                        for hidden in HIDDEN {
                            out.push((dim, mask, transform, activation, hidden));
                        }
                    }
                }
            }
        }
        out
    }

    /// Fills every weight and bias of the conditioner (the last layer included) with
    /// random values of size ~0.5.
    fn randomise(net: &mut Mlp<f64>, rng: &mut StdRng) {
        for layer in &mut net.layers {
            layer
                .weight
                .mapv_inplace(|_| 0.5 * f64::standard_normal(rng));
            layer.bias.mapv_inplace(|_| 0.5 * f64::standard_normal(rng));
        }
    }

    fn random_coupling(
        (dim, mask, transform, activation, hidden): (
            usize,
            Mask<'static>,
            CouplingTransform,
            Activation,
            &'static [usize],
        ),
        rng: &mut StdRng,
    ) -> Coupling<f64> {
        let mut c = Coupling::new(dim, mask, transform, hidden, activation, rng);
        randomise(&mut c.net, rng);
        c
    }

    fn random_rows(rows: usize, dim: usize, rng: &mut StdRng) -> Array2<f64> {
        Array2::from_shape_simple_fn((rows, dim), || rng.random_range(-2.0..2.0))
    }

    fn forward(c: &Coupling<f64>, x: &Array2<f64>) -> (Array2<f64>, Array1<f64>) {
        let mut y = x.clone();
        let mut ld = Array1::zeros(x.nrows());
        c.forward_block(y.view_mut(), ld.view_mut(), &mut Workspace::default());
        (y, ld)
    }

    fn inverse(c: &Coupling<f64>, y: &Array2<f64>) -> (Array2<f64>, Array1<f64>) {
        let mut x = y.clone();
        let mut ld = Array1::zeros(y.nrows());
        c.inverse_block(x.view_mut(), ld.view_mut(), &mut Workspace::default());
        (x, ld)
    }

    fn point_forward(c: &Coupling<f64>, x: &[f64]) -> (Vec<f64>, f64) {
        let mut y = x.to_vec();
        let mut scratch = vec![f64::NAN; c.point_scratch()];
        let ld = c.forward_point(&mut y, &mut scratch);
        (y, ld)
    }

    fn point_inverse(c: &Coupling<f64>, y: &[f64]) -> (Vec<f64>, f64) {
        let mut x = y.to_vec();
        let mut scratch = vec![f64::NAN; c.point_scratch()];
        let ld = c.inverse_point(&mut x, &mut scratch);
        (x, ld)
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
    }

    #[test]
    fn kept_and_transformed_follow_the_mask() {
        let mut r = rng(0);
        let cases: [(Mask<'_>, &[usize], &[usize]); 5] = [
            (Mask::Even, &[0, 2, 4], &[1, 3]),
            (Mask::Odd, &[1, 3], &[0, 2, 4]),
            (Mask::FirstHalf, &[0, 1, 2], &[3, 4]),
            (Mask::SecondHalf, &[3, 4], &[0, 1, 2]),
            (Mask::Explicit(&EXPLICIT_5), &[0, 3], &[1, 2, 4]),
        ];
        for (mask, kept, transformed) in cases {
            for transform in TRANSFORMS {
                let c: Coupling<f64> =
                    Coupling::new(5, mask, transform, &[4, 3], Activation::Relu, &mut r);
                assert_eq!(c.kept(), kept);
                assert_eq!(c.transformed(), transformed);
                assert_eq!(c.transform(), transform);
                assert_eq!(c.dim(), 5);
                assert_eq!(c.net.inputs(), kept.len());
                let per = match transform {
                    CouplingTransform::Affine => 2,
                    CouplingTransform::Additive => 1,
                    CouplingTransform::Spline { bins, .. } => 3 * bins - 1,
                };
                assert_eq!(transform.outputs_per_coordinate(), per);
                assert_eq!(c.net.outputs(), per * transformed.len());
                assert_eq!(Layer::<f64>::kind(&c), "coupling");
            }
        }
    }

    #[test]
    #[should_panic(expected = "transforms no coordinate")]
    fn rejects_a_mask_that_transforms_nothing() {
        let _: Coupling<f64> = Coupling::new(
            1,
            Mask::Even,
            CouplingTransform::Affine,
            &[4],
            Activation::Relu,
            &mut rng(0),
        );
    }

    #[test]
    #[should_panic(expected = "keeps no coordinate")]
    fn rejects_a_mask_that_keeps_nothing() {
        let mask = Mask::Explicit(&[false, false, false]);
        let _: Coupling<f64> = Coupling::new(
            3,
            mask,
            CouplingTransform::Additive,
            &[4],
            Activation::Relu,
            &mut rng(0),
        );
    }

    #[test]
    #[should_panic(expected = "explicit mask has length 2 but dim = 3")]
    fn rejects_an_explicit_mask_of_the_wrong_length() {
        let mask = Mask::Explicit(&[false, true]);
        let _: Coupling<f64> = Coupling::new(
            3,
            mask,
            CouplingTransform::Affine,
            &[4],
            Activation::Relu,
            &mut rng(0),
        );
    }

    #[test]
    fn point_scratch_depends_only_on_hidden_sizes() {
        let mut r = rng(1);
        for dim in [2, 7, 64] {
            let c: Coupling<f64> = Coupling::new(
                dim,
                Mask::Even,
                CouplingTransform::Affine,
                &[12, 30, 7],
                Activation::Silu,
                &mut r,
            );
            // Ping-pong halves: max(12, 7) + 30, within the sum of the two largest (42).
            assert_eq!(c.point_scratch(), 42);
            let lin: Coupling<f64> = Coupling::new(
                dim,
                Mask::Odd,
                CouplingTransform::Affine,
                &[],
                Activation::Silu,
                &mut r,
            );
            assert_eq!(lin.point_scratch(), 0);
        }
    }

    #[test]
    fn fresh_coupling_is_the_identity() {
        let mut r = rng(2);
        for config in configs() {
            let (dim, mask, transform, activation, hidden) = config;
            let c: Coupling<f64> = Coupling::new(dim, mask, transform, hidden, activation, &mut r);
            let x = random_rows(33, dim, &mut r);
            if is_spline(transform) {
                // Uniform bins with derivative 1: the identity to rounding.
                let near =
                    |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(a, b)| (a - b).abs() <= 1e-15);
                for inverse_direction in [false, true] {
                    let (y, ld) = if inverse_direction {
                        inverse(&c, &x)
                    } else {
                        forward(&c, &x)
                    };
                    let flat = |a: &Array2<f64>| a.iter().copied().collect::<Vec<_>>();
                    assert!(near(&flat(&y), &flat(&x)), "{config:?}");
                    assert!(ld.iter().all(|&l| l.abs() <= 1e-15), "{config:?}");
                }
                let row = x.row(0).to_vec();
                let (p, l) = point_forward(&c, &row);
                assert!(near(&p, &row) && l.abs() <= 1e-15, "{config:?}");
                let (p, l) = point_inverse(&c, &row);
                assert!(near(&p, &row) && l.abs() <= 1e-15, "{config:?}");
                continue;
            }
            let (y, ld) = forward(&c, &x);
            assert_eq!(y, x, "{config:?}");
            assert!(ld.iter().all(|&l| l == 0.0), "{config:?}");
            let (z, ld) = inverse(&c, &x);
            assert_eq!(z, x, "{config:?}");
            assert!(ld.iter().all(|&l| l == 0.0), "{config:?}");
            let row = x.row(0).to_vec();
            assert_eq!(point_forward(&c, &row), (row.clone(), 0.0), "{config:?}");
            assert_eq!(point_inverse(&c, &row), (row.clone(), 0.0), "{config:?}");
        }
    }

    #[test]
    fn round_trip_forward_then_inverse() {
        let mut r = rng(3);
        for config in configs() {
            let c = random_coupling(config, &mut r);
            let x = random_rows(40, config.0, &mut r);
            let (y, _) = forward(&c, &x);
            assert!(
                y != x,
                "{config:?}: a randomised coupling should move points"
            );
            let (back, _) = inverse(&c, &y);
            for (a, b) in back.iter().zip(&x) {
                assert!(close(*a, *b, 1e-10), "{config:?}: {a} vs {b}");
            }
            // And the other way round.
            let (z, _) = inverse(&c, &x);
            let (again, _) = forward(&c, &z);
            for (a, b) in again.iter().zip(&x) {
                assert!(close(*a, *b, 1e-10), "{config:?}: {a} vs {b}");
            }
            // Kept coordinates pass through bit for bit.
            for &k in c.kept() {
                assert_eq!(y.column(k), x.column(k), "{config:?}");
            }
        }
    }

    #[test]
    fn forward_log_det_matches_finite_differences() {
        let mut r = rng(4);
        for config in configs() {
            let c = random_coupling(config, &mut r);
            let x = random_rows(6, config.0, &mut r);
            let (_, ld) = forward(&c, &x);
            for (row, &l) in x.rows().into_iter().zip(&ld) {
                let fd = log_abs_det_fd(|p| point_forward(&c, p).0, row.as_slice().unwrap());
                assert!(
                    (l - fd).abs() < 1e-6 * fd.abs().max(1.0),
                    "{config:?}: {l} vs fd {fd}"
                );
                if config.2 == CouplingTransform::Additive {
                    assert_eq!(l, 0.0);
                }
            }
        }
    }

    #[test]
    fn inverse_log_det_is_minus_forward_log_det_at_the_image() {
        let mut r = rng(5);
        for config in configs() {
            let c = random_coupling(config, &mut r);
            let x = random_rows(25, config.0, &mut r);
            let (y, ld_forward) = forward(&c, &x);
            let (_, ld_inverse) = inverse(&c, &y);
            for (f, i) in ld_forward.iter().zip(&ld_inverse) {
                if is_spline(config.2) {
                    // The inverse's log-det is taken at the recomputed x: equal to rounding.
                    assert!(close(*i, -*f, 1e-9), "{config:?}: {i} vs {f}");
                } else {
                    assert_eq!(*i, -*f, "{config:?}");
                }
            }
            // Also against finite differences of the inverse map.
            let row = y.row(0).to_vec();
            let fd = log_abs_det_fd(|p| point_inverse(&c, p).0, &row);
            // A random conditioner gives some splines bins of height ~1e-3·2B next to wide
            // ones: the inverse bends sharply there and the differences are less accurate.
            let tol = if is_spline(config.2) { 1e-4 } else { 1e-6 };
            assert!(
                (ld_inverse[0] - fd).abs() < tol * fd.abs().max(1.0),
                "{config:?}: {} vs fd {fd} at {row:?}",
                ld_inverse[0]
            );
        }
    }

    #[test]
    fn log_dets_are_added_to_what_is_there() {
        let mut r = rng(6);
        let config = (
            5,
            Mask::Even,
            CouplingTransform::Affine,
            Activation::Tanh,
            &[8][..],
        );
        let c = random_coupling(config, &mut r);
        let x = random_rows(10, 5, &mut r);
        let (_, ld) = forward(&c, &x);
        let mut y = x.clone();
        let mut acc = Array1::from_elem(10, 3.0);
        c.forward_block(y.view_mut(), acc.view_mut(), &mut Workspace::default());
        for (a, l) in acc.iter().zip(&ld) {
            assert_eq!(*a, 3.0 + l);
        }
    }

    #[test]
    fn point_path_equals_batch_path_bit_for_bit() {
        let mut r = rng(7);
        for config in configs() {
            let c = random_coupling(config, &mut r);
            // Blocks of one row, of fewer rows than a tile, and of several tiles.
            for rows in [1, 3, 13] {
                let x = random_rows(rows, config.0, &mut r);
                let (y, ld_f) = forward(&c, &x);
                let (z, ld_i) = inverse(&c, &x);
                for i in 0..x.nrows() {
                    let row = x.row(i).to_vec();
                    let (py, pl) = point_forward(&c, &row);
                    assert_eq!(
                        (&py[..], pl),
                        (&y.row(i).to_vec()[..], ld_f[i]),
                        "{config:?}"
                    );
                    let (pz, pl) = point_inverse(&c, &row);
                    assert_eq!(
                        (&pz[..], pl),
                        (&z.row(i).to_vec()[..], ld_i[i]),
                        "{config:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn point_path_equals_batch_path_in_f32_with_wide_outputs() {
        // 80 transformed coordinates: the point kernel's outputs come in windows.
        let mut r = rng(17);
        for transform in TRANSFORMS {
            for hidden in HIDDEN {
                let mut c: Coupling<f32> =
                    Coupling::new(160, Mask::Odd, transform, hidden, Activation::Relu, &mut r);
                for layer in &mut c.net.layers {
                    layer
                        .weight
                        .mapv_inplace(|_| 0.1 * f32::standard_normal(&mut r));
                    layer
                        .bias
                        .mapv_inplace(|_| 0.1 * f32::standard_normal(&mut r));
                }
                let x = Array2::from_shape_simple_fn((9, 160), || f32::standard_normal(&mut r));
                let mut y = x.clone();
                let mut ld = Array1::zeros(9);
                c.inverse_block(y.view_mut(), ld.view_mut(), &mut Workspace::default());
                let mut scratch = vec![f32::NAN; c.point_scratch()];
                for i in 0..9 {
                    let mut p = x.row(i).to_vec();
                    let pl = c.inverse_point(&mut p, &mut scratch);
                    assert_eq!(
                        (&p[..], pl),
                        (&y.row(i).to_vec()[..], ld[i]),
                        "{transform:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn one_big_block_equals_blocks_of_256() {
        let mut r = rng(8);
        for transform in TRANSFORMS {
            let config = (7, Mask::Odd, transform, Activation::Silu, &[16, 12][..]);
            let c = random_coupling(config, &mut r);
            let x = random_rows(1000, 7, &mut r);
            for inverse in [false, true] {
                let mut whole = x.clone();
                let mut ld_whole = Array1::zeros(1000);
                let mut pieces = x.clone();
                let mut ld_pieces = Array1::zeros(1000);
                let mut ws = Workspace::default();
                if inverse {
                    c.inverse_block(whole.view_mut(), ld_whole.view_mut(), &mut ws);
                } else {
                    c.forward_block(whole.view_mut(), ld_whole.view_mut(), &mut ws);
                }
                let mut ws = Workspace::default();
                for start in (0..1000).step_by(256) {
                    let end = (start + 256).min(1000);
                    let block = pieces.slice_mut(s![start..end, ..]);
                    let ld = ld_pieces.slice_mut(s![start..end]);
                    if inverse {
                        c.inverse_block(block, ld, &mut ws);
                    } else {
                        c.forward_block(block, ld, &mut ws);
                    }
                }
                for (a, b) in whole
                    .iter()
                    .zip(&pieces)
                    .chain(ld_whole.iter().zip(&ld_pieces))
                {
                    assert!(
                        close(*a, *b, 1e-13),
                        "{transform:?} inverse={inverse}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn works_on_a_non_contiguous_block() {
        let mut r = rng(9);
        for transform in TRANSFORMS {
            works_on_a_non_contiguous_block_with(transform, &mut r);
        }
    }

    fn works_on_a_non_contiguous_block_with(transform: CouplingTransform, r: &mut StdRng) {
        let config = (4, Mask::FirstHalf, transform, Activation::Elu, &[6, 5][..]);
        let c = random_coupling(config, r);
        let x = random_rows(30, 4, r);
        let (y, ld) = forward(&c, &x);
        // Column-major copy, and every other row of a taller array.
        let mut fortran = Array2::zeros((30, 4).f());
        fortran.assign(&x);
        let mut ld_f = Array1::zeros(30);
        c.forward_block(
            fortran.view_mut(),
            ld_f.view_mut(),
            &mut Workspace::default(),
        );
        let mut tall = Array2::zeros((60, 4));
        tall.slice_mut(s![..;2, ..]).assign(&x);
        let mut ld_t = Array1::zeros(60);
        c.forward_block(
            tall.slice_mut(s![..;2, ..]),
            ld_t.slice_mut(s![..;2]),
            &mut Workspace::default(),
        );
        assert_eq!(fortran, y);
        assert_eq!(ld_f, ld);
        assert_eq!(tall.slice(s![..;2, ..]), y);
        assert_eq!(ld_t.slice(s![..;2]), ld);
    }

    #[test]
    fn workspace_does_not_grow_on_repeated_calls() {
        let mut r = rng(10);
        for (hidden, transform) in HIDDEN.into_iter().flat_map(|h| TRANSFORMS.map(|t| (h, t))) {
            let config = (6, Mask::Even, transform, Activation::Relu, hidden);
            let c = random_coupling(config, &mut r);
            let mut ws = Workspace::default();
            let mut x = random_rows(256, 6, &mut r);
            let mut ld = Array1::zeros(256);
            c.forward_block(x.view_mut(), ld.view_mut(), &mut ws);
            let capacity = ws.capacity();
            assert!(capacity > 0);
            c.forward_block(x.view_mut(), ld.view_mut(), &mut ws);
            c.inverse_block(x.view_mut(), ld.view_mut(), &mut ws);
            c.forward_block(x.slice_mut(s![..100, ..]), ld.slice_mut(s![..100]), &mut ws);
            assert_eq!(ws.capacity(), capacity, "{hidden:?} {transform:?}");
        }
    }

    #[test]
    fn huge_raw_scales_stay_finite() {
        let mut r = rng(11);
        for activation in ACTIVATIONS {
            let config = (
                5,
                Mask::Odd,
                CouplingTransform::Affine,
                activation,
                &[8, 8][..],
            );
            let mut c = random_coupling(config, &mut r);
            let m = c.transformed().len();
            let last = c.net.layers.last_mut().unwrap();
            for i in 0..m {
                last.bias[m + i] = if i % 2 == 0 { 1e4 } else { -1e4 };
            }
            let x = random_rows(50, 5, &mut r);
            let (y, ld) = forward(&c, &x);
            assert!(y.iter().all(|v| v.is_finite()), "{activation:?}");
            assert!(
                ld.iter()
                    .all(|l| l.is_finite() && l.abs() <= m as f64 * LOG_SCALE_BOUND)
            );
            let (z, ld_inv) = inverse(&c, &x);
            assert!(z.iter().all(|v| v.is_finite()), "{activation:?}");
            assert!(ld_inv.iter().all(|l| l.is_finite()));
            let (back, _) = inverse(&c, &y);
            for (a, b) in back.iter().zip(&x) {
                assert!(close(*a, *b, 1e-9), "{activation:?}: {a} vs {b}");
            }
            let row = x.row(0).to_vec();
            let (py, pl) = point_forward(&c, &row);
            assert!(py.iter().all(|v| v.is_finite()) && pl.is_finite());
        }
        assert!((bounded_log_scale(1e300f64) - LOG_SCALE_BOUND).abs() < 1e-12);
        assert!(bounded_log_scale(1e6f64) < LOG_SCALE_BOUND);
        assert!((bounded_log_scale(-1e30f32) + LOG_SCALE_BOUND as f32).abs() < 1e-6);
        assert!((bounded_log_scale(1e-3f64) - 1e-3).abs() < 1e-6);
    }

    #[test]
    fn nan_stays_in_its_row() {
        let mut r = rng(12);
        for config in [
            (
                4,
                Mask::Even,
                CouplingTransform::Affine,
                Activation::Relu,
                &[8][..],
            ),
            (
                4,
                Mask::Odd,
                CouplingTransform::Additive,
                Activation::Tanh,
                &[8, 4][..],
            ),
            (4, Mask::Odd, SPLINE, Activation::Silu, &[8, 4][..]),
            (4, Mask::Even, SPLINE_2, Activation::Relu, &[][..]),
        ] {
            let c = random_coupling(config, &mut r);
            let x = random_rows(20, 4, &mut r);
            let mut bad = x.clone();
            bad[[7, c.kept()[0]]] = f64::NAN;
            bad[[11, c.transformed()[0]]] = f64::NAN;
            let (y, ld) = forward(&c, &x);
            let (y_bad, ld_bad) = forward(&c, &bad);
            for i in 0..20 {
                if i == 7 || i == 11 {
                    assert!(y_bad.row(i).iter().any(|v| v.is_nan()));
                } else {
                    assert_eq!(y_bad.row(i), y.row(i), "{config:?} row {i}");
                    assert_eq!(ld_bad[i], ld[i]);
                }
            }
        }
    }

    #[test]
    fn works_in_f32() {
        let mut r = rng(13);
        for transform in TRANSFORMS {
            works_in_f32_with(transform, &mut r);
        }
    }

    fn works_in_f32_with(transform: CouplingTransform, r: &mut StdRng) {
        let mut c: Coupling<f32> =
            Coupling::new(5, Mask::Even, transform, &[8, 8], Activation::Silu, r);
        for layer in &mut c.net.layers {
            layer.weight.mapv_inplace(|_| 0.5 * f32::standard_normal(r));
            layer.bias.mapv_inplace(|_| 0.5 * f32::standard_normal(r));
        }
        let x = Array2::from_shape_simple_fn((64, 5), || r.random_range(-2.0f32..2.0));
        let mut y = x.clone();
        let mut ld = Array1::zeros(64);
        let mut ws = Workspace::default();
        c.forward_block(y.view_mut(), ld.view_mut(), &mut ws);
        let mut back = y.clone();
        let mut ld_back = Array1::zeros(64);
        c.inverse_block(back.view_mut(), ld_back.view_mut(), &mut ws);
        // The rounding of y, magnified by dx/dy: up to ~1e3 in a random spline's steep bins.
        let tol = if is_spline(transform) { 1e-3 } else { 1e-4 };
        for (a, b) in back.iter().zip(&x) {
            assert!(
                (a - b).abs() <= tol * (1.0 + b.abs()),
                "{transform:?}: {a} vs {b}"
            );
        }
        for (f, i) in ld.iter().zip(&ld_back) {
            if is_spline(transform) {
                assert!((i + f).abs() <= 1e-4 * (1.0 + f.abs()), "{i} vs {f}");
            } else {
                assert_eq!(*i, -*f);
            }
        }
        let mut scratch = vec![0f32; c.point_scratch()];
        let mut p: Vec<f32> = x.row(3).to_vec();
        let pl = c.forward_point(&mut p, &mut scratch);
        assert!((pl - ld[3]).abs() < 1e-4);
        for (a, b) in p.iter().zip(y.row(3)) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()));
        }
    }
    // ---- reverse mode, towards the base and towards the data ---------------------------

    /// The hidden shapes of the gradient checks.
    const BACKWARD_HIDDEN: [&[usize]; 4] = [&[], &[8], &[8, 6], &[8, 6, 5]];

    type Config = (
        usize,
        Mask<'static>,
        CouplingTransform,
        Activation,
        &'static [usize],
    );

    /// Every mask of `dims`, transform, activation and hidden shape of the checks.
    fn gradient_configs(dims: &[usize]) -> Vec<Config> {
        let mut out = Vec::new();
        for &dim in dims {
            let dim_masks = if dim == 3 {
                let mut m = masks(2);
                m[4] = Mask::Explicit(&EXPLICIT_3);
                m
            } else {
                masks(dim)
            };
            for mask in dim_masks {
                for transform in TRANSFORMS {
                    for activation in ACTIVATIONS {
                        for hidden in BACKWARD_HIDDEN {
                            out.push((dim, mask, transform, activation, hidden));
                        }
                    }
                }
            }
        }
        out
    }

    /// The configurations of the inverse's checks (dims 2 and 5).
    fn backward_configs() -> Vec<Config> {
        gradient_configs(&[2, 5])
    }

    /// The configurations of the forward's checks (dims 2, 3 and 5).
    fn forward_backward_configs() -> Vec<Config> {
        gradient_configs(&[2, 3, 5])
    }

    const EXPLICIT_3: [bool; 3] = [false, true, true];

    /// Central-difference check: `|g − fd| ≤ 1e-5·max(|g|, |fd|) + 1e-7`.
    fn grad_close(g: f64, fd: f64) -> bool {
        (g - fd).abs() <= 1e-5 * g.abs().max(fd.abs()) + 1e-7
    }

    /// The step of the central differences.
    const FD_STEP: f64 = 1e-5;

    /// Random `(v, x̄, w)` for a block of `rows` rows.
    fn random_backward_inputs(
        rows: usize,
        dim: usize,
        r: &mut StdRng,
    ) -> (Array2<f64>, Array2<f64>, Array1<f64>) {
        let v = random_rows(rows, dim, r);
        let x_bar = Array2::from_shape_simple_fn((rows, dim), || f64::standard_normal(r));
        let w = Array1::from_shape_simple_fn(rows, || r.random_range(-2.0..2.0));
        (v, x_bar, w)
    }

    /// `∂J/∂v` of every entry of a `rows`-row block in `dir`, for every configuration,
    /// against central differences.
    fn input_gradient_matches_fd(dir: Direction, seed: u64, configs: Vec<Config>, rows: usize) {
        let mut r = rng(seed);
        for config in configs {
            let c = random_coupling(config, &mut r);
            let (v, x_bar, w) = random_backward_inputs(rows, config.0, &mut r);
            let name = format!("{config:?}");
            let entries = all_entries(&v);
            check_input_gradient(
                &c, dir, &v, &x_bar, &w, FD_STEP, &entries, grad_close, &name,
            );
        }
    }

    /// Every `∂J/∂θ` (every entry of every tensor: the nets here are small) in `dir`, for
    /// every configuration, against central differences.
    fn param_gradient_matches_fd(dir: Direction, seed: u64, configs: Vec<Config>, rows: usize) {
        let mut r = rng(seed);
        for config in configs {
            let mut c = random_coupling(config, &mut r);
            let (v, x_bar, w) = random_backward_inputs(rows, config.0, &mut r);
            let name = format!("{config:?}");
            check_param_gradient(&mut c, dir, &v, &x_bar, &w, FD_STEP, grad_close, &name);
        }
    }

    #[test]
    fn backward_input_gradient_matches_finite_differences() {
        input_gradient_matches_fd(Direction::Inverse, 20, backward_configs(), 4);
    }

    #[test]
    fn backward_param_gradient_matches_finite_differences() {
        param_gradient_matches_fd(Direction::Inverse, 21, backward_configs(), 4);
    }

    #[test]
    fn forward_backward_input_gradient_matches_finite_differences() {
        input_gradient_matches_fd(Direction::Forward, 60, forward_backward_configs(), 3);
    }

    #[test]
    fn forward_backward_param_gradient_matches_finite_differences() {
        param_gradient_matches_fd(Direction::Forward, 61, forward_backward_configs(), 3);
    }

    /// The backward of `dir` adds to `param_grad` and leaves the input gradient as it is.
    fn check_adds_to_param_grad(dir: Direction, seed: u64) {
        let mut r = rng(seed);
        for transform in TRANSFORMS {
            let config = (5, Mask::Odd, transform, Activation::Tanh, &[8, 6][..]);
            let c = random_coupling(config, &mut r);
            let (v, x_bar, w) = random_backward_inputs(17, 5, &mut r);
            let (grad, fresh) = backward(&c, dir, &v, &x_bar, &w);
            let start: Vec<f64> = (0..c.param_len())
                .map(|_| r.random_range(-3.0..3.0))
                .collect();
            let mut acc = start.clone();
            let mut grad_again = x_bar.clone();
            let ws = &mut Workspace::default();
            dir.backward_block(&c, v.view(), grad_again.view_mut(), w.view(), &mut acc, ws);
            assert_eq!(grad_again, grad, "{dir:?}");
            for ((a, s), f) in acc.iter().zip(&start).zip(&fresh) {
                assert!(
                    close(*a, s + f, 1e-13),
                    "{dir:?} {transform:?}: {a} vs {s} + {f}"
                );
            }
        }
    }

    #[test]
    fn backward_adds_to_param_grad() {
        check_adds_to_param_grad(Direction::Inverse, 22);
    }

    #[test]
    fn forward_backward_adds_to_param_grad() {
        check_adds_to_param_grad(Direction::Forward, 63);
    }

    /// The backward of `dir` on 1000 rows at once equals it on blocks of 256.
    fn check_one_big_block_equals_blocks_of_256(dir: Direction, seed: u64) {
        let mut r = rng(seed);
        for transform in TRANSFORMS {
            let config = (7, Mask::Odd, transform, Activation::Silu, &[16, 12][..]);
            let c = random_coupling(config, &mut r);
            let (v, x_bar, w) = random_backward_inputs(1000, 7, &mut r);
            let (grad_whole, param_whole) = backward(&c, dir, &v, &x_bar, &w);
            let mut grad_pieces = x_bar.clone();
            let mut param_pieces = vec![0.0; c.param_len()];
            let mut ws = Workspace::default();
            for start in (0..1000).step_by(256) {
                let end = (start + 256).min(1000);
                dir.backward_block(
                    &c,
                    v.slice(s![start..end, ..]),
                    grad_pieces.slice_mut(s![start..end, ..]),
                    w.slice(s![start..end]),
                    &mut param_pieces,
                    &mut ws,
                );
            }
            for (a, b) in grad_whole.iter().zip(&grad_pieces) {
                assert!(close(*a, *b, 1e-13), "{dir:?} {transform:?}: {a} vs {b}");
            }
            for (a, b) in param_whole.iter().zip(&param_pieces) {
                assert!(close(*a, *b, 1e-11), "{dir:?} {transform:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn backward_one_big_block_equals_blocks_of_256() {
        check_one_big_block_equals_blocks_of_256(Direction::Inverse, 24);
    }

    #[test]
    fn forward_backward_one_big_block_equals_blocks_of_256() {
        check_one_big_block_equals_blocks_of_256(Direction::Forward, 64);
    }

    /// The pass of `dir` and its backward, repeated on blocks of 256 rows and fewer, do not
    /// grow the workspace after the first backward.
    fn check_workspace_does_not_grow(dir: Direction, seed: u64) {
        let mut r = rng(seed);
        for hidden in BACKWARD_HIDDEN {
            for transform in TRANSFORMS {
                let config = (6, Mask::Even, transform, Activation::Relu, hidden);
                let c = random_coupling(config, &mut r);
                let (v, x_bar, w) = random_backward_inputs(256, 6, &mut r);
                let mut ws = Workspace::default();
                let mut grad = x_bar.clone();
                let mut param_grad = vec![0.0; c.param_len()];
                let w_all = w.view();
                dir.backward_block(
                    &c,
                    v.view(),
                    grad.view_mut(),
                    w_all,
                    &mut param_grad,
                    &mut ws,
                );
                let capacity = ws.capacity();
                assert!(capacity > 0);
                for rows in [256, 100, 256, 1] {
                    // The pass that precedes a backward pass in training.
                    let mut out = v.clone();
                    let mut ld = Array1::zeros(256);
                    dir.block(&c, out.view_mut(), ld.view_mut(), &mut ws);
                    grad.assign(&x_bar);
                    dir.backward_block(
                        &c,
                        v.slice(s![..rows, ..]),
                        grad.slice_mut(s![..rows, ..]),
                        w.slice(s![..rows]),
                        &mut param_grad,
                        &mut ws,
                    );
                    let ctx = format!("{dir:?} {hidden:?} {transform:?}");
                    assert_eq!(ws.capacity(), capacity, "{ctx}");
                }
            }
        }
    }

    #[test]
    fn backward_workspace_does_not_grow_on_repeated_calls() {
        check_workspace_does_not_grow(Direction::Inverse, 25);
    }

    #[test]
    fn forward_backward_workspace_does_not_grow_on_repeated_calls() {
        check_workspace_does_not_grow(Direction::Forward, 65);
    }

    /// The backward of `dir` on every other row of a taller block (and weights), into a
    /// column-major gradient, equals it on contiguous blocks.
    fn check_non_contiguous_blocks(dir: Direction, seed: u64, dim: usize, mask: Mask<'static>) {
        let mut r = rng(seed);
        for transform in TRANSFORMS {
            let config = (dim, mask, transform, Activation::Elu, &[6, 5][..]);
            let c = random_coupling(config, &mut r);
            let (v, x_bar, w) = random_backward_inputs(30, dim, &mut r);
            let (grad, param_grad) = backward(&c, dir, &v, &x_bar, &w);
            let mut tall = Array2::zeros((60, dim));
            tall.slice_mut(s![..;2, ..]).assign(&v);
            let mut w_tall = Array1::zeros(60);
            w_tall.slice_mut(s![..;2]).assign(&w);
            let mut fortran = Array2::zeros((30, dim).f());
            fortran.assign(&x_bar);
            let mut pg = vec![0.0; c.param_len()];
            dir.backward_block(
                &c,
                tall.slice(s![..;2, ..]),
                fortran.view_mut(),
                w_tall.slice(s![..;2]),
                &mut pg,
                &mut Workspace::default(),
            );
            assert_eq!(fortran, grad, "{dir:?} {transform:?}");
            for (a, b) in pg.iter().zip(&param_grad) {
                assert!(close(*a, *b, 1e-13), "{dir:?} {transform:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn backward_works_on_non_contiguous_blocks() {
        let mask = Mask::Explicit(&[true, false, false, true]);
        check_non_contiguous_blocks(Direction::Inverse, 26, 4, mask);
    }

    #[test]
    fn forward_backward_works_on_non_contiguous_blocks() {
        let mask = Mask::Explicit(&EXPLICIT_5);
        check_non_contiguous_blocks(Direction::Forward, 66, 5, mask);
    }

    /// Log-scales saturated by raw outputs of ±1e4: the backward of `dir` stays finite.
    fn check_saturated_log_scales(dir: Direction, seed: u64) {
        let mut r = rng(seed);
        let config = (
            5,
            Mask::Odd,
            CouplingTransform::Affine,
            Activation::Tanh,
            &[8][..],
        );
        let mut c = random_coupling(config, &mut r);
        let m = c.transformed().len();
        let last = c.net.layers.last_mut().unwrap();
        for i in 0..m {
            last.bias[m + i] = if i % 2 == 0 { 1e4 } else { -1e4 };
        }
        let (v, x_bar, w) = random_backward_inputs(20, 5, &mut r);
        let (grad, param_grad) = backward(&c, dir, &v, &x_bar, &w);
        assert!(
            grad.iter().chain(&param_grad).all(|g| g.is_finite()),
            "{dir:?}"
        );
    }

    #[test]
    fn backward_stays_finite_with_saturated_log_scales() {
        check_saturated_log_scales(Direction::Inverse, 27);
    }

    #[test]
    fn forward_backward_stays_finite_with_saturated_log_scales() {
        check_saturated_log_scales(Direction::Forward, 67);
    }

    /// The backward of `dir` in f32 agrees with f64 to 1e-3.
    fn check_f32(dir: Direction, seed: u64) {
        let mut r = rng(seed);
        for transform in TRANSFORMS {
            let config = (
                5,
                Mask::SecondHalf,
                transform,
                Activation::Silu,
                &[8, 6][..],
            );
            let c64 = random_coupling(config, &mut r);
            let mut c32: Coupling<f32> = Coupling::new(
                5,
                Mask::SecondHalf,
                transform,
                &[8, 6],
                Activation::Silu,
                &mut r,
            );
            let flat = flat_params(&c64);
            let mut offset = 0;
            c32.visit_params_mut(&mut |_, _, v| {
                for x in v.iter_mut() {
                    *x = flat[offset] as f32;
                    offset += 1;
                }
            });
            let (v, x_bar, w) = random_backward_inputs(40, 5, &mut r);
            let (grad, param_grad) = backward(&c64, dir, &v, &x_bar, &w);
            let mut grad32 = x_bar.mapv(|v| v as f32);
            let mut pg32 = vec![0f32; c32.param_len()];
            dir.backward_block(
                &c32,
                v.mapv(|v| v as f32).view(),
                grad32.view_mut(),
                w.mapv(|v| v as f32).view(),
                &mut pg32,
                &mut Workspace::default(),
            );
            for (a, b) in grad32.iter().zip(&grad).chain(pg32.iter().zip(&param_grad)) {
                assert!(
                    close(*a as f64, *b, 1e-3),
                    "{dir:?} {transform:?}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn backward_works_in_f32() {
        check_f32(Direction::Inverse, 28);
    }

    #[test]
    fn forward_backward_works_in_f32() {
        check_f32(Direction::Forward, 68);
    }

    #[test]
    fn params_are_visited_in_layout_order() {
        let mut r = rng(23);
        for transform in TRANSFORMS {
            let config = (5, Mask::Even, transform, Activation::Elu, &[8, 6][..]);
            let mut c = random_coupling(config, &mut r);
            let n_out = c.net.outputs();
            let mut seen = Vec::new();
            c.visit_params(&mut |name, shape, v| {
                assert_eq!(shape.iter().product::<usize>(), v.len(), "{name}");
                seen.push((name.to_string(), shape.to_vec()));
            });
            let expected = [
                ("net.0.weight", vec![3, 8]),
                ("net.0.bias", vec![8]),
                ("net.1.weight", vec![8, 6]),
                ("net.1.bias", vec![6]),
                ("net.2.weight", vec![6, n_out]),
                ("net.2.bias", vec![n_out]),
            ]
            .map(|(n, s)| (n.to_string(), s));
            assert_eq!(seen, expected);
            let flat = flat_params(&c);
            assert_eq!(flat.len(), c.param_len());
            assert_eq!(c.param_len(), 24 + 8 + 48 + 6 + 6 * n_out + n_out);
            // Row-major weights; the last layer is visited last.
            assert_eq!(flat[32 + 5 * 6 + 4], c.net.layers[1].weight[[5, 4]]);
            assert_eq!(flat[flat.len() - 1], c.net.layers[2].bias[n_out - 1]);
            // visit_params_mut writes through, in the same order.
            let mut k = 0.0;
            c.visit_params_mut(&mut |_, _, v| {
                for x in v {
                    *x = k;
                    k += 1.0;
                }
            });
            let expected: Vec<f64> = (0..c.param_len()).map(|i| i as f64).collect();
            assert_eq!(flat_params(&c), expected);
            assert_eq!(c.net.layers[1].weight[[5, 4]], (32 + 5 * 6 + 4) as f64);
        }
        // Names stay right past the static table.
        let deep: Coupling<f64> = Coupling::new(
            2,
            Mask::Even,
            CouplingTransform::Additive,
            &[1; 17],
            Activation::Relu,
            &mut r,
        );
        let mut names = Vec::new();
        deep.visit_params(&mut |name, _, _| names.push(name.to_string()));
        assert_eq!(names.len(), 36);
        for (l, pair) in names.chunks(2).enumerate() {
            assert_eq!(pair, [format!("net.{l}.weight"), format!("net.{l}.bias")]);
        }
    }

    // ---- spline-specific ----------------------------------------------------------

    #[test]
    fn spline_point_scratch_adds_one_coordinates_parameters() {
        let mut r = rng(40);
        for (hidden, net) in [(&[12, 30, 7][..], 42), (&[][..], 0)] {
            let c: Coupling<f64> = Coupling::new(
                64,
                Mask::Even,
                CouplingTransform::Spline {
                    bins: 8,
                    bound: 3.0,
                },
                hidden,
                Activation::Silu,
                &mut r,
            );
            assert_eq!(c.point_scratch(), net + 23);
            assert_eq!(c.net.outputs(), 32 * 23);
        }
    }

    #[test]
    #[should_panic(expected = "spline bins = 0")]
    fn rejects_a_spline_without_bins() {
        let spline = CouplingTransform::Spline {
            bins: 0,
            bound: 1.0,
        };
        let _: Coupling<f64> =
            Coupling::new(2, Mask::Even, spline, &[4], Activation::Relu, &mut rng(0));
    }

    #[test]
    #[should_panic(expected = "spline bound = NaN")]
    fn rejects_a_spline_with_a_nan_bound() {
        let spline = CouplingTransform::Spline {
            bins: 3,
            bound: f64::NAN,
        };
        let _: Coupling<f64> =
            Coupling::new(2, Mask::Even, spline, &[4], Activation::Relu, &mut rng(0));
    }

    #[test]
    fn fresh_spline_coupling_is_the_identity_also_with_one_bin_and_in_the_tails() {
        let mut r = rng(41);
        for bins in [1, 3, 16] {
            let spline = CouplingTransform::Spline { bins, bound: 2.0 };
            let c: Coupling<f64> =
                Coupling::new(4, Mask::Odd, spline, &[8], Activation::Tanh, &mut r);
            let x = Array2::from_shape_simple_fn((50, 4), || r.random_range(-5.0..5.0));
            for (y, ld) in [forward(&c, &x), inverse(&c, &x)] {
                for (a, b) in y.iter().zip(&x) {
                    assert!(
                        (a - b).abs() <= 1e-15 * (1.0 + b.abs()),
                        "{bins}: {a} vs {b}"
                    );
                }
                assert!(ld.iter().all(|l| l.abs() <= 1e-15), "{bins}");
            }
        }
    }

    #[test]
    fn spline_values_outside_the_bound_pass_through() {
        let mut r = rng(42);
        for transform in [SPLINE, SPLINE_2] {
            let CouplingTransform::Spline { bound, .. } = transform else {
                unreachable!()
            };
            let config = (5, Mask::Even, transform, Activation::Relu, &[8, 6][..]);
            let c = random_coupling(config, &mut r);
            // Every transformed coordinate outside [−B, B], the kept ones anywhere.
            let mut x = random_rows(20, 5, &mut r);
            for (i, mut row) in x.rows_mut().into_iter().enumerate() {
                for (n, &t) in c.transformed().iter().enumerate() {
                    let sign = if (i + n) % 2 == 0 { 1.0 } else { -1.0 };
                    row[t] = sign * (bound + 1e-9 + r.random_range(0.0..3.0));
                }
            }
            for (y, ld) in [forward(&c, &x), inverse(&c, &x)] {
                assert_eq!(y, x, "{transform:?}");
                assert!(ld.iter().all(|&l| l == 0.0), "{transform:?}");
            }
            let row = x.row(3).to_vec();
            assert_eq!(point_forward(&c, &row), (row.clone(), 0.0));
            assert_eq!(point_inverse(&c, &row), (row.clone(), 0.0));
            // Nothing flows back into the conditioner; ∂J/∂y = x̄ on those coordinates.
            let x_bar = Array2::from_shape_simple_fn((20, 5), || f64::standard_normal(&mut r));
            let w = Array1::from_elem(20, 1.5);
            let (grad, param_grad) = backward(&c, Direction::Inverse, &x, &x_bar, &w);
            assert!(param_grad.iter().all(|&g| g == 0.0), "{transform:?}");
            assert_eq!(grad, x_bar);
            // And the map is not the identity inside.
            let inside = random_rows(20, 5, &mut r).mapv(|v| v * 0.5 * bound);
            assert_ne!(forward(&c, &inside).0, inside);
        }
    }

    #[test]
    fn spline_huge_raw_outputs_stay_finite() {
        let mut r = rng(43);
        for transform in [SPLINE, SPLINE_2] {
            for huge in [1e4, 1e30] {
                let config = (5, Mask::Odd, transform, Activation::Tanh, &[8][..]);
                let mut c = random_coupling(config, &mut r);
                let last = c.net.layers.last_mut().unwrap();
                for (i, b) in last.bias.iter_mut().enumerate() {
                    *b = if i % 3 == 0 { huge } else { -huge };
                }
                let x = random_rows(50, 5, &mut r).mapv(|v| 2.0 * v);
                let ctx = format!("{transform:?} {huge}");
                let (y, ld) = forward(&c, &x);
                assert!(y.iter().chain(&ld).all(|v| v.is_finite()), "{ctx}");
                let (z, ld_inv) = inverse(&c, &x);
                assert!(z.iter().chain(&ld_inv).all(|v| v.is_finite()), "{ctx}");
                if huge <= 1e4 {
                    // (With raw outputs of 1e30 some slopes are ~1e-30: x is lost in y.)
                    let (back, _) = inverse(&c, &y);
                    for (a, b) in back.iter().zip(&x) {
                        assert!(close(*a, *b, 1e-6), "{ctx}: {a} vs {b}");
                    }
                }
                let (py, pl) = point_forward(&c, &x.row(0).to_vec());
                assert!(py.iter().all(|v| v.is_finite()) && pl.is_finite(), "{ctx}");
                if huge <= 1e4 {
                    let (yb, x_bar, w) = random_backward_inputs(20, 5, &mut r);
                    let (grad, param_grad) = backward(&c, Direction::Inverse, &yb, &x_bar, &w);
                    assert!(
                        grad.iter().chain(&param_grad).all(|g| g.is_finite()),
                        "{ctx}"
                    );
                }
            }
        }
    }
}
