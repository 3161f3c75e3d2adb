//! Checks the layers' unit tests share, for any [`Layer`]: a block pass in either
//! [`Direction`], its reverse mode, and central-difference checks of that reverse mode's
//! input and parameter gradients; log-dets by finite differences, round trips, the point
//! methods against the blocks, workspace growth and non-finite rows.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, ShapeBuilder};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::float::Float;
use crate::layers::Layer;
use crate::testing::log_abs_det_fd;
use crate::workspace::Workspace;

/// The way a layer runs: towards the base (`inverse_block`, `inverse_backward_block`) or
/// towards the data (`forward_block`, `forward_backward_block`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Inverse,
    Forward,
}

impl Direction {
    /// Both directions.
    pub const BOTH: [Direction; 2] = [Direction::Forward, Direction::Inverse];

    /// The block pass of this direction on `v`, in place.
    pub fn block<F: Float>(
        self,
        l: &dyn Layer<F>,
        v: ArrayViewMut2<'_, F>,
        log_det: ArrayViewMut1<'_, F>,
        ws: &mut Workspace<F>,
    ) {
        match self {
            Direction::Inverse => l.inverse_block(v, log_det, ws),
            Direction::Forward => l.forward_block(v, log_det, ws),
        }
    }

    /// The reverse mode of [`Direction::block`] at its input `v`: `grad` from `∂J/∂output`
    /// to `∂J/∂v`, `∂J/∂θ` added to `param_grad`.
    pub fn backward_block<F: Float>(
        self,
        l: &dyn Layer<F>,
        v: ArrayView2<'_, F>,
        grad: ArrayViewMut2<'_, F>,
        weight: ArrayView1<'_, F>,
        param_grad: &mut [F],
        ws: &mut Workspace<F>,
    ) {
        match self {
            Direction::Inverse => l.inverse_backward_block(v, grad, weight, param_grad, ws),
            Direction::Forward => l.forward_backward_block(v, grad, weight, param_grad, ws),
        }
    }
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

pub fn random_rows(rows: usize, dim: usize, rng: &mut StdRng, scale: f64) -> Array2<f64> {
    Array2::from_shape_simple_fn((rows, dim), || rng.random_range(-scale..scale))
}

pub fn forward(l: &dyn Layer<f64>, z: &Array2<f64>) -> (Array2<f64>, Array1<f64>) {
    let mut x = z.clone();
    let mut ld = Array1::zeros(z.nrows());
    l.forward_block(x.view_mut(), ld.view_mut(), &mut Workspace::default());
    (x, ld)
}

pub fn inverse(l: &dyn Layer<f64>, y: &Array2<f64>) -> (Array2<f64>, Array1<f64>) {
    let mut z = y.clone();
    let mut ld = Array1::zeros(y.nrows());
    l.inverse_block(z.view_mut(), ld.view_mut(), &mut Workspace::default());
    (z, ld)
}

/// `(output, log-det)` of the block pass in `dir` on `v`, with a fresh workspace.
pub fn run(l: &dyn Layer<f64>, dir: Direction, v: &Array2<f64>) -> (Array2<f64>, Array1<f64>) {
    let mut out = v.clone();
    let mut ld = Array1::zeros(v.nrows());
    dir.block(l, out.view_mut(), ld.view_mut(), &mut Workspace::default());
    (out, ld)
}

pub fn point_forward(l: &dyn Layer<f64>, z: &[f64]) -> (Vec<f64>, f64) {
    let mut p = z.to_vec();
    let ld = l.forward_point(&mut p, &mut []);
    (p, ld)
}

pub fn point_inverse(l: &dyn Layer<f64>, y: &[f64]) -> (Vec<f64>, f64) {
    let mut p = y.to_vec();
    let ld = l.inverse_point(&mut p, &mut []);
    (p, ld)
}

pub fn flat_params(l: &dyn Layer<f64>) -> Vec<f64> {
    let mut out = Vec::new();
    l.visit_params(&mut |_, _, v| out.extend_from_slice(v));
    out
}

pub fn set_flat_params(l: &mut dyn Layer<f64>, values: &[f64]) {
    let mut at = 0;
    l.visit_params_mut(&mut |_, _, v| {
        v.copy_from_slice(&values[at..at + v.len()]);
        at += v.len();
    });
    assert_eq!(at, values.len());
}

/// `|a − b| ≤ tol·max(1, |a|, |b|)`.
pub fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * 1f64.max(a.abs()).max(b.abs())
}

