use flowgen::prelude::*;

fn main() {
    let _ = flow![dim = 2; coupling(mask = even); batch_norm(eps = 0.0)];
}
