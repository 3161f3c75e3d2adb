//! The peer workloads (`../shared/peers/README.md`) under criterion: `log_prob` at batch 1,
//! 256 and 65 536 (plus the point API at batch 1), `sample` of 65 536, for realnvp dim 2
//! and 16 (zuko's and FlowJAX's architectures) and elementwise16 dim 64, the unfused
//! reference path on elementwise16 at 65 536 for the fused/unfused ratio, and one training
//! step (`train_step/256`: mean NLL and gradient, then Adam lr 1e-3) on the realnvps.
//!
//! Run: `cargo bench --bench flows` (filter: `cargo bench --bench flows -- realnvp16/`).
//! `benches/peers/run.sh` times the same workloads with the peers' protocol and prints
//! them next to FlowJAX and zuko.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, measurement::WallTime};
use flowgen::rand::SeedableRng;
use flowgen::rand::rngs::StdRng;
use flowgen::train::{Adam, Optimizer};
use flowgen::{Density, Trainable};

mod workloads;

use workloads::{BATCHES, SAMPLE_BATCH, TRAIN_BATCH, TRAIN_LR};

/// Settings for one batch size: small batches are sampled densely, big ones flat with 20
/// samples so the whole suite stays around a minute or two.
fn configure(group: &mut BenchmarkGroup<'_, WallTime>, rows: usize) {
    group.throughput(Throughput::Elements(rows as u64));
    if rows >= 65_536 {
        group
            .sampling_mode(SamplingMode::Flat)
            .sample_size(20)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
    } else {
        group
            .sampling_mode(SamplingMode::Auto)
            .sample_size(50)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
    }
}

/// `log_prob` at every batch size, `log_prob_point` at batch 1, `sample` of 65 536.
fn bench_model<M, const D: usize>(
    c: &mut Criterion,
    name: &str,
    model: &M,
    log_prob_point: impl Fn(&M, [f32; D]) -> f32,
) where
    M: Density<f32>,
{
    let mut group = c.benchmark_group(name);
    for n in BATCHES {
        let x = workloads::data(model, n);
        configure(&mut group, n);
        group.bench_function(format!("log_prob/{n}"), |b| {
            b.iter(|| model.log_prob(black_box(x.view())).expect("valid batch"))
        });
        if n == 1 {
            let p: [f32; D] = workloads::point(&x);
            group.bench_function("log_prob_point/1", |b| {
                b.iter(|| log_prob_point(model, black_box(p)))
            });
        }
    }
    configure(&mut group, SAMPLE_BATCH);
    let mut rng = StdRng::seed_from_u64(2);
    group.bench_function(format!("sample/{SAMPLE_BATCH}"), |b| {
        b.iter(|| model.sample(black_box(SAMPLE_BATCH), &mut rng))
    });
    group.finish();
}

/// One training step on a fixed batch of `TRAIN_BATCH` samples of the flow: zero the
/// gradient, mean NLL and its gradient, one Adam step (lr 1e-3). The model and the
/// optimiser's state carry over from step to step, as in the peers' loops.
fn bench_train_step<M: Trainable<f32>>(c: &mut Criterion, name: &str, mut model: M) {
    let x = workloads::data(&model, TRAIN_BATCH);
    let mut grad = vec![0.0f32; model.param_len()];
    let mut opt = Adam::new(model.param_len());
    let mut group = c.benchmark_group(name);
    configure(&mut group, TRAIN_BATCH);
    group.bench_function(format!("train_step/{TRAIN_BATCH}"), |b| {
        b.iter(|| {
            grad.fill(0.0);
            let nll = model
                .nll_and_grad(black_box(x.view()), &mut grad)
                .expect("valid batch");
            opt.step(&mut model, &grad, TRAIN_LR);
            nll
        })
    });
    group.finish();
}

fn realnvp(c: &mut Criterion) {
    bench_model(c, "realnvp2", &workloads::realnvp2(), |m, p| {
        m.log_prob_point(p).expect("finite point")
    });
    bench_train_step(c, "realnvp2", workloads::realnvp2());
    bench_model(c, "realnvp16", &workloads::realnvp16(), |m, p| {
        m.log_prob_point(p).expect("finite point")
    });
    bench_train_step(c, "realnvp16", workloads::realnvp16());
}

fn realnvp_flowjax_architecture(c: &mut Criterion) {
    bench_model(c, "realnvp_fj2", &workloads::realnvp_fj2(), |m, p| {
        m.log_prob_point(p).expect("finite point")
    });
    bench_train_step(c, "realnvp_fj2", workloads::realnvp_fj2());
    bench_model(c, "realnvp_fj16", &workloads::realnvp_fj16(), |m, p| {
        m.log_prob_point(p).expect("finite point")
    });
    bench_train_step(c, "realnvp_fj16", workloads::realnvp_fj16());
}

fn elementwise(c: &mut Criterion) {
    let model = workloads::elementwise16();
    bench_model(c, "elementwise16", &model, |m, p| {
        m.log_prob_point(p).expect("finite point")
    });
    // Fused against unfused on the same rows.
    let x = workloads::data(&model, SAMPLE_BATCH);
    let mut group = c.benchmark_group("elementwise16");
    configure(&mut group, SAMPLE_BATCH);
    group.bench_function(format!("reference_log_prob/{SAMPLE_BATCH}"), |b| {
        b.iter(|| workloads::reference_log_prob(&model, black_box(x.view())))
    });
    group.finish();
}

criterion::criterion_group!(benches, realnvp, realnvp_flowjax_architecture, elementwise);
criterion::criterion_main!(benches);
