//! Shared helpers of the integration tests: random generators, parameter perturbation,
//! and the catalogue of declared test flows (all in f64) that together cover every layer
//! kind, every coupling mask, transform and activation, and `repeat`.
//!
//! Every test binary compiles this module separately and uses only part of it.
// `unused_imports`: the `pub(crate) use` re-exports of the macros below.
#![allow(dead_code, unused_macros, unused_imports)]

pub mod chains;

use flowgen::layers::Affine;
use flowgen::layers::{
    ActNorm, Atanh, Autoregressive, Coupling, Exp, LeakyRelu, Log, Logit, LuLinear,
    OrthogonalLinear, Permute, Scale, Shift, Sigmoid, Softplus, Spline, Tanh,
};
use flowgen::ndarray::Array2;
use flowgen::rand::rngs::StdRng;
use flowgen::rand::{RngExt, SeedableRng};
use flowgen::{BaseDistribution, Density, Float, FlowError, Support};
use flowgen::{DiagonalNormal, Layer, Logistic, StandardNormal, StandardUniform, StudentT};

/// A deterministic generator.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// A standard normal draw.
pub fn normal(rng: &mut StdRng) -> f64 {
    f64::standard_normal(rng)
}

/// The amplitude of parameter perturbations (the brief asks for ~0.3–0.5).
pub const AMPLITUDE: f64 = 0.4;

/// `|a − b| ≤ tol·(1 + max(|a|, |b|))`.
pub fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
}

/// Sets every parameter of a layer to random values of size ~[`AMPLITUDE`].
///
/// The perturbation never changes what the macro's support tracking relies on:
/// learnable parameters get arbitrary noise, but a *constant* `shift(c)` only moves up
/// (a non-negative shift stays non-negative, so `exp; shift(1.5); log` stays valid) and a
/// constant `scale(c)` only shrinks in magnitude and keeps its sign (so `scale(0.5)` on
/// (0, 1) or (−1, 1) stays inside). Constants are still perturbed per coordinate, so the
/// per-coordinate indexing of the kernels is exercised.
pub trait Perturb {
    fn perturb(&mut self, rng: &mut StdRng);
}

impl<F: Float> Perturb for Affine<F> {
    fn perturb(&mut self, rng: &mut StdRng) {
        for v in self.shift.iter_mut().chain(self.log_scale.iter_mut()) {
            *v = F::of(AMPLITUDE * normal(rng));
        }
    }
}

impl<F: Float> Perturb for Shift<F> {
    fn perturb(&mut self, rng: &mut StdRng) {
        for v in &mut self.shift {
            let noise = AMPLITUDE * normal(rng);
            *v = if self.learnable {
                F::of(noise)
            } else {
                *v + F::of(noise.abs())
            };
        }
    }
}

impl<F: Float> Perturb for Scale<F> {
    fn perturb(&mut self, rng: &mut StdRng) {
        for v in &mut self.log_scale {
            let noise = AMPLITUDE * normal(rng);
            *v = if self.learnable {
                F::of(noise)
            } else {
                *v - F::of(noise.abs())
            };
        }
    }
}

impl<F: Float> Perturb for Coupling<F> {
    /// Every weight and bias of the conditioner, the (zero-initialised) last layer
    /// included. Weights are scaled by `min(1, √(2/fan_in))` so that wide default
    /// conditioners (`hidden = [64, 64]`) still output O(1) shifts and log-scales.
    fn perturb(&mut self, rng: &mut StdRng) {
        for layer in &mut self.net.layers {
            let fan_in = layer.weight.nrows() as f64;
            let w_amp = AMPLITUDE * (2.0 / fan_in).sqrt().min(1.0);
            layer.weight.mapv_inplace(|_| F::of(w_amp * normal(rng)));
            layer.bias.mapv_inplace(|_| F::of(AMPLITUDE * normal(rng)));
        }
    }
}

/// Every tensor the layer visits, at random: weights (2-D tensors named `…weight`) scaled
/// by `min(1, √(2/fan_in))` as for the couplings, everything else of size ~[`AMPLITUDE`].
/// (An autoregressive layer re-applies its masks after the visit.)
fn perturb_visited<F: Float>(layer: &mut dyn Layer<F>, rng: &mut StdRng) {
    layer.visit_params_mut(&mut |name, shape, values| {
        let amp = match shape {
            [fan_in, _] if name.ends_with("weight") => {
                AMPLITUDE * (2.0 / *fan_in as f64).sqrt().min(1.0)
            }
            _ => AMPLITUDE,
        };
        for v in values {
            *v = F::of(amp * normal(rng));
        }
    });
}

