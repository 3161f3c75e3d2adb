//! The planar flow of Rezende & Mohamed (2015, "Variational Inference with Normalizing
//! Flows"): `x = z + û·tanh(wᵀz + b)`, an identity-plus-rank-one map meant for the forward
//! direction (sampling with reparametrised gradients).
//!
//! The layer also computes its inverse (a scalar equation, solved to full precision) and
//! the reverse mode through both directions, so that round trips and gradients can be
//! checked; a flow built of these layers is still "forward-only" (no closed-form inverse).

use ndarray::{ArrayView1, ArrayView2, ArrayViewMut2};
use rand::Rng;

use crate::fastmath;
use crate::float::Float;
use crate::layers::Layer;
use crate::layers::row_by_row::{
    all_finite, check_backward, dot, for_each_row_pair, row_by_row_methods, sigmoid,
};
use crate::workspace::Workspace;

/// The floor of `‖w‖²` in the reparametrisation, `ε²` (machine epsilon squared: ≈ 4.9e-32
/// in `f64`, 1.4e-14 in `f32`), so that `w = 0` gives finite values and gradients.
fn norm_floor<F: Float>() -> F {
    F::epsilon() * F::epsilon()
}

/// The most iterations of the safeguarded Newton solve of [`Planar`]'s inverse. Newton
/// converges quadratically almost everywhere and a rejected Newton step is a bisection, so
/// the solve stops far earlier: at most 33 iterations over 3·10⁵ random `f64` cases
/// spanning `wᵀu ∈ (−10³, 10⁶)` and `|q|` from 1e−300 to 1e8 (counted once, in a test
/// build).
const MAX_SOLVE_STEPS: usize = 100;

/// The planar flow `x = z + û·tanh(wᵀz + b)` (Rezende & Mohamed 2015, eq. 10).
///
/// Learnable tensors, in layout order: `u` `[D]`, `w` `[D]`, `b` `[1]`. The map uses
/// `û = u + (m(wᵀu) − wᵀu)·w/‖w‖²` with `m(a) = −1 + softplus(a)` (the paper's appendix),
/// so `wᵀû = m(wᵀu) > −1` (`≥ −1` once rounded, from `wᵀu ≈ −37` down in `f64`) and the
/// map is invertible for every parameter value; `‖w‖²` is floored at `ε²` (see
/// `norm_floor`), below which `wᵀû` stays above −1 too.
///
/// Forward log-det `log(1 + wᵀû·tanh'(s))` at `s = wᵀz + b`, evaluated as
/// `log(tanh²s + (1 + wᵀû)·sech²s)` (two non-negative terms, no cancellation when the
/// constraint is active). The inverse solves `s + wᵀû·tanh(s) = wᵀy + b` for `s` (a strictly
/// increasing function, see `solve_hinge`) and sets `z = y − û·tanh(s)`; its log-det is
/// minus the forward one at `z`. A row with a non-finite entry inverts to NaN with log-det
/// `−inf`, and its backward gradient is NaN without touching `param_grad` (the convention of
/// the other layers' inverses); the forward backward treats such a row the same way.
#[derive(Debug, Clone, PartialEq)]
pub struct Planar<F> {
    u: Vec<F>,
    w: Vec<F>,
    b: F,
}

/// What every row needs of the reparametrisation: `û = u + c·w` and `κ = wᵀû`.
#[derive(Debug, Clone, Copy)]
struct Reparam<F> {
    /// `û = u + c·w`.
    c: F,
    /// `κ = wᵀû`, from its formula (not a rounded dot product).
    kappa: F,
    /// `1 + κ ≥ 0`, without cancellation.
    one_plus_kappa: F,
}

/// `tanh` and its derivative at `s`, and the Jacobian determinant `1 + κ·tanh'(s)`.
#[derive(Debug, Clone, Copy)]
struct Hinge<F> {
    t: F,
    /// `tanh'(s) = sech² s = 4e/(1 + e)²` with `e = exp(−2|s|)`.
    dt: F,
    /// `1 + κ·sech² s = tanh² s + (1 + κ)·sech² s`.
    det: F,
}

