use flowgen::prelude::*;

fn main() {
    let _ = flow![dim = 3; inverse_autoregressive(order = reverse, seed = 2)];
}
