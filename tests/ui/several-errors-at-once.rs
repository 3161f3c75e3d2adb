use flowgen::prelude::*;

fn main() {
    let _ = flow![dim = 2; afine; relu; scale(0.0)];
}
