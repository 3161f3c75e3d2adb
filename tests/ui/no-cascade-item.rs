use flowgen::prelude::*;

flowgen::flow! {
    pub struct Bad { dim = 2; afine; coupling(mask = even) }
}

fn main() {
    let model = Bad::default();
    let mut rng = flowgen::rand::rngs::StdRng::seed_from_u64(0);
    let x = model.sample(10, &mut rng);
    let log_p = model.log_prob(x.view()).unwrap();
    let _: f32 = log_p[0];
    let _ = Bad::new(&mut rng);
}
