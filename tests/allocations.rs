//! Heap use, measured by a counting global allocator (per thread, so parallel tests do not
//! disturb each other).
//!
//! * The point API (`forward_point`, `inverse_point`, `log_prob_point`, `sample_point`,
//!   `rng.sample(&model)`) allocates nothing, for coupling flows included.
//! * The batch API's thread-local workspace stops growing after the first call of a
//!   given size, and every further call of that size allocates only its returned arrays
//!   (the conditioners' forward products are flowgen's own register-tiled kernels, which
//!   need no packing buffer). Checked on one rayon thread: across threads each worker
//!   has its own workspace and rayon's job queue allocates now and then.
//! * The same holds for training: after a warm-up, `nll_and_grad` allocates nothing and
//!   `log_prob_and_grad` only its returned log-probabilities (the conditioners' backward
//!   products run on the same kernels, reading their transposed operands in place).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::*;
use flowgen::prelude::*;
use flowgen::rand::RngExt;
use flowgen::{Float, Trainable};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn bump() {
    // `try_with`: the allocator may run while this thread's locals are being torn down.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns its result with the number of allocations it made on this thread.
fn count<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    (out, ALLOCATIONS.with(Cell::get) - before)
}

#[test]
fn the_counter_counts() {
    let (v, n) = count(|| vec![1u8; 100]);
    assert_eq!((v.len(), n), (100, 1));
    let ((), n) = count(|| ());
    assert_eq!(n, 0);
}

/// Every point method on 200 points, after one warm-up round.
fn point_api_allocates_nothing<M: Case>() {
    let model = M::perturbed(1);
    let mut r = rng(2);
    let points = data_points(&model, 200, &mut r);
    let rows: Vec<Vec<f64>> = (0..200).map(|i| row(&points, i)).collect();
    let mut acc = 0.0;
    for p in &rows {
        acc += model.point_round(p, &mut r);
    }
    let ((), n) = count(|| {
        for p in &rows {
            acc += model.point_round(p, &mut r);
        }
    });
    assert!(acc.is_finite());
    assert_eq!(
        n,
        0,
        "{}: {n} allocations in 200 rounds of the point API",
        M::NAME
    );
}
case_tests!(point_api_allocates_nothing);

flowgen::flow! {
    pub struct Coupling32 { dim = 6; float = f32; repeat(3) { coupling(mask = even); permute(seed = 3); coupling(mask = second_half, transform = additive, activation = silu, hidden = [32, 7, 19]) }; sigmoid }
}

#[test]
fn f32_point_api_allocates_nothing() {
    let mut model = Coupling32::new(&mut rng(1));
    perturb_fields!(model, &mut rng(2); coupling_0, coupling_2, coupling_3, coupling_5, coupling_6, coupling_8);
    let mut r = rng(3);
    let points: Vec<[f32; 6]> = (0..100).map(|_| model.sample_point(&mut r)).collect();
    let ((), n) = count(|| {
        for &p in &points {
            let (z, _) = model.inverse_point(p);
            let (x, _) = model.forward_point(z);
            let s: [f32; 6] = r.sample(&model);
            std::hint::black_box((
                x,
                model.log_prob_point(p).unwrap(),
                model.sample_point(&mut r),
                s,
            ));
        }
    });
    assert_eq!(n, 0, "{n} allocations in 100 rounds of the f32 point API");
}

/// This thread's batch workspace: (row-block copy capacity, layer workspace capacity).
fn workspace() -> (usize, usize) {
    f64::with_scratch(|s| (s.rows.capacity(), s.layers.capacity()))
}

/// Repeated batch calls of one size: the workspace stops growing after the first call and
/// each call allocates only its outputs.
fn batch_steady_state<M: Case>() {
    // On one thread: a batch of two blocks or more otherwise runs on rayon's threads, each
    // with its own workspace, and rayon's job queue allocates now and then.
    one_thread(batch_steady_state_here::<M>);
}

fn one_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(f)
}

