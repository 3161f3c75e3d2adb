use flowgen::prelude::*;

flowgen::flow! {
    pub struct Generic<const D: usize> { dim = D; relu; tanh }
}

fn main() {
    let model = Generic::<3>::default();
    let x = Array2::<f32>::zeros((4, 3));
    let _ = model.log_prob(x.view()).unwrap();
    let _ = model.dim();
}
