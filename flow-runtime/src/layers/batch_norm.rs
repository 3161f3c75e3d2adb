//! Batch normalisation as a flow layer (RealNVP, Dinh et al. 2017, §3.7; MAF, Papamakarios
//! et al. 2017, §3.4).
//!
//! Towards the base (the density direction, this layer's inverse), per coordinate `j`:
//! `x = exp(log_gamma)·(y − μ)/sqrt(v + eps) + beta`, inverse log-det
//! `Σ_j (log_gamma_j − ½ log(v_j + eps))`. Towards the data (sampling) the inverse of that
//! map, `y = (x − beta)·exp(−log_gamma)·sqrt(v + eps) + μ`, log-det the negative.
//!
//! In evaluation (the ordinary [`Layer`] methods) `μ` and `v` are the running statistics,
//! constants, so the layer is a per-coordinate affine map. In training
//! ([`Layer::inverse_block_training`]) they are the mean and biased variance of the block's
//! rows, and [`Layer::inverse_backward_block_training`] differentiates through them too,
//! which couples the rows; [`Layer::track_batch_statistics`] moves the running statistics
//! towards the block's.
//!
//! Non-finite inputs: as everywhere, an inverse given a NaN or ±∞ entry returns NaN there
//! and a log-det of −∞ for its row. In training a row with a non-finite entry is also left
//! out of the statistics, and its gradient is NaN (its log-density is −∞).

use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis};

use crate::float::Float;
use crate::layers::{Layer, map_point, map_rows, map_rows_backward};
use crate::workspace::Workspace;

/// Batch normalisation with learnable `log_gamma` (`[D]`) and `beta` (`[D]`), flat in that
/// order, and the buffers `running_mean` (`[D]`) and `running_var` (`[D]`), which are saved
/// with the model but not learnt by gradient.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNorm<F> {
    /// Per-coordinate log-scale of the normalised value (starts at 0).
    pub log_gamma: Vec<F>,
    /// Per-coordinate shift of the normalised value (starts at 0).
    pub beta: Vec<F>,
    /// The mean used in evaluation (starts at 0).
    pub running_mean: Vec<F>,
    /// The variance used in evaluation (starts at 1).
    pub running_var: Vec<F>,
    momentum: f64,
    eps: f64,
}

impl<F: Float> BatchNorm<F> {
    /// A batch normalisation of `dim` coordinates: `gamma = 1`, `beta = 0`, running mean 0
    /// and variance 1. Each [`Layer::track_batch_statistics`] moves the running statistics
    /// a fraction `momentum` (in `(0, 1]`) of the way to the block's; `eps > 0` is added to
    /// every variance.
    pub fn new(dim: usize, momentum: f64, eps: f64) -> Self {
        assert!(
            momentum > 0.0 && momentum <= 1.0,
            "batch_norm: momentum {momentum} is not in (0, 1]"
        );
        assert!(
            eps > 0.0 && eps.is_finite(),
            "batch_norm: eps {eps} is not positive and finite"
        );
        Self {
            log_gamma: vec![F::zero(); dim],
            beta: vec![F::zero(); dim],
            running_mean: vec![F::zero(); dim],
            running_var: vec![F::one(); dim],
            momentum,
            eps,
        }
    }

    /// The number of coordinates.
    pub fn dim(&self) -> usize {
        self.log_gamma.len()
    }

    /// The fraction of the way the running statistics move towards a block's.
    pub fn momentum(&self) -> f64 {
        self.momentum
    }

    /// What is added to every variance.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// `(scale, log-det)` of coordinate `j` towards the base for variance `var`:
    /// `x = (y − μ)·scale + beta`, `scale = exp(log_gamma)/sqrt(var + eps)`.
    fn inverse_coefficients(&self, j: usize, var: f64) -> (F, F) {
        let log_gamma = self.log_gamma[j].to_f64_lossless();
        let v = var + self.eps;
        (
            F::of(log_gamma.exp() / v.sqrt()),
            F::of(log_gamma - 0.5 * v.ln()),
        )
    }

    /// [`BatchNorm::inverse_coefficients`] with the running variance.
    fn evaluation_inverse_coefficients(&self, j: usize) -> (F, F) {
        self.inverse_coefficients(j, self.running_var[j].to_f64_lossless())
    }

    /// `(scale, log-det)` of coordinate `j` towards the data with the running variance:
    /// `y = (x − beta)·scale + μ`, `scale = exp(−log_gamma)·sqrt(var + eps)`; the log-det
    /// is exactly the negative of [`BatchNorm::inverse_coefficients`]'s.
    fn forward_coefficients(&self, j: usize) -> (F, F) {
        let log_gamma = self.log_gamma[j].to_f64_lossless();
        let v = self.running_var[j].to_f64_lossless() + self.eps;
        (
            F::of((-log_gamma).exp() * v.sqrt()),
            F::of(-(log_gamma - 0.5 * v.ln())),
        )
    }

    fn check_width(&self, cols: usize) {
        let dim = self.dim();
        assert_eq!(cols, dim, "batch_norm: the block has {dim} columns");
    }
}

/// One entry towards the base: `(y − mean)·scale + shift` with log-det `log_det`, or
/// `(NaN, −inf)` for a non-finite `y`.
#[inline(always)]
fn inverse_entry<F: Float>(y: F, mean: F, scale: F, shift: F, log_det: F) -> (F, F) {
    if y.is_finite() {
        ((y - mean) * scale + shift, log_det)
    } else {
        (F::nan(), F::neg_infinity())
    }
}

/// One entry towards the data: `(x − shift)·scale + mean` with log-det `log_det`.
#[inline(always)]
fn forward_entry<F: Float>(x: F, mean: F, scale: F, shift: F, log_det: F) -> (F, F) {
    ((x - shift) * scale + mean, log_det)
}

/// Whether every entry of `row` is finite (the rows the statistics are taken over).
fn is_finite_row<F: Float>(row: &ArrayView1<'_, F>) -> bool {
    row.iter().all(|v| v.is_finite())
}

