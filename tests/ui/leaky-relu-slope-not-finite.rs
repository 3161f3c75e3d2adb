use flowgen::prelude::*;

fn main() {
    let _ = flow![dim = 2; leaky_relu(slope = 1e999)];
}
