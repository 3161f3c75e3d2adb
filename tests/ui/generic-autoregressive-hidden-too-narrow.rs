flowgen::flow! {
    pub struct Made<const D: usize> { dim = D; autoregressive(hidden = [8, 4]) }
}

fn main() {
    let _ = Made::<8>::default();
}
