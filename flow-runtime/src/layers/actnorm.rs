//! ActNorm (Glow, Kingma & Dhariwal 2018): a per-coordinate affine map whose parameters are
//! set from the first batch it sees, so that the inverse pass starts out normalising.
//!
//! `y = x·exp(log_scale[j]) + shift[j]` towards the data, `x = (y − shift[j])·exp(−log_scale[j])`
//! towards the base, forward log-det `Σ_j log_scale[j]`: the kernels of [`Affine`], which
//! this layer wraps, so it fuses with its elementwise neighbours like `affine` does.

use ndarray::{ArrayView2, Axis};

use crate::float::Float;
use crate::layers::elementwise::{Affine, ElementwiseParams};
use crate::layers::{Elementwise, LANES, elementwise_layer};

/// Added to a coordinate's standard deviation before taking its log in
/// [`ActNorm::init_from_data`], so that a constant coordinate gives a finite scale.
pub const ACTNORM_EPS: f64 = 1e-6;

/// Glow's activation normalisation: an [`Affine`] map with parameters `shift` (`[D]`) and
/// `log_scale` (`[D]`), flat in that order, that starts as the identity and waits for a
/// data-dependent initialisation ([`ActNorm::init_from_data`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ActNorm<F> {
    /// The map and its parameters (`y = x·exp(log_scale) + shift`).
    pub affine: Affine<F>,
    initialized: bool,
}

impl<F: Float> ActNorm<F> {
    /// The identity on `dim` coordinates, not yet initialised from data.
    pub fn new(dim: usize) -> Self {
        Self {
            affine: Affine::identity(dim),
            initialized: false,
        }
    }

    /// Whether the parameters have been set from data (or marked as such, e.g. by a load).
    pub fn is_initialized(&self) -> bool {
        self.initialized
    }

    /// Sets the parameters so that the inverse maps the rows of `y` (the block this layer's
    /// inverse receives) to zero mean and unit variance per coordinate:
    /// `shift[j] = mean_j`, `log_scale[j] = log(std_j + ε)` with the population standard
    /// deviation and `ε =` [`ACTNORM_EPS`], so the inverse's output has standard deviation
    /// `std_j/(std_j + ε)` (≈ 1; 0 for a constant coordinate, never a division by zero).
    ///
    /// Rows with a non-finite entry are ignored. Without any finite row the layer is left
    /// as it is and stays un-initialised. Statistics are accumulated in `f64`.
    pub fn init_from_data(&mut self, y: ArrayView2<'_, F>) {
        let dim = self.affine.shift.len();
        assert_eq!(y.ncols(), dim, "actnorm: the block has {dim} columns");
        let finite_rows = || {
            y.axis_iter(Axis(0))
                .filter(|row| row.iter().all(|v| v.is_finite()))
        };
        let mut count = 0usize;
        let mut sum = vec![0.0f64; dim];
        for row in finite_rows() {
            count += 1;
            for (s, v) in sum.iter_mut().zip(row) {
                *s += v.to_f64_lossless();
            }
        }
        if count == 0 {
            return;
        }
        let n = count as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let mut squares = vec![0.0f64; dim];
        for row in finite_rows() {
            for ((q, v), m) in squares.iter_mut().zip(row).zip(&mean) {
                let d = v.to_f64_lossless() - m;
                *q += d * d;
            }
        }
        for j in 0..dim {
            let std = (squares[j] / n).sqrt();
            self.affine.shift[j] = F::of(mean[j]);
            self.affine.log_scale[j] = F::of((std + ACTNORM_EPS).ln());
        }
        self.initialized = true;
    }
}

