use flowgen::prelude::*;

fn main() {
    let _ = flow![dim = 2; actnorm(eps = 0.1)];
}
