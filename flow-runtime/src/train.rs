//! Training: optimisers, gradient clipping, learning-rate schedules and the `fit` loop.
//!
//! [`fit`] follows FlowJAX's `fit_to_data`: the rows are shuffled with a seeded RNG and
//! split into a training and a validation set; minibatches of the training set are drawn
//! without replacement (one reshuffle per epoch); the mean NLL of each minibatch is
//! minimised with Adam (or SGD); the validation NLL is computed every `eval_every` steps,
//! the best parameters seen are kept, training stops early after `patience` evaluations
//! without improvement, and the best parameters are restored at the end.
//!
//! ```text
//! let report = fit(&mut model, data.view(), &FitOptions { max_steps: Some(2000), ..Default::default() })?;
//! println!("best validation NLL {:?} at step {}", report.best_val_loss, report.best_step);
//! ```

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ndarray::{Array2, ArrayView2};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::error::FlowError;
use crate::float::Float;
use crate::flow::{Density, check_batch};
use crate::parameters::Parameters;
use crate::trainable::Trainable;

/// A first-order optimiser over a model's flat parameter layout.
pub trait Optimizer<F: Float> {
    /// Applies one update with learning rate `lr` from the gradient `grads` (length
    /// [`Parameters::param_len`], in the flat layout of [`Parameters::visit_params_mut`]).
    /// Walks the parameters once and allocates nothing.
    ///
    /// # Panics
    /// If `grads` or the model's parameter count differ from the optimiser's state length.
    fn step<M: Parameters<F> + ?Sized>(&mut self, model: &mut M, grads: &[F], lr: F);

    /// Forgets the accumulated state (moments, velocity, step count).
    fn reset(&mut self);
}

/// Adam (Kingma & Ba 2015) with bias correction, and AdamW's decoupled weight decay
/// (Loshchilov & Hutter 2019) when `weight_decay > 0`, as in PyTorch:
///
/// ```text
/// θ ← θ·(1 − lr·wd);  m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²
/// θ ← θ − lr · (m / (1−β1ᵗ)) / (√(v / (1−β2ᵗ)) + ε)
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Adam<F> {
    /// Decay of the first moment (default 0.9).
    pub beta1: F,
    /// Decay of the second moment (default 0.999).
    pub beta2: F,
    /// Added to the denominator (default 1e-8).
    pub eps: F,
    /// Decoupled weight decay (default 0).
    pub weight_decay: F,
    m: Vec<F>,
    v: Vec<F>,
    t: u64,
}

impl<F: Float> Adam<F> {
    /// Adam with the usual defaults (β1 = 0.9, β2 = 0.999, ε = 1e-8, no weight decay)
    /// for a model with `param_len` parameters.
    pub fn new(param_len: usize) -> Self {
        Self {
            beta1: F::of(0.9),
            beta2: F::of(0.999),
            eps: F::of(1e-8),
            weight_decay: F::zero(),
            m: vec![F::zero(); param_len],
            v: vec![F::zero(); param_len],
            t: 0,
        }
    }

    /// Sets β1 and β2.
    pub fn with_betas(mut self, beta1: F, beta2: F) -> Self {
        self.beta1 = beta1;
        self.beta2 = beta2;
        self
    }

    /// Sets ε.
    pub fn with_eps(mut self, eps: F) -> Self {
        self.eps = eps;
        self
    }

    /// Sets the decoupled weight decay (AdamW).
    pub fn with_weight_decay(mut self, weight_decay: F) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// The number of updates applied so far.
    pub fn step_count(&self) -> u64 {
        self.t
    }
}

impl<F: Float> Optimizer<F> for Adam<F> {
    fn step<M: Parameters<F> + ?Sized>(&mut self, model: &mut M, grads: &[F], lr: F) {
        let n = self.m.len();
        assert_eq!(
            grads.len(),
            n,
            "gradient length differs from the optimiser's"
        );
        assert_eq!(
            model.param_len(),
            n,
            "model parameter count differs from the optimiser's"
        );
        self.t += 1;
        let t = F::of(self.t as f64);
        let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
        let bias1 = F::one() - b1.powf(t);
        let bias2 = F::one() - b2.powf(t);
        let decay = F::one() - lr * self.weight_decay;
        let decoupled = self.weight_decay != F::zero();
        let (m, v) = (&mut self.m[..], &mut self.v[..]);
        let mut offset = 0;
        model.visit_params_mut(&mut |_, _, _, params| {
            let end = offset + params.len();
            for (((p, &g), m), v) in params
                .iter_mut()
                .zip(&grads[offset..end])
                .zip(&mut m[offset..end])
                .zip(&mut v[offset..end])
            {
                if decoupled {
                    *p *= decay;
                }
                // Moments below the smallest normal value are flushed to zero: a
                // parameter whose gradient stays zero (a dead ReLU) would otherwise decay
                // its first moment into subnormals, which cost x86 processors a hundred
                // cycles an operation, and an update of < 1e-30·lr is nothing anyway.
                *m = flush_subnormal(b1 * *m + (F::one() - b1) * g);
                *v = flush_subnormal(b2 * *v + (F::one() - b2) * g * g);
                let m_hat = *m / bias1;
                let v_hat = *v / bias2;
                *p -= lr * m_hat / (v_hat.sqrt() + eps);
            }
            offset = end;
        });
    }

    fn reset(&mut self) {
        self.m.fill(F::zero());
        self.v.fill(F::zero());
        self.t = 0;
    }
}

/// `x`, or zero when `|x|` is below the smallest normal value (a select, so loops
/// vectorise).
#[inline(always)]
fn flush_subnormal<F: Float>(x: F) -> F {
    if x.abs() < F::min_positive_value() {
        F::zero()
    } else {
        x
    }
}

/// Stochastic gradient descent with (heavy-ball) momentum and coupled L2 weight decay,
/// as in PyTorch:
///
/// ```text
/// g ← g + wd·θ;  u ← μ·u + g;  θ ← θ − lr·u
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Sgd<F> {
    /// Momentum μ (0 for plain SGD).
    pub momentum: F,
    /// L2 weight decay added to the gradient (default 0).
    pub weight_decay: F,
    velocity: Vec<F>,
}

impl<F: Float> Sgd<F> {
    /// SGD with momentum `momentum` for a model with `param_len` parameters.
    pub fn new(param_len: usize, momentum: F) -> Self {
        Self {
            momentum,
            weight_decay: F::zero(),
            velocity: vec![F::zero(); param_len],
        }
    }

    /// Sets the L2 weight decay.
    pub fn with_weight_decay(mut self, weight_decay: F) -> Self {
        self.weight_decay = weight_decay;
        self
    }
}