impl<F: Float> Hinge<F> {
    #[inline]
    fn at(s: F, k: &Reparam<F>) -> Self {
        let two = F::one() + F::one();
        let e = fastmath::exp(-two * s.abs());
        let one_e = F::one() + e;
        let t = fastmath::tanh(s);
        let dt = (two + two) * e / (one_e * one_e);
        Self {
            t,
            dt,
            det: t * t + dt * k.one_plus_kappa,
        }
    }

    /// `d(log det)/ds = −2·κ·tanh(s)·sech²(s)/det`.
    #[inline]
    fn log_det_slope(&self, k: &Reparam<F>) -> F {
        let two = F::one() + F::one();
        -two * k.kappa * self.t * self.dt / self.det
    }
}

/// The `s` with `s + κ·tanh(s) = q`. The left side has derivative
/// `1 + κ·sech² s = tanh² s + (1 + κ)·sech² s ≥ 0` (zero at most at `s = 0`, when `κ = −1`),
/// so it increases strictly and the root is unique; it lies in `[q − |κ|, q + |κ|]`.
///
/// Safeguarded Newton from `q − κ·tanh(q)` on that bracket (narrowed by every evaluated
/// point): a Newton step that leaves the bracket or does not halve the previous step is
/// replaced by bisection. It stops once the residual is within its own rounding error,
/// `2ε·(|s| + |q| + |κ·tanh s|)` (then takes one last Newton step), on a bisection that no
/// longer moves, or after [`MAX_SOLVE_STEPS`] steps. Where the derivative is tiny (`κ ≈ −1`,
/// `s ≈ 0`) the root is only determined to that rounding level: the problem is
/// ill-conditioned there, not the solve.
fn solve_hinge<F: Float>(q: F, k: &Reparam<F>) -> F {
    let half = F::of(0.5);
    let two = F::one() + F::one();
    let spread = k.kappa.abs();
    let (mut lo, mut hi) = (q - spread, q + spread);
    let mut s = (q - k.kappa * fastmath::tanh(q)).max(lo).min(hi);
    let mut last_step = hi - lo;
    for _ in 0..MAX_SOLVE_STEPS {
        let h = Hinge::at(s, k);
        let pull = k.kappa * h.t;
        let residual = (s - q) + pull;
        let newton = residual / h.det;
        let noise = two * F::epsilon() * (s.abs() + q.abs() + pull.abs());
        if residual.abs() <= noise {
            // A last Newton step, unless the derivative vanishes (then `s` stays).
            return if newton.abs() <= last_step {
                s - newton
            } else {
                s
            };
        }
        if residual < F::zero() {
            lo = s;
        } else {
            hi = s;
        }
        let candidate = s - newton;
        let next = if candidate > lo && candidate < hi && newton.abs() * two <= last_step {
            candidate
        } else {
            lo + (hi - lo) * half
        };
        let step = next - s;
        s = next;
        if step == F::zero() {
            break;
        }
        last_step = step.abs();
    }
    s
}

impl<F: Float> Planar<F> {
    /// The identity on `dim` coordinates, with a random direction: `w` drawn from
    /// `N(0, 0.1²)` per coordinate, `b = 0`, and `u = ln(e − 1)·w/‖w‖²`, where the
    /// reparametrisation gives `û = 0` (`m(wᵀu) = −1 + softplus(ln(e − 1)) = 0 = wᵀu − wᵀu`
    /// removes all of `u` along `w`). Every parameter's gradient through `û` is then
    /// non-zero, so training moves away from the identity at the first step.
    pub fn new<R: Rng + ?Sized>(dim: usize, rng: &mut R) -> Self {
        let w: Vec<F> = (0..dim)
            .map(|_| F::of(0.1) * F::standard_normal(rng))
            .collect();
        let norm2: F = w.iter().map(|&v| v * v).sum();
        let c = F::of((std::f64::consts::E - 1.0).ln());
        let u = w.iter().map(|&v| c * v / norm2).collect();
        Self { u, w, b: F::zero() }
    }

    /// From the raw parameters. Panics unless `u` and `w` have the same length.
    pub fn from_parts(u: Vec<F>, w: Vec<F>, b: F) -> Self {
        assert_eq!(
            u.len(),
            w.len(),
            "Planar::from_parts: u has {} entries, w {}",
            u.len(),
            w.len()
        );
        Self { u, w, b }
    }

