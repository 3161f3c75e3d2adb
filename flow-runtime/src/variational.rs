//! Variational inference: fitting a flow `q` to an unnormalised target density `p̃` by
//! minimising the reverse KL divergence `KL(q ‖ p) = E_q[log q(x) − log p̃(x)] + log Z`
//! with reparametrised gradients (Rezende & Mohamed 2015): `x = f(z)` with `z` drawn from
//! the base, so only the forward direction is needed — flows with forward-only layers
//! (`planar`, `radial`) train this way.
//!
//! The generated code supplies [`Variational::sample_backward_block`], the forward pass over
//! a block that keeps the value entering each step, then each step's
//! [`Layer::forward_backward_block`](crate::Layer::forward_backward_block) from the data side
//! back to the base; the estimator, the blocking and the training loop live here.

use std::io::IsTerminal;
use std::time::Instant;

use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::base::BaseDistribution;
use crate::error::FlowError;
use crate::float::Float;
use crate::flow::BLOCK_ROWS;
use crate::parameters::Parameters;
use crate::train::{
    ChosenOptimizer, Optimizer, OptimizerKind, Schedule, clip_grad_norm, invalid, progress_bar,
};
use crate::workspace::Workspace;

/// The rows of `x` and, per row, where `∂J/∂x` goes: what the callback of
/// [`Variational::sample_backward_block`] receives.
pub type OutputGrad<'a, F> = dyn FnMut(ArrayView2<'_, F>, ArrayViewMut2<'_, F>) + 'a;

/// A flow trained through its forward direction: gradients of objectives of its samples,
/// `x = f(z)` with `z` drawn from the base. Implemented by every type `flow!` generates.
pub trait Variational<F: Float>: Parameters<F> {
    /// The reverse-mode pass through the forward direction over one block of base points
    /// `z`, for `J = Σ_i weight[i]·(log-det of row i) + g(x)`: maps `z` to `x` (adding each
    /// row's forward log-det to `log_det`), calls `output_grad(x, grad)` to have `∂g/∂x`
    /// written into `grad`, then leaves `∂J/∂z` in `grad` (without any term of the base's
    /// density) and adds the layers' `∂J/∂θ` into `param_grad` (the base's slice, last, is
    /// left alone). Inputs are not checked: use [`Variational::reverse_kl_and_grad`].
    #[allow(clippy::too_many_arguments)]
    fn sample_backward_block(
        &self,
        z: ArrayView2<'_, F>,
        log_det: ArrayViewMut1<'_, F>,
        weight: ArrayView1<'_, F>,
        output_grad: &mut OutputGrad<'_, F>,
        grad: ArrayViewMut2<'_, F>,
        param_grad: &mut [F],
        tape: &mut Vec<F>,
        ws: &mut Workspace<F>,
    );

    /// A Monte Carlo estimate, from `n` draws, of the reverse KL divergence up to the
    /// target's unknown normaliser, `(1/n)·Σ_i [log q(x_i) − log p̃(x_i)]` (the negative
    /// ELBO), adding its reparametrised gradient into `param_grad` (length
    /// [`Parameters::param_len`]).
    ///
    /// `log_target(x, grad)` returns `log p̃(x)` of one point and writes `∇_x log p̃(x)` into
    /// `grad`. Each block of [`BLOCK_ROWS`] draws comes from its own generator, seeded from
    /// `rng` in order, and the blocks run in two halves on two threads when there are at
    /// least two blocks: the
    /// loss and gradient depend only on `rng` and `n`, bit for bit, not on the threads. A
    /// draw where the target is `-inf` or NaN makes the loss non-finite (and `fit_reverse_kl`
    /// skips that step).
    fn reverse_kl_and_grad<R, T>(
        &self,
        n: usize,
        rng: &mut R,
        log_target: &T,
        param_grad: &mut [F],
    ) -> Result<F, FlowError>
    where
        Self: Sized,
        R: Rng + ?Sized,
        T: Fn(&[F], &mut [F]) -> F + Sync,
    {
        if param_grad.len() != self.param_len() {
            return Err(FlowError::WrongLength {
                what: "param_grad",
                expected: self.param_len(),
                found: param_grad.len(),
            });
        }
        if n == 0 {
            return Ok(F::zero());
        }
        let seeds: Vec<u64> = (0..n.div_ceil(BLOCK_ROWS))
            .map(|_| rng.next_u64())
            .collect();
        let scale = F::one() / F::of(n as f64);
        let total = if seeds.len() >= 2 {
            let mid = seeds.len() / 2;
            let mut spare = F::with_scratch(|s| std::mem::take(&mut s.spare_grad));
            spare.clear();
            spare.resize(param_grad.len(), F::zero());
            let (a, b) = rayon::join(
                || reverse_kl_blocks(self, n, &seeds, 0..mid, scale, log_target, param_grad),
                || {
                    let range = mid..seeds.len();
                    reverse_kl_blocks(self, n, &seeds, range, scale, log_target, &mut spare)
                },
            );
            for (g, &extra) in param_grad.iter_mut().zip(&spare) {
                *g += extra;
            }
            F::with_scratch(|s| s.spare_grad = spare);
            a + b
        } else {
            reverse_kl_blocks(self, n, &seeds, 0..1, scale, log_target, param_grad)
        };
        Ok(total * scale)
    }
}

