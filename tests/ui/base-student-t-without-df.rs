use flowgen::prelude::*;

fn main() {
    let _ = flow![dim = 2; base = student_t; affine];
}
