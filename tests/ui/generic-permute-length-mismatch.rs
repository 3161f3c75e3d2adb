flowgen::flow! {
    pub struct Shuffled<const D: usize> { dim = D; affine; permute([2, 0, 1]) }
}

fn main() {
    let _ = Shuffled::<2>::default();
}
