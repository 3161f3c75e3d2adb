flowgen::flow! {
    pub struct Typed<T> { dim = 2; affine }
}

fn main() {}
