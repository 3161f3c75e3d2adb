use flowgen::prelude::*;

fn main() {
    let _ = flow![dim = 8; autoregressive(hidden = [64, 4])];
}
