use flowgen::prelude::*;

fn main() {
    let _ = flow![dimm = 2; affine];
}
