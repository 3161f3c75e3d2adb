use flowgen::prelude::*;

fn main() {
    let _ = flow![dim = 3; coupling(mask = [1, 2, 0])];
}
