flowgen::flow! {
    pub struct Chain<const D: usize> { dim = D; affine; tanh }
}

fn main() {
    let _ = Chain::<0>::default();
}