impl<F: Float> Optimizer<F> for Sgd<F> {
    fn step<M: Parameters<F> + ?Sized>(&mut self, model: &mut M, grads: &[F], lr: F) {
        let n = self.velocity.len();
        assert_eq!(
            grads.len(),
            n,
            "gradient length differs from the optimiser's"
        );
        assert_eq!(
            model.param_len(),
            n,
            "model parameter count differs from the optimiser's"
        );
        let (mu, wd) = (self.momentum, self.weight_decay);
        let velocity = &mut self.velocity[..];
        let mut offset = 0;
        model.visit_params_mut(&mut |_, _, _, params| {
            let end = offset + params.len();
            for ((p, &g), u) in params
                .iter_mut()
                .zip(&grads[offset..end])
                .zip(&mut velocity[offset..end])
            {
                let g = g + wd * *p;
                // As in Adam: a decaying velocity stops at zero, not in the subnormals.
                *u = flush_subnormal(mu * *u + g);
                *p -= lr * *u;
            }
            offset = end;
        });
    }

    fn reset(&mut self) {
        self.velocity.fill(F::zero());
    }
}

/// Scales `grads` in place so that their global L2 norm is at most `max_norm`, and returns
/// the norm before clipping. The norm is accumulated in `f64`, so large `f32` gradients do
/// not overflow. A non-finite norm leaves `grads` untouched (the caller should skip the
/// step).
pub fn clip_grad_norm<F: Float>(grads: &mut [F], max_norm: F) -> F {
    let norm = grads
        .iter()
        .map(|g| {
            let g = g.to_f64_lossless();
            g * g
        })
        .sum::<f64>()
        .sqrt();
    let max = max_norm.to_f64_lossless();
    if norm.is_finite() && norm > max {
        let scale = F::of(max / norm);
        for g in grads.iter_mut() {
            *g *= scale;
        }
    }
    F::of(norm)
}

/// A learning-rate schedule: a factor multiplying the base learning rate at each step.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Schedule {
    /// The base learning rate throughout.
    #[default]
    Constant,
    /// Linear warm-up over `warmup_steps` steps (step `k < warmup_steps` has the factor
    /// `(k + 1) / warmup_steps`), then cosine decay from 1 down to `final_fraction`, reached
    /// at the last step (`total − 1`).
    Cosine {
        /// Steps of linear warm-up (0 for none).
        warmup_steps: usize,
        /// The factor at the last step, e.g. 0.01.
        final_fraction: f64,
    },
}

impl Schedule {
    /// The factor at step `step` (counted from 0) of `total` steps.
    pub fn factor(&self, step: usize, total: usize) -> f64 {
        match *self {
            Schedule::Constant => 1.0,
            Schedule::Cosine {
                warmup_steps,
                final_fraction,
            } => {
                if step < warmup_steps {
                    return (step + 1) as f64 / warmup_steps as f64;
                }
                let span = total.saturating_sub(warmup_steps).saturating_sub(1);
                let progress = if span == 0 {
                    0.0
                } else {
                    ((step - warmup_steps) as f64 / span as f64).min(1.0)
                };
                let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                final_fraction + (1.0 - final_fraction) * cosine
            }
        }
    }

    /// The learning rate at step `step` of `total`: `base_lr · factor(step, total)`.
    pub fn lr_at(&self, base_lr: f64, step: usize, total: usize) -> f64 {
        base_lr * self.factor(step, total)
    }
}

/// Which optimiser [`fit`] builds (with [`FitOptions::weight_decay`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerKind {
    /// [`Adam`]; AdamW when the weight decay is positive.
    Adam {
        /// β1 (0.9).
        beta1: f64,
        /// β2 (0.999).
        beta2: f64,
        /// ε (1e-8).
        eps: f64,
    },
    /// [`Sgd`] with momentum.
    Sgd {
        /// The momentum (e.g. 0.9).
        momentum: f64,
    },
}

impl OptimizerKind {
    /// Adam with β1 = 0.9, β2 = 0.999, ε = 1e-8.
    pub const fn adam() -> Self {
        OptimizerKind::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// SGD with the given momentum.
    pub const fn sgd(momentum: f64) -> Self {
        OptimizerKind::Sgd { momentum }
    }
}

impl Default for OptimizerKind {
    fn default() -> Self {
        Self::adam()
    }
}

/// The settings of [`fit`]. Build with struct-update syntax:
/// `FitOptions { max_steps: Some(5000), learning_rate: 3e-3, ..Default::default() }`.
#[derive(Debug, Clone, PartialEq)]
pub struct FitOptions {
    /// Rows per minibatch (256). Capped at the size of the training set.
    pub batch_size: usize,
    /// At most this many optimiser steps (`None`: no limit but `max_epochs`).
    pub max_steps: Option<usize>,
    /// At most this many passes over the training set (`Some(100)`; `None`: no limit but
    /// `max_steps`). With both set, the smaller bound wins. An epoch is
    /// `⌊training rows / batch_size⌋` steps: the last incomplete batch is dropped.
    pub max_epochs: Option<usize>,
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
    /// Fraction of the rows held out for validation (0.1). 0 disables validation, early
    /// stopping and best-parameter restoring.
    pub validation_fraction: f64,
    /// Evaluate the validation NLL every this many steps (`None`: once per epoch).
    pub eval_every: Option<usize>,
    /// Stop after this many evaluations in a row without a new best validation NLL
    /// (`Some(5)`; `None`: never stop early).
    pub patience: Option<usize>,
    /// Stop after the step that ends past this many seconds of training (`None`: no time
    /// limit), evaluating the validation NLL once more. The number of steps then depends
    /// on the machine's speed, so results are reproducible only with `None`.
    pub max_seconds: Option<f64>,
    /// Seed of the shuffling RNG: the same seed, data and model give bit-identical results.
    pub seed: u64,
    /// Show progress on stderr (step, train loss, validation loss): a progress bar on a
    /// terminal, else a plain line every tenth of the run.
    pub progress: bool,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            batch_size: 256,
            max_steps: None,
            max_epochs: Some(100),
            learning_rate: 1e-3,
            schedule: Schedule::Constant,
            optimizer: OptimizerKind::adam(),
            weight_decay: 0.0,
            clip_norm: None,
            validation_fraction: 0.1,
            eval_every: None,
            patience: Some(5),
            max_seconds: None,
            seed: 0,
            progress: true,
        }
    }
}

/// What happened during [`fit`].
#[derive(Debug, Clone, PartialEq)]
pub struct FitReport {
    /// The minibatch NLL of every step (non-finite for skipped steps).
    pub train_loss: Vec<f64>,
    /// `(steps completed, validation NLL)` of every evaluation, starting with step 0 (the
    /// initial parameters). Empty without validation.
    pub val_loss: Vec<(usize, f64)>,
    /// The steps completed when the returned parameters were current (`steps` without
    /// validation).
    pub best_step: usize,
    /// The validation NLL of the returned parameters (`None` without validation).
    pub best_val_loss: Option<f64>,
    /// Steps whose loss or gradient was not finite: their update was skipped.
    pub skipped_steps: usize,
    /// Steps taken (including skipped ones).
    pub steps: usize,
    /// Whether training stopped because the validation NLL stopped improving.
    pub stopped_early: bool,
    /// Whether training stopped at [`FitOptions::max_seconds`].
    pub out_of_time: bool,
    /// Wall-clock time of the whole fit, in seconds.
    pub seconds: f64,
}

