flowgen::flow! {
    pub struct Square<const D: usize> { dim = D; linear(3) }
}

fn main() {
    let _ = Square::<4>::default();
}