fn batch_steady_state_here<M: Case>() {
    let model = M::perturbed(1);
    let mut r = rng(4);
    let z = base_points(&model, 1000, &mut r);
    let x = model.forward(z.view()).unwrap();

    // Warm up every method once.
    let _ = model.log_prob(x.view()).unwrap();
    let _ = model.forward_and_log_det(z.view()).unwrap();
    let _ = model.inverse_and_log_det(x.view()).unwrap();
    let ws = workspace();

    let mut counts = Vec::new();
    for _ in 0..5 {
        let (_, n_lp) = count(|| model.log_prob(x.view()).unwrap());
        let (_, n_fwd) = count(|| model.forward_and_log_det(z.view()).unwrap());
        let (_, n_inv) = count(|| model.inverse_and_log_det(x.view()).unwrap());
        counts.push((n_lp, n_fwd, n_inv));
        assert_eq!(
            workspace(),
            ws,
            "{}: the workspace grew on a repeated call",
            M::NAME
        );
    }
    assert!(
        counts.windows(2).all(|w| w[0] == w[1]),
        "{}: allocations per call vary: {counts:?}",
        M::NAME
    );
    let (n_lp, n_fwd, n_inv) = counts[0];
    // log_prob: the output; forward/inverse_and_log_det: the points and the log-dets.
    assert_eq!(n_lp, 1, "{}: log_prob allocations", M::NAME);
    assert_eq!(n_fwd, 2, "{}: forward_and_log_det allocations", M::NAME);
    assert_eq!(n_inv, 2, "{}: inverse_and_log_det allocations", M::NAME);

    // A smaller batch does not shrink or regrow the workspace.
    let _ = model
        .log_prob(x.slice(flowgen::ndarray::s![..10, ..]))
        .unwrap();
    assert_eq!(
        workspace(),
        ws,
        "{}: the workspace changed on a smaller call",
        M::NAME
    );
}

#[test]
fn batch_steady_state_elementwise() {
    batch_steady_state::<ElementwiseReal>();
    batch_steady_state::<Squash>();
}

#[test]
fn batch_steady_state_couplings() {
    batch_steady_state::<Permutations>();
    batch_steady_state::<RealNvp>();
    batch_steady_state::<DefaultSigmoid>();
}

/// The allocation count of a batch call does not depend on how often it is repeated.
#[test]
fn batch_allocations_do_not_depend_on_the_number_of_calls() {
    let model = Permutations::perturbed(2);
    let mut r = rng(5);
    let x = data_points(&model, 3000, &mut r);
    let _ = model.log_prob(x.view()).unwrap();
    let ws = workspace();
    let (_, first) = count(|| model.log_prob(x.view()).unwrap());
    let (_, many) = count(|| {
        for _ in 0..10 {
            model.log_prob(x.view()).unwrap();
        }
    });
    assert_eq!(many, 10 * first);
    assert_eq!(workspace(), ws);
}

/// The design goal stated in `flow-runtime/src/workspace.rs`: a flow evaluated repeatedly
/// allocates nothing in steady state beyond its returned arrays, couplings included.
#[test]
fn coupling_batch_calls_allocate_only_their_outputs() {
    let model = DefaultSigmoid::perturbed(1);
    let x = data_points(&model, 1000, &mut rng(6));
    let n = one_thread(|| {
        let _ = model.log_prob(x.view()).unwrap();
        count(|| model.log_prob(x.view()).unwrap()).1
    });
    assert_eq!(
        n, 1,
        "log_prob on 1000 rows allocated {n} times (1 is the output)"
    );
}

/// This thread's training scratch: the capacities of every buffer `nll_and_grad` and
/// `log_prob_and_grad` use.
fn training_workspace() -> [usize; 6] {
    f64::with_scratch(|s| {
        [
            s.tape.capacity(),
            s.grad.capacity(),
            s.per_row[0].capacity(),
            s.per_row[1].capacity(),
            s.spare_grad.capacity(),
            s.layers.capacity(),
        ]
    })
}