/// `Σ_i [log p_Z(z_i) − log-det_i − log p̃(x_i)]` over the blocks `blocks` (of
/// [`BLOCK_ROWS`] rows, the last one of what is left of `n`), adding the gradient of `scale`
/// times it into `param_grad`, on the calling thread.
fn reverse_kl_blocks<F, M, T>(
    model: &M,
    n: usize,
    seeds: &[u64],
    blocks: std::ops::Range<usize>,
    scale: F,
    log_target: &T,
    param_grad: &mut [F],
) -> F
where
    F: Float,
    M: Variational<F>,
    T: Fn(&[F], &mut [F]) -> F + Sync,
{
    let d = model.dim();
    let base = model.base();
    let base_start = param_grad.len() - base.param_len();
    let mut total = F::zero();
    F::with_scratch(|s| {
        for b in blocks {
            let rows = BLOCK_ROWS.min(n - b * BLOCK_ROWS);
            let mut rng = StdRng::seed_from_u64(seeds[b]);
            let [weight, log_det] = &mut s.per_row;
            weight.clear();
            weight.resize(rows, -scale);
            log_det.clear();
            log_det.resize(rows, F::zero());
            s.rows.clear();
            s.rows.resize(rows * d, F::zero());
            for z in s.rows.chunks_exact_mut(d).take(rows) {
                base.sample_point(z, &mut rng);
                total += base.log_prob_point(z);
            }
            if s.grad.len() < rows * d {
                s.grad.resize(rows * d, F::zero());
            }
            let z = ArrayView2::from_shape((rows, d), &s.rows[..]).expect("rows × dim");
            let grad =
                ArrayViewMut2::from_shape((rows, d), &mut s.grad[..rows * d]).expect("rows × dim");
            let mut target_sum = F::zero();
            let mut output_grad = |x: ArrayView2<'_, F>, mut g: ArrayViewMut2<'_, F>| {
                for (x, mut g) in x.axis_iter(Axis(0)).zip(g.axis_iter_mut(Axis(0))) {
                    let x = x.to_slice().expect("tape rows are contiguous");
                    let g = g.as_slice_mut().expect("gradient rows are contiguous");
                    target_sum += log_target(x, g);
                    g.iter_mut().for_each(|v| *v = -scale * *v);
                }
            };
            model.sample_backward_block(
                z,
                ArrayViewMut1::from(&mut log_det[..]),
                ArrayView1::from(&weight[..]),
                &mut output_grad,
                grad,
                param_grad,
                &mut s.tape,
                &mut s.layers,
            );
            total -= target_sum + log_det.iter().copied().sum::<F>();
            let base_grad = &mut param_grad[base_start..];
            if !base_grad.is_empty() {
                for (z, z_bar) in s
                    .rows
                    .chunks_exact(d)
                    .zip(s.grad.chunks_exact(d))
                    .take(rows)
                {
                    base.sample_backward(z, z_bar, scale, base_grad);
                }
            }
        }
    });
    total
}

