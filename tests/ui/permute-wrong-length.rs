use flowgen::prelude::*;

fn main() {
    let _ = flow![dim = 2; permute([2, 0, 1])];
}
