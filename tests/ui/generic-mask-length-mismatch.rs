flowgen::flow! {
    pub struct Masked<const D: usize> { dim = D; coupling(mask = [1, 0, 1]) }
}

fn main() {
    let _ = Masked::<4>::default();
}
