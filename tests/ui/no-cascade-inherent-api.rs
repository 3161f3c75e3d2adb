use flowgen::prelude::*;

flowgen::flow! {
    pub struct Bad { dim = 2; scale(0.0); sigmoid }
}

fn main() {
    let model = Bad::default();
    let mut rng = flowgen::rand::rngs::StdRng::seed_from_u64(0);
    assert_eq!(Bad::DIM, 2);
    let _ = Bad::SUPPORT;
    let x = model.sample_point(&mut rng);
    let _ = model.log_prob_point(x);
    let _ = model.forward_point([0.0, 0.0]);
    let _ = model.inverse_point([0.5, 0.5]);
}
