//! The `Float` trait: what the runtime and the generated code need of `f32` and `f64`.

use std::cell::RefCell;
use std::fmt::{Debug, Display};

use ndarray::{LinalgScalar, ScalarOperand};
use rand::Rng;
use rand_distr::{Distribution, Open01, StandardNormal};

use crate::nets::MatrixKernels;
use crate::workspace::FlowScratch;

/// A floating-point element type of a flow: implemented for `f32` and `f64`.
pub trait Float:
    num_traits::Float
    + num_traits::FloatConst
    + LinalgScalar
    + ScalarOperand
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::MulAssign
    + std::iter::Sum
    + Debug
    + Display
    + Default
    + Send
    + Sync
    + MatrixKernels
    + 'static
{
    /// `"f32"` or `"f64"`.
    const NAME: &'static str;

    /// Converts an `f64` constant (rounding for `f32`).
    fn of(x: f64) -> Self;

    /// Widens to `f64`.
    fn to_f64_lossless(self) -> f64;

    /// A draw from the standard normal distribution.
    fn standard_normal<R: Rng + ?Sized>(rng: &mut R) -> Self;

    /// A draw from the uniform distribution on the open interval (0, 1).
    fn open_unit<R: Rng + ?Sized>(rng: &mut R) -> Self;

    /// Runs `f` with this thread's reusable workspace for this float type, so that the
    /// batch methods allocate nothing per call once the workspace has grown.
    fn with_scratch<T>(f: impl FnOnce(&mut FlowScratch<Self>) -> T) -> T;
}

macro_rules! impl_float {
    ($t:ty, $name:literal, $tls:ident) => {
        thread_local! {
            static $tls: RefCell<FlowScratch<$t>> = RefCell::new(FlowScratch::default());
        }

        impl Float for $t {
            const NAME: &'static str = $name;

            #[inline(always)]
            fn of(x: f64) -> Self {
                x as $t
            }

            #[inline(always)]
            fn to_f64_lossless(self) -> f64 {
                self as f64
            }

            #[inline]
            fn standard_normal<R: Rng + ?Sized>(rng: &mut R) -> Self {
                StandardNormal.sample(rng)
            }

            #[inline]
            fn open_unit<R: Rng + ?Sized>(rng: &mut R) -> Self {
                Open01.sample(rng)
            }

            fn with_scratch<T>(f: impl FnOnce(&mut FlowScratch<Self>) -> T) -> T {
                $tls.with(|cell| match cell.try_borrow_mut() {
                    Ok(mut ws) => f(&mut ws),
                    // Re-entered from inside `f` (a flow used within a flow): a fresh one.
                    Err(_) => f(&mut FlowScratch::default()),
                })
            }
        }
    };
}

impl_float!(f32, "f32", WORKSPACE_F32);
impl_float!(f64, "f64", WORKSPACE_F64);
