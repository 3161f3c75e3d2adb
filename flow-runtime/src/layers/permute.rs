//! Permutations of the coordinates: `y[i] = x[perm[i]]`, log-det 0.

use std::ops::IndexMut;

use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis};

use crate::float::Float;
use crate::layers::Layer;
use crate::workspace::Workspace;

/// A fixed permutation of the coordinates, applied in place cycle by cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permute {
    perm: Vec<usize>,
    inverse: Vec<usize>,
    /// The least index of every cycle of length ≥ 2 (fixed points are skipped).
    leaders: Vec<usize>,
}

impl Permute {
    /// From an explicit permutation of `0..perm.len()` (`y[i] = x[perm[i]]`).
    /// Panics if it is not one; the `flow!` macro checks this at compile time.
    pub fn new(perm: Vec<usize>) -> Self {
        let n = perm.len();
        let mut inverse = vec![usize::MAX; n];
        for (i, &p) in perm.iter().enumerate() {
            assert!(
                p < n,
                "Permute::new: {perm:?} is not a permutation of 0..{n}: index {p} is out of range"
            );
            assert!(
                inverse[p] == usize::MAX,
                "Permute::new: {perm:?} is not a permutation of 0..{n}: index {p} appears twice"
            );
            inverse[p] = i;
        }
        // Walk every cycle once; its first index met is its least one.
        let mut leaders = Vec::new();
        let mut seen = vec![false; n];
        for start in 0..n {
            if seen[start] {
                continue;
            }
            seen[start] = true;
            let mut i = perm[start];
            if i == start {
                continue;
            }
            leaders.push(start);
            while i != start {
                seen[i] = true;
                i = perm[i];
            }
        }
        Self {
            perm,
            inverse,
            leaders,
        }
    }

    /// Reverses the order of `dim` coordinates.
    pub fn reverse(dim: usize) -> Self {
        Self::new((0..dim).rev().collect())
    }

    /// A pseudo-random permutation of `dim` coordinates, fixed by `seed`
    /// (Fisher–Yates driven by SplitMix64: the same on every platform and version).
    pub fn seeded(dim: usize, seed: u64) -> Self {
        Self::new(seeded_permutation(dim, seed))
    }

    /// The permutation: `y[i] = x[perm[i]]`.
    pub fn as_slice(&self) -> &[usize] {
        &self.perm
    }

    /// The inverse permutation: `x[i] = y[inverse[i]]`.
    pub fn inverse_slice(&self) -> &[usize] {
        &self.inverse
    }

    /// The number of coordinates.
    pub fn dim(&self) -> usize {
        self.perm.len()
    }
}

/// The permutation behind [`Permute::seeded`]: Fisher–Yates over the identity, driven by
/// SplitMix64 seeded with `seed`. The `flow!` macro replicates this exact algorithm to
/// track supports at compile time, so it must never change.
pub fn seeded_permutation(dim: usize, seed: u64) -> Vec<usize> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut perm: Vec<usize> = (0..dim).collect();
    for i in (1..dim).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        perm.swap(i, j);
    }
    perm
}

/// In place, `v[i] ← v[map[i]]` for every `i`: each cycle is rotated with one temporary.
/// `leaders` holds one index of every non-trivial cycle of `map`.
#[inline]
fn apply_cycles<F: Copy, V: IndexMut<usize, Output = F> + ?Sized>(
    v: &mut V,
    map: &[usize],
    leaders: &[usize],
) {
    for &start in leaders {
        let first = v[start];
        let mut i = start;
        loop {
            let k = map[i];
            if k == start {
                v[i] = first;
                break;
            }
            v[i] = v[k];
            i = k;
        }
    }
}

/// [`apply_cycles`] on every row of a block; contiguous rows go through slices.
#[inline]
fn apply_rows<F: Copy>(mut x: ArrayViewMut2<'_, F>, map: &[usize], leaders: &[usize]) {
    assert_eq!(
        x.ncols(),
        map.len(),
        "permute: the block has {} columns, the permutation {}",
        x.ncols(),
        map.len()
    );
    if leaders.is_empty() {
        return;
    }
    for mut row in x.axis_iter_mut(Axis(0)) {
        match row.as_slice_mut() {
            Some(s) => apply_cycles(s, map, leaders),
            None => apply_cycles(&mut row, map, leaders),
        }
    }
}

