//! Data sets of the examples.

use flowgen::Float;
use flowgen::ndarray::Array2;
use flowgen::rand::rngs::StdRng;
use flowgen::rand::{RngExt, SeedableRng};

/// Two moons exactly as the peer benchmarks define them (`../shared/peers/README.md`):
/// `t ~ U(0, π)`; with probability ½ the point is `(cos t, sin t)`, else
/// `(1 − cos t, 0.5 − sin t)`; plus N(0, 0.05²) noise on each coordinate.
pub fn two_moons<F: Float>(n: usize, seed: u64) -> Array2<F> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut data = Array2::zeros((n, 2));
    for mut row in data.rows_mut() {
        let t = rng.random_range(0.0..std::f64::consts::PI);
        let (x, y) = if rng.random_bool(0.5) {
            (t.cos(), t.sin())
        } else {
            (1.0 - t.cos(), 0.5 - t.sin())
        };
        row[0] = F::of(x + 0.05 * f64::standard_normal(&mut rng));
        row[1] = F::of(y + 0.05 * f64::standard_normal(&mut rng));
    }
    data
}
