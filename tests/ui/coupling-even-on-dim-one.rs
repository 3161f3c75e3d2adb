use flowgen::prelude::*;

fn main() {
    let _ = flow![dim = 1; coupling(mask = even)];
}
