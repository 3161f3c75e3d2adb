//! MAF and IAF layers in every order, with a generic `dim` whose MADE rule holds.
use flowgen::prelude::*;

flowgen::flow! {
    pub struct Made<const D: usize> { dim = D; autoregressive(hidden = [8]); inverse_autoregressive(order = reverse, hidden = []) }
}

fn main() {
    let model = flow![dim = 3; autoregressive(hidden = [4, 2]); inverse_autoregressive(seed = 1, transform = additive)];
    let (z, _) = model.inverse_point([0.5, -1.0, 2.0]);
    let (x, _) = model.forward_point(z);
    assert!((x[0] - 0.5).abs() < 1e-5 && (x[2] - 2.0).abs() < 1e-5);
    let generic = Made::<9>::default();
    assert!(generic.log_prob_point([0.0; 9]).unwrap().is_finite());
}
