use flowgen::prelude::*;

fn main() {
    let _ = flow![dim = 2; repeat(2, 3) { coupling(mask = even); permute(reverse) }];
}