/// The forward log-dets of a few rows against `log_abs_det_fd` of the point map.
pub fn forward_log_det_matches_fd(l: &dyn Layer<f64>, z: &Array2<f64>, tol: f64) {
    let (_, ld) = forward(l, z);
    for (row, &ld) in z.rows().into_iter().zip(&ld) {
        let f = |v: &[f64]| point_forward(l, v).0;
        let fd = log_abs_det_fd(f, row.as_slice().unwrap());
        assert!(
            close(ld, fd, tol),
            "log-det {ld} vs finite differences {fd}"
        );
        // And the inverse's log-det at the image is its negative, by finite differences.
        let x = point_forward(l, row.as_slice().unwrap()).0;
        let fd_inv = log_abs_det_fd(|v: &[f64]| point_inverse(l, v).0, &x);
        assert!(close(-ld, fd_inv, tol), "inverse {fd_inv} vs {}", -ld);
    }
}

/// `inverse(forward(z)) ≈ z` (to `tol` relative to `max(1, |z|)`), log-dets summing to 0.
pub fn round_trip(l: &dyn Layer<f64>, z: &Array2<f64>, tol: f64) {
    let (x, ld) = forward(l, z);
    let (back, ld_inv) = inverse(l, &x);
    for (a, b) in back.iter().zip(z) {
        assert!(
            close(*a, *b, tol),
            "round trip {a} vs {b}: {:?}",
            flat_params(l)
        );
    }
    for (a, b) in ld.iter().zip(&ld_inv) {
        assert!(close(*a, -*b, tol), "log-dets {a} and {b}");
    }
}

/// The point methods give the block rows' bits, contiguous and strided blocks alike.
pub fn points_match_blocks(l: &dyn Layer<f64>, z: &Array2<f64>) {
    let (x, ld) = forward(l, z);
    let (zi, ldi) = inverse(l, z);
    let mut z_f = Array2::<f64>::zeros(z.dim().f());
    z_f.assign(z);
    let mut ws = Workspace::default();
    let mut x_f = z_f.clone();
    let mut ld_f = Array1::zeros(z.nrows());
    l.forward_block(x_f.view_mut(), ld_f.view_mut(), &mut ws);
    assert_eq!(x_f, x);
    assert_eq!(ld_f, ld);
    let mut zi_f = z_f.clone();
    let mut ldi_f = Array1::zeros(z.nrows());
    l.inverse_block(zi_f.view_mut(), ldi_f.view_mut(), &mut ws);
    assert_eq!(zi_f, zi);
    assert_eq!(ldi_f, ldi);
    for (i, row) in z.rows().into_iter().enumerate() {
        let (p, pl) = point_forward(l, row.as_slice().unwrap());
        assert_eq!(p, x.row(i).to_vec());
        assert_eq!(pl, ld[i]);
        let (p, pl) = point_inverse(l, row.as_slice().unwrap());
        assert_eq!(p, zi.row(i).to_vec());
        assert_eq!(pl, ldi[i]);
    }
}

/// Runs the backward block of `dir` on `v` with upstream `x_bar` and weights `w`, on a
/// zero parameter gradient and a fresh workspace: `(∂J/∂v, ∂J/∂θ)`.
pub fn backward(
    l: &dyn Layer<f64>,
    dir: Direction,
    v: &Array2<f64>,
    x_bar: &Array2<f64>,
    w: &Array1<f64>,
) -> (Array2<f64>, Vec<f64>) {
    let mut g = x_bar.clone();
    let mut pg = vec![0.0; l.param_len()];
    let ws = &mut Workspace::default();
    dir.backward_block(l, v.view(), g.view_mut(), w.view(), &mut pg, ws);
    (g, pg)
}

