flowgen::flow! {
    pub struct Chain { dim = D; affine; tanh }
}

fn main() {}