/// The settings of [`fit_reverse_kl`]. Build with struct-update syntax:
/// `ReverseKlOptions { steps: 3000, ..Default::default() }`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReverseKlOptions {
    /// Optimiser steps (2000).
    pub steps: usize,
    /// Draws per step (256).
    pub samples: usize,
    /// The base learning rate (1e-3).
    pub learning_rate: f64,
    /// The learning-rate schedule (constant).
    pub schedule: Schedule,
    /// The optimiser (Adam).
    pub optimizer: OptimizerKind,
    /// Weight decay (0): decoupled for Adam (AdamW), L2 for SGD.
    pub weight_decay: f64,
    /// Clip each step's gradient to this global L2 norm (`None`: no clipping).
    pub clip_norm: Option<f64>,
    /// Seed of the draws: the same seed, target and model give bit-identical results.
    pub seed: u64,
    /// Show progress on stderr, as [`crate::fit`] does.
    pub progress: bool,
}

impl Default for ReverseKlOptions {
    fn default() -> Self {
        Self {
            steps: 2000,
            samples: 256,
            learning_rate: 1e-3,
            schedule: Schedule::Constant,
            optimizer: OptimizerKind::adam(),
            weight_decay: 0.0,
            clip_norm: None,
            seed: 0,
            progress: true,
        }
    }
}

/// What happened during [`fit_reverse_kl`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReverseKlReport {
    /// The loss estimate of every step, `(1/n)·Σ [log q − log p̃]` (non-finite for skipped
    /// steps); it approaches `−log Z` of the target from above as `q` approaches it.
    pub loss: Vec<f64>,
    /// Steps whose loss or gradient was not finite: their update was skipped.
    pub skipped_steps: usize,
    /// Wall-clock time of the whole fit, in seconds.
    pub seconds: f64,
}

