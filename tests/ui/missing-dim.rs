use flowgen::prelude::*;

fn main() {
    let _ = flow![affine; sigmoid];
}