macro_rules! perturb_visited {
    ($($ty:ident),*) => {$(
        impl<F: Float> Perturb for $ty<F> {
            fn perturb(&mut self, rng: &mut StdRng) {
                perturb_visited(self, rng);
            }
        }
    )*};
}
perturb_visited!(Spline, LuLinear, OrthogonalLinear, Autoregressive, ActNorm);

impl<F: Float> Perturb for DiagonalNormal<F> {
    fn perturb(&mut self, rng: &mut StdRng) {
        for v in self.mean.iter_mut().chain(self.log_std.iter_mut()) {
            *v = F::of(AMPLITUDE * normal(rng));
        }
    }
}

macro_rules! no_parameters {
    ($($ty:ty),*) => {$(
        impl Perturb for $ty {
            fn perturb(&mut self, _rng: &mut StdRng) {}
        }
    )*};
}
no_parameters!(
    Sigmoid,
    Logit,
    Tanh,
    Atanh,
    Softplus,
    Exp,
    Log,
    Permute,
    StandardNormal,
    StandardUniform,
    StudentT,
    Logistic
);

impl<F: Float> Perturb for LeakyRelu<F> {
    /// The slope is a constant of the DSL (`leaky_relu(slope = 0.2)`): unchanged.
    fn perturb(&mut self, _rng: &mut StdRng) {}
}

/// Perturbs the listed fields of a model: `perturb_fields!(model, rng; affine_0, coupling_1)`.
macro_rules! perturb_fields {
    ($model:expr, $rng:expr; $($field:ident),* $(,)?) => {{
        $( $crate::common::Perturb::perturb(&mut $model.$field, $rng); )*
    }};
}
pub(crate) use perturb_fields;

/// What the generic checks need of a declared f64 test flow.
pub trait Case: Density<f64> + Sized {
    /// The flow's name.
    const NAME: &'static str;
    /// Every field of the struct, in order (checked against `layers()`).
    const FIELDS: &'static [&'static str];
    /// The flow as `new` builds it from `rng(seed)` (couplings are the identity).
    fn fresh(seed: u64) -> Self;
    /// The flow with every parameter perturbed (deterministic in `seed`).
    fn perturbed(seed: u64) -> Self;
    /// `forward_point` on a slice.
    fn fwd(&self, z: &[f64]) -> (Vec<f64>, f64);
    /// `inverse_point` on a slice.
    fn inv(&self, x: &[f64]) -> (Vec<f64>, f64);
    /// `log_prob_point` on a slice.
    fn lp(&self, x: &[f64]) -> Result<f64, FlowError>;
    /// The generated `SUPPORT` constant.
    fn support() -> Vec<Support>;
    /// One round of the array point API at `p` (no `Vec`s): `inverse_point`,
    /// `forward_point`, `log_prob_point`, `sample_point` and `rng.sample(&model)`.
    /// Returns a checksum so nothing is optimised away.
    fn point_round(&self, p: &[f64], rng: &mut StdRng) -> f64;
}

