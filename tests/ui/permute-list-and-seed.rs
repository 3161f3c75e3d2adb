use flowgen::prelude::*;

fn main() {
    let _ = flow![dim = 2; permute([1, 0], seed = 3)];
}
