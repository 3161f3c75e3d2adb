//! The peer workloads of `../shared/peers/README.md`, declared with `flow!`, shared by
//! `benches/flows.rs` (criterion) and `benches/peers/flowgen_side.rs` (the peer protocol).
//!
//! * `realnvp` dim 2 and 16: standard-normal base, 8 affine couplings with alternating
//!   masks (even, odd, even, …), each conditioner an MLP 64-64 ReLU giving a shift and a
//!   log-scale per transformed coordinate. This is zuko's `RealNVP(features, transforms=8,
//!   hidden_features=(64, 64))`: masks `arange(D) % 2 == i % 2`, no permutations.
//! * `realnvp_fj` dim 2 and 16: FlowJAX's `coupling_flow(transformer=Affine(),
//!   flow_layers=8, nn_width=64, nn_depth=2)`: each coupling keeps the first `D/2`
//!   coordinates and is followed by a flip (D = 2) or a random permutation (D > 2).
//! * `elementwise16` dim 64: `repeat(8) { affine; tanh }`, affine shift ~ N(0, 0.1²) and
//!   log-scale ~ N(0, 0.1²).
//!
//! * `nsf` dim 16: 4 spline couplings (8 bins on [−5, 5]), masks first half / second half
//!   alternating, MLP 64-64 ReLU: zuko's `NSF(features, transforms=4, hidden_features=(64,
//!   64), passes=2)` (zuko's MADE also gives the conditioning half an input-independent
//!   spline; flowgen leaves it unchanged).
//! * `maf` dim 16: 4 affine MAF layers (MADE 64-64 ReLU), the order reversed between them:
//!   zuko's `MAF(features, transforms=4, hidden_features=(64, 64))`.
//!
//! Couplings are built with their hidden layers drawn like PyTorch's `nn.Linear` (as the
//! peers do) and their zero last layer then randomised with N(0, 0.05²) entries, so that no
//! coupling is the identity and the densities are not trivially the base's.
#![allow(dead_code)]

use flowgen::Float;
use flowgen::flow;
use flowgen::layers::Coupling;
use flowgen::rand::SeedableRng;
use flowgen::rand::rngs::StdRng;

flow! {
    /// zuko's RealNVP on 2 coordinates: 8 couplings, alternating masks.
    pub struct RealNvp2 {
        dim = 2; base = normal; float = f32;
        repeat(4) {
            coupling(mask = even, transform = affine, hidden = [64, 64], activation = relu);
            coupling(mask = odd, transform = affine, hidden = [64, 64], activation = relu)
        }
    }
}

flow! {
    /// zuko's RealNVP on 16 coordinates: 8 couplings, alternating masks.
    pub struct RealNvp16 {
        dim = 16; base = normal; float = f32;
        repeat(4) {
            coupling(mask = even, transform = affine, hidden = [64, 64], activation = relu);
            coupling(mask = odd, transform = affine, hidden = [64, 64], activation = relu)
        }
    }
}

flow! {
    /// FlowJAX's coupling flow on 2 coordinates: half-split couplings, each followed by a flip.
    pub struct RealNvpFj2 {
        dim = 2; base = normal; float = f32;
        repeat(8) {
            coupling(mask = first_half, transform = affine, hidden = [64, 64], activation = relu);
            permute(reverse)
        }
    }
}

flow! {
    /// FlowJAX's coupling flow on 16 coordinates: half-split couplings, each followed by its
    /// own random permutation.
    pub struct RealNvpFj16 {
        dim = 16; base = normal; float = f32;
        coupling(mask = first_half, hidden = [64, 64]); permute(seed = 1);
        coupling(mask = first_half, hidden = [64, 64]); permute(seed = 2);
        coupling(mask = first_half, hidden = [64, 64]); permute(seed = 3);
        coupling(mask = first_half, hidden = [64, 64]); permute(seed = 4);
        coupling(mask = first_half, hidden = [64, 64]); permute(seed = 5);
        coupling(mask = first_half, hidden = [64, 64]); permute(seed = 6);
        coupling(mask = first_half, hidden = [64, 64]); permute(seed = 7);
        coupling(mask = first_half, hidden = [64, 64]); permute(seed = 8)
    }
}

flow! {
    /// Sixteen elementwise layers on 64 coordinates: `(affine; tanh)` eight times.
    pub struct Elementwise16 {
        dim = 64; base = normal; float = f32;
        repeat(8) { affine; tanh }
    }
}

flow! {
    /// A neural spline flow on 16 coordinates: 4 spline couplings, half-split masks alternating.
    pub struct Nsf16 {
        dim = 16; base = normal; float = f32;
        repeat(2) {
            coupling(mask = first_half, transform = spline(bins = 8, bound = 5.0), hidden = [64, 64]);
            coupling(mask = second_half, transform = spline(bins = 8, bound = 5.0), hidden = [64, 64])
        }
    }
}

flow! {
    /// A MAF on 16 coordinates: 4 affine autoregressive layers, the order reversed between them.
    pub struct Maf16 {
        dim = 16; base = normal; float = f32;
        repeat(2) {
            autoregressive(hidden = [64, 64], order = natural);
            autoregressive(hidden = [64, 64], order = reverse)
        }
    }
}

/// The seed every workload is built from.
pub const SEED: u64 = 0;

/// A draw from N(0, sd²).
fn normal(rng: &mut StdRng, sd: f32) -> f32 {
    sd * f32::standard_normal(rng)
}

