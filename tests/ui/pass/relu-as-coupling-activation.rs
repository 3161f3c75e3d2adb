use flowgen::prelude::*;

fn main() {
    let model = flow![dim = 2; coupling(mask = even, activation = relu); coupling(mask = odd, activation = relu)];
    let mut rng = flowgen::rand::rngs::StdRng::seed_from_u64(0);
    let (x, lp) = model.sample_and_log_prob(8, &mut rng);
    assert_eq!(x.ncols(), model.dim());
    let lp2 = model.log_prob(x.view()).unwrap();
    assert_eq!(lp.len(), lp2.len());
}