/// Declares an f64 test flow and implements [`Case`] for it. The field list must name
/// every field of the generated struct in order; a test checks it against `layers()`.
macro_rules! case {
    ($name:ident [$($field:ident),* $(,)?] { $($body:tt)* }) => {
        flowgen::flow! {
            pub struct $name { $($body)* }
        }

        impl $crate::common::Case for $name {
            const NAME: &'static str = stringify!($name);
            const FIELDS: &'static [&'static str] = &[$(stringify!($field)),*];
            fn fresh(seed: u64) -> Self {
                Self::new(&mut $crate::common::rng(seed))
            }
            fn perturbed(seed: u64) -> Self {
                let mut rng = $crate::common::rng(seed);
                let mut model = Self::new(&mut rng);
                $crate::common::perturb_fields!(model, &mut rng; $($field),*);
                $crate::common::Perturb::perturb(&mut model.base, &mut rng);
                model
            }
            fn fwd(&self, z: &[f64]) -> (Vec<f64>, f64) {
                let (x, ld) = self.forward_point(z.try_into().expect("point of length DIM"));
                (x.to_vec(), ld)
            }
            fn inv(&self, x: &[f64]) -> (Vec<f64>, f64) {
                let (z, ld) = self.inverse_point(x.try_into().expect("point of length DIM"));
                (z.to_vec(), ld)
            }
            fn lp(&self, x: &[f64]) -> Result<f64, flowgen::FlowError> {
                self.log_prob_point(x.try_into().expect("point of length DIM"))
            }
            fn support() -> Vec<flowgen::Support> {
                Self::SUPPORT.to_vec()
            }
            fn point_round(&self, p: &[f64], rng: &mut flowgen::rand::rngs::StdRng) -> f64 {
                use flowgen::rand::RngExt;
                let a: [f64; Self::DIM] = p.try_into().expect("point of length DIM");
                let (z, l1) = self.inverse_point(a);
                let (x, l2) = self.forward_point(z);
                let lp = self.log_prob_point(a).expect("finite point");
                let s = self.sample_point(rng);
                let d: [f64; Self::DIM] = rng.sample(self);
                l1 + l2 + lp + x[0] + s[0] + d[0]
            }
        }
    };
}
pub(crate) use case;

// ---------------------------------------------------------------------------------------
// The catalogue. Together: affine, shift, shift(1.5), scale, scale(-2.0), sigmoid, logit,
// tanh, atanh, softplus, exp, log, leaky_relu(slope = 0.2), permute(reverse),
// permute(seed = 7), permute([2, 0, 1]), couplings with masks even, odd, first_half,
// second_half and explicit, transforms affine, additive and spline, activations relu, tanh,
// elu and silu, hidden = [] / one / two / three layers / the default, `repeat`, spline,
// linear (LU, seeded LU, orthogonal), autoregressive and inverse_autoregressive (every
// order and transform), actnorm, and every base.
// ---------------------------------------------------------------------------------------

case!(ElementwiseReal [affine_0, shift_1, shift_2, scale_3, scale_4, leaky_relu_5] {
    dim = 3; float = f64;
    affine; shift; shift(1.5); scale; scale(-2.0); leaky_relu(slope = 0.2)
});

case!(Squash [affine_0, leaky_relu_1, sigmoid_2, logit_3, tanh_4, atanh_5, softplus_6, log_7, exp_8, log_9] {
    dim = 3; float = f64;
    affine; leaky_relu(slope = 0.2); sigmoid; logit; tanh; atanh; softplus; log; exp; log
});

case!(PositiveChain [affine_0, exp_1, shift_2, scale_3, log_4, softplus_5, scale_6] {
    dim = 2; float = f64;
    affine; exp; shift(1.5); scale; log; softplus; scale(0.5)
});

case!(BoundedChain [affine_0, tanh_1, scale_2, atanh_3, sigmoid_4, scale_5, logit_6, tanh_7] {
    dim = 2; float = f64;
    affine; tanh; scale(0.5); atanh; sigmoid; scale(0.8); logit; tanh
});

case!(Permutations [affine_0, permute_1, coupling_2, permute_3, coupling_4, permute_5, coupling_6] {
    dim = 3; float = f64;
    affine;
    permute(reverse);
    coupling(mask = first_half, hidden = [8]);
    permute(seed = 7);
    coupling(mask = [1, 0, 1], transform = additive, activation = tanh, hidden = [8, 8]);
    permute([2, 0, 1]);
    coupling(mask = second_half, activation = elu, hidden = [6, 5, 4])
});

case!(RealNvp [coupling_0, coupling_1, coupling_2, coupling_3, coupling_4, affine_5] {
    dim = 4; float = f64;
    repeat(2) {
        coupling(mask = even, activation = silu, hidden = [16, 16]);
        coupling(mask = odd, transform = additive, hidden = [16])
    };
    coupling(mask = [0, 1, 1, 0], hidden = []);
    affine
});

case!(DefaultSigmoid [coupling_0, permute_1, coupling_2, coupling_3, permute_4, coupling_5, sigmoid_6] {
    dim = 5; float = f64;
    repeat(2) { coupling(mask = even); permute(seed = 7); coupling(mask = odd, activation = tanh) };
    sigmoid
});