/// After one warm-up call of each size, `nll_and_grad` allocates nothing and
/// `log_prob_and_grad` only its returned array (with and without the input gradient), and
/// the scratch stops growing; batches of one block (256 rows, split in two halves by
/// `nll_and_grad`) and of several (1000).
fn gradient_steady_state<M: Case + Trainable<f64>>() {
    one_thread(|| {
        let model = M::perturbed(1);
        let mut r = rng(7);
        for n in [256, 1000] {
            let x = data_points(&model, n, &mut r);
            let weight = Array1::from_elem(n, -1.0 / n as f64);
            let mut grad = vec![0.0; model.param_len()];
            let mut grad_x = Array2::zeros(x.dim());
            let mut calls = || {
                let nll = model.nll_and_grad(x.view(), &mut grad).unwrap();
                let lp = model
                    .log_prob_and_grad(x.view(), weight.view(), &mut grad, None)
                    .unwrap();
                let lp_x = model
                    .log_prob_and_grad(x.view(), weight.view(), &mut grad, Some(grad_x.view_mut()))
                    .unwrap();
                (nll, lp, lp_x)
            };
            let _ = calls();
            let ws = training_workspace();
            for _ in 0..3 {
                let (n_nll, n_lp, n_lp_x) = (
                    count(|| model.nll_and_grad(x.view(), &mut grad).unwrap()).1,
                    count(|| {
                        model
                            .log_prob_and_grad(x.view(), weight.view(), &mut grad, None)
                            .unwrap()
                    })
                    .1,
                    count(|| {
                        model
                            .log_prob_and_grad(
                                x.view(),
                                weight.view(),
                                &mut grad,
                                Some(grad_x.view_mut()),
                            )
                            .unwrap()
                    })
                    .1,
                );
                assert_eq!(
                    (n_nll, n_lp, n_lp_x),
                    (0, 1, 1),
                    "{} batch {n}: allocations of nll_and_grad, log_prob_and_grad \
                     and log_prob_and_grad with grad_x (0, 1, 1 expected)",
                    M::NAME
                );
                assert_eq!(
                    training_workspace(),
                    ws,
                    "{} batch {n}: the training scratch grew on a repeated call",
                    M::NAME
                );
            }
            assert!(grad.iter().all(|g| g.is_finite()), "{}", M::NAME);
        }
    });
}

#[test]
fn gradient_steady_state_elementwise() {
    gradient_steady_state::<ElementwiseReal>();
    gradient_steady_state::<Squash>();
}

#[test]
fn gradient_steady_state_couplings() {
    gradient_steady_state::<RealNvp>();
    gradient_steady_state::<Permutations>();
    gradient_steady_state::<DefaultSigmoid>();
}

flowgen::flow! {
    pub struct Wide32 { dim = 8; float = f32; repeat(2) { coupling(mask = even, hidden = [64, 64], activation = relu); coupling(mask = odd, hidden = [64, 64], activation = relu) } }
}

/// The f32 path (the wide register tiles) of a training step: no allocation either.
#[test]
fn f32_nll_and_grad_allocates_nothing() {
    let model = Wide32::new(&mut rng(1));
    let x: Array2<f32> = model.sample(1000, &mut rng(2));
    let n = one_thread(|| {
        let mut grad = vec![0.0f32; model.param_len()];
        let _ = model.nll_and_grad(x.view(), &mut grad).unwrap();
        count(|| {
            for _ in 0..3 {
                model.nll_and_grad(x.view(), &mut grad).unwrap();
            }
        })
        .1
    });
    assert_eq!(
        n, 0,
        "{n} allocations in 3 calls of nll_and_grad on 1000 f32 rows"
    );
}

/// The invertible linear layers on their own: on a warmed-up workspace their block methods
/// allocate nothing, on the matrix-product path (a 300-row block at D = 16) as on the row
/// kernels (a 5-row block), for blocks in standard layout and strided ones.
mod linear {
    use super::count;
    use flowgen::layers::permute::seeded_permutation;
    use flowgen::layers::{LuLinear, OrthogonalLinear};
    use flowgen::ndarray::{Array1, Array2, ShapeBuilder};
    use flowgen::rand::rngs::StdRng;
    use flowgen::rand::{RngExt, SeedableRng};
    use flowgen::{Layer, Workspace};

    const DIM: usize = 16;

    fn uniform(r: &mut StdRng, len: usize, scale: f64) -> Vec<f64> {
        (0..len)
            .map(|_| scale * r.random_range(-1.0..1.0))
            .collect()
    }

