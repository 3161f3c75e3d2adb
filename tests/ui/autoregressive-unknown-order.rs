use flowgen::prelude::*;

fn main() {
    let _ = flow![dim = 3; autoregressive(order = random)];
}