case!(UniformBase [logit_0, coupling_1, coupling_2, sigmoid_3] {
    dim = 2; float = f64; base = uniform;
    logit;
    coupling(mask = even, hidden = [8]);
    coupling(mask = odd, hidden = [8], activation = silu, transform = additive);
    sigmoid
});

case!(Splines [spline_0, coupling_1, coupling_2, actnorm_3] {
    dim = 3; float = f64;
    spline(bins = 5, bound = 3.0);
    coupling(mask = even, transform = spline(bins = 4, bound = 2.5), hidden = [8]);
    coupling(mask = [0, 1, 1], transform = spline, hidden = [6, 5], activation = tanh);
    actnorm
});

case!(Linears [linear_0, linear_1, affine_2, linear_3] {
    dim = 4; float = f64; base = student_t(df = 4.0);
    linear; linear(seed = 3); affine; linear(orthogonal)
});

case!(Autoregressives [autoregressive_0, inverse_autoregressive_1, autoregressive_2, inverse_autoregressive_3] {
    dim = 3; float = f64; base = normal(learnable);
    autoregressive(hidden = [8]);
    inverse_autoregressive(hidden = [6, 5], order = reverse, activation = tanh);
    autoregressive(transform = spline(bins = 3, bound = 2.0), seed = 4, hidden = [4]);
    inverse_autoregressive(transform = additive, hidden = [])
});

case!(LogisticBase [actnorm_0, spline_1, sigmoid_2] {
    dim = 2; float = f64; base = logistic;
    actnorm; spline(bins = 6, bound = 4.0); sigmoid
});

/// One test function per catalogue flow: `case_tests!(check)` expands to a module `check`
/// with one `#[test]` per flow, each calling `check::<Flow>()`.
macro_rules! case_tests {
    ($check:ident) => {
        mod $check {
            use $crate::common::*;
            #[test]
            fn elementwise_real() {
                super::$check::<ElementwiseReal>()
            }
            #[test]
            fn squash() {
                super::$check::<Squash>()
            }
            #[test]
            fn positive_chain() {
                super::$check::<PositiveChain>()
            }
            #[test]
            fn bounded_chain() {
                super::$check::<BoundedChain>()
            }
            #[test]
            fn permutations() {
                super::$check::<Permutations>()
            }
            #[test]
            fn real_nvp() {
                super::$check::<RealNvp>()
            }
            #[test]
            fn default_sigmoid() {
                super::$check::<DefaultSigmoid>()
            }
            #[test]
            fn uniform_base() {
                super::$check::<UniformBase>()
            }
            #[test]
            fn splines() {
                super::$check::<Splines>()
            }
            #[test]
            fn linears() {
                super::$check::<Linears>()
            }
            #[test]
            fn autoregressives() {
                super::$check::<Autoregressives>()
            }
            #[test]
            fn logistic_base() {
                super::$check::<LogisticBase>()
            }
        }
    };
}
pub(crate) use case_tests;

/// `n` draws from the flow's base distribution (standard normal: clipped to ±3.5 so the
/// numerical checks stay well conditioned; uniform: in (0, 1)), one per row.
pub fn base_points<M: Case>(model: &M, n: usize, rng: &mut StdRng) -> Array2<f64> {
    let d = model.dim();
    match model.base().support() {
        Support::UnitInterval => {
            Array2::from_shape_simple_fn((n, d), || rng.random_range(0.001..0.999))
        }
        _ => Array2::from_shape_simple_fn((n, d), || normal(rng).clamp(-3.5, 3.5)),
    }
}

/// Data points: images of fresh base points.
pub fn data_points<M: Case>(model: &M, n: usize, rng: &mut StdRng) -> Array2<f64> {
    let z = base_points(model, n, rng);
    model.forward(z.view()).expect("finite base points")
}

/// The largest `|a − b| / (1 + max(|a|, |b|))` over two arrays of the same shape.
pub fn max_rel_diff<'a>(
    a: impl IntoIterator<Item = &'a f64>,
    b: impl IntoIterator<Item = &'a f64>,
) -> f64 {
    a.into_iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (1.0 + x.abs().max(y.abs())))
        .fold(0.0, f64::max)
}

/// Row `r` of `a` as a vector.
pub fn row(a: &Array2<f64>, r: usize) -> Vec<f64> {
    a.row(r).to_vec()
}