    /// The number of coordinates.
    pub fn dim(&self) -> usize {
        self.w.len()
    }

    /// The raw `u` (before the reparametrisation).
    pub fn u(&self) -> &[F] {
        &self.u
    }

    /// `w`.
    pub fn w(&self) -> &[F] {
        &self.w
    }

    /// `b`.
    pub fn b(&self) -> F {
        self.b
    }

    /// The `û` the map uses (a new vector; for inspection).
    pub fn u_hat(&self) -> Vec<F> {
        let c = self.reparam().c;
        self.u
            .iter()
            .zip(&self.w)
            .map(|(&u, &w)| u + c * w)
            .collect()
    }

    /// `wᵀû ≥ −1`, from its formula: `m(wᵀu) = −1 + softplus(wᵀu)` (and its floored
    /// variant when `‖w‖²` is below `ε²`).
    pub fn w_dot_u_hat(&self) -> F {
        self.reparam().kappa
    }

    /// `û = u + c·w` and `κ = wᵀû` from `α = wᵀu`, `n = ‖w‖²`: with
    /// `δ = m(α) − α = softplus(−α) − 1`, `c = δ/n` and `κ = m(α)` (`1 + κ = softplus(α)`);
    /// below the floor `n_0` (see `norm_floor`) `c = δ/n_0` and `κ = wᵀû = m(α) − δ·(1 − n/n_0)`.
    fn reparam(&self) -> Reparam<F> {
        let alpha = dot(&self.w, &self.u);
        let n = dot(&self.w, &self.w);
        let floor = norm_floor::<F>();
        let one = F::one();
        let softplus = fastmath::softplus(alpha);
        let delta = fastmath::softplus(-alpha) - one;
        if n >= floor {
            Reparam {
                c: delta / n,
                kappa: softplus - one,
                one_plus_kappa: softplus,
            }
        } else {
            let missing = delta * (one - n / floor);
            Reparam {
                c: delta / floor,
                kappa: (softplus - one) - missing,
                one_plus_kappa: softplus - missing,
            }
        }
    }

    /// Adds to `g_u` and `g_w` the gradient that reaches `u` and `w` through `û` and `κ`,
    /// given `u_bar = ∂J/∂û` and `kappa_bar = ∂J/∂κ`. With `α = wᵀu`, `n = ‖w‖²`:
    /// `dû = du + c·dw + w·dc`, `dc = c_α·dα + c_n·dn`, `dκ = κ_α·dα + κ_n·dn`,
    /// `dα = wᵀdu + uᵀdw`, `dn = 2wᵀdw`; so with `γ = (wᵀū)·c_α + κ̄·κ_α` and
    /// `η = (wᵀū)·c_n + κ̄·κ_n`: `∂J/∂u = ū + γ·w`, `∂J/∂w = c·ū + γ·u + 2η·w`.
    /// Above the floor `c_α = −σ(−α)/n`, `c_n = −c/n`, `κ_α = σ(α)`, `κ_n = 0`; below it
    /// `c_α = −σ(−α)/n_0`, `c_n = 0`, `κ_α = σ(α) + σ(−α)·(1 − n/n_0)`, `κ_n = δ/n_0`.
    fn chain_reparam(&self, u_bar: &[F], kappa_bar: F, g_u: &mut [F], g_w: &mut [F]) {
        let alpha = dot(&self.w, &self.u);
        let n = dot(&self.w, &self.w);
        let floor = norm_floor::<F>();
        let one = F::one();
        let delta = fastmath::softplus(-alpha) - one;
        let (s_plus, s_minus) = (sigmoid(alpha), sigmoid(-alpha));
        let (c, c_alpha, c_n, kappa_alpha, kappa_n) = if n >= floor {
            let c = delta / n;
            (c, -s_minus / n, -c / n, s_plus, F::zero())
        } else {
            let rest = one - n / floor;
            (
                delta / floor,
                -s_minus / floor,
                F::zero(),
                s_plus + s_minus * rest,
                delta / floor,
            )
        };
        let w_u_bar = dot(&self.w, u_bar);
        let gamma = w_u_bar * c_alpha + kappa_bar * kappa_alpha;
        let eta = w_u_bar * c_n + kappa_bar * kappa_n;
        let two_eta = eta + eta;
        for i in 0..self.dim() {
            let (u, w, ub) = (self.u[i], self.w[i], u_bar[i]);
            g_u[i] += ub + gamma * w;
            g_w[i] += c * ub + gamma * u + two_eta * w;
        }
    }

