use flowgen::prelude::*;

flowgen::flow! {
    pub struct Chain<const D: usize> { dim = D; affine; tanh }
}

fn main() {
    let model: Chain<3> = Chain::default();
    assert_eq!(model.dim(), 3);
    assert_eq!(Chain::<3>::DIM, 3);
    let mut rng = flowgen::rand::rngs::StdRng::seed_from_u64(0);
    let x = model.sample(8, &mut rng);
    assert_eq!(x.ncols(), 3);
    let _ = model.log_prob(x.view()).unwrap();
}
