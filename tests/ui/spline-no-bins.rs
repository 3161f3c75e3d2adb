use flowgen::prelude::*;

fn main() {
    let _ = flow![dim = 2; spline(bins = 0)];
}
