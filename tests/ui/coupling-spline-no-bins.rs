use flowgen::prelude::*;

fn main() {
    let _ = flow![dim = 2; coupling(mask = even, transform = spline(bins = 0, bound = 3.0))];
}
