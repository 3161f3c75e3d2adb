use flowgen::prelude::*;

flowgen::flow! {
    /// Two moons.
    pub struct Moons { dim = 2; base = normal; repeat(2) { coupling(mask = even, hidden = [16, 16]); permute(reverse) }; affine; tanh }
}

flowgen::flow! {
    pub struct Chain<const D: usize> { dim = D; affine; tanh }
}

#[test]
fn smoke() {
    let m = Moons::default();
    let c: Chain<3> = Chain::default();
    assert_eq!(Moons::DIM, 2);
    assert_eq!(c.dim(), 3);
    let e = flow![dim = 2; float = f64; affine; sigmoid];
    assert_eq!(e.dim(), 2);
    let _ = m;
}
