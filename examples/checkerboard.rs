//! A harder 2-D density than two moons: the checkerboard (uniform on 8 of the 16 squares of
//! [−4, 4)², sharp edges, NLL floor ln 32 ≈ 3.466 nats). Fits a neural spline flow (spline
//! couplings) and a masked autoregressive flow (MAF) to the same data and writes, for each,
//! samples beside the data and the learned density, plus the loss curves and
//! `summary.json` (`test_nll` of each model).
//!
//! ```text
//! cargo run --release --example checkerboard -- [--out DIR] [--seed S] [--steps N] [--model nsf|maf|all]
//! ```

#[path = "support/cli.rs"]
mod cli;
#[path = "support/plots.rs"]
mod plots;

use std::error::Error;
use std::path::{Path, PathBuf};

use flowgen::prelude::*;
use flowgen::rand::rngs::StdRng;
use flowgen::rand::{RngExt, SeedableRng};
use flowgen::train::{FitOptions, FitReport, Schedule, fit};

flowgen::flow! {
    /// A neural spline flow: 6 couplings whose transform is a rational-quadratic spline of
    /// 8 bins on [−5, 5], masks alternating, conditioners MLP 64-64 ReLU.
    pub struct CheckerNsf {
        dim = 2;
        repeat(3) {
            coupling(mask = even, transform = spline(bins = 8, bound = 5.0), hidden = [64, 64]);
            coupling(mask = odd, transform = spline(bins = 8, bound = 5.0), hidden = [64, 64])
        }
    }
}

flowgen::flow! {
    /// A MAF: 6 affine autoregressive layers (MADE 64-64 ReLU), the order reversed between
    /// them, an `actnorm` after each pair.
    pub struct CheckerMaf {
        dim = 2;
        repeat(3) {
            autoregressive(hidden = [64, 64], order = natural);
            autoregressive(hidden = [64, 64], order = reverse);
            actnorm
        }
    }
}

/// The checkerboard of FFJORD's toy densities: uniform on the 8 dark squares of a 4 × 4
/// board of side-2 squares covering [−4, 4)², so its density is 1/32 there and its NLL floor
/// (differential entropy) is ln 32 ≈ 3.466 nats.
fn checkerboard(n: usize, seed: u64) -> Array2<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut data = Array2::zeros((n, 2));
    for mut row in data.rows_mut() {
        let x: f64 = rng.random_range(-4.0..4.0);
        // Column c (0..4 from the left) is dark in rows of the other parity.
        let column = ((x + 4.0) / 2.0).floor() as i64;
        let row_index = 2 * rng.random_range(0..2i64) + (column + 1) % 2;
        let y = -4.0 + 2.0 * row_index as f64 + rng.random_range(0.0..2.0);
        row[0] = x as f32;
        row[1] = y as f32;
    }
    data
}

/// The checkerboard's NLL floor: ln 32.
const NLL_FLOOR: f64 = 3.465_735_902_799_726_5;
/// Where the pictures look.
const WINDOW: plots::Window = (-4.5, 4.5, -4.5, 4.5);

struct Options {
    out: PathBuf,
    seed: u64,
    steps: usize,
    nsf: bool,
    maf: bool,
}

fn options() -> Result<Options, Box<dyn Error>> {
    let mut o = Options {
        out: PathBuf::from("target/checkerboard"),
        seed: 0,
        steps: 3000,
        nsf: true,
        maf: true,
    };
    for (flag, value) in cli::flag_values()? {
        match flag.as_str() {
            "--out" => o.out = PathBuf::from(value),
            "--seed" => o.seed = value.parse()?,
            "--steps" => o.steps = value.parse()?,
            "--model" => {
                let choices = [
                    ("nsf", (true, false)),
                    ("maf", (false, true)),
                    ("all", (true, true)),
                ];
                (o.nsf, o.maf) = cli::choose("model", &value, &choices)?;
            }
            _ => {
                let options = "--out DIR, --seed S, --steps N, --model nsf|maf|all";
                return Err(cli::unknown_option(&flag, options));
            }
        }
    }
    Ok(o)
}

/// One model's result.
struct Fitted {
    name: &'static str,
    test_nll: f64,
    report: FitReport,
}

