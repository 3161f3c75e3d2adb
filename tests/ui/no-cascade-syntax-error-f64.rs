use flowgen::prelude::*;

flowgen::flow! {
    pub struct Broken { dim = 3; float = f64; base = uniform; affine sigmoid }
}

fn main() {
    let model = Broken::default();
    let (x, log_det): ([f64; 3], f64) = model.forward_point([0.5, 0.5, 0.5]);
    let _ = (x, log_det, Broken::SUPPORT[2], Broken::architecture());
    let log_p: Array1<f64> = model.log_prob(Array2::<f64>::zeros((4, 3)).view()).unwrap();
    let _ = log_p;
    let _: &flowgen::StandardUniform = model.base();
}
