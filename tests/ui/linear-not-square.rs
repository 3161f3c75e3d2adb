use flowgen::prelude::*;

fn main() {
    let _ = flow![dim = 2; linear(3)];
}