fn main() -> Result<(), Box<dyn Error>> {
    let opts = options()?;
    std::fs::create_dir_all(&opts.out)?;
    plots::init_fonts()?;
    let train = checkerboard(50_000, opts.seed);
    let test = checkerboard(20_000, 12_345);
    let fit_options = FitOptions {
        batch_size: 256,
        max_steps: Some(opts.steps),
        max_epochs: None,
        learning_rate: 2e-3,
        schedule: Schedule::Cosine {
            warmup_steps: 100,
            final_fraction: 0.01,
        },
        clip_norm: Some(10.0),
        validation_fraction: 0.05,
        eval_every: Some(250),
        patience: None,
        seed: opts.seed,
        ..Default::default()
    };
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut fitted = Vec::new();
    if opts.nsf {
        let mut model = CheckerNsf::new(&mut rng);
        fitted.push(train_and_draw(
            "nsf",
            &mut model,
            &train,
            &test,
            &fit_options,
            &opts,
        )?);
    }
    if opts.maf {
        let mut model = CheckerMaf::new(&mut rng);
        fitted.push(train_and_draw(
            "maf",
            &mut model,
            &train,
            &test,
            &fit_options,
            &opts,
        )?);
    }

    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for f in &fitted {
        series.push((
            format!("{} training NLL (50-step mean)", f.name),
            plots::moving_average(&f.report.train_loss, 50),
        ));
    }
    series.push((
        "NLL floor (ln 32)".into(),
        vec![(0.0, NLL_FLOOR), (opts.steps as f64, NLL_FLOOR)],
    ));
    let series: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(n, p)| (n.as_str(), p.clone()))
        .collect();
    plots::curves(
        &opts.out.join("loss.png"),
        "checkerboard: negative log-likelihood",
        "nats",
        &series,
    )?;

    let json_number = |v: f64| {
        if v.is_finite() {
            v.to_string()
        } else {
            "null".to_string()
        }
    };
    let models: Vec<String> = fitted
        .iter()
        .map(|f| {
            format!(
                "    \"{}\": {{ \"test_nll\": {}, \"train_seconds\": {}, \"steps\": {} }}",
                f.name,
                json_number(f.test_nll),
                json_number(f.report.seconds),
                f.report.steps
            )
        })
        .collect();
    let summary = format!(
        "{{\n  \"nll_floor\": {NLL_FLOOR},\n  \"seed\": {},\n  \"models\": {{\n{}\n  }}\n}}\n",
        opts.seed,
        models.join(",\n")
    );
    std::fs::write(opts.out.join("summary.json"), summary)?;
    println!("wrote {}", opts.out.display());
    Ok(())
}

/// Trains `model`, prints its test NLL, and writes `samples_NAME.png` and `density_NAME.png`.
fn train_and_draw<M>(
    name: &'static str,
    model: &mut M,
    train: &Array2<f32>,
    test: &Array2<f32>,
    fit_options: &FitOptions,
    opts: &Options,
) -> Result<Fitted, Box<dyn Error>>
where
    M: Trainable<f32>,
{
    println!(
        "{name}: training {} parameters, {} steps of batch {}",
        model.param_len(),
        fit_options.max_steps.unwrap_or(0),
        fit_options.batch_size
    );
    let report = fit(model, train.view(), fit_options)?;
    let test_nll = -model
        .log_prob(test.view())?
        .mapv(f64::from)
        .mean()
        .unwrap_or(f64::NAN);
    println!(
        "{name}: trained {} steps in {:.1} s; test NLL {test_nll:.4} nats (floor {NLL_FLOOR:.4})",
        report.steps, report.seconds
    );
    draw(name, model, train, &opts.out, opts.seed)?;
    Ok(Fitted {
        name,
        test_nll,
        report,
    })
}

fn draw<M: Density<f32>>(
    name: &str,
    model: &M,
    train: &Array2<f32>,
    out: &Path,
    seed: u64,
) -> Result<(), Box<dyn Error>> {
    let mut rng = StdRng::seed_from_u64(seed + 1);
    let samples = model.sample(8000, &mut rng);
    let points = |a: &Array2<f32>| -> Vec<(f64, f64)> {
        a.rows()
            .into_iter()
            .take(8000)
            .map(|r| (f64::from(r[0]), f64::from(r[1])))
            .collect()
    };
    plots::scatter_pair(
        &out.join(format!("samples_{name}.png")),
        WINDOW,
        ("training data", &points(train)),
        (&format!("samples from the {name}"), &points(&samples)),
    )?;
    let cells = 200;
    let grid = plots::grid_points(WINDOW, cells);
    let density: Vec<f64> = model
        .log_prob(grid.view())?
        .iter()
        .map(|&lp| f64::from(lp).exp())
        .collect();
    plots::heatmap(
        &out.join(format!("density_{name}.png")),
        &format!("{name}: learned density p(x)"),
        WINDOW,
        cells,
        &density,
        None,
    )?;
    Ok(())
}
