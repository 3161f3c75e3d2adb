use flowgen::prelude::*;

fn main() {
    let model = flow![dim = 2; float = f64; relu];
    let x = Array2::<f64>::zeros((4, 2));
    let log_p: Array1<f64> = model.log_prob(x.view()).unwrap();
    let _ = log_p;
}
