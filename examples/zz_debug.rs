#[path = "support/data.rs"]
mod data;
use flowgen::prelude::*;
use flowgen::train::{FitOptions, fit};
flowgen::flow! { pub struct P32 { dim = 2; repeat(4) { coupling(mask = even, hidden = [64, 64]); coupling(mask = odd, hidden = [64, 64]) } } }
fn main() {
    let mut all = vec![];
    for seed in 0..6u64 {
        let opts = FitOptions {
            max_steps: Some(2000),
            max_epochs: None,
            validation_fraction: 0.0,
            seed,
            progress: false,
            ..Default::default()
        };
        let train = data::two_moons::<f32>(20000, seed);
        let test = data::two_moons::<f32>(20000, 12345);
        let mut rng = flowgen::rand::rngs::StdRng::seed_from_u64(seed);
        let mut m = P32::new(&mut rng);
        for c in [
            &mut m.coupling_0,
            &mut m.coupling_1,
            &mut m.coupling_2,
            &mut m.coupling_3,
            &mut m.coupling_4,
            &mut m.coupling_5,
            &mut m.coupling_6,
            &mut m.coupling_7,
        ] {
            c.net.randomize_output_layer(&mut rng);
        }
        fit(&mut m, train.view(), &opts).unwrap();
        let nll = -m.log_prob(test.view()).unwrap().mean().unwrap();
        all.push(nll);
        print!("{nll:.3} ");
    }
    let mut s = all.clone();
    s.sort_by(f32::total_cmp);
    let mut t = all[..3].to_vec();
    t.sort_by(f32::total_cmp);
    println!(
        " median6 {:.4} median(0-2) {:.4}",
        (s[2] + s[3]) / 2.0,
        t[1]
    );
}