/// [`apply_cycles`] on one point.
#[inline]
fn apply_point<F: Copy>(x: &mut [F], map: &[usize], leaders: &[usize]) {
    assert_eq!(
        x.len(),
        map.len(),
        "permute: the point has {} coordinates, the permutation {}",
        x.len(),
        map.len()
    );
    apply_cycles(x, map, leaders);
}

impl<F: Float> Layer<F> for Permute {
    /// The inverse is `x[k] = y[inverse[k]]` with log-det 0, so `∂J/∂y[i] = ∂J/∂x[perm[i]]`:
    /// the gradient rows get the forward permutation (the transpose of the inverse's),
    /// in place, cycle by cycle. No parameters.
    fn inverse_backward_block(
        &self,
        y: ArrayView2<'_, F>,
        grad: ArrayViewMut2<'_, F>,
        _weight: ArrayView1<'_, F>,
        _param_grad: &mut [F],
        _ws: &mut Workspace<F>,
    ) {
        debug_assert_eq!(y.dim(), grad.dim(), "permute: y and grad shapes differ");
        apply_rows(grad, &self.perm, &self.leaders);
    }
    /// The forward is `x[i] = z[perm[i]]` with log-det 0, so `∂J/∂z[k] = ∂J/∂x[inverse[k]]`:
    /// the gradient rows get the inverse permutation (the transpose of the forward's),
    /// in place, cycle by cycle. No parameters.
    fn forward_backward_block(
        &self,
        z: ArrayView2<'_, F>,
        grad: ArrayViewMut2<'_, F>,
        _weight: ArrayView1<'_, F>,
        _param_grad: &mut [F],
        _ws: &mut Workspace<F>,
    ) {
        debug_assert_eq!(z.dim(), grad.dim(), "permute: z and grad shapes differ");
        apply_rows(grad, &self.inverse, &self.leaders);
    }
    fn kind(&self) -> &'static str {
        "permute"
    }
    fn forward_block(
        &self,
        x: ArrayViewMut2<'_, F>,
        _log_det: ArrayViewMut1<'_, F>,
        _ws: &mut Workspace<F>,
    ) {
        apply_rows(x, &self.perm, &self.leaders);
    }
    fn inverse_block(
        &self,
        y: ArrayViewMut2<'_, F>,
        _log_det: ArrayViewMut1<'_, F>,
        _ws: &mut Workspace<F>,
    ) {
        apply_rows(y, &self.inverse, &self.leaders);
    }
    fn forward_point(&self, x: &mut [F], _scratch: &mut [F]) -> F {
        apply_point(x, &self.perm, &self.leaders);
        F::zero()
    }
    fn inverse_point(&self, y: &mut [F], _scratch: &mut [F]) -> F {
        apply_point(y, &self.inverse, &self.leaders);
        F::zero()
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{Array1, Array2, ShapeBuilder, s};
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::*;
    use crate::layers::checks::Direction;

    fn naive_forward(perm: &[usize], x: &[f64]) -> Vec<f64> {
        perm.iter().map(|&p| x[p]).collect()
    }

    fn random_matrix(rng: &mut StdRng, rows: usize, cols: usize) -> Array2<f64> {
        Array2::from_shape_fn((rows, cols), |_| rng.random_range(-10.0..10.0))
    }

    fn examples() -> Vec<Permute> {
        vec![
            Permute::new(vec![]),
            Permute::new(vec![0]),
            Permute::new(vec![1, 0]),
            Permute::new(vec![2, 0, 1, 3]),
            Permute::new(vec![0, 1, 2, 3, 4]),
            Permute::new(vec![3, 4, 0, 2, 1, 6, 5]),
            Permute::reverse(6),
            Permute::reverse(7),
            Permute::seeded(5, 7),
            Permute::seeded(13, 1),
            Permute::seeded(32, 123),
        ]
    }

    #[test]
    fn forward_point_matches_the_naive_definition() {
        let mut rng = StdRng::seed_from_u64(1);
        for p in examples() {
            let n = p.dim();
            for _ in 0..5 {
                let x: Vec<f64> = (0..n).map(|_| rng.random_range(-10.0..10.0)).collect();
                let mut y = x.clone();
                let ld = Layer::<f64>::forward_point(&p, &mut y, &mut []);
                assert_eq!(ld, 0.0);
                assert_eq!(
                    y,
                    naive_forward(p.as_slice(), &x),
                    "perm {:?}",
                    p.as_slice()
                );
            }
        }
    }

    #[test]
    fn forward_block_matches_the_naive_definition() {
        let mut rng = StdRng::seed_from_u64(2);
        for p in examples() {
            let n = p.dim();
            let x = random_matrix(&mut rng, 6, n);
            let mut y = x.clone();
            let mut ld = Array1::<f64>::from_elem(6, 1.5);
            Layer::<f64>::forward_block(&p, y.view_mut(), ld.view_mut(), &mut Workspace::default());
            assert!(
                ld.iter().all(|&l| l == 1.5),
                "log-det must be left unchanged (0 added)"
            );
            for r in 0..6 {
                let expected = naive_forward(p.as_slice(), &x.row(r).to_vec());
                assert_eq!(y.row(r).to_vec(), expected, "perm {:?}", p.as_slice());
            }
        }
    }

    #[test]
    fn forward_then_inverse_is_the_identity_on_points() {
        let mut rng = StdRng::seed_from_u64(3);
        for p in examples() {
            let n = p.dim();
            for _ in 0..5 {
                let x: Vec<f32> = (0..n).map(|_| rng.random_range(-10.0..10.0)).collect();
                let mut v = x.clone();
                assert_eq!(Layer::<f32>::forward_point(&p, &mut v, &mut []), 0.0);
                assert_eq!(Layer::<f32>::inverse_point(&p, &mut v, &mut []), 0.0);
                assert_eq!(v, x);
                // And inverse then forward.
                Layer::<f32>::inverse_point(&p, &mut v, &mut []);
                Layer::<f32>::forward_point(&p, &mut v, &mut []);
                assert_eq!(v, x);
            }
        }
    }

    #[test]
    fn forward_then_inverse_is_the_identity_on_blocks() {
        let mut rng = StdRng::seed_from_u64(4);
        let mut ws = Workspace::default();
        for p in examples() {
            let n = p.dim();
            let x = random_matrix(&mut rng, 9, n);
            let mut v = x.clone();
            let mut ld = Array1::<f64>::zeros(9);
            Layer::<f64>::forward_block(&p, v.view_mut(), ld.view_mut(), &mut ws);
            Layer::<f64>::inverse_block(&p, v.view_mut(), ld.view_mut(), &mut ws);
            assert_eq!(v, x);
            assert!(ld.iter().all(|&l| l == 0.0));
        }
    }

    #[test]
    fn inverse_block_matches_the_inverse_permutation() {
        let mut rng = StdRng::seed_from_u64(5);
        let p = Permute::seeded(11, 99);
        let y = random_matrix(&mut rng, 4, 11);
        let mut x = y.clone();
        let mut ld = Array1::<f64>::zeros(4);
        Layer::<f64>::inverse_block(&p, x.view_mut(), ld.view_mut(), &mut Workspace::default());
        for r in 0..4 {
            for (i, &q) in p.as_slice().iter().enumerate() {
                // y[i] = x[perm[i]]
                assert_eq!(y[[r, i]], x[[r, q]]);
            }
        }
    }

    #[test]
    fn non_contiguous_rows_are_permuted_like_contiguous_ones() {
        let mut rng = StdRng::seed_from_u64(6);
        let p = Permute::new(vec![3, 4, 0, 2, 1]);
        // Column-major storage: every row is strided.
        let x = random_matrix(&mut rng, 7, 5);
        let mut fortran = Array2::<f64>::zeros((7, 5).f());
        fortran.assign(&x);
        assert!(fortran.row(0).as_slice().is_none());
        let mut c = x.clone();
        let mut ld = Array1::<f64>::zeros(7);
        let mut ws = Workspace::default();
        Layer::<f64>::forward_block(&p, c.view_mut(), ld.view_mut(), &mut ws);
        Layer::<f64>::forward_block(&p, fortran.view_mut(), ld.view_mut(), &mut ws);
        assert_eq!(c, fortran);
        // A column-sliced view (rows strided within a larger array) too.
        let mut wide = random_matrix(&mut rng, 7, 10);
        let before = wide.clone();
        Layer::<f64>::forward_block(&p, wide.slice_mut(s![.., 0..10;2]), ld.view_mut(), &mut ws);
        for r in 0..7 {
            let row: Vec<f64> = (0..5).map(|i| before[[r, 2 * i]]).collect();
            let expected = naive_forward(p.as_slice(), &row);
            for i in 0..5 {
                assert_eq!(wide[[r, 2 * i]], expected[i]);
                assert_eq!(wide[[r, 2 * i + 1]], before[[r, 2 * i + 1]]);
            }
        }
        Layer::<f64>::inverse_block(&p, wide.slice_mut(s![.., 0..10;2]), ld.view_mut(), &mut ws);
        assert_eq!(wide, before);
    }

    #[test]
    fn reverse_reverses() {
        assert_eq!(Permute::reverse(5).as_slice(), &[4, 3, 2, 1, 0]);
        assert_eq!(Permute::reverse(0).as_slice(), &[] as &[usize]);
        let mut x = [1.0f64, 2.0, 3.0, 4.0];
        Layer::<f64>::forward_point(&Permute::reverse(4), &mut x, &mut []);
        assert_eq!(x, [4.0, 3.0, 2.0, 1.0]);
    }

    #[test]
    fn seeded_is_a_deterministic_permutation() {
        for dim in 0..40 {
            for seed in [0u64, 1, 7, 42, u64::MAX] {
                let perm = seeded_permutation(dim, seed);
                let mut sorted = perm.clone();
                sorted.sort_unstable();
                assert_eq!(sorted, (0..dim).collect::<Vec<_>>());
                assert_eq!(perm, seeded_permutation(dim, seed));
                assert_eq!(Permute::seeded(dim, seed).as_slice(), perm.as_slice());
            }
        }
        // Different seeds do give different permutations.
        assert_ne!(seeded_permutation(16, 1), seeded_permutation(16, 2));
    }

    #[test]
    fn seeded_permutation_is_pinned() {
        // Pinned: the `flow!` macro replicates this algorithm, it must never change.
        assert_eq!(seeded_permutation(5, 7), vec![4, 1, 3, 0, 2]);
        assert_eq!(seeded_permutation(8, 0), vec![2, 5, 0, 3, 4, 6, 1, 7]);
        assert_eq!(
            seeded_permutation(10, 42),
            vec![0, 9, 5, 8, 6, 4, 7, 2, 1, 3]
        );
        assert_eq!(seeded_permutation(1, 7), vec![0]);
        assert_eq!(seeded_permutation(0, 7), Vec::<usize>::new());
    }

    #[test]
    fn cycle_leaders_cover_every_nontrivial_cycle_once() {
        let p = Permute::new(vec![3, 4, 0, 2, 1, 5, 7, 6]);
        // Cycles: (0 3 2), (1 4), (5), (6 7).
        assert_eq!(p.leaders, vec![0, 1, 6]);
        assert_eq!(p.inverse_slice(), &[2, 4, 3, 0, 1, 5, 7, 6]);
        assert!(Permute::new(vec![0, 1, 2]).leaders.is_empty());
    }

    fn dot(a: ndarray::ArrayView1<'_, f64>, b: ndarray::ArrayView1<'_, f64>) -> f64 {
        a.dot(&b)
    }

    /// Runs the backward of `dir` on `grad` in place (no parameters, unit weights).
    fn backward_in_place(p: &Permute, dir: Direction, v: &Array2<f64>, grad: &mut Array2<f64>) {
        let weight = Array1::<f64>::ones(v.nrows());
        let mut no_params: [f64; 0] = [];
        let ws = &mut Workspace::default();
        dir.backward_block::<f64>(
            p,
            v.view(),
            grad.view_mut(),
            weight.view(),
            &mut no_params,
            ws,
        );
    }

    /// Row `r` of `moved` is row `r` of `g` permuted as the backward of `dir` moves it:
    /// towards the base `∂J/∂y[i] = ∂J/∂x[perm[i]]`, towards the data
    /// `∂J/∂z[perm[i]] = ∂J/∂x[i]`.
    fn assert_moved<F: Float>(
        p: &Permute,
        dir: Direction,
        g: &Array2<F>,
        moved: &Array2<F>,
        r: usize,
    ) {
        for (i, &q) in p.as_slice().iter().enumerate() {
            match dir {
                Direction::Inverse => assert_eq!(moved[[r, i]], g[[r, q]]),
                Direction::Forward => assert_eq!(moved[[r, q]], g[[r, i]]),
            }
        }
    }

    /// `⟨map(v), g⟩ = ⟨v, backward(g)⟩` row by row on random blocks, the map being the pass
    /// of `dir`: the backward is its transpose, and only moves the gradient.
    fn backward_is_the_transpose(dir: Direction, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut ws = Workspace::default();
        for p in examples() {
            assert_eq!(Layer::<f64>::param_len(&p), 0);
            let n = p.dim();
            for rows in [1, 4, 9] {
                let v = random_matrix(&mut rng, rows, n);
                let g = random_matrix(&mut rng, rows, n);
                let mut x = v.clone();
                let mut ld = Array1::<f64>::zeros(rows);
                dir.block::<f64>(&p, x.view_mut(), ld.view_mut(), &mut ws);
                let mut gv = g.clone();
                backward_in_place(&p, dir, &v, &mut gv);
                for r in 0..rows {
                    let lhs = dot(x.row(r), g.row(r));
                    let rhs = dot(v.row(r), gv.row(r));
                    assert!(
                        (lhs - rhs).abs() <= 1e-12 * (1.0 + lhs.abs()),
                        "{dir:?} perm {:?}: {lhs} vs {rhs}",
                        p.as_slice()
                    );
                    assert_moved(&p, dir, &g, &gv, r);
                }
                // The gradient is only moved: the same multiset of values.
                let mut a = g.iter().copied().collect::<Vec<_>>();
                let mut b = gv.iter().copied().collect::<Vec<_>>();
                a.sort_by(f64::total_cmp);
                b.sort_by(f64::total_cmp);
                assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn inverse_backward_is_the_transpose_of_the_inverse() {
        backward_is_the_transpose(Direction::Inverse, 7);
    }

    #[test]
    fn forward_backward_is_the_transpose_of_the_forward() {
        backward_is_the_transpose(Direction::Forward, 10);
    }

    /// The backward of `dir` is the pass of the other direction (a permutation's transpose
    /// is its inverse): it equals that pass on the same block and undoes `dir`'s.
    fn backward_is_the_other_pass(dir: Direction, seed: u64) {
        let other = match dir {
            Direction::Inverse => Direction::Forward,
            Direction::Forward => Direction::Inverse,
        };
        let mut rng = StdRng::seed_from_u64(seed);
        let mut ws = Workspace::default();
        for p in examples() {
            let n = p.dim();
            let v = random_matrix(&mut rng, 5, n);
            let mut ld = Array1::<f64>::zeros(5);
            let mut mapped = v.clone();
            dir.block::<f64>(&p, mapped.view_mut(), ld.view_mut(), &mut ws);
            backward_in_place(&p, dir, &v, &mut mapped);
            assert_eq!(mapped, v, "{dir:?}");
            let mut by_other = v.clone();
            other.block::<f64>(&p, by_other.view_mut(), ld.view_mut(), &mut ws);
            let mut bwd = v.clone();
            backward_in_place(&p, dir, &v, &mut bwd);
            assert_eq!(by_other, bwd, "{dir:?}");
        }
    }

    #[test]
    fn inverse_backward_undoes_the_inverse_on_gradients() {
        backward_is_the_other_pass(Direction::Inverse, 8);
    }

    #[test]
    fn forward_backward_equals_the_inverse_map() {
        backward_is_the_other_pass(Direction::Forward, 11);
    }

    /// The backward of `dir` on a column-major gradient and on a column-sliced view inside
    /// a wider block equals it on a contiguous one; the other columns stay untouched.
    fn backward_on_strided_blocks(dir: Direction, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let p = Permute::new(vec![3, 4, 0, 2, 1]);
        let v = random_matrix(&mut rng, 6, 5);
        let g = random_matrix(&mut rng, 6, 5);
        let mut contiguous = g.clone();
        backward_in_place(&p, dir, &v, &mut contiguous);
        // Column-major gradient: every row strided.
        let mut fortran = Array2::<f64>::zeros((6, 5).f());
        fortran.assign(&g);
        backward_in_place(&p, dir, &v, &mut fortran);
        assert_eq!(contiguous, fortran);
        let mut wide = random_matrix(&mut rng, 6, 10);
        wide.slice_mut(s![.., 1..10;2]).assign(&g);
        let before = wide.clone();
        let weight = Array1::<f64>::ones(6);
        dir.backward_block::<f64>(
            &p,
            v.view(),
            wide.slice_mut(s![.., 1..10;2]),
            weight.view(),
            &mut [],
            &mut Workspace::default(),
        );
        assert_eq!(wide.slice(s![.., 1..10;2]), contiguous);
        assert_eq!(wide.slice(s![.., 0..10;2]), before.slice(s![.., 0..10;2]));
    }

    #[test]
    fn inverse_backward_on_strided_blocks() {
        backward_on_strided_blocks(Direction::Inverse, 9);
    }

    #[test]
    fn forward_backward_on_strided_blocks() {
        backward_on_strided_blocks(Direction::Forward, 12);
    }

    /// The backward of `dir` in f32 moves the gradient exactly.
    fn backward_in_f32(dir: Direction) {
        let p = Permute::seeded(9, 3);
        let v = Array2::<f32>::zeros((2, 9));
        let g = Array2::from_shape_fn((2, 9), |(r, c)| (10 * r + c) as f32);
        let mut gv = g.clone();
        let weight = Array1::<f32>::ones(2);
        dir.backward_block::<f32>(
            &p,
            v.view(),
            gv.view_mut(),
            weight.view(),
            &mut [],
            &mut Workspace::default(),
        );
        for r in 0..2 {
            assert_moved(&p, dir, &g, &gv, r);
        }
    }

    #[test]
    fn inverse_backward_in_f32() {
        backward_in_f32(Direction::Inverse);
    }

    #[test]
    fn forward_backward_in_f32() {
        backward_in_f32(Direction::Forward);
    }

    #[test]
    #[should_panic(expected = "is not a permutation of 0..3: index 0 appears twice")]
    fn new_panics_on_a_repeated_index() {
        Permute::new(vec![0, 0, 1]);
    }

    #[test]
    #[should_panic(expected = "is not a permutation of 0..2: index 2 is out of range")]
    fn new_panics_on_an_out_of_range_index() {
        Permute::new(vec![0, 2]);
    }

    #[test]
    #[should_panic(expected = "columns")]
    fn a_block_of_the_wrong_width_panics() {
        let p = Permute::reverse(3);
        let mut x = Array2::<f64>::zeros((2, 4));
        let mut ld = Array1::<f64>::zeros(2);
        Layer::<f64>::forward_block(&p, x.view_mut(), ld.view_mut(), &mut Workspace::default());
    }
}
