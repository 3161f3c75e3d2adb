//! The radial flow of Rezende & Mohamed (2015, "Variational Inference with Normalizing
//! Flows"): `x = z + β·h(α, r)·(z − z0)`, `r = ‖z − z0‖`, `h = 1/(α + r)`, a contraction or
//! expansion around `z0` meant for the forward direction (sampling with reparametrised
//! gradients).
//!
//! The layer also computes its inverse (a quadratic in `r`, in closed form) and the reverse
//! mode through both directions, so that round trips and gradients can be checked; a flow
//! built of these layers is still "forward-only".

use ndarray::{ArrayView1, ArrayView2, ArrayViewMut2};
use rand::Rng;

use crate::fastmath;
use crate::float::Float;
use crate::layers::Layer;
use crate::layers::row_by_row::{
    all_finite, check_backward, for_each_row_pair, row_by_row_methods, sigmoid,
};
use crate::workspace::Workspace;

/// The radial flow `x = z + β·h·(z − z0)`, `h = 1/(α + r)`, `r = ‖z − z0‖` (Rezende &
/// Mohamed 2015, eq. 14).
///
/// Learnable tensors, in layout order: `z0` `[D]`, `alpha` `[1]` and `beta` `[1]`, the
/// latter two raw: `α = softplus(alpha) > 0` and `β = −α + softplus(beta) ≥ −α` (the paper's
/// invertibility constraint), so `γ = α + β = softplus(beta) ≥ 0`.
///
/// In terms of `γ` every factor of the Jacobian is a sum of non-negative terms (no
/// cancellation near the constraint): `1 + β·h = (γ + r)·h` and
/// `1 + β·h + β·h'·r = 1 + α·β·h² = α·γ·h² + r·h·(1 + α·h)`; forward log-det
/// `(D − 1)·log(1 + β·h) + log(1 + α·β·h²)`.
///
/// The inverse: `y − z0 = (1 + β·h)·(z − z0)`, so with `ρ = ‖y − z0‖`, `r` is the
/// non-negative root of `r² + (γ − ρ)·r − α·ρ = 0` (see `solve_radius`) and
/// `z = y − β/(γ + r)·(y − z0)`; its log-det is minus the forward one at that `r`. A row with
/// a non-finite entry inverts to NaN with log-det `−inf`, and its backward gradient is NaN
/// without touching `param_grad` (the convention of the other layers' inverses); the forward
/// backward treats such a row the same way.
///
/// At `z = z0` (`r = 0`) the log-det has a kink (it depends on `‖z − z0‖`); the backward
/// passes use the zero subgradient there for that term.
#[derive(Debug, Clone, PartialEq)]
pub struct Radial<F> {
    z0: Vec<F>,
    alpha: F,
    beta: F,
}

/// `α`, `γ = α + β` and `β` from the raw parameters.
#[derive(Debug, Clone, Copy)]
struct Coefficients<F> {
    alpha: F,
    gamma: F,
    beta: F,
}

/// The factors of one row at radius `r`.
#[derive(Debug, Clone, Copy)]
struct Shell<F> {
    /// `h = 1/(α + r)`.
    h: F,
    /// `1 + β·h = (γ + r)·h`.
    first: F,
    /// `1 + α·β·h² = α·γ·h² + r·h·(1 + α·h)`.
    second: F,
    /// `β·h`.
    phi: F,
}

impl<F: Float> Shell<F> {
    #[inline]
    fn at(r: F, c: &Coefficients<F>) -> Self {
        let h = F::one() / (c.alpha + r);
        let (ah, gh, rh) = (c.alpha * h, c.gamma * h, r * h);
        Self {
            h,
            first: gh + rh,
            second: ah * gh + rh * (F::one() + ah),
            phi: c.beta * h,
        }
    }

    /// `(D − 1)·log(first) + log(second)` (the first term left out for `D = 1`).
    #[inline]
    fn log_det(&self, dim: usize) -> F {
        let second = fastmath::ln(self.second);
        if dim > 1 {
            F::of((dim - 1) as f64) * fastmath::ln(self.first) + second
        } else {
            second
        }
    }

    /// `d(log-det)/dr = −(D − 1)·β·h²/first − 2·α·β·h³/second`.
    #[inline]
    fn log_det_slope(&self, dim: usize, c: &Coefficients<F>) -> F {
        let h2 = self.h * self.h;
        let two = F::one() + F::one();
        let outer = -two * c.alpha * c.beta * h2 * self.h / self.second;
        if dim > 1 {
            outer - F::of((dim - 1) as f64) * c.beta * h2 / self.first
        } else {
            outer
        }
    }
}

