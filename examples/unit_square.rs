//! A density with a bounded support: data in the unit square, fitted by a flow that ends in
//! `sigmoid`, so its support is (0, 1)² by construction. The pictures show the data beside
//! samples, and the learned density on a window larger than the square: no mass outside.
//!
//! ```text
//! cargo run --release --example unit_square -- [--out DIR] [--seed S] [--steps N]
//! ```

#[path = "support/plots.rs"]
mod plots;

use std::error::Error;
use std::path::PathBuf;

use flowgen::Float;
use flowgen::prelude::*;
use flowgen::rand::RngExt;
use flowgen::rand::rngs::StdRng;
use flowgen::train::{FitOptions, Schedule, fit};

flowgen::flow! {
    /// Couplings on ℝ², then `sigmoid`: the compiler records the support (0, 1)².
    pub struct Square {
        dim = 2;
        repeat(4) {
            coupling(mask = even, hidden = [64, 64], activation = silu);
            coupling(mask = odd, hidden = [64, 64], activation = silu)
        };
        affine;
        sigmoid
    }
}

/// The square and a margin around it.
const WINDOW: plots::Window = (-0.25, 1.25, -0.25, 1.25);

/// A ring around the centre and a blob squeezed into the corner (0, 1): mass right up
/// against two edges, where a flow onto ℝ² would leak.
fn square_data(n: usize, rng: &mut StdRng) -> Array2<f32> {
    let mut data = Array2::zeros((n, 2));
    for mut row in data.rows_mut() {
        let (x, y) = if rng.random_bool(0.6) {
            let angle = rng.random_range(0.0..std::f64::consts::TAU);
            let radius = 0.3 + 0.03 * f64::standard_normal(rng);
            (0.5 + radius * angle.cos(), 0.5 + radius * angle.sin())
        } else {
            let (u, v): (f64, f64) = (rng.random(), rng.random());
            (0.01 + 0.3 * u * u, 0.99 - 0.3 * v * v)
        };
        row[0] = x as f32;
        row[1] = y as f32;
    }
    data
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut out = PathBuf::from("target/unit_square");
    let (mut seed, mut steps) = (0u64, 3000usize);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--out" => out = PathBuf::from(value),
            "--seed" => seed = value.parse()?,
            "--steps" => steps = value.parse()?,
            _ => {
                return Err(format!(
                    "unknown option {flag} (options: --out DIR, --seed S, --steps N)"
                )
                .into());
            }
        }
    }
    std::fs::create_dir_all(&out)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let train = square_data(20_000, &mut rng);
    let test = square_data(20_000, &mut rng);
    let mut model = Square::new(&mut rng);
    println!(
        "support of the flow, from the compiler: {:?}",
        Square::SUPPORT
    );

    let options = FitOptions {
        max_steps: Some(steps),
        max_epochs: None,
        learning_rate: 2e-3,
        schedule: Schedule::Cosine {
            warmup_steps: 100,
            final_fraction: 0.02,
        },
        clip_norm: Some(10.0),
        eval_every: Some(250),
        patience: None,
        seed,
        ..Default::default()
    };
    let report = fit(&mut model, train.view(), &options)?;
    let test_nll = -model
        .log_prob(test.view())?
        .mapv(f64::from)
        .mean()
        .unwrap_or(f64::NAN);
    println!(
        "trained {} steps in {:.2} s; test NLL {test_nll:.4}",
        report.steps, report.seconds
    );

    // No mass outside: the density integrates to 1 over the square, and is exactly 0
    // (log p = -inf) anywhere outside it.
    let cells = 300;
    let grid = plots::grid_points(WINDOW, cells);
    let log_p = model.log_prob(grid.view())?;
    let cell_area = ((WINDOW.1 - WINDOW.0) / cells as f64).powi(2);
    let (mut inside, mut outside) = (0.0, 0.0);
    for (p, &lp) in grid.rows().into_iter().zip(&log_p) {
        let mass = f64::from(lp).exp() * cell_area;
        if (0.0..1.0).contains(&p[0]) && (0.0..1.0).contains(&p[1]) {
            inside += mass;
        } else {
            outside += mass;
        }
    }
    let samples = model.sample(20_000, &mut rng);
    let escaped = samples
        .rows()
        .into_iter()
        .filter(|r| !(r[0] > 0.0 && r[0] < 1.0 && r[1] > 0.0 && r[1] < 1.0))
        .count();
    println!(
        "mass inside the square ≈ {inside:.4}, outside = {outside}; samples outside: {escaped} of 20000"
    );
    for probe in [[1.2f32, 0.5], [0.5, -0.1], [0.0, 0.5], [1.0, 1.0]] {
        println!("log p({probe:?}) = {}", model.log_prob_point(probe)?);
    }

    plots::init_fonts()?;
    let points = |a: &Array2<f32>| -> Vec<(f64, f64)> {
        a.rows()
            .into_iter()
            .take(6000)
            .map(|r| (f64::from(r[0]), f64::from(r[1])))
            .collect()
    };
    plots::scatter_pair(
        &out.join("samples.png"),
        WINDOW,
        ("training data", &points(&train)),
        ("samples from the flow", &points(&samples)),
    )?;
    let density: Vec<f64> = log_p.iter().map(|&lp| f64::from(lp).exp()).collect();
    plots::heatmap(
        &out.join("density.png"),
        "learned density (square outlined)",
        WINDOW,
        cells,
        &density,
        Some((0.0, 1.0, 0.0, 1.0)),
    )?;
    let val: Vec<(f64, f64)> = report
        .val_loss
        .iter()
        .map(|&(s, l)| (s as f64, l))
        .collect();
    plots::curves(
        &out.join("loss.png"),
        "unit square: negative log-likelihood",
        "nats",
        &[
            (
                "training NLL (50-step mean)",
                plots::moving_average(&report.train_loss, 50),
            ),
            ("validation NLL", val),
        ],
    )?;
    std::fs::write(
        out.join("summary.json"),
        format!(
            "{{\n  \"test_nll\": {test_nll},\n  \"train_seconds\": {},\n  \"steps\": {},\n  \"seed\": {seed},\n  \"mass_inside\": {inside},\n  \"mass_outside\": {outside}\n}}\n",
            report.seconds, report.steps
        ),
    )?;
    println!("wrote {}", out.display());
    Ok(())
}
