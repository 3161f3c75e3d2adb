use flowgen::prelude::*;

flowgen::flow! {
    pub struct Broken { dim = 2; affine sigmoid }
}

fn main() {
    let model = Broken::default();
    let _ = model.dim();
}
