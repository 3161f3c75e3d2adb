use flowgen::prelude::*;

flowgen::flow! {
    pub struct Coupled<const D: usize> {
        dim = D;
        repeat(2) { coupling(mask = even, hidden = [8]); permute(reverse) };
        coupling(mask = [1, 1, 0, 0]);
        sigmoid
    }
}

fn main() {
    let model = Coupled::<4>::default();
    assert_eq!(model.dim(), 4);
    let mut rng = flowgen::rand::rngs::StdRng::seed_from_u64(0);
    let x = model.sample(8, &mut rng);
    assert_eq!(x.ncols(), 4);
    let _ = model.log_prob(x.view()).unwrap();
}
