use flowgen::prelude::*;

fn main() {
    let _ = flow![dim = 2; repeat { coupling(mask = even); permute(reverse) }];
}
