//! Flows with forward-only layers compile (generic `dim` too): they sample, score their own
//! draws and train by reverse KL; only the scoring of arbitrary points is refused, at the
//! call (see `planar-log-prob.rs`).
use flowgen::prelude::*;

flowgen::flow! {
    pub struct Ring<const D: usize> { dim = D; repeat(2) { planar }; radial }
}

fn main() {
    let model = Ring::<3>::default();
    let mut rng = flowgen::rand::rngs::StdRng::seed_from_u64(0);
    let (x, log_q) = model.sample_and_log_prob(16, &mut rng);
    assert_eq!(x.ncols(), 3);
    assert!(log_q.iter().all(|v| v.is_finite()));
    let mut model = flow![dim = 2; planar; affine];
    let target = |x: &[f32], g: &mut [f32]| {
        g.iter_mut().zip(x).for_each(|(g, x)| *g = -x);
        -0.5 * x.iter().map(|v| v * v).sum::<f32>()
    };
    let options = ReverseKlOptions { steps: 3, progress: false, ..Default::default() };
    let report = fit_reverse_kl(&mut model, &target, &options).unwrap();
    assert_eq!(report.loss.len(), 3);
}