/// Fits `model` to the rows of `data` by minimising the mean negative log-likelihood, with
/// the optimiser chosen by `options.optimizer`; see the [module docs](self). On return the
/// model holds the parameters with the best validation NLL (or the last ones without
/// validation).
///
/// A flow with a layer that waits for a data-dependent initialisation (an `actnorm` not yet
/// initialised, see [`Parameters::needs_data_init`]) is initialised on the first training
/// minibatch ([`Trainable::initialize_from_data`]) before the first step.
///
/// Errors: a wrong column count or a non-finite value in `data`, and options that cannot
/// work (an empty training set, `batch_size = 0`, …). A step whose loss or gradient is not
/// finite is skipped and counted, never applied.
pub fn fit<F: Float, M: Trainable<F> + ?Sized>(
    model: &mut M,
    data: ArrayView2<'_, F>,
    options: &FitOptions,
) -> Result<FitReport, FlowError> {
    let mut optimizer =
        ChosenOptimizer::new(options.optimizer, model.param_len(), options.weight_decay);
    fit_with(model, data, options, &mut optimizer)
}

/// The optimiser an [`OptimizerKind`] names, with its weight decay.
pub(crate) enum ChosenOptimizer<F> {
    Adam(Adam<F>),
    Sgd(Sgd<F>),
}

impl<F: Float> ChosenOptimizer<F> {
    /// The optimiser `kind` over `param_len` parameters.
    pub(crate) fn new(kind: OptimizerKind, param_len: usize, weight_decay: f64) -> Self {
        let wd = F::of(weight_decay);
        match kind {
            OptimizerKind::Adam { beta1, beta2, eps } => ChosenOptimizer::Adam(
                Adam::new(param_len)
                    .with_betas(F::of(beta1), F::of(beta2))
                    .with_eps(F::of(eps))
                    .with_weight_decay(wd),
            ),
            OptimizerKind::Sgd { momentum } => {
                ChosenOptimizer::Sgd(Sgd::new(param_len, F::of(momentum)).with_weight_decay(wd))
            }
        }
    }
}

impl<F: Float> Optimizer<F> for ChosenOptimizer<F> {
    fn step<M: Parameters<F> + ?Sized>(&mut self, model: &mut M, grads: &[F], lr: F) {
        match self {
            ChosenOptimizer::Adam(o) => o.step(model, grads, lr),
            ChosenOptimizer::Sgd(o) => o.step(model, grads, lr),
        }
    }
    fn reset(&mut self) {
        match self {
            ChosenOptimizer::Adam(o) => o.reset(),
            ChosenOptimizer::Sgd(o) => o.reset(),
        }
    }
}

/// [`fit`] with a given optimiser (its state is used and updated as it is);
/// `options.optimizer` and `options.weight_decay` are ignored.
pub fn fit_with<F: Float, M: Trainable<F> + ?Sized, O: Optimizer<F>>(
    model: &mut M,
    data: ArrayView2<'_, F>,
    options: &FitOptions,
    optimizer: &mut O,
) -> Result<FitReport, FlowError> {
    let start = Instant::now();
    let dim = model.dim();
    check_batch(data, dim)?;
    check_options(options)?;
    let rows = data.nrows();

    let mut rng = StdRng::seed_from_u64(options.seed);
    let (val_rows, mut train_rows) = split_rows(rows, options.validation_fraction, &mut rng);
    if train_rows.is_empty() {
        return Err(invalid(format!(
            "no training rows: {rows} row(s) with validation_fraction = {}",
            options.validation_fraction
        )));
    }
    let validation = (!val_rows.is_empty()).then(|| gather_owned(data, &val_rows));

    let batch = options.batch_size.min(train_rows.len());
    let steps_per_epoch = train_rows.len() / batch;
    let total = match (options.max_steps, options.max_epochs) {
        (Some(s), Some(e)) => s.min(e.saturating_mul(steps_per_epoch)),
        (Some(s), None) => s,
        (None, Some(e)) => e.saturating_mul(steps_per_epoch),
        (None, None) => unreachable!("checked by check_options"),
    };
    let eval_every = options.eval_every.unwrap_or(steps_per_epoch);

    // The first minibatch is drawn here when a layer (an `actnorm`) waits for a
    // data-dependent initialisation, so that the initial parameters, the best ones kept and
    // the first validation loss are the initialised ones. The shuffle is the loop's first,
    // so the minibatches are the same either way.
    let mut epoch_cursor = steps_per_epoch;
    if total > 0 && model.needs_data_init() {
        train_rows.shuffle(&mut rng);
        epoch_cursor = 0;
        model.initialize_from_data(gather_owned(data, &train_rows[..batch]).view())?;
    }

    let params = model.param_len();
    let mut batch_rows = Array2::<F>::zeros((batch, dim));
    let mut grads = vec![F::zero(); params];
    let mut best = vec![F::zero(); params];
    model.params_to_slice(&mut best);
    // The running statistics (buffers) that go with the best parameters.
    let mut best_buffers = buffers_of(&*model);

    let mut report = FitReport {
        train_loss: Vec::with_capacity(total),
        val_loss: Vec::new(),
        best_step: 0,
        best_val_loss: None,
        skipped_steps: 0,
        steps: 0,
        stopped_early: false,
        out_of_time: false,
        seconds: 0.0,
    };
    let mut best_val = f64::INFINITY;
    if let Some(val) = &validation {
        best_val = validation_nll(&*model, val.view())?;
        report.val_loss.push((0, best_val));
        report.best_val_loss = Some(best_val);
    }

    let bar = progress_bar(options.progress, total);
    // Without a terminal (a log file, CI) the bar is hidden: a plain line every tenth of
    // the run instead.
    let log_lines = options.progress && !std::io::stderr().is_terminal();
    let log_every = total.div_ceil(10).max(1);
    let mut smoothed = f64::NAN;
    let mut evals_without_improvement = 0;
    let base_lr = options.learning_rate;
    let clip = options.clip_norm.map(F::of);
    let tracks_statistics = model.uses_batch_statistics();

    for step in 0..total {
        if epoch_cursor == steps_per_epoch {
            train_rows.shuffle(&mut rng);
            epoch_cursor = 0;
        }
        let chosen = &train_rows[epoch_cursor * batch..(epoch_cursor + 1) * batch];
        epoch_cursor += 1;
        for (mut row, &i) in batch_rows.rows_mut().into_iter().zip(chosen) {
            row.assign(&data.row(i));
        }

        grads.fill(F::zero());
        let loss = model.nll_and_grad(batch_rows.view(), &mut grads)?;
        if loss.is_finite() && grads.iter().all(|g| g.is_finite()) {
            if let Some(max_norm) = clip {
                clip_grad_norm(&mut grads, max_norm);
            }
            // The running statistics follow the batch the gradient was taken on.
            if tracks_statistics {
                model.track_batch_statistics(batch_rows.view())?;
            }
            let lr = F::of(options.schedule.lr_at(base_lr, step, total));
            optimizer.step(model, &grads, lr);
        } else {
            report.skipped_steps += 1;
        }
        let loss = loss.to_f64_lossless();
        report.train_loss.push(loss);
        if loss.is_finite() {
            smoothed = if smoothed.is_nan() {
                loss
            } else {
                0.95 * smoothed + 0.05 * loss
            };
        }
        let done = step + 1;
        report.steps = done;
        report.out_of_time = options
            .max_seconds
            .is_some_and(|limit| start.elapsed().as_secs_f64() >= limit);

        let mut evaluated = false;
        if let Some(val) = &validation
            && (done % eval_every == 0 || done == total || report.out_of_time)
        {
            evaluated = true;
            let v = validation_nll(&*model, val.view())?;
            report.val_loss.push((done, v));
            if v < best_val {
                best_val = v;
                report.best_step = done;
                report.best_val_loss = Some(v);
                model.params_to_slice(&mut best);
                best_buffers = buffers_of(&*model);
                evals_without_improvement = 0;
            } else {
                evals_without_improvement += 1;
                if options
                    .patience
                    .is_some_and(|p| evals_without_improvement >= p)
                {
                    report.stopped_early = true;
                }
            }
        }

        bar.set_position(done as u64);
        let val = || report.val_loss.last().map_or(f64::NAN, |&(_, v)| v);
        if !bar.is_hidden() && (evaluated || done % 16 == 0) {
            bar.set_message(format!(
                "train {smoothed:.4}  val {:.4}  best {best_val:.4}",
                val()
            ));
        }
        if log_lines && (done % log_every == 0 || done == total) {
            if validation.is_some() {
                eprintln!(
                    "step {done}/{total}  train {smoothed:.4}  val {:.4}  best {best_val:.4}",
                    val()
                );
            } else {
                eprintln!("step {done}/{total}  train {smoothed:.4}");
            }
        }
        if report.stopped_early || report.out_of_time {
            break;
        }
    }
    bar.abandon();

    if validation.is_some() {
        model.params_from_slice(&best);
        set_buffers(model, &best_buffers);
    } else {
        report.best_step = report.steps;
    }
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// The flow's buffers, flat (empty for most flows).
fn buffers_of<F: Float, M: Parameters<F> + ?Sized>(model: &M) -> Vec<F> {
    let mut out = Vec::new();
    model.visit_buffers(&mut |_, _, _, values| out.extend_from_slice(values));
    out
}

/// Sets the buffers from [`buffers_of`]'s layout.
fn set_buffers<F: Float, M: Parameters<F> + ?Sized>(model: &mut M, values: &[F]) {
    let mut offset = 0;
    model.visit_buffers_mut(&mut |_, _, _, b| {
        b.copy_from_slice(&values[offset..offset + b.len()]);
        offset += b.len();
    });
}

/// The mean NLL of `rows` (a log-density pass only): `+inf` if a row is outside the support.
fn validation_nll<F: Float, M: Density<F> + ?Sized>(
    model: &M,
    rows: ArrayView2<'_, F>,
) -> Result<f64, FlowError> {
    let log_prob = model.log_prob(rows)?;
    let total: f64 = log_prob.iter().map(|lp| lp.to_f64_lossless()).sum();
    Ok(-total / rows.nrows() as f64)
}

/// Shuffles the row indices and splits them into (validation, training): the validation
/// set has `round(rows · fraction)` rows, at least one if `fraction > 0`.
fn split_rows(rows: usize, fraction: f64, rng: &mut StdRng) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..rows).collect();
    order.shuffle(rng);
    let n_val = if fraction > 0.0 {
        ((rows as f64 * fraction).round() as usize).clamp(1, rows)
    } else {
        0
    };
    let train = order.split_off(n_val);
    (order, train)
}

