use flowgen::prelude::*;

fn main() {
    let _ = flow![dim = 3; permute([0, 0, 1])];
}