    /// A random (non-identity) LU layer and a random orthogonal one.
    fn layers(r: &mut StdRng) -> [(&'static str, Box<dyn Layer<f64>>); 2] {
        let m = DIM * (DIM - 1) / 2;
        let lu = LuLinear::from_parts(
            seeded_permutation(DIM, 7),
            uniform(r, m, 0.3),
            uniform(r, m, 0.3),
            uniform(r, DIM, 0.5),
        );
        let o = OrthogonalLinear::<f64>::new(DIM, r);
        [("lu", Box::new(lu)), ("orthogonal", Box::new(o))]
    }

    /// `forward_block`, `inverse_block` and `inverse_backward_block` on a block of `rows`
    /// (in standard layout, or column-major when `strided`), once to warm the workspace up,
    /// then counted over three rounds.
    fn block_methods_allocate_nothing(rows: usize, strided: bool) {
        let mut r = StdRng::seed_from_u64(1);
        for (name, l) in layers(&mut r) {
            let y = Array2::from_shape_vec((rows, DIM), uniform(&mut r, rows * DIM, 2.0)).unwrap();
            let x_bar =
                Array2::from_shape_vec((rows, DIM), uniform(&mut r, rows * DIM, 1.0)).unwrap();
            let w = Array1::from_vec(uniform(&mut r, rows, 1.0));
            let shape = (rows, DIM).set_f(strided);
            let mut block = Array2::<f64>::zeros(shape);
            let mut grad = Array2::<f64>::zeros(shape);
            let mut log_det = Array1::<f64>::zeros(rows);
            let mut param_grad = vec![0.0; l.param_len()];
            let mut ws = Workspace::default();
            let mut round = |ws: &mut Workspace<f64>| {
                block.assign(&y);
                l.forward_block(block.view_mut(), log_det.view_mut(), ws);
                l.inverse_block(block.view_mut(), log_det.view_mut(), ws);
                grad.assign(&x_bar);
                l.inverse_backward_block(
                    block.view(),
                    grad.view_mut(),
                    w.view(),
                    &mut param_grad,
                    ws,
                );
            };
            round(&mut ws);
            let ((), n) = count(|| {
                for _ in 0..3 {
                    round(&mut ws);
                }
            });
            assert_eq!(
                n, 0,
                "{name}, {rows} rows, strided {strided}: {n} allocations in 3 rounds"
            );
            assert!(
                block
                    .iter()
                    .chain(&grad)
                    .chain(&param_grad)
                    .all(|v| v.is_finite()),
                "{name}"
            );
        }
    }

    #[test]
    fn product_path_allocates_nothing() {
        block_methods_allocate_nothing(300, false);
    }

    #[test]
    fn product_path_on_strided_blocks_allocates_nothing() {
        block_methods_allocate_nothing(300, true);
    }

    #[test]
    fn row_kernels_allocate_nothing() {
        block_methods_allocate_nothing(5, false);
        block_methods_allocate_nothing(5, true);
    }
}

flowgen::flow! {
    pub struct Normed { dim = 3; float = f64;
        coupling(mask = even, hidden = [8]); batch_norm;
        coupling(mask = odd, hidden = [8]); batch_norm(momentum = 0.5, eps = 1e-4) }
}

/// `batch_norm`'s training passes (batch statistics, accumulated in `f64`) take their
/// scratch from the workspace: after a warm-up `nll_and_grad` allocates nothing,
/// `log_prob_and_grad` and `log_prob` only their returned arrays, and the scratch stops
/// growing.
#[test]
fn batch_norm_steady_state() {
    let model = Normed::new(&mut rng(1));
    let x: Array2<f64> = model.sample(300, &mut rng(2));
    let weight = Array1::from_elem(x.nrows(), -1.0 / x.nrows() as f64);
    let mut grad = vec![0.0; model.param_len()];
    let counts = one_thread(|| {
        let _ = model.nll_and_grad(x.view(), &mut grad).unwrap();
        let _ = model
            .log_prob_and_grad(x.view(), weight.view(), &mut grad, None)
            .unwrap();
        let _ = model.log_prob(x.view()).unwrap();
        let (ws, layers) = (training_workspace(), workspace());
        let counts = [
            count(|| model.nll_and_grad(x.view(), &mut grad).unwrap()).1,
            count(|| {
                model
                    .log_prob_and_grad(x.view(), weight.view(), &mut grad, None)
                    .unwrap()
            })
            .1,
            count(|| model.log_prob(x.view()).unwrap()).1,
        ];
        assert_eq!(
            (training_workspace(), workspace()),
            (ws, layers),
            "the scratch grew on a repeated call"
        );
        counts
    });
    assert_eq!(
        counts,
        [0, 1, 1],
        "allocations of nll_and_grad, log_prob_and_grad and log_prob (0, 1, 1 expected)"
    );
    assert!(grad.iter().all(|g| g.is_finite()));
}
