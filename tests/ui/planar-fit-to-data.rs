// Maximum-likelihood training needs the density: a forward-only flow trains by reverse KL.
use flowgen::prelude::*;

fn main() {
    let mut model = flow![dim = 2; planar];
    let data = Array2::<f32>::zeros((64, 2));
    let _ = fit(&mut model, data.view(), &FitOptions::default());
}