    /// `x ← x + û·tanh(wᵀx + b)`; returns the log-det.
    #[inline]
    fn forward_row(&self, k: &Reparam<F>, x: &mut [F]) -> F {
        let s = dot(&self.w, x) + self.b;
        let h = Hinge::at(s, k);
        for ((x, &u), &w) in x.iter_mut().zip(&self.u).zip(&self.w) {
            *x += (u + k.c * w) * h.t;
        }
        fastmath::ln(h.det)
    }

    /// `y ← z` with `y = z + û·tanh(wᵀz + b)` for a finite row; returns `s = wᵀz + b`.
    #[inline]
    fn invert_finite_row(&self, k: &Reparam<F>, y: &mut [F]) -> F {
        let s = solve_hinge(dot(&self.w, y) + self.b, k);
        let t = fastmath::tanh(s);
        for ((y, &u), &w) in y.iter_mut().zip(&self.u).zip(&self.w) {
            *y -= (u + k.c * w) * t;
        }
        s
    }

    /// The inverse of one row in place (the scalar solve, then `z = y − û·tanh(s)`);
    /// returns its log-det (NaN row and `−inf` for a row with a non-finite entry).
    #[inline]
    fn inverse_row(&self, k: &Reparam<F>, y: &mut [F]) -> F {
        if !all_finite(y) {
            y.fill(F::nan());
            return F::neg_infinity();
        }
        let s = self.invert_finite_row(k, y);
        -fastmath::ln(Hinge::at(s, k).det)
    }

    /// The parameter gradient of one row of the forward at `z` for the objective
    /// `sign·(x̄ᵀx + ω·log-det)`, added into `acc`; returns `σ = ∂J/∂s` (without `sign`),
    /// `σ = sech²(s)·(x̄ᵀû) + ω·d(log-det)/ds`. The contributions: `∂J/∂û = x̄·tanh s`,
    /// `∂J/∂κ = ω·sech²(s)/det`, `∂J/∂w = σ·z` (through `s`; the rest via `û`, `κ`),
    /// `∂J/∂b = σ`.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn accumulate_row(
        &self,
        k: &Reparam<F>,
        z: &[F],
        h: &Hinge<F>,
        x_bar: &[F],
        omega: F,
        sign: F,
        acc: &mut Accumulator<'_, F>,
    ) -> F {
        let mut u_hat_dot = F::zero();
        for ((&x, &u), &w) in x_bar.iter().zip(&self.u).zip(&self.w) {
            u_hat_dot += (u + k.c * w) * x;
        }
        let sigma = h.dt * u_hat_dot + omega * h.log_det_slope(k);
        let (st, ss) = (sign * h.t, sign * sigma);
        for ((ub, gw), (&x, &z)) in acc
            .u_bar
            .iter_mut()
            .zip(acc.g_w.iter_mut())
            .zip(x_bar.iter().zip(z))
        {
            *ub += st * x;
            *gw += ss * z;
        }
        acc.kappa_bar += sign * omega * h.dt / h.det;
        acc.b_bar += ss;
        sigma
    }

    /// Splits `param_grad` and the workspace for a backward pass; runs `rows` with the
    /// accumulator and two row buffers, then chains the accumulated `∂J/∂û`, `∂J/∂κ` into
    /// `u` and `w` and adds `∂J/∂b`.
    fn backward_pass(
        &self,
        param_grad: &mut [F],
        ws: &mut Workspace<F>,
        rows: impl FnOnce(&Reparam<F>, &mut Accumulator<'_, F>, [&mut [F]; 3]),
    ) {
        let d = self.dim();
        let k = self.reparam();
        let [u_bar, a, b, c] = ws.slices([d, d, d, d]);
        u_bar.fill(F::zero());
        let (g_u, rest) = param_grad.split_at_mut(d);
        let (g_w, g_b) = rest.split_at_mut(d);
        let mut acc = Accumulator {
            u_bar,
            g_w,
            kappa_bar: F::zero(),
            b_bar: F::zero(),
        };
        rows(&k, &mut acc, [a, b, c]);
        let (kappa_bar, b_bar) = (acc.kappa_bar, acc.b_bar);
        g_b[0] += b_bar;
        self.chain_reparam(acc.u_bar, kappa_bar, g_u, acc.g_w);
    }
}

