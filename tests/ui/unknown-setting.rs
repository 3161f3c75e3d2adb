use flowgen::prelude::*;

fn main() {
    let _ = flow![dim = 2; floot = f64; affine];
}
