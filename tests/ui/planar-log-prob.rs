// A flow with a forward-only layer has no density at arbitrary points: `log_prob` is a
// compile error that names the layer.
use flowgen::prelude::*;

fn main() {
    let model = flow![dim = 2; affine; planar; planar];
    let x = Array2::<f32>::zeros((4, 2));
    let _ = model.log_prob(x.view());
}