/// The sums a backward pass of [`Planar`] collects over its rows.
struct Accumulator<'a, F> {
    /// `∂J/∂û`.
    u_bar: &'a mut [F],
    /// `∂J/∂w` through `s = wᵀz + b` (the `param_grad` slice of `w`).
    g_w: &'a mut [F],
    /// `∂J/∂κ`.
    kappa_bar: F,
    /// `∂J/∂b`.
    b_bar: F,
}

impl<F: Float> Layer<F> for Planar<F> {
    row_by_row_methods!("planar", reparam);

    fn param_len(&self) -> usize {
        2 * self.dim() + 1
    }

    /// `u` `[D]`, `w` `[D]`, `b` `[1]`.
    fn visit_params(&self, visit: &mut dyn FnMut(&str, &[usize], &[F])) {
        let d = self.dim();
        visit("u", &[d], &self.u);
        visit("w", &[d], &self.w);
        visit("b", &[1], std::slice::from_ref(&self.b));
    }

    fn visit_params_mut(&mut self, visit: &mut dyn FnMut(&str, &[usize], &mut [F])) {
        let d = self.dim();
        visit("u", &[d], &mut self.u);
        visit("w", &[d], &mut self.w);
        visit("b", &[1], std::slice::from_mut(&mut self.b));
    }

