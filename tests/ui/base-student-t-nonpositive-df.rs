use flowgen::prelude::*;

fn main() {
    let _ = flow![dim = 2; base = student_t(df = -1.0); affine];
}
