use flowgen::prelude::*;

fn main() {
    let _ = flow![dim = 2; batch_norm(momentun = 0.1)];
}