/// The non-negative root `r` of `r² + (γ − ρ)·r − α·ρ = 0` (`α > 0`, `γ, ρ ≥ 0`; the roots'
/// product `−α·ρ ≤ 0`, so exactly one is non-negative): with `p = ρ − γ` and
/// `q = √(p² + 4αρ)`, `(p + q)/2` for `p ≥ 0` and `2αρ/(q − p)` otherwise, neither of which
/// cancels.
#[inline]
fn solve_radius<F: Float>(rho: F, c: &Coefficients<F>) -> F {
    let two = F::one() + F::one();
    let p = rho - c.gamma;
    let q = (p * p + two * two * c.alpha * rho).sqrt();
    if p >= F::zero() {
        (p + q) / two
    } else {
        two * c.alpha * rho / (q - p)
    }
}

/// `‖a − b‖`.
#[inline]
fn distance<F: Float>(a: &[F], b: &[F]) -> F {
    a.iter()
        .zip(b)
        .fold(F::zero(), |s, (&a, &b)| s + (a - b) * (a - b))
        .sqrt()
}

/// The sums a backward pass of [`Radial`] collects over its rows.
struct Accumulator<'a, F> {
    /// `∂J/∂z0` (the `param_grad` slice of `z0`).
    g_z0: &'a mut [F],
    /// `∂J/∂α` with `γ` held fixed.
    alpha_bar: F,
    /// `∂J/∂γ` with `α` held fixed.
    gamma_bar: F,
}

impl<F: Float> Radial<F> {
    /// A start on `dim` coordinates that is exactly the identity: `z0` drawn from
    /// `N(0, 0.1²)` per coordinate, raw `alpha = beta = ln(e − 1)`, so `α = 1` (to
    /// rounding) and `β = softplus(beta) − α = 0` exactly. The gradients with respect to
    /// `beta` (and so the training signal) are not zero there.
    pub fn new<R: Rng + ?Sized>(dim: usize, rng: &mut R) -> Self {
        let z0 = (0..dim)
            .map(|_| F::of(0.1) * F::standard_normal(rng))
            .collect();
        let raw = F::of((std::f64::consts::E - 1.0).ln());
        Self {
            z0,
            alpha: raw,
            beta: raw,
        }
    }

    /// From the raw parameters (`α = softplus(alpha)`, `β = −α + softplus(beta)`).
    pub fn from_parts(z0: Vec<F>, alpha: F, beta: F) -> Self {
        Self { z0, alpha, beta }
    }

    /// The number of coordinates.
    pub fn dim(&self) -> usize {
        self.z0.len()
    }

    /// The centre `z0`.
    pub fn z0(&self) -> &[F] {
        &self.z0
    }

    /// `α = softplus(alpha) > 0`.
    pub fn alpha(&self) -> F {
        self.coefficients().alpha
    }

    /// `β = −α + softplus(beta) ≥ −α`.
    pub fn beta(&self) -> F {
        self.coefficients().beta
    }

    fn coefficients(&self) -> Coefficients<F> {
        let alpha = fastmath::softplus(self.alpha);
        let gamma = fastmath::softplus(self.beta);
        Coefficients {
            alpha,
            gamma,
            beta: gamma - alpha,
        }
    }

    /// `x ← x + β·h·(x − z0)`; returns the log-det.
    #[inline]
    fn forward_row(&self, c: &Coefficients<F>, x: &mut [F]) -> F {
        let shell = Shell::at(distance(x, &self.z0), c);
        for (x, &z0) in x.iter_mut().zip(&self.z0) {
            *x += shell.phi * (*x - z0);
        }
        shell.log_det(self.dim())
    }

    /// `y ← z` for a finite row; returns `r = ‖z − z0‖` (from the quadratic).
    #[inline]
    fn invert_finite_row(&self, c: &Coefficients<F>, y: &mut [F]) -> F {
        let rho = distance(y, &self.z0);
        let r = solve_radius(rho, c);
        if rho > F::zero() {
            let shrink = c.beta / (c.gamma + r);
            for (y, &z0) in y.iter_mut().zip(&self.z0) {
                *y -= shrink * (*y - z0);
            }
        }
        r
    }

