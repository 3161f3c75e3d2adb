flowgen::flow! {
    pub struct S<const D: usize> { dim = D; coupling(mask = even) }
}

fn main() {
    let _ = S::<1>::default();
}
