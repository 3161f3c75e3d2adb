use flowgen::prelude::*;

fn main() {
    let _ = flow![dim = 2; sigmoid; coupling(mask = even); logit];
}