    /// The inverse of one row in place (the radius from the quadratic, then
    /// `z = y − β/(γ + r)·(y − z0)`); returns its log-det (NaN row and `−inf` for a row with
    /// a non-finite entry).
    #[inline]
    fn inverse_row(&self, c: &Coefficients<F>, y: &mut [F]) -> F {
        if !all_finite(y) {
            y.fill(F::nan());
            return F::neg_infinity();
        }
        let r = self.invert_finite_row(c, y);
        -Shell::at(r, c).log_det(self.dim())
    }

    /// The parameter gradient of one row of the forward at `z` (radius `r`) for the
    /// objective `sign·(x̄ᵀx + ω·log-det)`, added into `acc`; returns the `k` (without
    /// `sign`) of the input gradient `∂J/∂z = (1 + β·h)·x̄ + k·(z − z0)`:
    /// `k = (φ'·dᵀx̄ + ω·d(log-det)/dr)/r` with `d = z − z0`, `φ' = −β·h²` (0 at `r = 0`).
    /// Then `∂J/∂z0 = −(β·h·x̄ + k·d)`; with `∂(β·h)/∂γ = h`, `∂(β·h)/∂α = −h·(1 + β·h)`:
    /// `∂J/∂γ = dᵀx̄·h + ω·((D − 1)·h/first + α·h²/second)`,
    /// `∂J/∂α = −dᵀx̄·h·first + ω·(−(D − 1)·h + (γ + 2r)·h²/second − 2h)`.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn accumulate_row(
        &self,
        c: &Coefficients<F>,
        z: &[F],
        r: F,
        shell: &Shell<F>,
        x_bar: &[F],
        omega: F,
        sign: F,
        acc: &mut Accumulator<'_, F>,
    ) -> F {
        let dim = self.dim();
        let d_dot = z
            .iter()
            .zip(&self.z0)
            .zip(x_bar)
            .fold(F::zero(), |s, ((&z, &z0), &x)| s + (z - z0) * x);
        let h = shell.h;
        let h2 = h * h;
        let k = if r > F::zero() {
            (-c.beta * h2 * d_dot + omega * shell.log_det_slope(dim, c)) / r
        } else {
            F::zero()
        };
        for ((g, &x), (&z, &z0)) in acc.g_z0.iter_mut().zip(x_bar).zip(z.iter().zip(&self.z0)) {
            *g -= sign * (shell.phi * x + k * (z - z0));
        }
        let two = F::one() + F::one();
        let (mut gamma_ld, mut alpha_ld) = (
            c.alpha * h2 / shell.second,
            (c.gamma + two * r) * h2 / shell.second - two * h,
        );
        if dim > 1 {
            let m = F::of((dim - 1) as f64);
            gamma_ld += m * h / shell.first;
            alpha_ld -= m * h;
        }
        acc.gamma_bar += sign * (d_dot * h + omega * gamma_ld);
        acc.alpha_bar += sign * (-d_dot * h * shell.first + omega * alpha_ld);
        k
    }

    /// Splits `param_grad` and the workspace for a backward pass; runs `rows` with the
    /// accumulator and three row buffers, then chains `∂J/∂α`, `∂J/∂γ` into the raw
    /// parameters (`dα = σ(alpha)·d alpha`, `dγ = σ(beta)·d beta`).
    fn backward_pass(
        &self,
        param_grad: &mut [F],
        ws: &mut Workspace<F>,
        rows: impl FnOnce(&Coefficients<F>, &mut Accumulator<'_, F>, [&mut [F]; 3]),
    ) {
        let d = self.dim();
        let c = self.coefficients();
        let [a, b, buf] = ws.slices([d, d, d]);
        let (g_z0, g_raw) = param_grad.split_at_mut(d);
        let mut acc = Accumulator {
            g_z0,
            alpha_bar: F::zero(),
            gamma_bar: F::zero(),
        };
        rows(&c, &mut acc, [a, b, buf]);
        g_raw[0] += acc.alpha_bar * sigmoid(self.alpha);
        g_raw[1] += acc.gamma_bar * sigmoid(self.beta);
    }
}

impl<F: Float> Layer<F> for Radial<F> {
    row_by_row_methods!("radial", coefficients);

    fn param_len(&self) -> usize {
        self.dim() + 2
    }

    /// `z0` `[D]`, `alpha` `[1]`, `beta` `[1]` (the last two raw).
    fn visit_params(&self, visit: &mut dyn FnMut(&str, &[usize], &[F])) {
        visit("z0", &[self.dim()], &self.z0);
        visit("alpha", &[1], std::slice::from_ref(&self.alpha));
        visit("beta", &[1], std::slice::from_ref(&self.beta));
    }

