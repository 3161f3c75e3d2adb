//! The plain per-layer (unfused) evaluation of a chain: each layer over the whole batch,
//! one after another. It is the test oracle for the fused code and usable on its own.

use ndarray::{Array1, Array2, ArrayView2};

use crate::float::Float;
use crate::layers::Layer;
use crate::workspace::Workspace;

/// Applies `layers` (listed base → data) forward; returns the points and log-dets.
pub fn forward_and_log_det<F: Float>(
    layers: &[&dyn Layer<F>],
    z: ArrayView2<'_, F>,
) -> (Array2<F>, Array1<F>) {
    let mut x = z.to_owned();
    let mut log_det = Array1::zeros(x.nrows());
    let mut ws = Workspace::default();
    for layer in layers {
        layer.forward_block(x.view_mut(), log_det.view_mut(), &mut ws);
    }
    (x, log_det)
}

/// Applies `layers` (listed base → data) inverse, last layer first.
pub fn inverse_and_log_det<F: Float>(
    layers: &[&dyn Layer<F>],
    x: ArrayView2<'_, F>,
) -> (Array2<F>, Array1<F>) {
    let mut z = x.to_owned();
    let mut log_det = Array1::zeros(z.nrows());
    let mut ws = Workspace::default();
    for layer in layers.iter().rev() {
        layer.inverse_block(z.view_mut(), log_det.view_mut(), &mut ws);
    }
    (z, log_det)
}
