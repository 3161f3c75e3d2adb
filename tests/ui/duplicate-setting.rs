use flowgen::prelude::*;

fn main() {
    let _ = flow![dim = 2; dim = 3; affine];
}