    fn visit_params_mut(&mut self, visit: &mut dyn FnMut(&str, &[usize], &mut [F])) {
        let d = self.dim();
        visit("z0", &[d], &mut self.z0);
        visit("alpha", &[1], std::slice::from_mut(&mut self.alpha));
        visit("beta", &[1], std::slice::from_mut(&mut self.beta));
    }

    /// Implicit differentiation, row by row: recompute `z`, `d = z − z0`, `r = ‖d‖`; with
    /// `v = z̄ − ω·(d log-det/dr)·d/r` (the inverse's log-det is minus the forward's at
    /// `z`), `ȳ = A⁻¹v` for the symmetric forward Jacobian `A = (1 + β·h)·I + (φ'/r)·d·dᵀ`
    /// (`φ' = −β·h²`), by Sherman–Morrison: `ȳ = (v − φ'·(dᵀv)/(r·second)·d)/first`
    /// (`first + φ'·r = second`). The parameters get the forward's gradient at `z` for
    /// `x̄ = −ȳ`, `ω → −ω`. Workspace: `z` and two row buffers for strided blocks.
    fn inverse_backward_block(
        &self,
        y: ArrayView2<'_, F>,
        grad: ArrayViewMut2<'_, F>,
        weight: ArrayView1<'_, F>,
        param_grad: &mut [F],
        ws: &mut Workspace<F>,
    ) {
        let d = self.dim();
        check_backward(
            "radial",
            d,
            y.dim(),
            grad.dim(),
            weight.len(),
            param_grad.len(),
            self.param_len(),
        );
        self.backward_pass(param_grad, ws, |c, acc, [z, y_buf, g_buf]| {
            for_each_row_pair(y, grad, y_buf, g_buf, |i, y, g| {
                if !all_finite(y) {
                    g.fill(F::nan());
                    return;
                }
                let omega = weight[i];
                z.copy_from_slice(y);
                self.invert_finite_row(c, z);
                let r = distance(z, &self.z0);
                let shell = Shell::at(r, c);
                if r > F::zero() {
                    let pull = omega * shell.log_det_slope(d, c) / r;
                    let mut d_dot = F::zero();
                    for ((g, &z), &z0) in g.iter_mut().zip(&*z).zip(&self.z0) {
                        *g -= pull * (z - z0);
                        d_dot += (z - z0) * *g;
                    }
                    let along = -c.beta * shell.h * shell.h * d_dot / (r * shell.second);
                    for ((g, &z), &z0) in g.iter_mut().zip(&*z).zip(&self.z0) {
                        *g -= along * (z - z0);
                    }
                }
                for g in g.iter_mut() {
                    *g = *g / shell.first;
                }
                self.accumulate_row(c, z, r, &shell, g, omega, -F::one(), acc);
            });
        });
    }

