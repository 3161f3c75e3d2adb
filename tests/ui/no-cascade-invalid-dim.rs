use flowgen::prelude::*;

flowgen::flow! {
    pub struct Bad { dim = 0; affine; sigmoid }
}

fn main() {
    let mut model = Bad::default();
    let mut rng = flowgen::rand::rngs::StdRng::seed_from_u64(0);
    let (x, _) = model.forward_point([0.0, 0.0]);
    let _ = model.inverse_point(x);
    let _ = model.log_prob_point([0.5, 0.5]);
    let [_, _]: [f32; 2] = model.sample_point(&mut rng);
    let _: f32 = model.log_prob(Array2::zeros((4, 2)).view()).unwrap()[0];
    let _ = (Bad::DIM, Bad::SUPPORT[1], Bad::architecture());
    model.save("bad.safetensors").unwrap();
    model.load("bad.safetensors").unwrap();
    let _ = Bad::new(&mut rng);
}
