flowgen::flow! {
    pub struct Narrow<const D: u8> { dim = D; affine }
}

fn main() {}