/// The kernels of [`Affine`].
impl<F: Float> Elementwise<F> for ActNorm<F> {
    #[inline(always)]
    fn forward(&self, j: usize, x: F) -> (F, F) {
        self.affine.forward(j, x)
    }
    #[inline(always)]
    fn inverse(&self, j: usize, y: F) -> (F, F) {
        self.affine.inverse(j, y)
    }
    #[inline(always)]
    fn forward_lanes(&self, j: usize, v: &mut [F; LANES], acc: &mut [F; LANES]) {
        self.affine.forward_lanes(j, v, acc)
    }
    #[inline(always)]
    fn forward_values_lanes(&self, j: usize, v: &mut [F; LANES]) {
        self.affine.forward_values_lanes(j, v)
    }
    #[inline(always)]
    fn inverse_lanes(&self, j: usize, v: &mut [F; LANES], acc: &mut [F; LANES]) {
        self.affine.inverse_lanes(j, v, acc)
    }
    #[inline]
    fn inverse_backward(&self, j: usize, y: F, x_bar: F, w: F, param_grad: &mut [F]) -> F {
        self.affine.inverse_backward(j, y, x_bar, w, param_grad)
    }
    #[inline]
    fn forward_backward(&self, j: usize, x: F, y_bar: F, w: F, param_grad: &mut [F]) -> F {
        self.affine.forward_backward(j, x, y_bar, w, param_grad)
    }
}

/// `shift` (`[D]`) then `log_scale` (`[D]`), as for [`Affine`]; the data-init hooks.
impl<F: Float> ElementwiseParams<F> for ActNorm<F> {
    fn param_len(&self) -> usize {
        self.affine.param_len()
    }
    fn visit_params(&self, visit: &mut dyn FnMut(&str, &[usize], &[F])) {
        self.affine.visit_params(visit)
    }
    fn visit_params_mut(&mut self, visit: &mut dyn FnMut(&str, &[usize], &mut [F])) {
        self.affine.visit_params_mut(visit)
    }
    fn needs_data_init(&self) -> bool {
        !self.initialized
    }
    fn init_from_data(&mut self, y: ArrayView2<'_, F>) {
        ActNorm::init_from_data(self, y)
    }
    fn mark_data_initialized(&mut self) {
        self.initialized = true;
    }
}

elementwise_layer!(ActNorm<F>, "actnorm");

#[cfg(test)]
mod tests {
    use ndarray::{Array1, Array2, s};
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::*;
    use crate::layers::Layer;
    use crate::testing::log_abs_det_fd;
    use crate::workspace::Workspace;

    const D: usize = 3;

    fn random_actnorm(rng: &mut StdRng) -> ActNorm<f64> {
        let mut layer = ActNorm::new(D);
        for v in &mut layer.affine.shift {
            *v = rng.random_range(-2.0..2.0);
        }
        for v in &mut layer.affine.log_scale {
            *v = rng.random_range(-1.5..1.5);
        }
        layer
    }

    fn random_rows(rows: usize, rng: &mut StdRng) -> Array2<f64> {
        Array2::from_shape_fn((rows, D), |_| rng.random_range(-3.0..3.0))
    }

    fn forward(l: &ActNorm<f64>, x: &Array2<f64>) -> (Array2<f64>, Array1<f64>) {
        let mut y = x.clone();
        let mut ld = Array1::zeros(x.nrows());
        l.forward_block(y.view_mut(), ld.view_mut(), &mut Workspace::default());
        (y, ld)
    }

    fn inverse(l: &ActNorm<f64>, y: &Array2<f64>) -> (Array2<f64>, Array1<f64>) {
        let mut x = y.clone();
        let mut ld = Array1::zeros(y.nrows());
        l.inverse_block(x.view_mut(), ld.view_mut(), &mut Workspace::default());
        (x, ld)
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
    }

    /// Per-column (mean, population std) of `x`.
    fn moments(x: &Array2<f64>) -> Vec<(f64, f64)> {
        x.columns()
            .into_iter()
            .map(|c| {
                let n = c.len() as f64;
                let m = c.sum() / n;
                let v = c.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n;
                (m, v.sqrt())
            })
            .collect()
    }

