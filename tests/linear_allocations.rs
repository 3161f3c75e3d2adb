//! Heap use of the invertible linear layers, measured by a counting global allocator (per
//! thread, as in `allocations.rs`): on a warmed-up workspace, the block methods of
//! `LuLinear` and `OrthogonalLinear` allocate nothing, on the matrix-product path (a
//! 300-row block at D = 16) as on the row kernels (a 5-row block), for blocks in standard
//! layout and strided ones.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use flowgen::layers::permute::seeded_permutation;
use flowgen::layers::{LuLinear, OrthogonalLinear};
use flowgen::ndarray::{Array1, Array2, ShapeBuilder};
use flowgen::rand::rngs::StdRng;
use flowgen::rand::{RngExt, SeedableRng};
use flowgen::{Layer, Workspace};

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
        let x_bar = Array2::from_shape_vec((rows, DIM), uniform(&mut r, rows * DIM, 1.0)).unwrap();
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
            l.inverse_backward_block(block.view(), grad.view_mut(), w.view(), &mut param_grad, ws);
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
