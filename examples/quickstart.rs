//! Declares a flow, samples from it, and scores points — including points outside its
//! support and malformed input. Writes the samples to `target/quickstart/samples.csv`.
//!
//! Run: `cargo run --release --example quickstart [-- --out DIR --n N --seed S]`

#[path = "support/cli.rs"]
#[allow(dead_code)] // no option here is a choice
mod cli;

use std::error::Error;
use std::io::Write;
use std::path::PathBuf;

use flowgen::prelude::*;

flowgen::flow! {
    /// A 2-D flow onto the unit square: an affine layer, two couplings, a sigmoid.
    pub struct Square {
        dim = 2;
        float = f64;
        affine;
        coupling(mask = even, hidden = [32, 32]);
        coupling(mask = odd, hidden = [32, 32], activation = tanh);
        sigmoid
    }
}

struct Options {
    out: PathBuf,
    n: usize,
    seed: u64,
}

fn options() -> Result<Options, Box<dyn Error>> {
    let mut o = Options {
        out: PathBuf::from("target/quickstart"),
        n: 10_000,
        seed: 0,
    };
    for (flag, value) in cli::flag_values()? {
        match flag.as_str() {
            "--out" => o.out = PathBuf::from(value),
            "--n" => o.n = value.parse()?,
            "--seed" => o.seed = value.parse()?,
            _ => return Err(cli::unknown_option(&flag, "--out DIR, --n N, --seed S")),
        }
    }
    Ok(o)
}

fn main() -> Result<(), Box<dyn Error>> {
    let opts = options()?;
    let mut rng = flowgen::rand::rngs::StdRng::seed_from_u64(opts.seed);
    let mut model = Square::new(&mut rng);
    // Give the flow a shape of its own: spread the first coordinate, shift the second.
    model.affine_0.shift = vec![0.5, -1.0];
    model.affine_0.log_scale = vec![0.7, -0.3];
    println!(
        "flow: dim = {}, support of the data = {:?}",
        Square::DIM,
        Square::SUPPORT
    );

    let start = std::time::Instant::now();
    let (x, log_p) = model.sample_and_log_prob(opts.n, &mut rng);
    let sampled = start.elapsed();
    let start = std::time::Instant::now();
    let scored = model.log_prob(x.view())?;
    let scoring = start.elapsed();
    let worst = scored
        .iter()
        .zip(&log_p)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    println!(
        "sampled {} points in {:.2?} and scored them again in {:.2?}; mean log p = {:.4}; max |log p(sample) − log p(score)| = {:.1e}",
        opts.n,
        sampled,
        scoring,
        scored.mean().unwrap_or(f64::NAN),
        worst
    );

    let probes = Array2::from_shape_vec((4, 2), vec![0.5, 0.5, 0.9, 0.1, 1.5, 0.5, 0.0, 0.3])?;
    for (point, lp) in probes
        .rows()
        .into_iter()
        .zip(model.log_prob(probes.view())?)
    {
        println!("log p({:?}) = {lp:.4}", point.to_vec());
    }
    let wrong = Array2::<f64>::zeros((1, 3));
    println!(
        "a 3-column batch: {}",
        model.log_prob(wrong.view()).unwrap_err()
    );
    let nan = Array2::from_shape_vec((1, 2), vec![0.5, f64::NAN])?;
    println!("a NaN: {}", model.log_prob(nan.view()).unwrap_err());
    let one = model.sample_point(&mut rng);
    println!(
        "one point without the heap: {one:?}, log p = {:.4}",
        model.log_prob_point(one)?
    );

    std::fs::create_dir_all(&opts.out)?;
    let path = opts.out.join("samples.csv");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
    writeln!(file, "x0,x1,log_prob")?;
    for (row, lp) in x.rows().into_iter().zip(&log_p) {
        writeln!(file, "{},{},{}", row[0], row[1], lp)?;
    }
    println!("wrote {}", path.display());
    Ok(())
}
