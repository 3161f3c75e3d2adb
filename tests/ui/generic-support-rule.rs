flowgen::flow! {
    pub struct Squashed<const D: usize> { dim = D; sigmoid; coupling(mask = even); logit }
}

fn main() {}