/// Per-coordinate statistics of the rows of a block that have no non-finite entry,
/// accumulated in `f64` (two passes: the mean, then the squared deviations from it), held
/// in the caller's scratch.
struct Moments<'a> {
    /// The number of finite rows.
    count: usize,
    /// The mean of each coordinate over them.
    mean: &'a [f64],
    /// `Σ_i (y_ij − mean_j)²` over them.
    squares: &'a [f64],
}

impl<'a> Moments<'a> {
    /// The moments of `y`, written into `mean` and `squares` (`y.ncols()` entries each).
    fn of<F: Float>(y: ArrayView2<'_, F>, mean: &'a mut [f64], squares: &'a mut [f64]) -> Self {
        let finite_rows = || y.axis_iter(Axis(0)).filter(is_finite_row);
        let mut count = 0usize;
        mean.fill(0.0);
        for row in finite_rows() {
            count += 1;
            for (m, v) in mean.iter_mut().zip(row) {
                *m += v.to_f64_lossless();
            }
        }
        let n = count.max(1) as f64;
        mean.iter_mut().for_each(|m| *m /= n);
        squares.fill(0.0);
        for row in finite_rows() {
            for ((q, v), m) in squares.iter_mut().zip(row).zip(mean.iter()) {
                let d = v.to_f64_lossless() - m;
                *q += d * d;
            }
        }
        Self {
            count,
            mean,
            squares,
        }
    }

    /// The biased (population) variance of coordinate `j`.
    fn biased_var(&self, j: usize) -> f64 {
        self.squares[j] / self.count as f64
    }
}