/// `J = Σ_ij x̄_ij·out_ij + Σ_i w_i·ld_i` of the block pass in `dir` at `v`.
pub fn objective(
    l: &dyn Layer<f64>,
    dir: Direction,
    v: &Array2<f64>,
    x_bar: &Array2<f64>,
    w: &Array1<f64>,
) -> f64 {
    let (out, ld) = run(l, dir, v);
    (&out * x_bar).sum() + ld.dot(w)
}

/// Every `(row, column)` of `v`.
pub fn all_entries(v: &Array2<f64>) -> Vec<(usize, usize)> {
    let cols = v.ncols();
    (0..v.nrows())
        .flat_map(|i| (0..cols).map(move |j| (i, j)))
        .collect()
}

/// `∂J/∂v` of [`backward`] at `entries` against central differences of [`objective`] with
/// step `h`; `agree(analytic, finite difference)` says whether the two match. Returns
/// `(∂J/∂v, ∂J/∂θ)`.
#[allow(clippy::too_many_arguments)]
pub fn check_input_gradient(
    l: &dyn Layer<f64>,
    dir: Direction,
    v: &Array2<f64>,
    x_bar: &Array2<f64>,
    w: &Array1<f64>,
    h: f64,
    entries: &[(usize, usize)],
    agree: impl Fn(f64, f64) -> bool,
    name: &str,
) -> (Array2<f64>, Vec<f64>) {
    let (g, pg) = backward(l, dir, v, x_bar, w);
    for &(i, j) in entries {
        let (mut up, mut down) = (v.clone(), v.clone());
        up[[i, j]] += h;
        down[[i, j]] -= h;
        let fd =
            (objective(l, dir, &up, x_bar, w) - objective(l, dir, &down, x_bar, w)) / (2.0 * h);
        assert!(
            agree(g[[i, j]], fd),
            "{name} {dir:?}: ∂J/∂v[{i},{j}] = {} vs finite difference {fd}",
            g[[i, j]]
        );
    }
    (g, pg)
}

/// Every `∂J/∂θ` of [`backward`] against central differences of [`objective`] in that
/// flat parameter (step `h`, set through `visit_params_mut`), as
/// [`check_input_gradient`]. Returns `∂J/∂θ`.
#[allow(clippy::too_many_arguments)]
pub fn check_param_gradient(
    l: &mut dyn Layer<f64>,
    dir: Direction,
    v: &Array2<f64>,
    x_bar: &Array2<f64>,
    w: &Array1<f64>,
    h: f64,
    agree: impl Fn(f64, f64) -> bool,
    name: &str,
) -> Vec<f64> {
    let (_, pg) = backward(l, dir, v, x_bar, w);
    let theta = flat_params(l);
    assert_eq!(pg.len(), theta.len(), "{name}: param_len");
    let mut t = theta.clone();
    for p in 0..theta.len() {
        t[p] = theta[p] + h;
        set_flat_params(l, &t);
        let up = objective(l, dir, v, x_bar, w);
        t[p] = theta[p] - h;
        set_flat_params(l, &t);
        let down = objective(l, dir, v, x_bar, w);
        t[p] = theta[p];
        set_flat_params(l, &theta);
        let fd = (up - down) / (2.0 * h);
        assert!(
            agree(pg[p], fd),
            "{name} {dir:?}: ∂J/∂θ[{p}] = {} vs finite difference {fd}",
            pg[p]
        );
    }
    pg
}

/// Both backward directions against central differences of [`objective`], for the input
/// and for every flat parameter (relative tolerance `tol`), on `z` with random `x̄`, `w`.
pub fn backward_matches_fd(l: &mut dyn Layer<f64>, z: &Array2<f64>, rng: &mut StdRng, tol: f64) {
    let (rows, dim) = z.dim();
    let x_bar = random_rows(rows, dim, rng, 1.0);
    let w = Array1::from_shape_simple_fn(rows, || rng.random_range(-2.0..2.0));
    let h = 1e-6;
    let agree = |a, b| close(a, b, tol);
    for dir in Direction::BOTH {
        check_input_gradient(l, dir, z, &x_bar, &w, h, &all_entries(z), agree, "");
        check_param_gradient(l, dir, z, &x_bar, &w, h, agree, "");
    }
}