/// Fits `model` to the unnormalised density `log_target` (see
/// [`Variational::reverse_kl_and_grad`]) by minimising the reverse KL divergence with fresh
/// draws every step, for `options.steps` steps. A step whose loss or gradient is not
/// finite is skipped and counted, never applied.
///
/// Errors: options that cannot work (`samples = 0`, a negative learning rate, …).
pub fn fit_reverse_kl<F, M, T>(
    model: &mut M,
    log_target: &T,
    options: &ReverseKlOptions,
) -> Result<ReverseKlReport, FlowError>
where
    F: Float,
    M: Variational<F>,
    T: Fn(&[F], &mut [F]) -> F + Sync,
{
    let start = Instant::now();
    check_options(options)?;
    let mut optimizer =
        ChosenOptimizer::new(options.optimizer, model.param_len(), options.weight_decay);
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut grads = vec![F::zero(); model.param_len()];
    let clip = options.clip_norm.map(F::of);
    let total = options.steps;
    let bar = progress_bar(options.progress, total);
    let log_lines = options.progress && !std::io::stderr().is_terminal();
    let log_every = total.div_ceil(10).max(1);
    let mut report = ReverseKlReport {
        loss: Vec::with_capacity(total),
        skipped_steps: 0,
        seconds: 0.0,
    };
    let mut smoothed = f64::NAN;
    for step in 0..total {
        grads.fill(F::zero());
        let loss = model.reverse_kl_and_grad(options.samples, &mut rng, log_target, &mut grads)?;
        if loss.is_finite() && grads.iter().all(|g| g.is_finite()) {
            if let Some(max_norm) = clip {
                clip_grad_norm(&mut grads, max_norm);
            }
            let lr = F::of(options.schedule.lr_at(options.learning_rate, step, total));
            optimizer.step(model, &grads, lr);
        } else {
            report.skipped_steps += 1;
        }
        let loss = loss.to_f64_lossless();
        report.loss.push(loss);
        if loss.is_finite() {
            smoothed = if smoothed.is_nan() {
                loss
            } else {
                0.95 * smoothed + 0.05 * loss
            };
        }
        let done = step + 1;
        bar.set_position(done as u64);
        if !bar.is_hidden() && done % 16 == 0 {
            bar.set_message(format!("loss {smoothed:.4}"));
        }
        if log_lines && (done % log_every == 0 || done == total) {
            eprintln!("step {done}/{total}  reverse KL {smoothed:.4}");
        }
    }
    bar.abandon();
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

fn check_options(o: &ReverseKlOptions) -> Result<(), FlowError> {
    if o.samples == 0 {
        return Err(invalid("samples must be at least 1".into()));
    }
    if !(o.learning_rate.is_finite() && o.learning_rate >= 0.0) {
        return Err(invalid(format!(
            "learning_rate must be finite and non-negative, not {}",
            o.learning_rate
        )));
    }
    if let Some(c) = o.clip_norm
        && (c.is_nan() || c <= 0.0)
    {
        return Err(invalid(format!("clip_norm must be positive, not {c}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::base::DiagonalNormal;
    use crate::train::mock::Gaussian;

    /// `log N(x; m, diag(e^{2t}))` and its gradient.
    fn gaussian_target(m: &[f64], t: &[f64]) -> impl Fn(&[f64], &mut [f64]) -> f64 + Sync {
        let (m, t) = (m.to_vec(), t.to_vec());
        move |x, g| {
            let mut lp = 0.0;
            for j in 0..x.len() {
                let u = (x[j] - m[j]) * (-t[j]).exp();
                lp += -0.5 * u * u - t[j] - 0.5 * (2.0 * std::f64::consts::PI).ln();
                g[j] = -u * (-t[j]).exp();
            }
            lp
        }
    }

    fn loss_and_grad(
        model: &Gaussian<f64>,
        n: usize,
        target: &(impl Fn(&[f64], &mut [f64]) -> f64 + Sync),
    ) -> (f64, Vec<f64>) {
        let mut g = vec![0.0; model.param_len()];
        let loss = model
            .reverse_kl_and_grad(n, &mut StdRng::seed_from_u64(5), target, &mut g)
            .unwrap();
        (loss, g)
    }

    /// With the draws fixed by the seed, the estimate is a smooth function of the
    /// parameters, and its gradient is the reparametrised one: central differences agree.
    /// 600 draws: three blocks, so the two-thread split is exercised.
    #[test]
    fn gradient_matches_finite_differences_of_the_estimate() {
        let target = gaussian_target(&[0.5, -1.0, 2.0], &[0.3, -0.2, 0.0]);
        let model = Gaussian::<f64>::new(&[0.1, 0.2, -0.3], &[-0.4, 0.2, 0.1]);
        let (_, grad) = loss_and_grad(&model, 600, &target);
        let params = model.params();
        for k in 0..params.len() {
            let at = |delta: f64| {
                let mut m = Gaussian::<f64>::new(&[0.0; 3], &[0.0; 3]);
                let mut p = params.clone();
                p[k] += delta;
                m.params_from_slice(&p);
                loss_and_grad(&m, 600, &target).0
            };
            let h = 1e-5;
            let fd = (at(h) - at(-h)) / (2.0 * h);
            assert!(
                (fd - grad[k]).abs() < 1e-6 * (1.0 + fd.abs()),
                "param {k}: {fd} vs {}",
                grad[k]
            );
        }
    }

    /// At `q = p` every draw has `log q = log p`, so the estimate is 0; the gradient is the
    /// mean of the score `∂_θ log q_θ(x)` over the draws, zero only in expectation: of order
    /// `1/√n` (sd 1/64 here for the mean, √2/64 for the log-scales).
    #[test]
    fn the_target_itself_has_zero_loss_and_a_small_gradient() {
        let (m, t) = ([0.5, -1.0], [0.3, -0.2]);
        let model = Gaussian::<f64>::new(&m, &t);
        let (loss, grad) = loss_and_grad(&model, 4096, &gaussian_target(&m, &t));
        assert!(loss.abs() < 1e-12, "{loss}");
        assert!(grad.iter().all(|g| g.abs() < 0.1), "{grad:?}");
        assert!(
            grad.iter().any(|g| g.abs() > 1e-6),
            "the score term is there: {grad:?}"
        );
    }

    /// The same seed gives the same bits whether rayon has one thread or two.
    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let target = gaussian_target(&[0.5, -1.0], &[0.3, -0.2]);
        let model = Gaussian::<f64>::new(&[0.1, 0.2], &[-0.4, 0.2]);
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| loss_and_grad(&model, 1000, &target))
        };
        assert_eq!(run(1), run(2));
    }

    #[test]
    fn fit_recovers_a_gaussian_target() {
        let (m, t) = ([0.5, -1.0], [0.3, -0.2]);
        let mut model = Gaussian::<f64>::new(&[0.0, 0.0], &[0.0, 0.0]);
        let options = ReverseKlOptions {
            steps: 1500,
            samples: 128,
            learning_rate: 1e-2,
            progress: false,
            ..Default::default()
        };
        let report = fit_reverse_kl(&mut model, &gaussian_target(&m, &t), &options).unwrap();
        assert_eq!(report.loss.len(), 1500);
        assert_eq!(report.skipped_steps, 0);
        for j in 0..2 {
            assert!((model.mu[j] - m[j]).abs() < 0.05, "{:?}", model.mu);
            assert!(
                (model.log_sigma[j] - t[j]).abs() < 0.05,
                "{:?}",
                model.log_sigma
            );
        }
    }

    /// A target that is `-inf` somewhere makes the step's loss non-finite: skipped.
    #[test]
    fn non_finite_targets_skip_steps_and_bad_options_are_errors() {
        let mut model = Gaussian::<f64>::new(&[0.0], &[0.0]);
        let half_line = |x: &[f64], g: &mut [f64]| {
            g[0] = 0.0;
            if x[0] > 0.0 { 0.0 } else { f64::NEG_INFINITY }
        };
        let options = ReverseKlOptions {
            steps: 3,
            progress: false,
            ..Default::default()
        };
        let before = model.params();
        let report = fit_reverse_kl(&mut model, &half_line, &options).unwrap();
        assert_eq!(report.skipped_steps, 3);
        assert_eq!(model.params(), before);
        let bad = ReverseKlOptions {
            samples: 0,
            ..options
        };
        assert!(matches!(
            fit_reverse_kl(&mut model, &half_line, &bad),
            Err(FlowError::InvalidOptions { .. })
        ));
        let mut short = vec![0.0; 1];
        assert!(matches!(
            model.reverse_kl_and_grad(4, &mut StdRng::seed_from_u64(0), &half_line, &mut short),
            Err(FlowError::WrongLength { .. })
        ));
    }

    /// The learnable base's reparametrised gradient: for `z = μ + e^s ε`,
    /// `J = Σ c·z + w·log p(z)` has `∂J/∂μ = c` and `∂J/∂s = c·(z − μ) − w`.
    #[test]
    fn diagonal_normal_sample_backward_matches_finite_differences() {
        let eps = [0.7, -1.3];
        let (c, w) = ([0.4, -0.9], 0.25);
        let objective = |p: &[f64]| {
            let base = DiagonalNormal {
                mean: p[..2].to_vec(),
                log_std: p[2..].to_vec(),
            };
            let z: Vec<f64> = (0..2)
                .map(|j| base.mean[j] + base.log_std[j].exp() * eps[j])
                .collect();
            c[0] * z[0] + c[1] * z[1] + w * BaseDistribution::<f64>::log_prob_point(&base, &z)
        };
        let p: [f64; 4] = [0.2, -0.1, 0.3, -0.5];
        let base = DiagonalNormal {
            mean: p[..2].to_vec(),
            log_std: p[2..].to_vec(),
        };
        let z: Vec<f64> = (0..2).map(|j| p[j] + p[2 + j].exp() * eps[j]).collect();
        let mut grad = vec![0.0; 4];
        base.sample_backward(&z, &c, w, &mut grad);
        for k in 0..4 {
            let h = 1e-6;
            let (mut up, mut down) = (p, p);
            up[k] += h;
            down[k] -= h;
            let fd = (objective(&up) - objective(&down)) / (2.0 * h);
            assert!(
                (fd - grad[k]).abs() < 1e-7,
                "param {k}: {fd} vs {}",
                grad[k]
            );
        }
    }
}
