use flowgen::prelude::*;

fn main() {
    let _ = flow![dim = 2; scale(0.0); affine; logit];
}
