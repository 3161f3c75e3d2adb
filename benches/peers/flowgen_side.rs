//! flowgen's side of the peer comparison: the workloads of `../shared/peers/README.md`
//! timed with the peers' protocol (`workloads.timeit`: two warm-up calls, then the median
//! of 7 rounds, each round long enough to be timed), written as JSON in the peers' schema
//! (`{"meta": {…}, "results": [{"peer", "model", "dim", "op", "batch", "seconds"}, …]}`).
//!
//! Run: `cargo bench --bench flowgen_side -- [--out FILE] [--quick]` (or through
//! `benches/peers/run.sh`, which also prints the table against FlowJAX and zuko).
//! `--quick` shortens every round tenfold (for a smoke test; the numbers get noisier);
//! `--only MODEL` and `--op OP/BATCH` (repeatable) select workloads, e.g. to profile one:
//! `perf record -g target/release/deps/flowgen_side-* --only realnvp16 --op log_prob/65536`.
//!
//! `train_step` (batch 256, rounds of at least 1 s as the peers time it) is one step of
//! training on a fixed batch of samples of the flow: the gradient buffer zeroed, the mean
//! NLL and its gradient (`Trainable::nll_and_grad`), one Adam step with lr 1e-3; the model
//! and the optimiser's state carry over between steps, as in the peers' loops.
//!
//! Besides the peers' operations it records `log_prob_point` (batch 1), the unfused
//! reference path on elementwise16 (`log_prob_reference`, batch 65 536), and realnvp in
//! FlowJAX's architecture (model `realnvp_fj`: half-split couplings and permutations).

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Instant;

use flowgen::rand::SeedableRng;
use flowgen::rand::rngs::StdRng;
use flowgen::train::{Adam, Optimizer};
use flowgen::{Density, Trainable};

#[path = "../workloads/mod.rs"]
mod workloads;

use workloads::{BATCHES, SAMPLE_BATCH, TRAIN_BATCH, TRAIN_LR};

