use flowgen::prelude::*;

fn main() {
    let _ = flow![dim = 2; spline(bound = 1e999)];
}
