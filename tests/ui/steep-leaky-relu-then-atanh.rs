use flowgen::prelude::*;

fn main() {
    // A slope above 1 stretches (−1, 1) to (−2, 1): atanh cannot take that.
    let _ = flow![dim = 1; tanh; leaky_relu(slope = 2.0); atanh];
}