/// Fills the conditioner's last (zero) layer with N(0, 0.05²) entries.
fn randomise(coupling: &mut Coupling<f32>, rng: &mut StdRng) {
    let last = coupling
        .net
        .layers
        .last_mut()
        .expect("a conditioner has a layer");
    last.weight.mapv_inplace(|_| normal(rng, 0.05));
    last.bias.mapv_inplace(|_| normal(rng, 0.05));
}

/// Fills the last two tensors a layer visits (its conditioner's last layer, zero at the
/// start) with N(0, 0.05²) entries; an autoregressive layer re-applies its masks.
fn randomise_last_layer(layer: &mut dyn flowgen::Layer<f32>, rng: &mut StdRng) {
    let mut count = 0;
    layer.visit_params(&mut |_, _, _| count += 1);
    let mut k = 0;
    layer.visit_params_mut(&mut |_, _, values| {
        if k + 2 >= count {
            values.iter_mut().for_each(|v| *v = normal(rng, 0.05));
        }
        k += 1;
    });
}

/// The nsf workload.
pub fn nsf16() -> Nsf16 {
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut m = Nsf16::new(&mut rng);
    for c in [
        &mut m.coupling_0,
        &mut m.coupling_1,
        &mut m.coupling_2,
        &mut m.coupling_3,
    ] {
        randomise_last_layer(c, &mut rng);
    }
    m
}

/// The maf workload.
pub fn maf16() -> Maf16 {
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut m = Maf16::new(&mut rng);
    for a in [
        &mut m.autoregressive_0,
        &mut m.autoregressive_1,
        &mut m.autoregressive_2,
        &mut m.autoregressive_3,
    ] {
        randomise_last_layer(a, &mut rng);
    }
    m
}

/// The realnvp workload on 2 coordinates (zuko's architecture).
pub fn realnvp2() -> RealNvp2 {
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut m = RealNvp2::new(&mut rng);
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
        randomise(c, &mut rng);
    }
    m
}

/// The realnvp workload on 16 coordinates (zuko's architecture).
pub fn realnvp16() -> RealNvp16 {
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut m = RealNvp16::new(&mut rng);
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
        randomise(c, &mut rng);
    }
    m
}

/// The realnvp workload on 2 coordinates in FlowJAX's architecture.
pub fn realnvp_fj2() -> RealNvpFj2 {
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut m = RealNvpFj2::new(&mut rng);
    for c in [
        &mut m.coupling_0,
        &mut m.coupling_2,
        &mut m.coupling_4,
        &mut m.coupling_6,
        &mut m.coupling_8,
        &mut m.coupling_10,
        &mut m.coupling_12,
        &mut m.coupling_14,
    ] {
        randomise(c, &mut rng);
    }
    m
}

/// The realnvp workload on 16 coordinates in FlowJAX's architecture.
pub fn realnvp_fj16() -> RealNvpFj16 {
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut m = RealNvpFj16::new(&mut rng);
    for c in [
        &mut m.coupling_0,
        &mut m.coupling_2,
        &mut m.coupling_4,
        &mut m.coupling_6,
        &mut m.coupling_8,
        &mut m.coupling_10,
        &mut m.coupling_12,
        &mut m.coupling_14,
    ] {
        randomise(c, &mut rng);
    }
    m
}

/// The elementwise16 workload: shifts and log-scales N(0, 0.1²).
pub fn elementwise16() -> Elementwise16 {
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut m = Elementwise16::new(&mut rng);
    let d = Elementwise16::DIM;
    for a in [
        &mut m.affine_0,
        &mut m.affine_2,
        &mut m.affine_4,
        &mut m.affine_6,
        &mut m.affine_8,
        &mut m.affine_10,
        &mut m.affine_12,
        &mut m.affine_14,
    ] {
        a.shift = (0..d).map(|_| normal(&mut rng, 0.1)).collect();
        a.log_scale = (0..d).map(|_| normal(&mut rng, 0.1)).collect();
    }
    m
}

/// The batch sizes of the `log_prob` workloads.
pub const BATCHES: [usize; 3] = [1, 256, 65_536];

/// The batch size of the `sample` workload.
pub const SAMPLE_BATCH: usize = 65_536;

/// The batch size of the `train_step` workload.
pub const TRAIN_BATCH: usize = 256;

/// The learning rate of the `train_step` workload's Adam step.
pub const TRAIN_LR: f32 = 1e-3;

/// Rows drawn from `model` to be scored (seed 1, like the peers' `jr.key(1)`).
pub fn data<M: flowgen::Flow<f32>>(model: &M, n: usize) -> flowgen::ndarray::Array2<f32> {
    model.sample(n, &mut StdRng::seed_from_u64(1))
}

/// The first row of `x` as a point.
pub fn point<const D: usize>(x: &flowgen::ndarray::Array2<f32>) -> [f32; D] {
    let mut p = [0.0; D];
    for (dst, &v) in p.iter_mut().zip(x.row(0)) {
        *dst = v;
    }
    p
}

/// The unfused reference log-density: the per-layer inverse over the whole batch
/// (`flowgen::reference`), then the base log-density of each row.
pub fn reference_log_prob<M: flowgen::Flow<f32>>(
    model: &M,
    x: flowgen::ndarray::ArrayView2<'_, f32>,
) -> flowgen::ndarray::Array1<f32> {
    use flowgen::BaseDistribution;
    let (z, mut log_det) = flowgen::reference::inverse_and_log_det(&model.layers(), x);
    for (row, ld) in z.rows().into_iter().zip(log_det.iter_mut()) {
        let row = row
            .to_slice()
            .expect("reference output rows are contiguous");
        *ld += model.base().log_prob_point(row);
    }
    log_det
}
