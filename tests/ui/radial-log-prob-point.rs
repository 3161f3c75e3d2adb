// The point API of a forward-only flow has no `log_prob_point` either.
use flowgen::prelude::*;

fn main() {
    let model = flow![dim = 3; radial; affine];
    let _ = model.log_prob_point([0.0, 1.0, 2.0]);
}
