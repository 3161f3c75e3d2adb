flowgen::flow! {
    pub struct Chain { dim = D; scale(0.0); affine; logit }
}

fn main() {}
