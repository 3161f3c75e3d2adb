//! # flowgen
//!
//! Normalizing flows declared in a macro DSL, checked by the compiler, compiled into fused
//! code.
//!
//! ```
//! use flowgen::prelude::*;
//!
//! let model = flow![dim = 2; affine; coupling(mask = even); coupling(mask = odd); sigmoid];
//! let mut rng = flowgen::rand::rngs::StdRng::seed_from_u64(1);
//! let x = model.sample(1000, &mut rng);               // points in (0, 1)²
//! let log_p = model.log_prob(x.view()).unwrap();      // one log-density per row
//! assert!(log_p.iter().all(|lp| lp.is_finite()));
//! ```
//!
//! Layers are listed from the base to the data: `forward` samples, `inverse` scores.
//! The README holds the DSL reference and the compile-time rules.

pub use flow_macros::flow;
pub use flow_runtime::{
    BaseDistribution, Density, DiagonalNormal, Elementwise, Float, Flow, FlowError, Layer,
    Logistic, Parameters, StandardNormal, StandardUniform, StudentT, Support, Trainable,
    Variational, Workspace, base, io, layers, made, nets, reference, testing, train, trainable,
    variational,
};
pub use ndarray;
pub use rand;

/// What a user of flowgen needs in scope.
pub mod prelude {
    pub use crate::{Density, Flow, FlowError, Parameters, Support, Trainable, Variational, flow};
    pub use flow_runtime::train::{FitOptions, FitReport, OptimizerKind, Schedule, fit};
    pub use flow_runtime::variational::{ReverseKlOptions, ReverseKlReport, fit_reverse_kl};
    pub use ndarray::{Array1, Array2, ArrayView2};
    pub use rand::SeedableRng;
}

/// The paths generated code uses. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use flow_runtime::*;
    pub use ndarray;
    pub use rand;
}
