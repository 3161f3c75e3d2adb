use flowgen::prelude::*;

fn main() {
    let _ = flow![dim = 2; scale(1e999)];
}
