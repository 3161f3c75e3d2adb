use flowgen::prelude::*;

fn main() {
    let _ = flow![dim = 2; shift(1.0, 2.0)];
}