/// Repeated block calls (both directions, both backward passes, strided too) do not
/// grow the workspace after the first.
pub fn workspace_does_not_grow(l: &dyn Layer<f64>, z: &Array2<f64>) {
    let mut ws = Workspace::default();
    let (rows, _) = z.dim();
    let mut pg = vec![0.0; l.param_len()];
    let w = Array1::ones(rows);
    let mut run = |ws: &mut Workspace<f64>| {
        let mut b = z.clone();
        let mut ld = Array1::zeros(rows);
        l.forward_block(b.view_mut(), ld.view_mut(), ws);
        l.inverse_block(b.view_mut(), ld.view_mut(), ws);
        let mut f = Array2::<f64>::zeros(z.dim().f());
        f.assign(z);
        let mut g = z.clone();
        l.forward_backward_block(f.view(), g.view_mut(), w.view(), &mut pg, ws);
        l.inverse_backward_block(f.view(), g.view_mut(), w.view(), &mut pg, ws);
    };
    run(&mut ws);
    let cap = ws.capacity();
    for _ in 0..3 {
        run(&mut ws);
    }
    assert_eq!(ws.capacity(), cap);
}

/// Non-finite rows: the inverse gives NaN and `−inf`, the backward passes a NaN
/// gradient in those rows only, `param_grad` finite, the other rows unchanged.
pub fn non_finite_rows(l: &dyn Layer<f64>, z: &Array2<f64>) {
    let mut bad = z.clone();
    bad[[1, 0]] = f64::NAN;
    bad[[2, z.ncols() - 1]] = f64::INFINITY;
    let (out, ld) = inverse(l, &bad);
    let (clean, clean_ld) = inverse(l, z);
    for i in 0..z.nrows() {
        if i == 1 || i == 2 {
            assert_eq!(ld[i], f64::NEG_INFINITY);
            assert!(out.row(i).iter().all(|v| v.is_nan()));
        } else {
            assert_eq!(out.row(i), clean.row(i));
            assert_eq!(ld[i], clean_ld[i]);
        }
    }
    let x_bar = Array2::from_elem(z.dim(), 0.5);
    let w = Array1::ones(z.nrows());
    for dir in Direction::BOTH {
        let (g, pg) = backward(l, dir, &bad, &x_bar, &w);
        let (g_clean, _) = backward(l, dir, z, &x_bar, &w);
        assert!(pg.iter().all(|v| v.is_finite()));
        for i in 0..z.nrows() {
            if i == 1 || i == 2 {
                assert!(g.row(i).iter().all(|v| v.is_nan()));
            } else {
                assert_eq!(g.row(i), g_clean.row(i));
            }
        }
    }
}

/// Inputs of size ~1e3: everything finite, and the round trip holds.
pub fn large_inputs_stay_finite(l: &dyn Layer<f64>, rng: &mut StdRng) {
    let z = random_rows(5, point_dim(l), rng, 1e3);
    let (x, ld) = forward(l, &z);
    assert!(x.iter().chain(&ld).all(|v| v.is_finite()), "{x} {ld}");
    let (back, ld_inv) = inverse(l, &x);
    assert!(back.iter().chain(&ld_inv).all(|v| v.is_finite()));
    for (a, b) in back.iter().zip(&z) {
        assert!(close(*a, *b, 1e-9), "{a} vs {b}");
    }
    let x_bar = random_rows(5, point_dim(l), rng, 1.0);
    let w = Array1::ones(5);
    for dir in Direction::BOTH {
        let input = if dir == Direction::Inverse { &x } else { &z };
        let (g, pg) = backward(l, dir, input, &x_bar, &w);
        assert!(g.iter().chain(&pg).all(|v| v.is_finite()));
    }
}

/// The number of coordinates of a layer (planar or radial): the length of its first
/// visited tensor.
fn point_dim(l: &dyn Layer<f64>) -> usize {
    let mut d = None;
    l.visit_params(&mut |_, shape, _| {
        if d.is_none() {
            d = Some(shape[0]);
        }
    });
    d.expect("a layer with parameters")
}