fn gather_owned<F: Float>(data: ArrayView2<'_, F>, rows: &[usize]) -> Array2<F> {
    let mut out = Array2::zeros((rows.len(), data.ncols()));
    for (mut row, &i) in out.rows_mut().into_iter().zip(rows) {
        row.assign(&data.row(i));
    }
    out
}

fn check_options(o: &FitOptions) -> Result<(), FlowError> {
    if o.batch_size == 0 {
        return Err(invalid("batch_size must be at least 1".into()));
    }
    if o.max_steps.is_none() && o.max_epochs.is_none() {
        return Err(invalid(
            "set max_steps or max_epochs (or both): training needs an end".into(),
        ));
    }
    if !(0.0..1.0).contains(&o.validation_fraction) {
        return Err(invalid(format!(
            "validation_fraction must be in [0, 1), not {}",
            o.validation_fraction
        )));
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
    if o.eval_every == Some(0) {
        return Err(invalid("eval_every must be at least 1".into()));
    }
    if let Schedule::Cosine { final_fraction, .. } = o.schedule
        && !(final_fraction.is_finite() && final_fraction >= 0.0)
    {
        return Err(invalid(format!(
            "the cosine schedule's final_fraction must be finite and non-negative, not {final_fraction}"
        )));
    }
    Ok(())
}

pub(crate) fn invalid(message: String) -> FlowError {
    FlowError::InvalidOptions { message }
}

pub(crate) fn progress_bar(show: bool, total: usize) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{bar:30.cyan/blue} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// A diagonal Gaussian flow `x = μ + e^s ⊙ z` with a hand-written gradient, standing in for
/// generated flows in the tests of `train` and `io`.
#[cfg(test)]
pub(crate) mod mock {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis};

    use crate::base::StandardNormal;
    use crate::float::Float;
    use crate::flow::{Density, Flow};
    use crate::layers::Layer;
    use crate::parameters::Parameters;
    use crate::trainable::Trainable;
    use crate::workspace::Workspace;

    /// `x = μ + e^s ⊙ z`, plus an optional matrix parameter `coupling_0.net.0.weight` that
    /// does not affect the density (to exercise names and 2-D shapes in `io`).
    #[derive(Debug)]
    pub(crate) struct Gaussian<F> {
        pub mu: Vec<F>,
        pub log_sigma: Vec<F>,
        pub extra: Vec<F>,
        pub extra_shape: [usize; 2],
        /// The backward call (counted from 1) whose loss and gradient are NaN.
        pub nan_on_call: Option<usize>,
        pub calls: AtomicUsize,
        base: StandardNormal,
    }

    impl<F: Float> Gaussian<F> {
        pub fn new(mu: &[f64], log_sigma: &[f64]) -> Self {
            assert_eq!(mu.len(), log_sigma.len());
            Self {
                mu: mu.iter().map(|&v| F::of(v)).collect(),
                log_sigma: log_sigma.iter().map(|&v| F::of(v)).collect(),
                extra: Vec::new(),
                extra_shape: [0, 0],
                nan_on_call: None,
                calls: AtomicUsize::new(0),
                base: StandardNormal,
            }
        }

        pub fn with_extra(mut self, rows: usize, cols: usize) -> Self {
            self.extra = (0..rows * cols)
                .map(|i| F::of(0.25 * i as f64 - 1.0))
                .collect();
            self.extra_shape = [rows, cols];
            self
        }

        pub fn params(&self) -> Vec<F> {
            let mut out = vec![F::zero(); self.param_len()];
            self.params_to_slice(&mut out);
            out
        }
    }

    impl<F: Float> Flow<F> for Gaussian<F> {
        type Base = StandardNormal;

        fn dim(&self) -> usize {
            self.mu.len()
        }

        fn base(&self) -> &StandardNormal {
            &self.base
        }

        fn layers(&self) -> Vec<&dyn Layer<F>> {
            Vec::new()
        }

        fn forward_block(
            &self,
            mut x: ArrayViewMut2<'_, F>,
            mut log_det: ArrayViewMut1<'_, F>,
            _ws: &mut Workspace<F>,
        ) {
            let sum_s: F = self.log_sigma.iter().copied().sum();
            for (mut row, ld) in x.axis_iter_mut(Axis(0)).zip(log_det.iter_mut()) {
                for ((v, &m), &s) in row.iter_mut().zip(&self.mu).zip(&self.log_sigma) {
                    *v = m + s.exp() * *v;
                }
                *ld += sum_s;
            }
        }
    }

    impl<F: Float> Density<F> for Gaussian<F> {
        fn inverse_block(
            &self,
            mut y: ArrayViewMut2<'_, F>,
            mut log_det: ArrayViewMut1<'_, F>,
            _ws: &mut Workspace<F>,
        ) {
            let sum_s: F = self.log_sigma.iter().copied().sum();
            for (mut row, ld) in y.axis_iter_mut(Axis(0)).zip(log_det.iter_mut()) {
                for ((v, &m), &s) in row.iter_mut().zip(&self.mu).zip(&self.log_sigma) {
                    *v = (*v - m) * (-s).exp();
                }
                *ld -= sum_s;
            }
        }
    }

    impl<F: Float> Parameters<F> for Gaussian<F> {
        fn param_len(&self) -> usize {
            2 * self.mu.len() + self.extra.len()
        }

        fn visit_params(&self, visit: &mut dyn FnMut(&str, &str, &[usize], &[F])) {
            let d = [self.mu.len()];
            visit("affine", "shift", &d, &self.mu);
            visit("affine", "log_scale", &d, &self.log_sigma);
            if !self.extra.is_empty() {
                visit("coupling_0", "net.0.weight", &self.extra_shape, &self.extra);
            }
        }

        fn visit_params_mut(&mut self, visit: &mut dyn FnMut(&str, &str, &[usize], &mut [F])) {
            let d = [self.mu.len()];
            visit("affine", "shift", &d, &mut self.mu);
            visit("affine", "log_scale", &d, &mut self.log_sigma);
            if !self.extra.is_empty() {
                visit(
                    "coupling_0",
                    "net.0.weight",
                    &self.extra_shape,
                    &mut self.extra,
                );
            }
        }

        fn layers_mut(&mut self) -> Vec<&mut dyn Layer<F>> {
            Vec::new()
        }
    }

    /// `x = μ + e^s ⊙ z`, forward log-det `Σ s`.
    impl<F: Float> crate::variational::Variational<F> for Gaussian<F> {
        fn sample_backward_block(
            &self,
            z: ArrayView2<'_, F>,
            mut log_det: ArrayViewMut1<'_, F>,
            weight: ArrayView1<'_, F>,
            output_grad: &mut crate::variational::OutputGrad<'_, F>,
            mut grad: ArrayViewMut2<'_, F>,
            param_grad: &mut [F],
            _tape: &mut Vec<F>,
            ws: &mut Workspace<F>,
        ) {
            let d = self.mu.len();
            let mut x = z.to_owned();
            self.forward_block(x.view_mut(), log_det.view_mut(), ws);
            output_grad(x.view(), grad.view_mut());
            for (i, mut g) in grad.axis_iter_mut(Axis(0)).enumerate() {
                for j in 0..d {
                    let sigma = self.log_sigma[j].exp();
                    param_grad[j] += g[j];
                    param_grad[d + j] += g[j] * sigma * z[[i, j]] + weight[i];
                    g[j] *= sigma;
                }
            }
        }
    }

    impl<F: Float> Trainable<F> for Gaussian<F> {
        fn log_prob_backward_block(
            &self,
            x: ArrayView2<'_, F>,
            mut log_prob: ArrayViewMut1<'_, F>,
            weight: ArrayView1<'_, F>,
            mut grad_x: ArrayViewMut2<'_, F>,
            param_grad: &mut [F],
            _tape: &mut Vec<F>,
            _ws: &mut Workspace<F>,
        ) {
            let d = self.mu.len();
            let half_log_two_pi = F::of(0.5 * (2.0 * std::f64::consts::PI).ln());
            for (i, row) in x.axis_iter(Axis(0)).enumerate() {
                let w = weight[i];
                let mut lp = F::zero();
                for j in 0..d {
                    let inv_sigma = (-self.log_sigma[j]).exp();
                    let z = (row[j] - self.mu[j]) * inv_sigma;
                    lp += -F::of(0.5) * z * z - half_log_two_pi - self.log_sigma[j];
                    grad_x[[i, j]] = -w * z * inv_sigma;
                    param_grad[j] += w * z * inv_sigma;
                    param_grad[d + j] += w * (z * z - F::one());
                }
                log_prob[i] = lp;
            }
            let call = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
            if self.nan_on_call == Some(call) {
                param_grad[0] = F::nan();
                log_prob.fill(F::nan());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mock::Gaussian;
    use super::*;
    use ndarray::Array2;

    fn quiet() -> FitOptions {
        FitOptions {
            progress: false,
            ..FitOptions::default()
        }
    }

    /// Rows drawn from N(μ, diag σ²).
    fn gaussian_data(n: usize, mu: &[f64], sigma: &[f64], seed: u64) -> Array2<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        Array2::from_shape_fn((n, mu.len()), |(_, j)| {
            mu[j] + sigma[j] * f64::standard_normal(&mut rng)
        })
    }

    fn mean_and_std(data: &Array2<f64>) -> (Vec<f64>, Vec<f64>) {
        let n = data.nrows() as f64;
        let mean: Vec<f64> = data.columns().into_iter().map(|c| c.sum() / n).collect();
        let std = data
            .columns()
            .into_iter()
            .zip(&mean)
            .map(|(c, m)| (c.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n).sqrt())
            .collect();
        (mean, std)
    }

    fn bits(v: &[f64]) -> Vec<u64> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Sets the gradient of ½‖θ − c‖² at the model's current parameters.
    fn quadratic_grad(model: &Gaussian<f64>, target: &[f64], grads: &mut [f64]) {
        for ((g, p), c) in grads.iter_mut().zip(model.params()).zip(target) {
            *g = p - c;
        }
    }

    #[test]
    fn adam_first_steps_match_the_formula() {
        let mut model = Gaussian::<f64>::new(&[1.0, -2.0], &[0.5, 0.0]);
        let mut adam = Adam::new(4);
        let (lr, b1, b2, eps) = (0.1, 0.9, 0.999, 1e-8);
        let g1 = [0.5, -3.0, 1e-3, 0.0];
        let theta0 = model.params();
        adam.step(&mut model, &g1, lr);
        // After one step m̂ = g and v̂ = g²: the update is lr·g/(|g| + ε).
        for i in 0..4 {
            let expected = theta0[i] - lr * g1[i] / (g1[i].abs() + eps);
            assert!((model.params()[i] - expected).abs() < 1e-15, "param {i}");
        }
        let g2 = [-1.0, 2.0, 1e-3, 4.0];
        let theta1 = model.params();
        adam.step(&mut model, &g2, lr);
        for i in 0..4 {
            let m = b1 * (1.0 - b1) * g1[i] + (1.0 - b1) * g2[i];
            let v = b2 * (1.0 - b2) * g1[i] * g1[i] + (1.0 - b2) * g2[i] * g2[i];
            let m_hat = m / (1.0 - b1 * b1);
            let v_hat = v / (1.0 - b2 * b2);
            let expected = theta1[i] - lr * m_hat / (v_hat.sqrt() + eps);
            assert!((model.params()[i] - expected).abs() < 1e-14, "param {i}");
        }
        assert_eq!(adam.step_count(), 2);
    }

    #[test]
    fn adamw_decays_the_weights_decoupled_from_the_gradient() {
        let mut model = Gaussian::<f64>::new(&[2.0], &[-1.0]);
        let mut adam = Adam::new(2).with_weight_decay(0.5);
        adam.step(&mut model, &[0.0, 0.0], 0.1);
        // A zero gradient moves nothing but the decay: θ·(1 − lr·wd).
        assert_eq!(model.params(), vec![2.0 * 0.95, -0.95]);
    }

    /// A parameter whose gradient turns zero has its moments decay to exactly zero, never
    /// into the subnormals (which are slow on x86); the others are untouched.
    #[test]
    fn decaying_moments_stop_at_zero() {
        let mut model = Gaussian::<f32>::new(&[1.0, -2.0], &[0.5, 0.0]);
        let mut adam = Adam::new(4);
        let mut sgd = Sgd::new(4, 0.9f32);
        adam.step(&mut model, &[1e-3, 1.0, 0.5, -2.0], 1e-3);
        sgd.step(&mut model, &[1e-3, 1.0, 0.5, -2.0], 1e-3);
        for _ in 0..3000 {
            adam.step(&mut model, &[0.0, 1.0, 0.0, 0.0], 1e-3);
            sgd.step(&mut model, &[0.0, 1.0, 0.0, 0.0], 1e-3);
        }
        for state in [&adam.m, &adam.v, &sgd.velocity] {
            assert!(
                state.iter().all(|x| *x == 0.0 || x.is_normal()),
                "{state:?}"
            );
        }
        assert_eq!((adam.m[0], adam.m[2], sgd.velocity[0]), (0.0, 0.0, 0.0));
        assert!(adam.m[1] > 0.9 && adam.v[1] > 0.9 && sgd.velocity[1] > 9.0);
    }

    #[test]
    fn adam_converges_on_a_quadratic() {
        let target = [3.0, -1.5, 0.25, 7.0];
        let mut model = Gaussian::<f64>::new(&[0.0, 0.0], &[0.0, 0.0]);
        let mut adam = Adam::new(4);
        let mut grads = [0.0; 4];
        for step in 0..3000 {
            quadratic_grad(&model, &target, &mut grads);
            let lr = Schedule::Cosine {
                warmup_steps: 0,
                final_fraction: 0.0,
            }
            .lr_at(0.1, step, 3000);
            adam.step(&mut model, &grads, lr);
        }
        for (p, c) in model.params().iter().zip(target) {
            assert!((p - c).abs() < 1e-3, "{p} vs {c}");
        }
        adam.reset();
        assert_eq!(adam.step_count(), 0);
    }

    #[test]
    fn sgd_momentum_first_steps_by_hand() {
        let mut model = Gaussian::<f64>::new(&[1.0], &[2.0]);
        let mut sgd = Sgd::new(2, 0.9);
        let (lr, g0, g1) = (0.1, [1.0, -2.0], [0.5, 0.5]);
        sgd.step(&mut model, &g0, lr);
        // u₁ = g₀; θ₁ = θ₀ − lr·g₀.
        assert_eq!(model.params(), vec![1.0 - 0.1, 2.0 + 0.2]);
        sgd.step(&mut model, &g1, lr);
        // u₂ = 0.9·g₀ + g₁; θ₂ = θ₁ − lr·u₂.
        let expected = [0.9 - lr * (0.9 * 1.0 + 0.5), 2.2 - lr * (0.9 * -2.0 + 0.5)];
        for (p, e) in model.params().iter().zip(expected) {
            assert!((p - e).abs() < 1e-15, "{p} vs {e}");
        }
        // Coupled L2 decay: with wd the gradient becomes g + wd·θ.
        let mut model = Gaussian::<f64>::new(&[1.0], &[0.0]);
        let mut sgd = Sgd::new(2, 0.0).with_weight_decay(0.5);
        sgd.step(&mut model, &[0.0, 0.0], 0.1);
        assert_eq!(model.params(), vec![1.0 - 0.1 * 0.5, 0.0]);
    }

    #[test]
    fn clip_grad_norm_scales_to_the_max_and_returns_the_old_norm() {
        let mut g = [3.0f64, 4.0];
        assert_eq!(clip_grad_norm(&mut g, 1.0), 5.0);
        assert!((g[0] - 0.6).abs() < 1e-15 && (g[1] - 0.8).abs() < 1e-15);
        let mut g = [3.0f64, 4.0];
        assert_eq!(clip_grad_norm(&mut g, 10.0), 5.0);
        assert_eq!(g, [3.0, 4.0]);
        // f32 gradients whose squares overflow f32 still get a finite norm.
        let mut g = [3e30f32, 4e30];
        let norm = clip_grad_norm(&mut g, 1.0);
        assert!((norm / 5e30 - 1.0).abs() < 1e-6);
        assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
        // A NaN gradient is left for the caller to skip.
        let mut g = [f64::NAN, 1.0];
        assert!(clip_grad_norm(&mut g, 1.0).is_nan());
        assert_eq!(g[1], 1.0);
    }

    #[test]
    fn cosine_schedule_values() {
        let s = Schedule::Cosine {
            warmup_steps: 10,
            final_fraction: 0.1,
        };
        let total = 111;
        assert!((s.factor(0, total) - 0.1).abs() < 1e-15);
        assert!((s.factor(4, total) - 0.5).abs() < 1e-15);
        assert_eq!(s.factor(9, total), 1.0);
        assert_eq!(s.factor(10, total), 1.0);
        assert!((s.factor(60, total) - 0.55).abs() < 1e-12);
        assert!((s.factor(110, total) - 0.1).abs() < 1e-12);
        assert!((s.factor(500, total) - 0.1).abs() < 1e-12);
        assert!((s.lr_at(2e-3, 60, total) - 1.1e-3).abs() < 1e-15);
        for k in 11..total {
            assert!(s.factor(k, total) <= s.factor(k - 1, total));
        }
        assert_eq!(Schedule::Constant.lr_at(0.3, 7, 10), 0.3);
        let no_warmup = Schedule::Cosine {
            warmup_steps: 0,
            final_fraction: 0.0,
        };
        assert_eq!(no_warmup.factor(0, 5), 1.0);
        assert!(no_warmup.factor(4, 5).abs() < 1e-15);
    }

    #[test]
    fn fit_recovers_the_mean_and_scale_of_gaussian_data() {
        let (mu, sigma) = ([1.0, -2.0], [0.5, 2.0]);
        let data = gaussian_data(4000, &mu, &sigma, 7);
        let mut model = Gaussian::<f64>::new(&[0.0, 0.0], &[0.0, 0.0]);
        let options = FitOptions {
            max_steps: Some(3000),
            max_epochs: None,
            learning_rate: 0.05,
            schedule: Schedule::Cosine {
                warmup_steps: 100,
                final_fraction: 0.01,
            },
            patience: None,
            ..quiet()
        };
        let report = fit(&mut model, data.view(), &options).unwrap();
        assert_eq!(report.steps, 3000);
        assert_eq!(report.train_loss.len(), 3000);
        assert_eq!(report.skipped_steps, 0);
        assert!(!report.stopped_early);
        let (mean, std) = mean_and_std(&data);
        for j in 0..2 {
            assert!(
                (model.mu[j] - mean[j]).abs() < 0.03,
                "μ{j} = {}",
                model.mu[j]
            );
            let s = model.log_sigma[j].exp();
            assert!((s / std[j] - 1.0).abs() < 0.03, "σ{j} = {s}");
        }
        // Evaluated at step 0 and once per epoch (3600 / 256 = 14 steps).
        assert_eq!(report.val_loss[0].0, 0);
        assert_eq!(report.val_loss[1].0, 14);
        let best = report.best_val_loss.unwrap();
        assert!(best < report.val_loss[0].1);
        assert!(report.seconds >= 0.0);
    }

    #[test]
    fn fit_in_f32_with_sgd_and_clipping() {
        let data = gaussian_data(2000, &[0.5], &[3.0], 3).mapv(|v| v as f32);
        let mut model = Gaussian::<f32>::new(&[0.0], &[0.0]);
        let options = FitOptions {
            max_epochs: Some(150),
            batch_size: 128,
            learning_rate: 0.05,
            optimizer: OptimizerKind::sgd(0.9),
            clip_norm: Some(1.0),
            patience: None,
            ..quiet()
        };
        let report = fit(&mut model, data.view(), &options).unwrap();
        assert_eq!(report.steps, 150 * (1800 / 128));
        assert!((model.mu[0] - 0.5).abs() < 0.3, "μ = {}", model.mu[0]);
        assert!((model.log_sigma[0].exp() / 3.0 - 1.0).abs() < 0.1);
    }

    #[test]
    fn fit_is_bit_for_bit_reproducible_from_the_seed() {
        let data = gaussian_data(1000, &[1.0, 2.0], &[1.0, 0.5], 11);
        let options = FitOptions {
            max_steps: Some(200),
            batch_size: 64,
            learning_rate: 0.02,
            eval_every: Some(10),
            seed: 42,
            ..quiet()
        };
        let run = |options: &FitOptions| {
            let mut model = Gaussian::<f64>::new(&[0.0, 0.0], &[0.0, 0.0]);
            let report = fit(&mut model, data.view(), options).unwrap();
            (
                bits(&model.params()),
                bits(&report.train_loss),
                report.val_loss,
            )
        };
        let a = run(&options);
        let b = run(&options);
        assert_eq!(a, b);
        let c = run(&FitOptions {
            seed: 43,
            ..options
        });
        assert_ne!(a.0, c.0);
    }

    #[test]
    fn fit_stops_at_its_time_limit_after_a_last_evaluation() {
        let data = gaussian_data(2000, &[1.0, -1.0], &[1.0, 2.0], 6);
        let mut model = Gaussian::<f64>::new(&[0.0, 0.0], &[0.0, 0.0]);
        let options = FitOptions {
            max_steps: Some(1000),
            eval_every: Some(100),
            max_seconds: Some(0.0),
            ..quiet()
        };
        let report = fit(&mut model, data.view(), &options).unwrap();
        assert!(report.out_of_time && !report.stopped_early);
        assert_eq!(report.steps, 1);
        assert_eq!(
            report.val_loss.iter().map(|&(s, _)| s).collect::<Vec<_>>(),
            [0, 1]
        );
        let unlimited = fit(
            &mut Gaussian::<f64>::new(&[0.0, 0.0], &[0.0, 0.0]),
            data.view(),
            &FitOptions {
                max_steps: Some(20),
                ..quiet()
            },
        )
        .unwrap();
        assert!(!unlimited.out_of_time);
        assert_eq!(unlimited.steps, 20);
    }

    #[test]
    fn fit_stops_early_and_restores_the_best_parameters() {
        let data = gaussian_data(2000, &[0.0, 0.0], &[1.0, 1.0], 5);
        let (mean, std) = mean_and_std(&data);
        let log_std: Vec<f64> = std.iter().map(|s| s.ln()).collect();
        // Starting at the maximum-likelihood estimate, steps of 0.5 can only make the
        // validation NLL worse.
        let mut model = Gaussian::<f64>::new(&mean, &log_std);
        let initial = model.params();
        let options = FitOptions {
            max_steps: Some(1000),
            learning_rate: 0.5,
            eval_every: Some(1),
            patience: Some(3),
            ..quiet()
        };
        let report = fit(&mut model, data.view(), &options).unwrap();
        assert!(report.stopped_early);
        assert_eq!(report.best_step, 0);
        assert_eq!(report.steps, 3);
        assert_eq!(report.val_loss.len(), 4);
        assert_eq!(bits(&model.params()), bits(&initial));
        assert_eq!(report.best_val_loss, Some(report.val_loss[0].1));
    }

    #[test]
    fn fit_returns_the_parameters_of_the_best_validation_loss() {
        let data = gaussian_data(1500, &[0.0, 1.0], &[1.0, 1.0], 9);
        let mut model = Gaussian::<f64>::new(&[4.0, -3.0], &[1.0, 1.0]);
        let options = FitOptions {
            max_steps: Some(400),
            batch_size: 32,
            learning_rate: 0.3,
            eval_every: Some(10),
            patience: None,
            seed: 1,
            ..quiet()
        };
        let report = fit(&mut model, data.view(), &options).unwrap();
        assert_eq!(report.steps, 400);
        let best = report.best_val_loss.unwrap();
        let min = report
            .val_loss
            .iter()
            .map(|&(_, v)| v)
            .fold(f64::INFINITY, f64::min);
        assert_eq!(best, min);
        assert!(report.val_loss.contains(&(report.best_step, best)));
        // Rebuild the validation set as `fit` drew it and score the returned parameters.
        let mut rng = StdRng::seed_from_u64(options.seed);
        let (val_rows, _) = split_rows(data.nrows(), options.validation_fraction, &mut rng);
        let val = gather_owned(data.view(), &val_rows);
        assert_eq!(validation_nll(&model, val.view()).unwrap(), best);
    }

    #[test]
    fn fit_skips_a_step_with_a_nan_gradient_without_touching_the_parameters() {
        let data = gaussian_data(500, &[1.0], &[2.0], 13);
        let options = FitOptions {
            max_steps: Some(3),
            batch_size: 50,
            learning_rate: 0.1,
            validation_fraction: 0.0,
            ..quiet()
        };
        let mut poisoned = Gaussian::<f64>::new(&[0.0], &[0.0]);
        poisoned.nan_on_call = Some(3);
        let report = fit(&mut poisoned, data.view(), &options).unwrap();
        assert_eq!(report.skipped_steps, 1);
        assert_eq!(report.steps, 3);
        assert!(report.train_loss[2].is_nan());
        assert!(report.train_loss[..2].iter().all(|l| l.is_finite()));
        assert!(poisoned.params().iter().all(|p| p.is_finite()));
        assert_eq!(report.best_val_loss, None);
        assert!(report.val_loss.is_empty());
        // The skipped third step leaves exactly the parameters of two clean steps.
        let mut clean = Gaussian::<f64>::new(&[0.0], &[0.0]);
        let two = FitOptions {
            max_steps: Some(2),
            ..options.clone()
        };
        fit(&mut clean, data.view(), &two).unwrap();
        // (The schedule is constant, so the learning rates of steps 1–2 agree.)
        assert_eq!(bits(&poisoned.params()), bits(&clean.params()));
        assert_ne!(bits(&clean.params()), bits(&[0.0, 0.0]));
    }

    #[test]
    fn fit_rejects_bad_data_and_options() {
        let data = gaussian_data(100, &[0.0, 0.0], &[1.0, 1.0], 1);
        let mut model = Gaussian::<f64>::new(&[0.0], &[0.0]);
        assert_eq!(
            fit(&mut model, data.view(), &quiet()),
            Err(FlowError::WrongDim {
                expected: 1,
                found: 2
            })
        );
        let mut model = Gaussian::<f64>::new(&[0.0, 0.0], &[0.0, 0.0]);
        let mut bad = data.clone();
        bad[[7, 1]] = f64::NAN;
        assert!(matches!(
            fit(&mut model, bad.view(), &quiet()),
            Err(FlowError::NonFinite { row: 7, col: 1, .. })
        ));
        for options in [
            FitOptions {
                batch_size: 0,
                ..quiet()
            },
            FitOptions {
                max_epochs: None,
                ..quiet()
            },
            FitOptions {
                validation_fraction: 1.0,
                ..quiet()
            },
            FitOptions {
                learning_rate: f64::NAN,
                ..quiet()
            },
            FitOptions {
                clip_norm: Some(0.0),
                ..quiet()
            },
            FitOptions {
                eval_every: Some(0),
                ..quiet()
            },
        ] {
            let err = fit(&mut model, data.view(), &options).unwrap_err();
            assert!(matches!(err, FlowError::InvalidOptions { .. }), "{err}");
        }
        let one_row = gaussian_data(1, &[0.0, 0.0], &[1.0, 1.0], 1);
        let err = fit(&mut model, one_row.view(), &quiet()).unwrap_err();
        assert!(err.to_string().contains("no training rows"), "{err}");
        // Nothing was changed by the failed calls.
        assert_eq!(model.params(), vec![0.0; 4]);
    }

    // ----- data-dependent initialisation (actnorm) -------------------------------------

    use crate::layers::{ActNorm, Affine};
    use crate::trainable::mock::Chain;

    fn actnorm_chain() -> Chain<f64> {
        Chain {
            dim: 2,
            layers: vec![Box::new(ActNorm::<f64>::new(2))],
        }
    }

    fn flat<M: Trainable<f64>>(model: &M) -> Vec<f64> {
        let mut out = vec![0.0; model.param_len()];
        model.params_to_slice(&mut out);
        out
    }

    #[test]
    fn fit_initialises_actnorm_on_its_first_minibatch() {
        let data = gaussian_data(1000, &[5.0, -3.0], &[3.0, 0.2], 21);
        // One minibatch of every training row, learning rate 0: the fit leaves exactly
        // the initialisation.
        let options = FitOptions {
            batch_size: 1000,
            max_steps: Some(1),
            learning_rate: 0.0,
            validation_fraction: 0.0,
            ..quiet()
        };
        let mut model = actnorm_chain();
        let report = fit(&mut model, data.view(), &options).unwrap();
        assert!(!model.needs_data_init());
        let mut expected = actnorm_chain();
        expected.initialize_from_data(data.view()).unwrap();
        for (a, b) in flat(&model).iter().zip(&flat(&expected)) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
        // The step's loss is that of the initialised model: standardised data.
        let nll = expected.nll_and_grad(data.view(), &mut [0.0; 4]).unwrap();
        assert!((report.train_loss[0] - nll).abs() < 1e-9);

        // With validation: the step-0 evaluation already sees the initialised model, and
        // the kept best parameters are initialised ones.
        let options = FitOptions {
            batch_size: 100,
            max_steps: Some(2),
            validation_fraction: 0.2,
            ..options
        };
        let mut model = actnorm_chain();
        let identity_nll = -model.log_prob(data.view()).unwrap().mean().unwrap();
        let report = fit(&mut model, data.view(), &options).unwrap();
        assert!(!model.needs_data_init());
        let (v0, v2) = (report.val_loss[0].1, report.val_loss[1].1);
        assert_eq!(v0, v2, "learning rate 0");
        assert!(v0 < 3.0 && identity_nll > 10.0, "{v0} vs {identity_nll}");
    }

    #[test]
    fn fit_draws_the_same_minibatches_after_initialising() {
        // An actnorm fitted from scratch follows, bit for bit, an affine layer (the same
        // kernels) started at the actnorm's initialisation: the init is the first step's
        // batch and the later batches are unchanged.
        let data = gaussian_data(600, &[1.0, -4.0], &[2.0, 0.5], 22);
        let options = FitOptions {
            batch_size: 64,
            max_steps: Some(30),
            learning_rate: 0.01,
            validation_fraction: 0.0,
            seed: 3,
            ..quiet()
        };
        let mut probe = actnorm_chain();
        fit(
            &mut probe,
            data.view(),
            &FitOptions {
                max_steps: Some(1),
                learning_rate: 0.0,
                ..options.clone()
            },
        )
        .unwrap();
        let start = flat(&probe);
        assert_ne!(start, vec![0.0; 4]);
        let mut affine = Chain::<f64> {
            dim: 2,
            layers: vec![Box::new(Affine::<f64>::identity(2))],
        };
        affine.params_from_slice(&start);
        let mut actnorm = actnorm_chain();
        let a = fit(&mut actnorm, data.view(), &options).unwrap();
        let b = fit(&mut affine, data.view(), &options).unwrap();
        assert_eq!(a.train_loss, b.train_loss);
        assert_eq!(flat(&actnorm), flat(&affine));
    }

    #[test]
    fn fit_after_load_keeps_the_loaded_parameters() {
        let data = gaussian_data(300, &[2.0, 2.0], &[1.0, 1.0], 23);
        let mut saved = actnorm_chain();
        saved.params_from_slice(&[0.5, -0.5, 0.3, 0.1]);
        let dir = std::env::temp_dir().join(format!("flowgen-fit-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("actnorm.safetensors");
        crate::io::save(&saved, &path, "actnorm").unwrap();
        let mut model = actnorm_chain();
        crate::io::load(&mut model, &path, "actnorm").unwrap();
        let options = FitOptions {
            max_steps: Some(1),
            learning_rate: 0.0,
            validation_fraction: 0.0,
            ..quiet()
        };
        fit(&mut model, data.view(), &options).unwrap();
        assert_eq!(flat(&model), [0.5, -0.5, 0.3, 0.1]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
