use flowgen::prelude::*;

fn main() {
    let _ = flow![dim = 0; affine];
}
