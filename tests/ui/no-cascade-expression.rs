use flowgen::prelude::*;

fn main() {
    let model = flow![dim = 2; relu; sigmoid];
    let mut rng = flowgen::rand::rngs::StdRng::seed_from_u64(0);
    let x = model.sample(10, &mut rng);
    let log_p = model.log_prob(x.view()).unwrap();
    let _: f32 = log_p[0];
    assert_eq!(model.dim(), 2);
}
