flowgen::flow! {
    pub struct Extra { dim = 2; affine } sigmoid
}

fn main() {
    let model = Extra::default();
    let _ = model.forward_point([0.0, 0.0]);
}