    /// Row by row: `∂J/∂z = (1 + β·h)·x̄ + k·(z − z0)` (see `accumulate_row`), the
    /// parameters accumulated and chained into the raw `alpha`, `beta` at the end of the
    /// block. Workspace: two row buffers for strided blocks.
    fn forward_backward_block(
        &self,
        z: ArrayView2<'_, F>,
        grad: ArrayViewMut2<'_, F>,
        weight: ArrayView1<'_, F>,
        param_grad: &mut [F],
        ws: &mut Workspace<F>,
    ) {
        let d = self.dim();
        check_backward(
            "radial",
            d,
            z.dim(),
            grad.dim(),
            weight.len(),
            param_grad.len(),
            self.param_len(),
        );
        self.backward_pass(param_grad, ws, |c, acc, [_, z_buf, g_buf]| {
            for_each_row_pair(z, grad, z_buf, g_buf, |i, z, g| {
                if !all_finite(z) {
                    g.fill(F::nan());
                    return;
                }
                let r = distance(z, &self.z0);
                let shell = Shell::at(r, c);
                let k = self.accumulate_row(c, z, r, &shell, g, weight[i], F::one(), acc);
                for ((g, &z), &z0) in g.iter_mut().zip(z).zip(&self.z0) {
                    *g = shell.first * *g + k * (z - z0);
                }
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{Array1, Array2};
    use rand::RngExt;
    use rand::rngs::StdRng;

    use super::*;
    use crate::layers::checks::*;

    /// A radial layer with `z0` uniform in `(−1, 1)` and the given raw `alpha`, `beta`.
    fn radial_with(dim: usize, alpha: f64, beta: f64, rng: &mut StdRng) -> Radial<f64> {
        let z0 = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
        Radial::from_parts(z0, alpha, beta)
    }

    fn random_radial(dim: usize, rng: &mut StdRng) -> Radial<f64> {
        let alpha = rng.random_range(-1.0..1.5);
        let beta = rng.random_range(-2.0..2.0);
        radial_with(dim, alpha, beta, rng)
    }

    /// Raw parameter pairs: expanding, contracting, and deep in the constraint
    /// (`γ = softplus(−12) ≈ 6e−6`, so `β ≈ −α`).
    const RAWS: [(f64, f64); 4] = [(0.3, 2.0), (1.0, -1.0), (-0.7, 0.2), (0.5, -12.0)];

    #[test]
    fn forward_log_det_matches_finite_differences() {
        let mut r = rng(1);
        for dim in [1, 2, 5] {
            for (a, b) in RAWS {
                let l = radial_with(dim, a, b, &mut r);
                let z = random_rows(4, dim, &mut r, 2.0);
                forward_log_det_matches_fd(&l, &z, 1e-6);
            }
        }
    }

    #[test]
    fn round_trips_including_an_active_constraint() {
        let mut r = rng(2);
        for dim in [1, 3, 7] {
            for (a, b) in RAWS {
                let l = radial_with(dim, a, b, &mut r);
                let z = random_rows(9, dim, &mut r, 3.0);
                round_trip(&l, &z, 1e-12);
            }
            for _ in 0..3 {
                let l = random_radial(dim, &mut r);
                round_trip(&l, &random_rows(9, dim, &mut r, 3.0), 1e-12);
            }
        }
        // Rows very near and at the centre, and a strong contraction: there the forward
        // scales `z − z0` by `1 + β·h ≈ (γ + r)/α ≈ 6e−6`, so the inverse amplifies the
        // rounding of `x − z0` (~1e−17) by its reciprocal; the log-det's slope in `r` is
        // ~3/γ ≈ 5e5 at the first row, so its recovered `r` (1e−9, off by ~4e−12) moves the
        // log-det by ~2e−6.
        let l = radial_with(3, 0.5, -12.0, &mut r);
        let c = l.z0().to_vec();
        let mut z = Array2::from_shape_fn((3, 3), |(_, j)| c[j]);
        z[[1, 0]] += 1e-9;
        z[[2, 2]] -= 1e-3;
        let (x, ld) = forward(&l, &z);
        assert_eq!(x.row(0), z.row(0));
        let (back, ld_inv) = inverse(&l, &x);
        for (a, b) in back.iter().zip(&z) {
            assert!(close(*a, *b, 1e-10), "{a} vs {b}");
        }
        for (a, b) in ld.iter().zip(&ld_inv) {
            assert!(close(*a, -*b, 1e-6), "{a} vs {b}");
        }
        assert_eq!(ld[0], -ld_inv[0]);
    }

    #[test]
    fn the_constraint_holds() {
        let mut r = rng(3);
        for beta in [-40.0, -5.0, 0.0, 3.0] {
            let l = radial_with(2, 0.2, beta, &mut r);
            assert!(l.beta() >= -l.alpha() && l.alpha() > 0.0);
        }
        // β = −α to rounding: the centre's image is itself, everything else stays finite.
        let l = radial_with(2, 0.2, -800.0, &mut r);
        let z = random_rows(4, 2, &mut r, 2.0);
        let (x, ld) = forward(&l, &z);
        assert!(x.iter().chain(&ld).all(|v| v.is_finite()));
        round_trip(&l, &z, 1e-10);
    }

    #[test]
    fn points_agree_with_blocks() {
        let mut r = rng(4);
        for dim in [1, 4, 9] {
            let l = random_radial(dim, &mut r);
            let z = random_rows(7, dim, &mut r, 3.0);
            points_match_blocks(&l, &z);
        }
    }

    #[test]
    fn forward_backward_and_inverse_backward_match_finite_differences() {
        let mut r = rng(5);
        for dim in [1, 2, 5] {
            for (a, b) in RAWS {
                let mut l = radial_with(dim, a, b, &mut r);
                let z = random_rows(3, dim, &mut r, 2.0);
                backward_matches_fd(&mut l, &z, &mut r, 1e-6);
            }
        }
    }

    #[test]
    fn large_inputs_and_non_finite_rows() {
        let mut r = rng(6);
        for dim in [1, 4] {
            let l = random_radial(dim, &mut r);
            large_inputs_stay_finite(&l, &mut r);
            let z = random_rows(5, dim, &mut r, 2.0);
            non_finite_rows(&l, &z);
        }
    }

    #[test]
    fn the_centre_is_a_fixed_point_with_finite_gradients() {
        let mut r = rng(7);
        let l = random_radial(3, &mut r);
        let c = Array2::from_shape_fn((1, 3), |(_, j)| l.z0()[j]);
        let (x, ld) = forward(&l, &c);
        assert_eq!(x, c);
        let (alpha, beta) = (l.alpha(), l.beta());
        let expected = 2.0 * ((alpha + beta) / alpha).ln() + ((alpha + beta) / alpha).ln();
        assert!(close(ld[0], expected, 1e-12), "{} vs {expected}", ld[0]);
        for dir in Direction::BOTH {
            let (g, pg) = backward(&l, dir, &c, &Array2::ones((1, 3)), &Array1::ones(1));
            assert!(g.iter().chain(&pg).all(|v| v.is_finite()));
        }
    }

    #[test]
    fn workspace_does_not_grow_on_repeated_calls() {
        let mut r = rng(8);
        let l = random_radial(6, &mut r);
        workspace_does_not_grow(&l, &random_rows(11, 6, &mut r, 2.0));
    }

    #[test]
    fn new_is_the_identity() {
        let mut r = rng(9);
        let l = Radial::<f64>::new(4, &mut r);
        assert_eq!(l.beta(), 0.0);
        assert!(close(l.alpha(), 1.0, 1e-15));
        assert!(l.z0().iter().all(|&v| v != 0.0 && v.abs() < 0.6));
        let z = random_rows(3, 4, &mut r, 2.0);
        let (x, ld) = forward(&l, &z);
        assert_eq!(x, z);
        assert!(ld.iter().all(|&l| l.abs() < 1e-15));
        // Not a dead start: the gradient reaches beta.
        let (_, pg) = backward(
            &l,
            Direction::Forward,
            &z,
            &Array2::ones((3, 4)),
            &Array1::ones(3),
        );
        assert!(pg[5] != 0.0);
        assert_eq!(l.param_len(), 6);
    }

    #[test]
    fn works_in_f32() {
        let mut r = rng(10);
        let l64 = radial_with(6, 0.4, -1.5, &mut r);
        let z0: Vec<f32> = l64.z0().iter().map(|&v| v as f32).collect();
        let l = Radial::<f32>::from_parts(z0, 0.4, -1.5);
        let z = Array2::from_shape_simple_fn((13, 6), || r.random_range(-2.0f32..2.0));
        let mut x = z.clone();
        let mut ld = Array1::<f32>::zeros(13);
        let mut ws = Workspace::default();
        l.forward_block(x.view_mut(), ld.view_mut(), &mut ws);
        let (x64, ld64) = forward(&l64, &z.mapv(f64::from));
        for (a, b) in x.iter().zip(&x64).chain(ld.iter().zip(&ld64)) {
            assert!(close(f64::from(*a), *b, 1e-5), "{a} vs {b}");
        }
        let mut back = x.clone();
        l.inverse_block(back.view_mut(), ld.view_mut(), &mut ws);
        for (a, b) in back.iter().zip(&z) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
        assert!(ld.iter().all(|l| l.abs() <= 1e-5));
        let w = Array1::<f32>::ones(13);
        let mut g = Array2::<f32>::ones((13, 6));
        let mut pg = vec![0.0f32; l.param_len()];
        l.forward_backward_block(z.view(), g.view_mut(), w.view(), &mut pg, &mut ws);
        let (g64, pg64) = backward(
            &l64,
            Direction::Forward,
            &z.mapv(f64::from),
            &Array2::ones((13, 6)),
            &Array1::ones(13),
        );
        for (a, b) in g.iter().zip(&g64).chain(pg.iter().zip(&pg64)) {
            assert!(close(f64::from(*a), *b, 1e-4), "{a} vs {b}");
        }
        let mut g = Array2::<f32>::ones((13, 6));
        l.inverse_backward_block(x.view(), g.view_mut(), w.view(), &mut pg, &mut ws);
        assert!(g.iter().chain(&pg).all(|v| v.is_finite()));
    }
}