/// Median seconds per call of `f`, as `workloads.timeit` measures it.
fn timeit<T>(mut f: impl FnMut() -> T, min_time: f64) -> f64 {
    const REPEATS: usize = 7;
    black_box(f());
    black_box(f());
    let t0 = Instant::now();
    black_box(f());
    let one = t0.elapsed().as_secs_f64().max(1e-7);
    let inner = ((min_time / REPEATS as f64 / one) as usize).max(1);
    let mut rounds: Vec<f64> = (0..REPEATS)
        .map(|_| {
            let t0 = Instant::now();
            for _ in 0..inner {
                black_box(f());
            }
            t0.elapsed().as_secs_f64() / inner as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[REPEATS / 2]
}

struct Record {
    model: &'static str,
    dim: usize,
    op: &'static str,
    batch: usize,
    seconds: f64,
}

struct Bench {
    scale: f64,
    /// Only these operations (all when empty), for profiling one of them.
    ops: Vec<String>,
    records: Vec<Record>,
}

impl Bench {
    fn time<T>(
        &mut self,
        model: &'static str,
        dim: usize,
        op: &'static str,
        batch: usize,
        f: impl FnMut() -> T,
    ) {
        if !self.ops.is_empty() && !self.ops.iter().any(|o| o == &format!("{op}/{batch}")) {
            return;
        }
        // The peers' round lengths: 1 s for a training step, 0.5 s / 2 s for the rest.
        let min_time = if op == "train_step" {
            1.0
        } else if batch < 65_536 {
            0.5
        } else {
            2.0
        } * self.scale;
        let seconds = timeit(f, min_time);
        eprintln!(
            "{model:>14} {dim:>3} {op:>18} {batch:>6}: {:>12.3} µs ({:.4} µs/row)",
            seconds * 1e6,
            seconds * 1e6 / batch as f64
        );
        self.records.push(Record {
            model,
            dim,
            op,
            batch,
            seconds,
        });
    }

    /// The peers' operations on one model, plus the point API at batch 1.
    fn model<M: Density<f32>, const D: usize>(
        &mut self,
        name: &'static str,
        model: &M,
        log_prob_point: impl Fn(&M, [f32; D]) -> f32,
    ) {
        for n in BATCHES {
            let x = workloads::data(model, n);
            let lp = model.log_prob(x.view()).expect("valid batch");
            assert!(
                lp.iter().all(|v| v.is_finite()),
                "{name}: non-finite log_prob"
            );
            self.time(name, D, "log_prob", n, || {
                model.log_prob(black_box(x.view())).expect("valid batch")
            });
            if n == 1 {
                let p: [f32; D] = workloads::point(&x);
                let lp_point = log_prob_point(model, p);
                assert!(
                    (lp_point - lp[0]).abs() <= 1e-4 * (1.0 + lp[0].abs()),
                    "{name}: point API {lp_point} vs batch {}",
                    lp[0]
                );
                self.time(name, D, "log_prob_point", 1, || {
                    log_prob_point(model, black_box(p))
                });
            }
        }
        let mut rng = StdRng::seed_from_u64(2);
        self.time(name, D, "sample", SAMPLE_BATCH, || {
            model.sample(black_box(SAMPLE_BATCH), &mut rng)
        });
    }

    /// One training step on `TRAIN_BATCH` samples of the flow (seed 1, like the peers'):
    /// zero the gradient, mean NLL and gradient, Adam step with lr 1e-3.
    fn train_step<M: Trainable<f32>>(&mut self, name: &'static str, mut model: M) {
        let x = workloads::data(&model, TRAIN_BATCH);
        let mut grad = vec![0.0f32; model.param_len()];
        let mut opt = Adam::new(model.param_len());
        let first = model
            .nll_and_grad(x.view(), &mut grad)
            .expect("valid batch");
        assert!(
            first.is_finite() && grad.iter().all(|g| g.is_finite()),
            "{name}: non-finite NLL {first} or gradient"
        );
        let mut last = first;
        let dim = model.dim();
        self.time(name, dim, "train_step", TRAIN_BATCH, || {
            grad.fill(0.0);
            last = model
                .nll_and_grad(black_box(x.view()), &mut grad)
                .expect("valid batch");
            opt.step(&mut model, &grad, TRAIN_LR);
        });
        assert!(last.is_finite(), "{name}: training diverged (NLL {last})");
        if opt.step_count() > 0 {
            eprintln!(
                "{:>44}(mean NLL {first:.4} -> {last:.4} after {} Adam steps)",
                "",
                opt.step_count()
            );
        }
    }

    fn json(&self) -> String {
        let mut s = String::from("{\n \"meta\": {\n");
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        // Large batches and training steps are split over rayon's threads.
        let threads = std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|t| t.parse::<usize>().ok())
            .unwrap_or(cores);
        let _ = writeln!(
            s,
            "  \"flowgen\": \"{}\",\n  \"threads\": {threads},\n  \"cores\": {cores},\n  \"profile\": \"bench (release)\",\n  \"scale\": {}\n }},\n \"results\": [",
            env!("CARGO_PKG_VERSION"),
            self.scale
        );
        for (i, r) in self.records.iter().enumerate() {
            let comma = if i + 1 < self.records.len() { "," } else { "" };
            let _ = writeln!(
                s,
                "  {{\"peer\": \"flowgen\", \"model\": \"{}\", \"dim\": {}, \"op\": \"{}\", \"batch\": {}, \"seconds\": {:e}}}{comma}",
                r.model, r.dim, r.op, r.batch, r.seconds
            );
        }
        s.push_str(" ]\n}\n");
        s
    }
}

fn main() {
    let mut out = None;
    let mut scale = 1.0;
    let mut only: Vec<String> = Vec::new();
    let mut ops: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bench" => {} // passed by `cargo bench`
            "--out" => out = Some(args.next().expect("--out needs a file")),
            "--quick" => scale = 0.1,
            "--only" => only.push(args.next().expect("--only needs a model name")),
            "--op" => ops.push(
                args.next()
                    .expect("--op needs OP/BATCH, e.g. log_prob/65536"),
            ),
            "-h" | "--help" => {
                eprintln!(
                    "flowgen_side [--out FILE] [--quick] [--only MODEL]… [--op OP/BATCH]…\n  models: realnvp2, realnvp16, realnvp_fj2, realnvp_fj16, nsf16, maf16, elementwise16\n  ops: log_prob/1, log_prob_point/1, log_prob/256, log_prob/65536, sample/65536, train_step/256, log_prob_reference/65536"
                );
                return;
            }
            other => panic!("unknown argument {other:?} (try --help)"),
        }
    }
    let wants = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let mut bench = Bench {
        scale,
        ops,
        records: Vec::new(),
    };

    if wants("realnvp2") {
        bench.model("realnvp", &workloads::realnvp2(), |m, p| {
            m.log_prob_point(p).expect("finite point")
        });
        bench.train_step("realnvp", workloads::realnvp2());
    }
    if wants("realnvp16") {
        bench.model("realnvp", &workloads::realnvp16(), |m, p| {
            m.log_prob_point(p).expect("finite point")
        });
        bench.train_step("realnvp", workloads::realnvp16());
    }
    if wants("realnvp_fj2") {
        bench.model("realnvp_fj", &workloads::realnvp_fj2(), |m, p| {
            m.log_prob_point(p).expect("finite point")
        });
        bench.train_step("realnvp_fj", workloads::realnvp_fj2());
    }
    if wants("realnvp_fj16") {
        bench.model("realnvp_fj", &workloads::realnvp_fj16(), |m, p| {
            m.log_prob_point(p).expect("finite point")
        });
        bench.train_step("realnvp_fj", workloads::realnvp_fj16());
    }
    if wants("nsf16") {
        bench.model("nsf", &workloads::nsf16(), |m, p| {
            m.log_prob_point(p).expect("finite point")
        });
        bench.train_step("nsf", workloads::nsf16());
    }
    if wants("maf16") {
        bench.model("maf", &workloads::maf16(), |m, p| {
            m.log_prob_point(p).expect("finite point")
        });
        bench.train_step("maf", workloads::maf16());
    }
    if wants("elementwise16") {
        let model = workloads::elementwise16();
        bench.model("elementwise16", &model, |m, p| {
            m.log_prob_point(p).expect("finite point")
        });
        let x = workloads::data(&model, SAMPLE_BATCH);
        let fused = model.log_prob(x.view()).expect("valid batch");
        let unfused = workloads::reference_log_prob(&model, x.view());
        let worst = fused
            .iter()
            .zip(&unfused)
            .map(|(a, b)| (a - b).abs() / (1.0 + a.abs()))
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "fused and unfused differ by {worst}");
        bench.time(
            "elementwise16",
            workloads::Elementwise16::DIM,
            "log_prob_reference",
            SAMPLE_BATCH,
            || workloads::reference_log_prob(&model, black_box(x.view())),
        );
    }

    let json = bench.json();
    match out {
        Some(path) => std::fs::write(&path, json).expect("cannot write the JSON file"),
        None => print!("{json}"),
    }
}