    /// Implicit differentiation, row by row: recompute `z` and `s` by the solve; with
    /// `v = z̄ − ω·(d log-det/ds)·w` (the inverse's log-det is minus the forward's at `z`),
    /// `ȳ = A⁻ᵀv` for the forward Jacobian `A = I + sech²(s)·û·wᵀ`, by Sherman–Morrison:
    /// `ȳ = v − w·sech²(s)·(ûᵀv)/det`. The parameters get the forward's gradient at `z`
    /// for `x̄ = −ȳ`, `ω → −ω` (`dz/dθ = −A⁻¹·∂x/∂θ`). Workspace: `∂J/∂û`, `z`, two row
    /// buffers for strided blocks.
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
            "planar",
            d,
            y.dim(),
            grad.dim(),
            weight.len(),
            param_grad.len(),
            self.param_len(),
        );
        self.backward_pass(param_grad, ws, |k, acc, [z, y_buf, g_buf]| {
            for_each_row_pair(y, grad, y_buf, g_buf, |i, y, g| {
                if !all_finite(y) {
                    g.fill(F::nan());
                    return;
                }
                let omega = weight[i];
                z.copy_from_slice(y);
                let s = self.invert_finite_row(k, z);
                let h = Hinge::at(s, k);
                let slope = omega * h.log_det_slope(k);
                let mut u_hat_dot = F::zero();
                for ((g, &u), &w) in g.iter_mut().zip(&self.u).zip(&self.w) {
                    *g -= slope * w;
                    u_hat_dot += (u + k.c * w) * *g;
                }
                let r = h.dt * u_hat_dot / h.det;
                for (g, &w) in g.iter_mut().zip(&self.w) {
                    *g -= r * w;
                }
                self.accumulate_row(k, z, &h, g, omega, -F::one(), acc);
            });
        });
    }

    /// Row by row: `σ = ∂J/∂s` (see `accumulate_row`), then `z̄ = x̄ + σ·w`; the
    /// parameters through `û`, `κ`, `s`, chained into the raw `u`, `w` at the end of the
    /// block. Workspace: `∂J/∂û` and two row buffers for strided blocks.
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
            "planar",
            d,
            z.dim(),
            grad.dim(),
            weight.len(),
            param_grad.len(),
            self.param_len(),
        );
        self.backward_pass(param_grad, ws, |k, acc, [_, z_buf, g_buf]| {
            for_each_row_pair(z, grad, z_buf, g_buf, |i, z, g| {
                if !all_finite(z) {
                    g.fill(F::nan());
                    return;
                }
                let h = Hinge::at(dot(&self.w, z) + self.b, k);
                let sigma = self.accumulate_row(k, z, &h, g, weight[i], F::one(), acc);
                for (g, &w) in g.iter_mut().zip(&self.w) {
                    *g += sigma * w;
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

    fn normals(rng: &mut StdRng, n: usize, scale: f64) -> Vec<f64> {
        (0..n).map(|_| scale * f64::standard_normal(rng)).collect()
    }

    /// A random planar layer whose `wᵀu` is `target` (so `target ≪ 0` makes the constraint
    /// active: `wᵀû = −1 + softplus(target)` close to −1).
    fn planar_with(dim: usize, target: f64, rng: &mut StdRng) -> Planar<f64> {
        let w = normals(rng, dim, 1.0);
        let mut u = normals(rng, dim, 1.0);
        let n: f64 = w.iter().map(|w| w * w).sum();
        let wu: f64 = w.iter().zip(&u).map(|(w, u)| w * u).sum();
        for (u, w) in u.iter_mut().zip(&w) {
            *u += (target - wu) * w / n;
        }
        Planar::from_parts(u, w, rng.random_range(-1.0..1.0))
    }

    fn random_planar(dim: usize, rng: &mut StdRng) -> Planar<f64> {
        let target = rng.random_range(-3.0..3.0);
        planar_with(dim, target, rng)
    }

    #[test]
    fn forward_log_det_matches_finite_differences() {
        let mut r = rng(1);
        for dim in [1, 2, 5] {
            for _ in 0..3 {
                let l = random_planar(dim, &mut r);
                let z = random_rows(4, dim, &mut r, 2.0);
                forward_log_det_matches_fd(&l, &z, 1e-6);
            }
        }
    }

    #[test]
    fn the_constraint_holds_and_w_dot_u_hat_is_its_formula() {
        let mut r = rng(2);
        for target in [-50.0, -8.0, -1.0, 0.0, 2.0, 30.0] {
            let l = planar_with(4, target, &mut r);
            let kappa = l.w_dot_u_hat();
            let expected = -1.0 + (1.0 + f64::exp(target)).ln();
            assert!(close(kappa, expected, 1e-12), "{kappa} vs {expected}");
            assert!(kappa >= -1.0);
            let dot_product: f64 = l.w().iter().zip(l.u_hat()).map(|(w, u)| w * u).sum();
            assert!((dot_product - kappa).abs() <= 1e-12 * (1.0 + target.abs()));
        }
    }

    #[test]
    fn round_trips_including_an_active_constraint() {
        let mut r = rng(3);
        // `wᵀû + 1 = softplus(wᵀu)`: 0.95 for −0.5 … 3.9e−18 for −40. Around `s = 0` the
        // forward's derivative along w is that small, so the inverse amplifies rounding by
        // its reciprocal there: the tolerance grows accordingly.
        for (target, tol) in [
            (200.0, 1e-12),
            (5.0, 1e-12),
            (-0.5, 1e-12),
            (-3.0, 1e-11),
            (-10.0, 1e-9),
        ] {
            for dim in [1, 3, 7] {
                let l = planar_with(dim, target, &mut r);
                let z = random_rows(9, dim, &mut r, 3.0);
                round_trip(&l, &z, tol);
            }
        }
        // Deep in the active constraint: rows away from the flat point still round trip,
        // and every row is finite.
        for dim in [1, 3] {
            let l = planar_with(dim, -40.0, &mut r);
            let z = random_rows(20, dim, &mut r, 3.0);
            let (x, ld) = forward(&l, &z);
            let (back, ld_inv) = inverse(&l, &x);
            assert!(back.iter().chain(&ld).chain(&ld_inv).all(|v| v.is_finite()));
            for (i, row) in z.rows().into_iter().enumerate() {
                let s = l.w().iter().zip(row).map(|(w, z)| w * z).sum::<f64>() + l.b();
                if s.abs() > 0.5 {
                    for (a, b) in back.row(i).iter().zip(row) {
                        assert!(close(*a, *b, 1e-10), "{a} vs {b} at s = {s}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_solve_is_exact_at_the_flat_point() {
        // κ = −1 to rounding (wᵀu = −40) and q = 0: s + κ·tanh s = 0 has the root s = 0.
        let l = planar_with(2, -40.0, &mut rng(4));
        let k = l.reparam();
        assert_eq!(solve_hinge(0.0, &k), 0.0);
        // q small: the root (3q)^(1/3) of the cubic-like s − tanh s.
        let s = solve_hinge(1e-9, &k);
        // s ≈ 1.4e−3, where s − tanh s cancels: the residual is at the rounding of s.
        let residual = s + k.kappa * s.tanh() - 1e-9;
        assert!(residual.abs() <= 4.0 * f64::EPSILON * s, "{s}: {residual}");
        assert!(close(s, (3e-9f64).cbrt(), 1e-5), "{s}");
    }

    #[test]
    fn the_solve_reaches_the_rounding_level_everywhere() {
        // From far inside the constraint to a huge wᵀû, tiny to large right-hand sides.
        let mut r = rng(12);
        for alpha in [-800.0, -40.0, -10.0, -1.0, 0.0, 0.6, 3.0, 50.0, 1e3, 1e6] {
            let l = planar_with(3, alpha, &mut r);
            let k = l.reparam();
            for scale in [1e-300, 1e-12, 1e-3, 1.0, 10.0, 1e3, 1e8] {
                for _ in 0..20 {
                    let q = scale * r.random_range(-1.0..1.0);
                    let s = solve_hinge(q, &k);
                    let pull = k.kappa * fastmath::tanh(s);
                    let residual = (s - q) + pull;
                    let noise = 4.0 * f64::EPSILON * (s.abs() + q.abs() + pull.abs());
                    assert!(
                        residual.abs() <= noise,
                        "wᵀu = {alpha}, q = {q}: s = {s}, residual {residual}"
                    );
                }
            }
        }
    }

    #[test]
    fn points_agree_with_blocks() {
        let mut r = rng(5);
        for dim in [1, 4, 9] {
            let l = random_planar(dim, &mut r);
            let z = random_rows(7, dim, &mut r, 3.0);
            points_match_blocks(&l, &z);
        }
    }

    #[test]
    fn forward_backward_and_inverse_backward_match_finite_differences() {
        let mut r = rng(6);
        for dim in [1, 3, 5] {
            for target in [-4.0, 0.3, 2.5] {
                let mut l = planar_with(dim, target, &mut r);
                let z = random_rows(3, dim, &mut r, 2.0);
                backward_matches_fd(&mut l, &z, &mut r, 1e-6);
            }
        }
    }

    #[test]
    fn below_the_norm_floor_values_are_finite_and_the_log_det_gradient_matches() {
        // ‖w‖² < ε²: the floored branch of the reparametrisation, with its own derivatives.
        // There `û ≈ (ln 2 − 1)·w/ε²` is huge (here ~1e13, the paper's û ∝ 1/‖w‖), so the
        // map's values carry absolute rounding errors of ~|û|·ε; the log-det stays O(1).
        let mut r = rng(7);
        let w: Vec<f64> = normals(&mut r, 3, 1e-17);
        let u = normals(&mut r, 3, 1.0);
        let l = Planar::from_parts(u, w, 0.4);
        assert!(l.w().iter().map(|w| w * w).sum::<f64>() < norm_floor::<f64>());
        let u_hat = l.u_hat().iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(u_hat > 1e12);
        let z = random_rows(3, 3, &mut r, 2.0);
        let (x, ld) = forward(&l, &z);
        assert!(x.iter().chain(&ld).all(|v| v.is_finite()));
        assert!(l.w_dot_u_hat() > -1.0);
        let (back, _) = inverse(&l, &x);
        for (a, b) in back.iter().zip(&z) {
            assert!((a - b).abs() <= 1e-14 * u_hat, "{a} vs {b}");
        }
        // J = Σ ω_i·ld_i against central differences with relative steps (which keep w in
        // the branch): this reaches u and w through κ's floored formula.
        let wt = Array1::from(vec![0.5, -1.0, 2.0]);
        let (_, pg) = backward(&l, Direction::Forward, &z, &Array2::zeros((3, 3)), &wt);
        let theta = flat_params(&l);
        let objective = |theta: &[f64]| {
            let mut m = l.clone();
            set_flat_params(&mut m, theta);
            forward(&m, &z).1.dot(&wt)
        };
        for p in 0..theta.len() {
            let h = 1e-6 * theta[p].abs();
            let (mut up, mut down) = (theta.clone(), theta.clone());
            up[p] += h;
            down[p] -= h;
            let fd = (objective(&up) - objective(&down)) / (2.0 * h);
            assert!(
                (pg[p] - fd).abs() <= 1e-6 * pg[p].abs().max(fd.abs()) + 1e-12,
                "{p}: {} vs {fd}",
                pg[p]
            );
        }
        // And w = 0 exactly: a shift by u·tanh(b), log-det 0, no NaN anywhere.
        let zero = Planar::from_parts(vec![0.5, -1.0], vec![0.0, 0.0], 0.3);
        let (x, ld) = point_forward(&zero, &[1.0, 2.0]);
        let t = 0.3f64.tanh();
        assert!(close(x[0], 1.0 + 0.5 * t, 1e-15) && close(x[1], 2.0 - t, 1e-15));
        assert!(ld.abs() < 1e-15);
        let (g, pg) = backward(
            &zero,
            Direction::Inverse,
            &Array2::ones((2, 2)),
            &Array2::ones((2, 2)),
            &Array1::ones(2),
        );
        assert!(g.iter().chain(&pg).all(|v| v.is_finite()));
    }

    #[test]
    fn large_inputs_and_non_finite_rows() {
        let mut r = rng(8);
        for dim in [1, 4] {
            let l = random_planar(dim, &mut r);
            large_inputs_stay_finite(&l, &mut r);
            let z = random_rows(5, dim, &mut r, 2.0);
            non_finite_rows(&l, &z);
        }
    }

    #[test]
    fn workspace_does_not_grow_on_repeated_calls() {
        let mut r = rng(9);
        let l = random_planar(6, &mut r);
        workspace_does_not_grow(&l, &random_rows(11, 6, &mut r, 2.0));
    }

    #[test]
    fn new_is_the_identity() {
        let mut r = rng(10);
        let l = Planar::<f64>::new(5, &mut r);
        assert!(l.b() == 0.0);
        assert!(l.w().iter().all(|&w| w != 0.0 && w.abs() < 0.6));
        assert!(l.w_dot_u_hat().abs() < 1e-12, "{}", l.w_dot_u_hat());
        let z = [0.3, -1.2, 2.0, 0.0, 0.7];
        let mut x = z;
        let ld = l.forward_point(&mut x, &mut []);
        assert!(ld.abs() < 1e-12, "{ld}");
        assert!(
            x.iter().zip(&z).all(|(a, b)| (a - b).abs() < 1e-12),
            "{x:?}"
        );
        assert_eq!(l.param_len(), 11);
        let mut names = Vec::new();
        l.visit_params(&mut |name, shape, v| {
            names.push((name.to_string(), shape.to_vec(), v.len()))
        });
        assert_eq!(
            names,
            [
                ("u".to_string(), vec![5], 5),
                ("w".to_string(), vec![5], 5),
                ("b".to_string(), vec![1], 1)
            ]
        );
    }

    #[test]
    fn works_in_f32() {
        let mut r = rng(11);
        let l64 = planar_with(6, -2.0, &mut r);
        let to32 = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<_>>();
        let l = Planar::<f32>::from_parts(to32(l64.u()), to32(l64.w()), l64.b() as f32);
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
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
        assert!(ld.iter().all(|l| l.abs() <= 1e-4));
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
            assert!(close(f64::from(*a), *b, 1e-3), "{a} vs {b}");
        }
        let mut g = Array2::<f32>::ones((13, 6));
        l.inverse_backward_block(x.view(), g.view_mut(), w.view(), &mut pg, &mut ws);
        assert!(g.iter().chain(&pg).all(|v| v.is_finite()));
    }
}