    #[test]
    fn fresh_actnorm_is_the_uninitialised_identity() {
        let l = ActNorm::<f64>::new(D);
        assert_eq!(Layer::<f64>::kind(&l), "actnorm");
        assert!(Layer::<f64>::needs_data_init(&l));
        assert!(!l.is_initialized());
        let x = random_rows(5, &mut StdRng::seed_from_u64(1));
        let (y, ld) = forward(&l, &x);
        assert_eq!(y, x);
        assert!(ld.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn round_trip_both_ways() {
        let mut rng = StdRng::seed_from_u64(2);
        let l = random_actnorm(&mut rng);
        let x = random_rows(50, &mut rng);
        let (y, ld) = forward(&l, &x);
        let (back, ild) = inverse(&l, &y);
        for (a, b) in back.iter().zip(&x) {
            assert!(close(*a, *b, 1e-13), "{a} vs {b}");
        }
        let (z, _) = inverse(&l, &x);
        let (again, _) = forward(&l, &z);
        for (a, b) in again.iter().zip(&x) {
            assert!(close(*a, *b, 1e-13), "{a} vs {b}");
        }
        // Inverse log-det = −forward log-det at the image.
        for (f, i) in ld.iter().zip(&ild) {
            assert!(close(*f, -*i, 1e-14), "{f} vs {i}");
        }
    }

    #[test]
    fn forward_log_det_matches_finite_differences() {
        let mut rng = StdRng::seed_from_u64(3);
        let l = random_actnorm(&mut rng);
        for row in random_rows(10, &mut rng).rows() {
            let map = |x: &[f64]| {
                let mut v = x.to_vec();
                l.forward_point(&mut v, &mut []);
                v
            };
            let fd = log_abs_det_fd(map, row.as_slice().unwrap());
            let mut v = row.to_vec();
            let ld = l.forward_point(&mut v, &mut []);
            assert!(close(ld, fd, 1e-7), "{ld} vs {fd}");
            assert!(close(ld, l.affine.log_scale.iter().sum(), 1e-15));
        }
    }

    #[test]
    fn log_dets_are_added_to_what_is_there() {
        let mut rng = StdRng::seed_from_u64(4);
        let l = random_actnorm(&mut rng);
        let x = random_rows(7, &mut rng);
        let (_, fresh) = forward(&l, &x);
        let mut y = x.clone();
        let mut ld = Array1::from_elem(7, 2.5);
        l.forward_block(y.view_mut(), ld.view_mut(), &mut Workspace::default());
        for (a, b) in ld.iter().zip(&fresh) {
            assert_eq!(*a, 2.5 + b);
        }
        let mut ld = Array1::from_elem(7, -1.0);
        let (_, inv_fresh) = inverse(&l, &y);
        l.inverse_block(y.view_mut(), ld.view_mut(), &mut Workspace::default());
        for (a, b) in ld.iter().zip(&inv_fresh) {
            assert_eq!(*a, -1.0 + b);
        }
    }

    #[test]
    fn point_path_equals_block_path_bit_for_bit() {
        let mut rng = StdRng::seed_from_u64(5);
        let l = random_actnorm(&mut rng);
        let x = random_rows(40, &mut rng);
        let (y, ld) = forward(&l, &x);
        let (z, ild) = inverse(&l, &x);
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
    }

    #[test]
    fn one_big_block_equals_blocks_of_256_and_non_contiguous_views_work() {
        let mut rng = StdRng::seed_from_u64(6);
        let l = random_actnorm(&mut rng);
        let x = random_rows(1000, &mut rng);
        let (y, ld) = forward(&l, &x);
        let (z, ild) = inverse(&l, &x);
        let mut ws = Workspace::default();
        for start in (0..1000).step_by(256) {
            let end = (start + 256).min(1000);
            let mut b = x.slice(s![start..end, ..]).to_owned();
            let mut bl = Array1::zeros(end - start);
            l.forward_block(b.view_mut(), bl.view_mut(), &mut ws);
            assert_eq!(b, y.slice(s![start..end, ..]));
            assert_eq!(bl, ld.slice(s![start..end]));
        }
        // Every other row of a wider array, in its columns 1..4, with a strided log-det.
        let mut wide = Array2::<f64>::zeros((2000, D + 2));
        wide.slice_mut(s![..;2, 1..D + 1]).assign(&x);
        let mut lds = Array1::<f64>::zeros(2000);
        l.inverse_block(
            wide.slice_mut(s![..;2, 1..D + 1]),
            lds.slice_mut(s![..;2]),
            &mut ws,
        );
        assert_eq!(wide.slice(s![..;2, 1..D + 1]), z);
        assert_eq!(lds.slice(s![..;2]), ild);
        assert!(wide.slice(s![1..;2, ..]).iter().all(|&v| v == 0.0));
        assert!(wide.column(0).iter().all(|&v| v == 0.0));
    }

    #[test]
    fn workspace_does_not_grow_on_repeated_calls() {
        let mut rng = StdRng::seed_from_u64(7);
        let l = random_actnorm(&mut rng);
        let mut x = random_rows(300, &mut rng);
        let mut ld = Array1::zeros(300);
        let mut ws = Workspace::default();
        l.forward_block(x.view_mut(), ld.view_mut(), &mut ws);
        let cap = ws.capacity();
        for _ in 0..3 {
            l.forward_block(x.view_mut(), ld.view_mut(), &mut ws);
            l.inverse_block(x.view_mut(), ld.view_mut(), &mut ws);
            let mut g = Array2::zeros((300, D));
            l.inverse_backward_block(
                x.view(),
                g.view_mut(),
                ld.view(),
                &mut [0.0; 2 * D],
                &mut ws,
            );
        }
        assert_eq!(ws.capacity(), cap);
    }

    #[test]
    fn works_in_f32() {
        let mut rng = StdRng::seed_from_u64(8);
        let l64 = random_actnorm(&mut rng);
        let mut l = ActNorm::<f32>::new(D);
        l.affine.shift = l64.affine.shift.iter().map(|&v| v as f32).collect();
        l.affine.log_scale = l64.affine.log_scale.iter().map(|&v| v as f32).collect();
        let x64 = random_rows(100, &mut rng);
        let x = x64.mapv(|v| v as f32);
        let mut y = x.clone();
        let mut ld = Array1::<f32>::zeros(100);
        l.forward_block(y.view_mut(), ld.view_mut(), &mut Workspace::default());
        let (y64, ld64) = forward(&l64, &x64);
        for (a, b) in y.iter().zip(&y64) {
            assert!(close(*a as f64, *b, 1e-5), "{a} vs {b}");
        }
        for (a, b) in ld.iter().zip(&ld64) {
            assert!(close(*a as f64, *b, 1e-5), "{a} vs {b}");
        }
        l.inverse_block(y.view_mut(), ld.view_mut(), &mut Workspace::default());
        for (a, b) in y.iter().zip(&x) {
            assert!(close(*a as f64, *b as f64, 1e-5), "{a} vs {b}");
        }
        assert!(ld.iter().all(|v| v.abs() < 1e-5));
        // The data init in f32.
        let data = Array2::from_shape_fn((500, D), |(i, j)| {
            (3.0 * j as f64 + 1.0) * rng.random_range(-1.0..1.0) + i as f64 * 1e-3 - 7.0
        })
        .mapv(|v| v as f32);
        l.init_from_data(data.view());
        let mut z = data.clone();
        let mut ld = Array1::<f32>::zeros(500);
        l.inverse_block(z.view_mut(), ld.view_mut(), &mut Workspace::default());
        for (m, sd) in moments(&z.mapv(|v| v as f64)) {
            assert!(m.abs() < 1e-5 && (sd - 1.0).abs() < 1e-5, "{m} {sd}");
        }
    }

    #[test]
    fn extreme_and_non_finite_inputs_stay_in_their_row() {
        let mut rng = StdRng::seed_from_u64(9);
        let l = random_actnorm(&mut rng);
        let mut y = random_rows(4, &mut rng);
        y[[1, 0]] = f64::NAN;
        y[[2, 2]] = f64::INFINITY;
        y[[3, 1]] = 1e300;
        let (x, ld) = inverse(&l, &y);
        assert_eq!(ld[1], f64::NEG_INFINITY);
        assert_eq!(ld[2], f64::NEG_INFINITY);
        assert!(ld[0].is_finite() && ld[3].is_finite());
        assert!(x.row(0).iter().all(|v| v.is_finite()));
        assert!(x.row(3).iter().all(|v| !v.is_nan()));
        // The backward pass: NaN gradient only in the rejected rows, param_grad finite.
        let mut g = Array2::from_elem((4, D), 0.5);
        let mut pg = vec![0.0; 2 * D];
        let w = Array1::from_elem(4, 1.0);
        l.inverse_backward_block(
            y.view(),
            g.view_mut(),
            w.view(),
            &mut pg,
            &mut Workspace::default(),
        );
        assert!(g.row(0).iter().all(|v| v.is_finite()));
        assert!(g[[1, 0]].is_nan() && g[[2, 2]].is_nan());
        assert!(pg.iter().all(|v| v.is_finite()));
    }

    /// `J = Σ_i w_i·ld_i + Σ_ij x̄_ij·x_ij` of the inverse at `y`.
    fn objective(l: &ActNorm<f64>, y: &Array2<f64>, x_bar: &Array2<f64>, w: &Array1<f64>) -> f64 {
        let (x, ld) = inverse(l, y);
        (&x * x_bar).sum() + (&ld * w).sum()
    }

    fn backward(
        l: &ActNorm<f64>,
        y: &Array2<f64>,
        x_bar: &Array2<f64>,
        w: &Array1<f64>,
        pg: &mut [f64],
    ) -> Array2<f64> {
        let mut g = x_bar.clone();
        l.inverse_backward_block(
            y.view(),
            g.view_mut(),
            w.view(),
            pg,
            &mut Workspace::default(),
        );
        g
    }

    #[test]
    fn backward_gradients_match_finite_differences() {
        let mut rng = StdRng::seed_from_u64(10);
        let l = random_actnorm(&mut rng);
        let y = random_rows(6, &mut rng);
        let x_bar = random_rows(6, &mut rng);
        let w = Array1::from_shape_fn(6, |_| rng.random_range(-2.0..2.0));
        let mut pg = vec![0.0; 2 * D];
        let g = backward(&l, &y, &x_bar, &w, &mut pg);
        let h = 1e-6;
        for i in 0..6 {
            for j in 0..D {
                let (mut up, mut down) = (y.clone(), y.clone());
                up[[i, j]] += h;
                down[[i, j]] -= h;
                let fd =
                    (objective(&l, &up, &x_bar, &w) - objective(&l, &down, &x_bar, &w)) / (2.0 * h);
                assert!(
                    close(g[[i, j]], fd, 1e-6),
                    "y[{i},{j}]: {} vs {fd}",
                    g[[i, j]]
                );
            }
        }
        // Every parameter, through the mutable visitor (so in layout order).
        for (p, &got) in pg.iter().enumerate() {
            let nudge = |delta: f64| {
                let mut m = l.clone();
                let mut k = 0;
                Layer::<f64>::visit_params_mut(&mut m, &mut |_, _, values| {
                    for v in values {
                        if k == p {
                            *v += delta;
                        }
                        k += 1;
                    }
                });
                objective(&m, &y, &x_bar, &w)
            };
            let fd = (nudge(h) - nudge(-h)) / (2.0 * h);
            assert!(close(got, fd, 1e-6), "param {p}: {got} vs {fd}");
        }
    }

    /// `J = Σ_i w_i·ld_i + Σ_ij ȳ_ij·y_ij` of the forward at `z`.
    fn forward_objective(
        l: &ActNorm<f64>,
        z: &Array2<f64>,
        y_bar: &Array2<f64>,
        w: &Array1<f64>,
    ) -> f64 {
        let (y, ld) = forward(l, z);
        (&y * y_bar).sum() + (&ld * w).sum()
    }

    #[test]
    fn forward_backward_gradients_match_finite_differences() {
        let mut rng = StdRng::seed_from_u64(17);
        let l = random_actnorm(&mut rng);
        let z = random_rows(7, &mut rng);
        let y_bar = random_rows(7, &mut rng);
        let w = Array1::from_shape_fn(7, |_| rng.random_range(-2.0..2.0));
        let start: Vec<f64> = (0..2 * D).map(|k| 0.5 - k as f64).collect();
        let mut pg = start.clone();
        let mut g = y_bar.clone();
        l.forward_backward_block(
            z.view(),
            g.view_mut(),
            w.view(),
            &mut pg,
            &mut Workspace::default(),
        );
        let h = 1e-6;
        for i in 0..7 {
            for j in 0..D {
                let (mut up, mut down) = (z.clone(), z.clone());
                up[[i, j]] += h;
                down[[i, j]] -= h;
                let fd = (forward_objective(&l, &up, &y_bar, &w)
                    - forward_objective(&l, &down, &y_bar, &w))
                    / (2.0 * h);
                assert!(
                    close(g[[i, j]], fd, 1e-6),
                    "z[{i},{j}]: {} vs {fd}",
                    g[[i, j]]
                );
            }
        }
        // Every parameter, through the mutable visitor; added onto what pg held.
        for p in 0..2 * D {
            let nudge = |delta: f64| {
                let mut m = l.clone();
                let mut k = 0;
                Layer::<f64>::visit_params_mut(&mut m, &mut |_, _, values| {
                    for v in values {
                        if k == p {
                            *v += delta;
                        }
                        k += 1;
                    }
                });
                forward_objective(&m, &z, &y_bar, &w)
            };
            let fd = (nudge(h) - nudge(-h)) / (2.0 * h);
            let got = pg[p] - start[p];
            assert!(close(got, fd, 1e-6), "param {p}: {got} vs {fd}");
        }
        // Non-finite inputs: NaN in their entry, param_grad left finite.
        let mut bad = z.clone();
        bad[[2, 1]] = f64::NAN;
        bad[[5, 0]] = f64::INFINITY;
        let mut g = y_bar.clone();
        let mut pg2 = vec![0.0; 2 * D];
        l.forward_backward_block(
            bad.view(),
            g.view_mut(),
            w.view(),
            &mut pg2,
            &mut Workspace::default(),
        );
        assert!(g[[2, 1]].is_nan() && g[[5, 0]].is_nan());
        assert!(g[[0, 0]].is_finite() && pg2.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn backward_adds_to_param_grad() {
        let mut rng = StdRng::seed_from_u64(11);
        let l = random_actnorm(&mut rng);
        let y = random_rows(5, &mut rng);
        let x_bar = random_rows(5, &mut rng);
        let w = Array1::from_elem(5, -0.3);
        let mut fresh = vec![0.0; 2 * D];
        backward(&l, &y, &x_bar, &w, &mut fresh);
        let mut pg: Vec<f64> = (0..2 * D).map(|k| k as f64 - 1.5).collect();
        backward(&l, &y, &x_bar, &w, &mut pg);
        for (k, (a, b)) in pg.iter().zip(&fresh).enumerate() {
            assert!(close(*a, k as f64 - 1.5 + b, 1e-15), "{k}");
        }
    }

    #[test]
    fn params_are_visited_in_layout_order() {
        let mut rng = StdRng::seed_from_u64(12);
        let mut l = random_actnorm(&mut rng);
        let mut seen = Vec::new();
        Layer::<f64>::visit_params(&l, &mut |name, shape, values| {
            seen.push((name.to_owned(), shape.to_vec(), values.to_vec()));
        });
        assert_eq!(Layer::<f64>::param_len(&l), 2 * D);
        assert_eq!(seen[0], ("shift".into(), vec![D], l.affine.shift.clone()));
        assert_eq!(
            seen[1],
            ("log_scale".into(), vec![D], l.affine.log_scale.clone())
        );
        assert_eq!(seen.len(), 2);
        // The gradient layout: shift at [j], log_scale at [D + j] (∂J/∂s = −w for x̄ = 0).
        let y = random_rows(1, &mut rng);
        let mut pg = vec![0.0; 2 * D];
        backward(
            &l,
            &y,
            &Array2::zeros((1, D)),
            &Array1::from_elem(1, 1.0),
            &mut pg,
        );
        assert_eq!(pg, [0.0, 0.0, 0.0, -1.0, -1.0, -1.0]);
        let mut k = 0.0;
        Layer::<f64>::visit_params_mut(&mut l, &mut |_, _, values| {
            for v in values {
                *v = k;
                k += 1.0;
            }
        });
        assert_eq!(l.affine.shift, [0.0, 1.0, 2.0]);
        assert_eq!(l.affine.log_scale, [3.0, 4.0, 5.0]);
    }

    fn skewed_data(rows: usize, rng: &mut StdRng) -> Array2<f64> {
        Array2::from_shape_fn((rows, D), |(_, j)| {
            let u: f64 = rng.random_range(0.0..1.0);
            [5.0 + 0.01 * u, -3.0 + 40.0 * u * u, 1e3 * (u - 0.2)][j]
        })
    }

    #[test]
    fn data_init_normalises_the_inverse_output() {
        let mut rng = StdRng::seed_from_u64(13);
        let data = skewed_data(700, &mut rng);
        let mut l = ActNorm::<f64>::new(D);
        Layer::<f64>::init_from_data(&mut l, data.view());
        assert!(l.is_initialized() && !Layer::<f64>::needs_data_init(&l));
        let (z, ld) = inverse(&l, &data);
        for (m, sd) in moments(&z) {
            assert!(m.abs() < 1e-10, "mean {m}");
            // std/(std + ε): the smallest std here is about 0.003.
            assert!((sd - 1.0).abs() < 1e-3, "std {sd}");
        }
        assert!(ld.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn data_init_of_constant_columns_is_finite() {
        let mut data = skewed_data(50, &mut StdRng::seed_from_u64(14));
        data.column_mut(0).fill(4.25);
        data.column_mut(2).fill(0.0);
        let mut l = ActNorm::<f64>::new(D);
        l.init_from_data(data.view());
        assert!(l.affine.log_scale.iter().all(|v| v.is_finite()));
        assert!(close(l.affine.log_scale[0], ACTNORM_EPS.ln(), 1e-12));
        let (z, ld) = inverse(&l, &data);
        assert!(z.iter().all(|v| v.is_finite()) && ld.iter().all(|v| v.is_finite()));
        assert!(z.column(0).iter().all(|&v| v == 0.0));
        let (m, sd) = moments(&z)[1];
        assert!(m.abs() < 1e-10 && (sd - 1.0).abs() < 1e-6);
        // A single row: every column is constant.
        let mut one = ActNorm::<f64>::new(D);
        one.init_from_data(data.slice(s![..1, ..]));
        let (z, _) = inverse(&one, &data.slice(s![..1, ..]).to_owned());
        assert!(z.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn data_init_ignores_non_finite_rows() {
        let mut rng = StdRng::seed_from_u64(15);
        let clean = skewed_data(100, &mut rng);
        let mut dirty = Array2::zeros((103, D));
        dirty.slice_mut(s![..100, ..]).assign(&clean);
        dirty.row_mut(100).fill(f64::NAN);
        dirty[[101, 1]] = f64::INFINITY;
        dirty[[102, 0]] = f64::NAN;
        let (mut a, mut b) = (ActNorm::<f64>::new(D), ActNorm::<f64>::new(D));
        a.init_from_data(clean.view());
        b.init_from_data(dirty.view());
        assert_eq!(a, b);
        // Nothing finite: left as the identity, still waiting.
        let mut c = ActNorm::<f64>::new(D);
        c.init_from_data(dirty.slice(s![100.., ..]));
        assert_eq!(c, ActNorm::new(D));
        c.init_from_data(Array2::zeros((0, D)).view());
        assert!(!c.is_initialized());
    }

    #[test]
    fn marking_initialised_keeps_the_parameters() {
        let mut rng = StdRng::seed_from_u64(16);
        let mut l = random_actnorm(&mut rng);
        let before = l.affine.clone();
        Layer::<f64>::mark_data_initialized(&mut l);
        assert!(!Layer::<f64>::needs_data_init(&l));
        assert_eq!(l.affine, before);
    }
}
