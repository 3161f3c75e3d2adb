use flowgen::prelude::*;

fn main() {
    let _ = flow![dim = 2; batch_norm(momentum = 1.5); coupling(mask = even)];
}