/// In evaluation `μ`, `v` are the running statistics: a per-coordinate affine map.
impl<F: Float> Layer<F> for BatchNorm<F> {
    fn kind(&self) -> &'static str {
        "batch_norm"
    }

    fn forward_block(
        &self,
        x: ArrayViewMut2<'_, F>,
        log_det: ArrayViewMut1<'_, F>,
        ws: &mut Workspace<F>,
    ) {
        self.check_width(x.ncols());
        let dim = self.dim();
        let [scale, ld] = ws.slices([dim, dim]);
        for j in 0..dim {
            (scale[j], ld[j]) = self.forward_coefficients(j);
        }
        let (mean, shift) = (&self.running_mean, &self.beta);
        map_rows(x, log_det, |j: usize, x: F| {
            forward_entry(x, mean[j], scale[j], shift[j], ld[j])
        })
    }

    fn inverse_block(
        &self,
        y: ArrayViewMut2<'_, F>,
        log_det: ArrayViewMut1<'_, F>,
        ws: &mut Workspace<F>,
    ) {
        self.check_width(y.ncols());
        let dim = self.dim();
        let [scale, ld] = ws.slices([dim, dim]);
        for j in 0..dim {
            (scale[j], ld[j]) = self.evaluation_inverse_coefficients(j);
        }
        let (mean, shift) = (&self.running_mean, &self.beta);
        map_rows(y, log_det, |j: usize, y: F| {
            inverse_entry(y, mean[j], scale[j], shift[j], ld[j])
        })
    }

    fn forward_point(&self, x: &mut [F], _scratch: &mut [F]) -> F {
        self.check_width(x.len());
        map_point(x, |j: usize, x: F| {
            let (scale, ld) = self.forward_coefficients(j);
            forward_entry(x, self.running_mean[j], scale, self.beta[j], ld)
        })
    }

    fn inverse_point(&self, y: &mut [F], _scratch: &mut [F]) -> F {
        self.check_width(y.len());
        map_point(y, |j: usize, y: F| {
            let (scale, ld) = self.evaluation_inverse_coefficients(j);
            inverse_entry(y, self.running_mean[j], scale, self.beta[j], ld)
        })
    }

    fn param_len(&self) -> usize {
        2 * self.dim()
    }

    fn visit_params(&self, visit: &mut dyn FnMut(&str, &[usize], &[F])) {
        visit("log_gamma", &[self.dim()], &self.log_gamma);
        visit("beta", &[self.dim()], &self.beta);
    }

    fn visit_params_mut(&mut self, visit: &mut dyn FnMut(&str, &[usize], &mut [F])) {
        let dim = self.dim();
        visit("log_gamma", &[dim], &mut self.log_gamma);
        visit("beta", &[dim], &mut self.beta);
    }

    /// `x − beta = (y − μ)·scale`: `∂J/∂y = x̄·scale`, `∂J/∂log_gamma = x̄·(x − beta) + w`,
    /// `∂J/∂beta = x̄`. A non-finite `y` gets a NaN gradient and adds nothing to
    /// `param_grad` (as the elementwise kernels do).
    fn inverse_backward_block(
        &self,
        y: ArrayView2<'_, F>,
        grad: ArrayViewMut2<'_, F>,
        weight: ArrayView1<'_, F>,
        param_grad: &mut [F],
        ws: &mut Workspace<F>,
    ) {
        self.check_width(y.ncols());
        let dim = self.dim();
        let [scale] = ws.slices([dim]);
        for (j, scale) in scale.iter_mut().enumerate() {
            *scale = self.evaluation_inverse_coefficients(j).0;
        }
        let mean = &self.running_mean;
        map_rows_backward(y, grad, weight, |j, y, x_bar, w| {
            if !y.is_finite() {
                return F::nan();
            }
            let centred = (y - mean[j]) * scale[j];
            param_grad[j] += x_bar * centred + w;
            param_grad[dim + j] += x_bar;
            x_bar * scale[j]
        })
    }

    /// `y − μ = (x − beta)·scale`, `scale = exp(−log_gamma)·sqrt(v + eps)`:
    /// `∂J/∂x = ȳ·scale`, `∂J/∂log_gamma = −ȳ·(y − μ) − w`, `∂J/∂beta = −ȳ·scale`. A
    /// non-finite `x` gets a NaN gradient and adds nothing to `param_grad`.
    fn forward_backward_block(
        &self,
        z: ArrayView2<'_, F>,
        grad: ArrayViewMut2<'_, F>,
        weight: ArrayView1<'_, F>,
        param_grad: &mut [F],
        ws: &mut Workspace<F>,
    ) {
        self.check_width(z.ncols());
        let dim = self.dim();
        let [scale] = ws.slices([dim]);
        for (j, scale) in scale.iter_mut().enumerate() {
            *scale = self.forward_coefficients(j).0;
        }
        let shift = &self.beta;
        map_rows_backward(z, grad, weight, |j, x, y_bar, w| {
            if !x.is_finite() {
                return F::nan();
            }
            let dy = y_bar * scale[j];
            param_grad[j] -= dy * (x - shift[j]) + w;
            param_grad[dim + j] -= dy;
            dy
        })
    }

    fn uses_batch_statistics(&self) -> bool {
        true
    }

    /// `μ`, `v` = the mean and biased variance of the finite rows of `y`. A block without
    /// a finite row is mapped with the running statistics (every row's log-det is −∞).
    fn inverse_block_training(
        &self,
        y: ArrayViewMut2<'_, F>,
        log_det: ArrayViewMut1<'_, F>,
        ws: &mut Workspace<F>,
    ) {
        self.check_width(y.ncols());
        let dim = self.dim();
        let ([mean, scale, ld], [batch_mean, squares]) =
            ws.slices_and_wide([dim, dim, dim], [dim, dim]);
        let moments = Moments::of(y.view(), batch_mean, squares);
        if moments.count == 0 {
            return self.inverse_block(y, log_det, ws);
        }
        for j in 0..dim {
            mean[j] = F::of(moments.mean[j]);
            (scale[j], ld[j]) = self.inverse_coefficients(j, moments.biased_var(j));
        }
        let shift = &self.beta;
        map_rows(y, log_det, |j: usize, y: F| {
            inverse_entry(y, mean[j], scale[j], shift[j], ld[j])
        })
    }

    /// Per coordinate, over the `N` finite rows, with `s = sqrt(v + eps)`,
    /// `x̂ = (y − μ)/s`, `γ = exp(log_gamma)`, `a = ∂J/∂x` and `W = Σ_i weight_i`:
    /// `∂J/∂y_i = γ·(a_i − mean(a) − x̂_i·mean(a·x̂))/s − W·x̂_i/(N·s)`,
    /// `∂J/∂log_gamma = γ·Σ_i a_i·x̂_i + W`, `∂J/∂beta = Σ_i a_i`; in `f64`. Rows with a
    /// non-finite entry get a NaN gradient and add nothing.
    fn inverse_backward_block_training(
        &self,
        y: ArrayView2<'_, F>,
        mut grad: ArrayViewMut2<'_, F>,
        weight: ArrayView1<'_, F>,
        param_grad: &mut [F],
        ws: &mut Workspace<F>,
    ) {
        self.check_width(y.ncols());
        assert_eq!(grad.dim(), y.dim(), "batch_norm: gradient shape");
        assert_eq!(weight.len(), y.nrows(), "batch_norm: one weight per row");
        let dim = self.dim();
        let [batch_mean, squares, inv_s, gamma, sum_a, sum_a_xhat] = ws.wide_slices([dim; 6]);
        let moments = Moments::of(y, batch_mean, squares);
        if moments.count == 0 {
            grad.fill(F::nan());
            return;
        }
        let n = moments.count as f64;
        for j in 0..dim {
            inv_s[j] = 1.0 / (moments.biased_var(j) + self.eps).sqrt();
            gamma[j] = self.log_gamma[j].to_f64_lossless().exp();
        }
        let inv_s = &*inv_s;
        let normalised = |j: usize, y: F| (y.to_f64_lossless() - moments.mean[j]) * inv_s[j];
        // Σ_i a_i, Σ_i a_i·x̂_i per coordinate and W, over the finite rows.
        sum_a.fill(0.0);
        sum_a_xhat.fill(0.0);
        let mut total_weight = 0.0f64;
        for ((row, g), w) in y.rows().into_iter().zip(grad.rows()).zip(weight) {
            if !is_finite_row(&row) {
                continue;
            }
            total_weight += w.to_f64_lossless();
            for (j, (&y, &a)) in row.iter().zip(g).enumerate() {
                let a = a.to_f64_lossless();
                sum_a[j] += a;
                sum_a_xhat[j] += a * normalised(j, y);
            }
        }
        for (row, mut g) in y.rows().into_iter().zip(grad.rows_mut()) {
            if !is_finite_row(&row) {
                g.fill(F::nan());
                continue;
            }
            for (j, (&y, g)) in row.iter().zip(g.iter_mut()).enumerate() {
                let (a, xhat) = (g.to_f64_lossless(), normalised(j, y));
                let centred = a - sum_a[j] / n - xhat * sum_a_xhat[j] / n;
                *g = F::of((gamma[j] * centred - total_weight * xhat / n) * inv_s[j]);
            }
        }
        for j in 0..dim {
            param_grad[j] += F::of(gamma[j] * sum_a_xhat[j] + total_weight);
            param_grad[dim + j] += F::of(sum_a[j]);
        }
    }

    /// `running ← (1 − momentum)·running + momentum·batch` over the finite rows, with the
    /// unbiased variance; a single finite row moves only the mean, none moves nothing.
    fn track_batch_statistics(&mut self, y: ArrayView2<'_, F>) {
        self.check_width(y.ncols());
        // Once per training step, beside the block copy its caller makes: not scratch.
        let (mut mean, mut squares) = (vec![0.0; self.dim()], vec![0.0; self.dim()]);
        let moments = Moments::of(y, &mut mean, &mut squares);
        if moments.count == 0 {
            return;
        }
        let k = self.momentum;
        let blend =
            |running: F, batch: f64| F::of((1.0 - k) * running.to_f64_lossless() + k * batch);
        for j in 0..self.dim() {
            self.running_mean[j] = blend(self.running_mean[j], moments.mean[j]);
            if moments.count >= 2 {
                let unbiased = moments.squares[j] / (moments.count - 1) as f64;
                self.running_var[j] = blend(self.running_var[j], unbiased);
            }
        }
    }

    fn buffer_len(&self) -> usize {
        2 * self.dim()
    }

    fn visit_buffers(&self, visit: &mut dyn FnMut(&str, &[usize], &[F])) {
        visit("running_mean", &[self.dim()], &self.running_mean);
        visit("running_var", &[self.dim()], &self.running_var);
    }

    fn visit_buffers_mut(&mut self, visit: &mut dyn FnMut(&str, &[usize], &mut [F])) {
        let dim = self.dim();
        visit("running_mean", &[dim], &mut self.running_mean);
        visit("running_var", &[dim], &mut self.running_var);
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{Array1, Array2, s};
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::*;
    use crate::layers::ActNorm;
    use crate::testing::log_abs_det_fd;

    const D: usize = 3;

    fn random_batch_norm(rng: &mut StdRng) -> BatchNorm<f64> {
        let mut layer = BatchNorm::new(D, 0.1, 1e-5);
        for j in 0..D {
            layer.log_gamma[j] = rng.random_range(-1.5..1.5);
            layer.beta[j] = rng.random_range(-2.0..2.0);
            layer.running_mean[j] = rng.random_range(-2.0..2.0);
            layer.running_var[j] = rng.random_range(0.2..4.0);
        }
        layer
    }

    /// Rows with a different location and spread per coordinate.
    fn random_rows(rows: usize, rng: &mut StdRng) -> Array2<f64> {
        Array2::from_shape_fn((rows, D), |(_, j)| {
            (j as f64 + 0.5) * rng.random_range(-3.0..3.0) + 2.0 * j as f64 - 1.0
        })
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
    }

    /// Which pass an objective or gradient runs through.
    #[derive(Clone, Copy, Debug)]
    enum Pass {
        Forward,
        Inverse,
        InverseTraining,
    }

    fn run(l: &BatchNorm<f64>, pass: Pass, v: &Array2<f64>) -> (Array2<f64>, Array1<f64>) {
        let mut out = v.clone();
        let mut ld = Array1::zeros(v.nrows());
        let ws = &mut Workspace::default();
        match pass {
            Pass::Forward => l.forward_block(out.view_mut(), ld.view_mut(), ws),
            Pass::Inverse => l.inverse_block(out.view_mut(), ld.view_mut(), ws),
            Pass::InverseTraining => l.inverse_block_training(out.view_mut(), ld.view_mut(), ws),
        }
        (out, ld)
    }

    /// `J = Σ_i w_i·ld_i + Σ_ij c_ij·out_ij` of `pass` at `v`.
    fn objective(
        l: &BatchNorm<f64>,
        pass: Pass,
        v: &Array2<f64>,
        c: &Array2<f64>,
        w: &Array1<f64>,
    ) -> f64 {
        let (out, ld) = run(l, pass, v);
        (&out * c).sum() + (&ld * w).sum()
    }

    /// `∂J/∂v` of `pass` (the gradient of its input); adds `∂J/∂θ` to `pg`.
    fn backward(
        l: &BatchNorm<f64>,
        pass: Pass,
        v: &Array2<f64>,
        c: &Array2<f64>,
        w: &Array1<f64>,
        pg: &mut [f64],
    ) -> Array2<f64> {
        let mut g = c.clone();
        let ws = &mut Workspace::default();
        let (v, gv, w) = (v.view(), g.view_mut(), w.view());
        match pass {
            Pass::Forward => l.forward_backward_block(v, gv, w, pg, ws),
            Pass::Inverse => l.inverse_backward_block(v, gv, w, pg, ws),
            Pass::InverseTraining => l.inverse_backward_block_training(v, gv, w, pg, ws),
        }
        g
    }

    /// Checks `backward` against central differences of `objective`, for every input entry
    /// and every parameter (through the mutable visitor, so in layout order).
    fn check_gradients(pass: Pass, seed: u64, rows: usize) {
        let mut rng = StdRng::seed_from_u64(seed);
        let l = random_batch_norm(&mut rng);
        let v = random_rows(rows, &mut rng);
        let c = Array2::from_shape_fn((rows, D), |_| rng.random_range(-2.0..2.0));
        let w = Array1::from_shape_fn(rows, |_| rng.random_range(-2.0..2.0));
        let mut pg = vec![0.0; 2 * D];
        let g = backward(&l, pass, &v, &c, &w, &mut pg);
        let h = 1e-6;
        for i in 0..rows {
            for j in 0..D {
                let (mut up, mut down) = (v.clone(), v.clone());
                up[[i, j]] += h;
                down[[i, j]] -= h;
                let fd = (objective(&l, pass, &up, &c, &w) - objective(&l, pass, &down, &c, &w))
                    / (2.0 * h);
                assert!(
                    close(g[[i, j]], fd, 1e-6),
                    "{pass:?} input[{i},{j}]: {} vs {fd}",
                    g[[i, j]]
                );
            }
        }
        for (p, &got) in pg.iter().enumerate() {
            let nudge = |delta: f64| {
                let mut m = l.clone();
                let mut k = 0;
                Layer::<f64>::visit_params_mut(&mut m, &mut |_, _, values| {
                    for x in values {
                        if k == p {
                            *x += delta;
                        }
                        k += 1;
                    }
                });
                objective(&m, pass, &v, &c, &w)
            };
            let fd = (nudge(h) - nudge(-h)) / (2.0 * h);
            assert!(close(got, fd, 1e-6), "{pass:?} param {p}: {got} vs {fd}");
        }
    }

    /// Per-column (mean, population variance) of `x`.
    fn moments(x: &Array2<f64>) -> Vec<(f64, f64)> {
        x.columns()
            .into_iter()
            .map(|c| {
                let n = c.len() as f64;
                let m = c.sum() / n;
                (m, c.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n)
            })
            .collect()
    }

    #[test]
    fn fresh_layer_and_its_params_and_buffers() {
        let mut l = BatchNorm::<f64>::new(D, 0.1, 1e-5);
        assert_eq!(Layer::<f64>::kind(&l), "batch_norm");
        assert!(Layer::<f64>::uses_batch_statistics(&l));
        assert!(!Layer::<f64>::needs_data_init(&l));
        assert_eq!((l.momentum(), l.eps(), l.dim()), (0.1, 1e-5, D));
        assert_eq!(Layer::<f64>::param_len(&l), 2 * D);
        assert_eq!(Layer::<f64>::buffer_len(&l), 2 * D);
        let mut params = Vec::new();
        Layer::<f64>::visit_params(&l, &mut |name, shape, values| {
            params.push((name.to_owned(), shape.to_vec(), values.to_vec()));
        });
        assert_eq!(
            params,
            [
                ("log_gamma".into(), vec![D], vec![0.0; D]),
                ("beta".into(), vec![D], vec![0.0; D])
            ]
        );
        let mut buffers = Vec::new();
        Layer::<f64>::visit_buffers(&l, &mut |name, shape, values| {
            buffers.push((name.to_owned(), shape.to_vec(), values.to_vec()));
        });
        assert_eq!(
            buffers,
            [
                ("running_mean".into(), vec![D], vec![0.0; D]),
                ("running_var".into(), vec![D], vec![1.0; D])
            ]
        );
        let mut k = 0.0;
        Layer::<f64>::visit_params_mut(&mut l, &mut |_, _, values| {
            for v in values {
                *v = k;
                k += 1.0;
            }
        });
        Layer::<f64>::visit_buffers_mut(&mut l, &mut |_, _, values| {
            for v in values {
                *v = k;
                k += 1.0;
            }
        });
        assert_eq!(l.log_gamma, [0.0, 1.0, 2.0]);
        assert_eq!(l.beta, [3.0, 4.0, 5.0]);
        assert_eq!(l.running_mean, [6.0, 7.0, 8.0]);
        assert_eq!(l.running_var, [9.0, 10.0, 11.0]);
    }

    #[test]
    #[should_panic(expected = "momentum")]
    fn zero_momentum_panics() {
        BatchNorm::<f64>::new(D, 0.0, 1e-5);
    }

    #[test]
    #[should_panic(expected = "momentum")]
    fn momentum_above_one_panics() {
        BatchNorm::<f64>::new(D, 1.5, 1e-5);
    }

    #[test]
    #[should_panic(expected = "eps")]
    fn zero_eps_panics() {
        BatchNorm::<f64>::new(D, 0.1, 0.0);
    }

    #[test]
    #[should_panic(expected = "eps")]
    fn infinite_eps_panics() {
        BatchNorm::<f64>::new(D, 0.1, f64::INFINITY);
    }

    #[test]
    fn evaluation_is_the_affine_map_of_the_running_statistics() {
        let mut rng = StdRng::seed_from_u64(1);
        let l = random_batch_norm(&mut rng);
        let y = random_rows(9, &mut rng);
        let (x, ld) = run(&l, Pass::Inverse, &y);
        let expected_ld: f64 = (0..D)
            .map(|j| l.log_gamma[j] - 0.5 * (l.running_var[j] + 1e-5).ln())
            .sum();
        for i in 0..9 {
            for j in 0..D {
                let expected = l.log_gamma[j].exp() * (y[[i, j]] - l.running_mean[j])
                    / (l.running_var[j] + 1e-5).sqrt()
                    + l.beta[j];
                assert!(close(x[[i, j]], expected, 1e-14));
            }
            assert!(close(ld[i], expected_ld, 1e-14));
        }
    }

    #[test]
    fn evaluation_round_trip_both_ways() {
        let mut rng = StdRng::seed_from_u64(2);
        let l = random_batch_norm(&mut rng);
        let x = random_rows(50, &mut rng);
        let (y, ld) = run(&l, Pass::Forward, &x);
        let (back, ild) = run(&l, Pass::Inverse, &y);
        for (a, b) in back.iter().zip(&x) {
            assert!(close(*a, *b, 1e-13), "{a} vs {b}");
        }
        let (z, _) = run(&l, Pass::Inverse, &x);
        let (again, _) = run(&l, Pass::Forward, &z);
        for (a, b) in again.iter().zip(&x) {
            assert!(close(*a, *b, 1e-13), "{a} vs {b}");
        }
        for (f, i) in ld.iter().zip(&ild) {
            assert_eq!(*f, -*i);
        }
    }

    #[test]
    fn evaluation_log_dets_match_finite_differences() {
        let mut rng = StdRng::seed_from_u64(3);
        let l = random_batch_norm(&mut rng);
        for row in random_rows(10, &mut rng).rows() {
            let row = row.as_slice().unwrap();
            let forward = |x: &[f64]| {
                let mut v = x.to_vec();
                l.forward_point(&mut v, &mut []);
                v
            };
            let inverse = |y: &[f64]| {
                let mut v = y.to_vec();
                l.inverse_point(&mut v, &mut []);
                v
            };
            let fd = log_abs_det_fd(forward, row);
            let ld = l.forward_point(&mut row.to_vec(), &mut []);
            assert!(close(ld, fd, 1e-7), "forward {ld} vs {fd}");
            let fd = log_abs_det_fd(inverse, row);
            let ld = l.inverse_point(&mut row.to_vec(), &mut []);
            assert!(close(ld, fd, 1e-7), "inverse {ld} vs {fd}");
        }
    }

    #[test]
    fn point_path_equals_block_path_bit_for_bit_and_strided_blocks_work() {
        let mut rng = StdRng::seed_from_u64(4);
        let l = random_batch_norm(&mut rng);
        let x = random_rows(40, &mut rng);
        let (y, ld) = run(&l, Pass::Forward, &x);
        let (z, ild) = run(&l, Pass::Inverse, &x);
        for i in 0..40 {
            let mut p = x.row(i).to_vec();
            let lp = l.forward_point(&mut p, &mut []);
            assert_eq!(p, y.row(i).to_vec());
            assert_eq!(lp.to_bits(), ld[i].to_bits());
            let mut q = x.row(i).to_vec();
            let lq = l.inverse_point(&mut q, &mut []);
            assert_eq!(q, z.row(i).to_vec());
            assert_eq!(lq.to_bits(), ild[i].to_bits());
        }
        // Every other row of a wider array, in its columns 1..4, with a strided log-det.
        let mut wide = Array2::<f64>::zeros((80, D + 2));
        wide.slice_mut(s![..;2, 1..D + 1]).assign(&x);
        let mut lds = Array1::<f64>::zeros(80);
        let cols = s![..;2, 1..D + 1];
        let ws = &mut Workspace::default();
        l.inverse_block(wide.slice_mut(cols), lds.slice_mut(s![..;2]), ws);
        assert_eq!(wide.slice(cols), z);
        assert_eq!(lds.slice(s![..;2]), ild);
        let (t, tld) = run(&l, Pass::InverseTraining, &x);
        wide.slice_mut(cols).assign(&x);
        lds.fill(0.0);
        l.inverse_block_training(wide.slice_mut(cols), lds.slice_mut(s![..;2]), ws);
        assert_eq!(wide.slice(cols), t);
        assert_eq!(lds.slice(s![..;2]), tld);
        assert!(wide.slice(s![1..;2, ..]).iter().all(|&v| v == 0.0));
    }

    #[test]
    fn evaluation_inverse_backward_matches_finite_differences() {
        check_gradients(Pass::Inverse, 5, 7);
    }

    #[test]
    fn evaluation_forward_backward_matches_finite_differences() {
        check_gradients(Pass::Forward, 6, 7);
    }

    #[test]
    fn training_inverse_backward_matches_finite_differences() {
        check_gradients(Pass::InverseTraining, 7, 7);
        check_gradients(Pass::InverseTraining, 8, 5);
        check_gradients(Pass::InverseTraining, 9, 2);
    }

    #[test]
    fn backward_passes_add_to_param_grad() {
        let mut rng = StdRng::seed_from_u64(10);
        let l = random_batch_norm(&mut rng);
        let v = random_rows(6, &mut rng);
        let c = random_rows(6, &mut rng);
        let w = Array1::from_elem(6, -0.3);
        for pass in [Pass::Forward, Pass::Inverse, Pass::InverseTraining] {
            let mut fresh = vec![0.0; 2 * D];
            backward(&l, pass, &v, &c, &w, &mut fresh);
            let mut pg: Vec<f64> = (0..2 * D).map(|k| k as f64 - 1.5).collect();
            backward(&l, pass, &v, &c, &w, &mut pg);
            for (k, (a, b)) in pg.iter().zip(&fresh).enumerate() {
                assert!(close(*a, k as f64 - 1.5 + b, 1e-15), "{pass:?} {k}");
            }
        }
    }

    #[test]
    fn training_inverse_standardises_the_block() {
        let mut rng = StdRng::seed_from_u64(11);
        // Random running statistics: training must not use them.
        let mut l = random_batch_norm(&mut rng);
        l.log_gamma.fill(0.0);
        l.beta.fill(0.0);
        let y = random_rows(300, &mut rng);
        let batch = moments(&y);
        let (x, ld) = run(&l, Pass::InverseTraining, &y);
        for (j, (m, v)) in moments(&x).into_iter().enumerate() {
            assert!(m.abs() < 1e-12, "mean {m}");
            // v/(v + eps) with the block's variance v.
            assert!(close(v, batch[j].1 / (batch[j].1 + 1e-5), 1e-12), "var {v}");
            assert!((v - 1.0).abs() < 1e-4);
        }
        let expected: f64 = batch.iter().map(|(_, v)| -0.5 * (v + 1e-5).ln()).sum();
        assert!(ld.iter().all(|&v| close(v, expected, 1e-13)));
        // With gamma and beta: mean beta, standard deviation ≈ gamma.
        let l = random_batch_norm(&mut rng);
        let (x, _) = run(&l, Pass::InverseTraining, &y);
        for (j, (m, v)) in moments(&x).into_iter().enumerate() {
            assert!(close(m, l.beta[j], 1e-12));
            assert!(close(v.sqrt(), l.log_gamma[j].exp(), 1e-5));
        }
    }

    #[test]
    fn running_statistics_follow_the_update_formula() {
        let mut rng = StdRng::seed_from_u64(12);
        let mut l = random_batch_norm(&mut rng);
        let start = l.clone();
        let y = random_rows(20, &mut rng);
        let batch = moments(&y);
        Layer::<f64>::track_batch_statistics(&mut l, y.view());
        for (j, &(m, v)) in batch.iter().enumerate() {
            let unbiased = v * 20.0 / 19.0;
            let mean = 0.9 * start.running_mean[j] + 0.1 * m;
            let var = 0.9 * start.running_var[j] + 0.1 * unbiased;
            assert!(close(l.running_mean[j], mean, 1e-14));
            assert!(close(l.running_var[j], var, 1e-14));
        }
        // Parameters untouched; one finite row moves only the mean.
        assert_eq!((&l.log_gamma, &l.beta), (&start.log_gamma, &start.beta));
        let before = l.clone();
        Layer::<f64>::track_batch_statistics(&mut l, y.slice(s![..1, ..]));
        for j in 0..D {
            let mean = 0.9 * before.running_mean[j] + 0.1 * y[[0, j]];
            assert!(close(l.running_mean[j], mean, 1e-14));
        }
        assert_eq!(l.running_var, before.running_var);
        // Momentum 1: the block's statistics; repeated, they stay.
        let mut one = BatchNorm::<f64>::new(D, 1.0, 1e-5);
        for _ in 0..2 {
            Layer::<f64>::track_batch_statistics(&mut one, y.view());
            for (j, &(m, v)) in batch.iter().enumerate() {
                assert!(close(one.running_mean[j], m, 1e-14));
                assert!(close(one.running_var[j], v * 20.0 / 19.0, 1e-14));
            }
        }
        // Evaluation then uses them: the inverse of the block is (almost) standardised.
        let (x, _) = run(&one, Pass::Inverse, &y);
        for (m, v) in moments(&x) {
            // 19/20 · var/(var + eps): the population variance, eps added.
            assert!(m.abs() < 1e-12 && close(v, 19.0 / 20.0, 1e-4), "{m} {v}");
        }
    }

    #[test]
    fn non_finite_rows_are_left_out_of_the_statistics() {
        let mut rng = StdRng::seed_from_u64(13);
        let l = random_batch_norm(&mut rng);
        let clean = random_rows(8, &mut rng);
        let mut dirty = Array2::zeros((11, D));
        dirty.slice_mut(s![..8, ..]).assign(&clean);
        dirty.row_mut(8).fill(f64::NAN);
        dirty[[9, 1]] = f64::INFINITY;
        dirty[[10, 0]] = f64::NEG_INFINITY;
        dirty[[10, 2]] = 1e3;
        let (x, ld) = run(&l, Pass::InverseTraining, &dirty);
        let (x_clean, ld_clean) = run(&l, Pass::InverseTraining, &clean);
        assert_eq!(x.slice(s![..8, ..]), x_clean);
        assert_eq!(ld.slice(s![..8]), ld_clean);
        assert!(ld.slice(s![8..]).iter().all(|&v| v == f64::NEG_INFINITY));
        assert!(x.row(8).iter().all(|v| v.is_nan()));
        assert!(x[[9, 1]].is_nan() && x[[10, 0]].is_nan());
        // The backward pass: NaN rows for the rejected ones, the rest as without them.
        let c = random_rows(11, &mut rng);
        let w = Array1::from_shape_fn(11, |_| rng.random_range(-2.0..2.0));
        let mut pg = vec![0.0; 2 * D];
        let g = backward(&l, Pass::InverseTraining, &dirty, &c, &w, &mut pg);
        let mut pg_clean = vec![0.0; 2 * D];
        let (c8, w8) = (c.slice(s![..8, ..]).to_owned(), w.slice(s![..8]).to_owned());
        let g_clean = backward(&l, Pass::InverseTraining, &clean, &c8, &w8, &mut pg_clean);
        assert_eq!(g.slice(s![..8, ..]), g_clean);
        assert_eq!(pg, pg_clean);
        assert!(g.slice(s![8.., ..]).iter().all(|v| v.is_nan()));
        // The running statistics.
        let (mut a, mut b) = (l.clone(), l.clone());
        Layer::<f64>::track_batch_statistics(&mut a, clean.view());
        Layer::<f64>::track_batch_statistics(&mut b, dirty.view());
        assert_eq!(a, b);
        // No finite row: nothing tracked; the training pass rejects every row.
        let rejected = dirty.slice(s![8.., ..]).to_owned();
        Layer::<f64>::track_batch_statistics(&mut b, rejected.view());
        assert_eq!(a, b);
        let (_, ld) = run(&l, Pass::InverseTraining, &rejected);
        assert!(ld.iter().all(|&v| v == f64::NEG_INFINITY));
        let mut pg = vec![0.0; 2 * D];
        let (c3, w3) = (c.slice(s![8.., ..]).to_owned(), w.slice(s![8..]).to_owned());
        let g = backward(&l, Pass::InverseTraining, &rejected, &c3, &w3, &mut pg);
        assert!(g.iter().all(|v| v.is_nan()) && pg.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn evaluation_non_finite_inputs_stay_in_their_entry() {
        let mut rng = StdRng::seed_from_u64(14);
        let l = random_batch_norm(&mut rng);
        let mut y = random_rows(4, &mut rng);
        y[[1, 0]] = f64::NAN;
        y[[2, 2]] = f64::INFINITY;
        let (x, ld) = run(&l, Pass::Inverse, &y);
        assert_eq!((ld[1], ld[2]), (f64::NEG_INFINITY, f64::NEG_INFINITY));
        assert!(ld[0].is_finite() && ld[3].is_finite());
        assert!(x[[1, 0]].is_nan() && x[[2, 2]].is_nan() && x[[1, 1]].is_finite());
        for pass in [Pass::Inverse, Pass::Forward] {
            let mut pg = vec![0.0; 2 * D];
            let (c, w) = (Array2::from_elem((4, D), 0.5), Array1::from_elem(4, 1.0));
            let g = backward(&l, pass, &y, &c, &w, &mut pg);
            assert!(g.row(0).iter().all(|v| v.is_finite()));
            assert!(g[[1, 0]].is_nan() && g[[2, 2]].is_nan() && g[[1, 1]].is_finite());
            assert!(pg.iter().all(|v| v.is_finite()), "{pass:?}");
        }
    }

    #[test]
    fn a_one_row_block_in_training_stays_finite() {
        let mut rng = StdRng::seed_from_u64(15);
        let l = random_batch_norm(&mut rng);
        let y = random_rows(1, &mut rng);
        let (x, ld) = run(&l, Pass::InverseTraining, &y);
        // v = 0: x̂ = 0, so x = beta, and the log-det uses 1/sqrt(eps).
        assert_eq!(x.row(0).to_vec(), l.beta);
        let expected: f64 = l.log_gamma.iter().map(|g| g - 0.5 * 1e-5f64.ln()).sum();
        assert!(close(ld[0], expected, 1e-14));
        let c = random_rows(1, &mut rng);
        let mut pg = vec![0.0; 2 * D];
        let g = backward(
            &l,
            Pass::InverseTraining,
            &y,
            &c,
            &Array1::from_elem(1, 0.7),
            &mut pg,
        );
        assert!(g.iter().all(|&v| v == 0.0));
        for j in 0..D {
            assert!(close(pg[j], 0.7, 1e-15) && close(pg[D + j], c[[0, j]], 1e-15));
        }
    }

    #[test]
    fn other_layers_keep_the_default_hooks() {
        let mut rng = StdRng::seed_from_u64(16);
        let mut l = ActNorm::<f64>::new(D);
        l.affine.shift = vec![0.5, -1.0, 2.0];
        l.affine.log_scale = vec![0.3, -0.2, 0.1];
        assert!(!Layer::<f64>::uses_batch_statistics(&l));
        assert_eq!(Layer::<f64>::buffer_len(&l), 0);
        let mut visits = 0;
        Layer::<f64>::visit_buffers(&l, &mut |_, _, _| visits += 1);
        Layer::<f64>::visit_buffers_mut(&mut l, &mut |_, _, _| visits += 1);
        assert_eq!(visits, 0);
        let before = l.clone();
        Layer::<f64>::track_batch_statistics(&mut l, random_rows(5, &mut rng).view());
        assert_eq!(l, before);
        let y = random_rows(6, &mut rng);
        let ws = &mut Workspace::default();
        let (mut a, mut b) = (y.clone(), y.clone());
        let (mut la, mut lb) = (Array1::zeros(6), Array1::zeros(6));
        l.inverse_block(a.view_mut(), la.view_mut(), ws);
        l.inverse_block_training(b.view_mut(), lb.view_mut(), ws);
        assert_eq!((a, la), (b, lb));
        let c = random_rows(6, &mut rng);
        let w = Array1::from_elem(6, 1.25);
        let (mut ga, mut gb) = (c.clone(), c.clone());
        let (mut pa, mut pb) = (vec![0.0; 2 * D], vec![0.0; 2 * D]);
        l.inverse_backward_block(y.view(), ga.view_mut(), w.view(), &mut pa, ws);
        l.inverse_backward_block_training(y.view(), gb.view_mut(), w.view(), &mut pb, ws);
        assert_eq!((ga, pa), (gb, pb));
    }

    #[test]
    fn workspace_does_not_grow_on_repeated_calls() {
        let mut rng = StdRng::seed_from_u64(17);
        let l = random_batch_norm(&mut rng);
        let mut x = random_rows(300, &mut rng);
        let mut ld = Array1::zeros(300);
        let mut g = Array2::zeros((300, D));
        let mut ws = Workspace::default();
        let mut round = |ws: &mut Workspace<f64>| {
            let pg = &mut [0.0; 2 * D];
            l.forward_block(x.view_mut(), ld.view_mut(), ws);
            l.inverse_block(x.view_mut(), ld.view_mut(), ws);
            l.inverse_block_training(x.view_mut(), ld.view_mut(), ws);
            l.inverse_backward_block(x.view(), g.view_mut(), ld.view(), pg, ws);
            l.forward_backward_block(x.view(), g.view_mut(), ld.view(), pg, ws);
            l.inverse_backward_block_training(x.view(), g.view_mut(), ld.view(), pg, ws);
        };
        // The first round grows the workspace (the training passes' f64 scratch too).
        round(&mut ws);
        let cap = ws.capacity();
        for _ in 0..3 {
            round(&mut ws);
        }
        assert_eq!(ws.capacity(), cap);
    }

    #[test]
    fn works_in_f32() {
        let mut rng = StdRng::seed_from_u64(18);
        let l64 = random_batch_norm(&mut rng);
        let mut l = BatchNorm::<f32>::new(D, 0.1, 1e-5);
        let narrow = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
        l.log_gamma = narrow(&l64.log_gamma);
        l.beta = narrow(&l64.beta);
        l.running_mean = narrow(&l64.running_mean);
        l.running_var = narrow(&l64.running_var);
        let y64 = random_rows(100, &mut rng);
        let y = y64.mapv(|v| v as f32);
        let ws = &mut Workspace::default();
        for pass in [Pass::Forward, Pass::Inverse, Pass::InverseTraining] {
            let (out64, ld64) = run(&l64, pass, &y64);
            let mut out = y.clone();
            let mut ld = Array1::<f32>::zeros(100);
            match pass {
                Pass::Forward => l.forward_block(out.view_mut(), ld.view_mut(), ws),
                Pass::Inverse => l.inverse_block(out.view_mut(), ld.view_mut(), ws),
                Pass::InverseTraining => {
                    l.inverse_block_training(out.view_mut(), ld.view_mut(), ws)
                }
            }
            for (a, b) in out.iter().zip(&out64).chain(ld.iter().zip(&ld64)) {
                assert!(close(*a as f64, *b, 1e-5), "{pass:?} {a} vs {b}");
            }
        }
        // The training backward pass.
        let c64 = random_rows(100, &mut rng);
        let w64 = Array1::from_shape_fn(100, |_| rng.random_range(-1.0..1.0));
        let mut pg64 = vec![0.0; 2 * D];
        let g64 = backward(&l64, Pass::InverseTraining, &y64, &c64, &w64, &mut pg64);
        let mut g = c64.mapv(|v| v as f32);
        let mut pg = vec![0.0f32; 2 * D];
        let w = w64.mapv(|v| v as f32);
        l.inverse_backward_block_training(y.view(), g.view_mut(), w.view(), &mut pg, ws);
        for (a, b) in g.iter().zip(&g64).chain(pg.iter().zip(&pg64)) {
            assert!(close(*a as f64, *b, 1e-4), "{a} vs {b}");
        }
        Layer::<f32>::track_batch_statistics(&mut l, y.view());
        assert!(l.running_var.iter().all(|v| v.is_finite() && *v > 0.0));
    }
}
