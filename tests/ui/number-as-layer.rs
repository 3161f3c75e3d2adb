use flowgen::prelude::*;

fn main() {
    let _ = flow![dim = 2; affine; 3.0];
}
