//! Invertible linear layers on all of ℝ^D: [`LuLinear`] (an LU-factored matrix, Glow's
//! invertible 1×1 convolution) and [`OrthogonalLinear`] (a product of Householder
//! reflections).
//!
//! A point, and every row of a small block, goes through scalar row kernels (triangular
//! products and solves, or one reflection after another) on a contiguous slice: a block
//! in standard layout in place, any other through a workspace buffer; the point and the
//! block rows get the same bits. A block of at least `2·max(D, 8)` rows instead forms the
//! layer's dense matrix (or its inverse) once and goes through matrix products, several
//! times faster at a few hundred rows; its values agree with the row kernels to rounding.
//! Either way each output row depends on its own input row only, so a non-finite row only
//! affects itself.

use ndarray::{ArrayBase, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Data, Ix2};
use rand::Rng;

use crate::float::Float;
use crate::layers::permute::{Permute, seeded_permutation};
use crate::layers::{Layer, check_block};
use crate::nets::matmul;
use crate::workspace::Workspace;

/// Independent partial sums of [`dot`].
const DOT_LANES: usize = 8;

/// `Σ a[i]·b[i]` over the shorter length, in a fixed order: [`DOT_LANES`] partial sums
/// (lane `l` adds the products `i ≡ l` of the whole chunks, a loop the compiler vectorises
/// and that hides the latency of the additions), summed pairwise, then the rest in index
/// order. Every kernel of this file uses it, so points and blocks get the same bits.
/// (Against one running sum, alternating runs: the orthogonal backward at D = 64 and the
/// row kernels at D = 16 about 20–30% faster.)
#[inline(always)]
fn dot<F: Float>(a: &[F], b: &[F]) -> F {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let whole = n - n % DOT_LANES;
    let mut acc = [F::zero(); DOT_LANES];
    for (ca, cb) in a[..whole]
        .chunks_exact(DOT_LANES)
        .zip(b[..whole].chunks_exact(DOT_LANES))
    {
        let ca: &[F; DOT_LANES] = ca.try_into().expect("a whole chunk");
        let cb: &[F; DOT_LANES] = cb.try_into().expect("a whole chunk");
        for l in 0..DOT_LANES {
            acc[l] += ca[l] * cb[l];
        }
    }
    let sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    a[whole..]
        .iter()
        .zip(&b[whole..])
        .fold(sum, |sum, (&a, &b)| sum + a * b)
}

/// `y[i] += a·x[i]`.
#[inline(always)]
fn axpy<F: Float>(y: &mut [F], a: F, x: &[F]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// Runs `f` on every row of `x` as a contiguous slice: in place when the block is in
/// standard layout, else through `buf` (at least `x.ncols()` elements), copied back.
fn for_each_row<F: Float>(mut x: ArrayViewMut2<'_, F>, buf: &mut [F], mut f: impl FnMut(&mut [F])) {
    let d = x.ncols();
    if d == 0 {
        return;
    }
    if let Some(s) = x.as_slice_mut() {
        s.chunks_exact_mut(d).for_each(f);
        return;
    }
    let buf = &mut buf[..d];
    for mut row in x.rows_mut() {
        buf.iter_mut().zip(row.iter()).for_each(|(b, &v)| *b = v);
        f(buf);
        row.iter_mut().zip(buf.iter()).for_each(|(r, &b)| *r = b);
    }
}

/// Runs `f(y_row, grad_row)` on every row pair, `grad_row` as a contiguous slice (in place
/// when `grad` is in standard layout, else through `buf`, copied back).
fn for_each_grad_row<F: Float>(
    y: ArrayView2<'_, F>,
    mut grad: ArrayViewMut2<'_, F>,
    buf: &mut [F],
    mut f: impl FnMut(ArrayView1<'_, F>, &mut [F]),
) {
    let d = grad.ncols();
    if d == 0 {
        return;
    }
    if let Some(g) = grad.as_slice_mut() {
        for (y_row, g_row) in y.rows().into_iter().zip(g.chunks_exact_mut(d)) {
            f(y_row, g_row);
        }
        return;
    }
    let buf = &mut buf[..d];
    for (y_row, mut g_row) in y.rows().into_iter().zip(grad.rows_mut()) {
        buf.iter_mut().zip(g_row.iter()).for_each(|(b, &v)| *b = v);
        f(y_row, buf);
        g_row.iter_mut().zip(buf.iter()).for_each(|(r, &b)| *r = b);
    }
}

/// Whether a block of `rows` goes through matrix products with the layer's dense matrix
/// (formed once per block, `O(D³)`) rather than the row kernels (`O(D²)` per row, but
/// scalar): from `2·max(D, 8)` rows. Measured with callgrind on 256-row `f32` blocks,
/// instructions per block, row kernels → products: `LuLinear` inverse D = 16 772 k → 74 k,
/// D = 64 5.95 M → 1.09 M; its backward D = 16 2.15 M → 403 k, D = 64 14.3 M → 3.2 M.
/// The products are [`matmul`]'s register tiles (no packing buffer), all scratch comes
/// from the workspace: nothing allocates once it has grown.
#[inline]
fn use_product(rows: usize, dim: usize) -> bool {
    rows >= 2 * dim.max(8)
}

/// `m` (row-major `dim × dim`) ← the matrix of the linear map `apply`, column `j` being
/// `apply(e_j)` computed in `col`.
fn dense_into<F: Float>(dim: usize, m: &mut [F], col: &mut [F], mut apply: impl FnMut(&mut [F])) {
    for j in 0..dim {
        col.fill(F::zero());
        col[j] = F::one();
        apply(col);
        for (i, &c) in col.iter().enumerate() {
            m[i * dim + j] = c;
        }
    }
}

/// `x ← x·mᵀ` (every row mapped by `m`, row-major `dim × dim`): one [`matmul`] into `out`
/// (`rows × dim` scratch), then copied back into `x`. A block in standard layout is read in
/// place; any other is first gathered into `gather` (`rows × dim` scratch, see
/// [`gather_len`]; unused otherwise).
fn map_rows_by<F: Float>(mut x: ArrayViewMut2<'_, F>, m: &[F], gather: &mut [F], out: &mut [F]) {
    let (rows, dim) = x.dim();
    let out = &mut out[..rows * dim];
    match x.as_slice_mut() {
        Some(s) => {
            matmul((rows, dim, dim), s, false, m, true, out, false);
            s.copy_from_slice(out);
        }
        None => {
            let gather = &mut gather[..rows * dim];
            gather_rows(x.view(), gather);
            matmul((rows, dim, dim), gather, false, m, true, out, false);
            let out = ArrayView2::from_shape((rows, dim), &*out).expect("rows × dim scratch");
            x.assign(&out);
        }
    }
}

/// The scratch a product needs to gather `x` (`rows × dim` elements unless it is in
/// standard layout, then none).
fn gather_len<S: Data>(x: &ArrayBase<S, Ix2>) -> usize {
    if x.is_standard_layout() { 0 } else { x.len() }
}

/// `buf` (row-major) ← the rows of `x`.
fn gather_rows<F: Float>(x: ArrayView2<'_, F>, buf: &mut [F]) {
    for (b, &v) in buf.iter_mut().zip(x.iter()) {
        *b = v;
    }
}

/// `c = a·b` for row-major `dim × dim` matrices.
fn square_product<F: Float>(dim: usize, a: &[F], b: &[F], c: &mut [F]) {
    matmul((dim, dim, dim), a, false, b, false, c, false);
}

/// Where row `i` of the packed strictly-lower triangle starts (row-major, row `i` holds
/// columns `0..i`).
#[inline(always)]
fn lower_start(i: usize) -> usize {
    (i * i - i) / 2
}

/// Where row `i` of the packed strictly-upper triangle of a `dim × dim` matrix starts
/// (row-major, row `i` holds columns `i + 1..dim`).
#[inline(always)]
fn upper_start(dim: usize, i: usize) -> usize {
    i * (2 * dim - i - 1) / 2
}

/// An invertible linear map `y = P·L·U·x` (Glow's invertible 1×1 convolution, LU-factored):
/// `P` a permutation fixed at construction (`(P·v)[i] = v[perm[i]]`, as [`Permute`]), `L`
/// unit lower-triangular, `U` upper-triangular with diagonal `exp(log_diag)`.
///
/// Forward log-det `Σ log_diag`; the inverse is `Pᵀ` then the two triangular solves
/// (`L` forward, `U` back), log-det `−Σ log_diag`.
///
/// Learnable tensors, in layout order: `lower` `[D(D−1)/2]` (the strictly-lower entries of
/// `L`, row-major: `L[1][0], L[2][0], L[2][1], …`), `upper` `[D(D−1)/2]` (the
/// strictly-upper entries of `U`, row-major: `U[0][1], …, U[0][D−1], U[1][2], …`),
/// `log_diag` `[D]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LuLinear<F> {
    perm: Permute,
    lower: Vec<F>,
    upper: Vec<F>,
    log_diag: Vec<F>,
}

impl<F: Float> LuLinear<F> {
    /// The identity map on `dim` coordinates (`P = L = U = I`).
    pub fn identity(dim: usize) -> Self {
        Self::with_permutation((0..dim).collect())
    }

    /// `P` from [`seeded_permutation`]`(dim, seed)` and `L = U = I`: the map starts as
    /// that permutation (the same as [`Permute::seeded`]).
    pub fn seeded(dim: usize, seed: u64) -> Self {
        Self::with_permutation(seeded_permutation(dim, seed))
    }

    /// `P` from `perm` (`y[i] = (L·U·x)[perm[i]]`) and `L = U = I`. Panics if `perm` is
    /// not a permutation of `0..perm.len()`.
    pub fn with_permutation(perm: Vec<usize>) -> Self {
        let dim = perm.len();
        let m = dim * dim.saturating_sub(1) / 2;
        Self {
            perm: Permute::new(perm),
            lower: vec![F::zero(); m],
            upper: vec![F::zero(); m],
            log_diag: vec![F::zero(); dim],
        }
    }

    /// From all its parts (packed as in the type's docs). Panics on a wrong length or a
    /// `perm` that is not a permutation.
    pub fn from_parts(perm: Vec<usize>, lower: Vec<F>, upper: Vec<F>, log_diag: Vec<F>) -> Self {
        let dim = perm.len();
        let m = dim * dim.saturating_sub(1) / 2;
        assert!(
            lower.len() == m && upper.len() == m && log_diag.len() == dim,
            "LuLinear::from_parts: dim {dim} needs lower and upper of {m} and log_diag of \
             {dim} values, got {}, {} and {}",
            lower.len(),
            upper.len(),
            log_diag.len()
        );
        Self {
            perm: Permute::new(perm),
            lower,
            upper,
            log_diag,
        }
    }

    /// The number of coordinates.
    pub fn dim(&self) -> usize {
        self.log_diag.len()
    }

    /// The fixed permutation `P`: `(P·v)[i] = v[perm[i]]`.
    pub fn permutation(&self) -> &[usize] {
        self.perm.as_slice()
    }

    /// The packed strictly-lower entries of `L` (row-major).
    pub fn lower(&self) -> &[F] {
        &self.lower
    }

    /// The packed strictly-upper entries of `U` (row-major).
    pub fn upper(&self) -> &[F] {
        &self.upper
    }

    /// The logs of `U`'s diagonal.
    pub fn log_diag(&self) -> &[F] {
        &self.log_diag
    }

    /// `L[i][0..i]`.
    #[inline(always)]
    fn lower_row(&self, i: usize) -> &[F] {
        let s = lower_start(i);
        &self.lower[s..s + i]
    }

    /// `U[i][i + 1..D]`.
    #[inline(always)]
    fn upper_row(&self, i: usize) -> &[F] {
        let d = self.dim();
        let s = upper_start(d, i);
        &self.upper[s..s + d - 1 - i]
    }

    /// `Σ log_diag`, in index order.
    fn log_det(&self) -> F {
        self.log_diag.iter().fold(F::zero(), |s, &l| s + l)
    }

    /// `x ← P·L·U·x` with `U[i][i] = diag(i)`.
    #[inline(always)]
    fn forward_row(&self, x: &mut [F], diag: impl Fn(usize) -> F) {
        self.multiply_upper(x, diag);
        let d = self.dim();
        // L·(U·x): row i reads x[..i], still unchanged when going down from the last row.
        for i in (0..d).rev() {
            let (head, tail) = x.split_at_mut(i);
            tail[0] += dot(self.lower_row(i), head);
        }
        Layer::<F>::forward_point(&self.perm, x, &mut []);
    }

    /// `x ← U·x` with `U[i][i] = diag(i)`: row i reads x[i..], which later rows leave
    /// alone until they are reached.
    #[inline(always)]
    fn multiply_upper(&self, x: &mut [F], diag: impl Fn(usize) -> F) {
        for i in 0..self.dim() {
            let (head, tail) = x.split_at_mut(i + 1);
            head[i] = diag(i) * head[i] + dot(self.upper_row(i), tail);
        }
    }

    /// `y ← U⁻¹·L⁻¹·Pᵀ·y` with `1/U[i][i] = inv_diag(i)`: the permutation, then forward
    /// substitution through `L`, then back substitution through `U`.
    #[inline(always)]
    fn inverse_row(&self, y: &mut [F], inv_diag: impl Fn(usize) -> F) {
        Layer::<F>::inverse_point(&self.perm, y, &mut []);
        self.solve_lower(y);
        self.solve_upper(y, inv_diag);
    }

    /// `v ← L⁻¹·v`: forward substitution.
    #[inline(always)]
    fn solve_lower(&self, v: &mut [F]) {
        for i in 0..self.dim() {
            let (head, tail) = v.split_at_mut(i);
            tail[0] -= dot(self.lower_row(i), head);
        }
    }

    /// `v ← U⁻¹·v`: back substitution, `1/U[i][i] = inv_diag(i)`.
    #[inline(always)]
    fn solve_upper(&self, v: &mut [F], inv_diag: impl Fn(usize) -> F) {
        for i in (0..self.dim()).rev() {
            let (head, tail) = v.split_at_mut(i + 1);
            head[i] = (head[i] - dot(self.upper_row(i), tail)) * inv_diag(i);
        }
    }

    /// Reverse mode through the inverse of one row. On entry `g` holds `∂J/∂x`, on exit
    /// `∂J/∂y`; `z` (then `L⁻¹·Pᵀ·y`) and `x` (then the inverse's output) are scratch.
    ///
    /// With `v = Pᵀy`, `z = L⁻¹v`, `x = U⁻¹z`: `z̄ = U⁻ᵀx̄`, `v̄ = L⁻ᵀz̄`, `ȳ = P·v̄`;
    /// `∂J/∂U[i][j] = −z̄_i·x_j` (so `∂J/∂log_diag_i = −z̄_i·x_i·U[i][i]`, plus `−w` from the
    /// log-det, added by the caller) and `∂J/∂L[i][j] = −v̄_i·z_j`.
    fn backward_row(
        &self,
        y: ArrayView1<'_, F>,
        g: &mut [F],
        z: &mut [F],
        x: &mut [F],
        inv_diag: &[F],
        (g_lower, g_upper, g_diag): (&mut [F], &mut [F], &mut [F]),
    ) {
        let d = self.dim();
        z.iter_mut().zip(y.iter()).for_each(|(z, &y)| *z = y);
        Layer::<F>::inverse_point(&self.perm, z, &mut []);
        self.solve_lower(z);
        x.copy_from_slice(z);
        self.solve_upper(x, |i| inv_diag[i]);
        // Uᵀ·z̄ = x̄ by columns of Uᵀ (rows of U), top down; r_i = z̄_i·U[i][i] once the
        // earlier rows are subtracted, so ∂J/∂log_diag_i = −r_i·x_i.
        for i in 0..d {
            let r = g[i];
            g_diag[i] -= r * x[i];
            let z_bar = r * inv_diag[i];
            g[i] = z_bar;
            let s = upper_start(d, i);
            axpy(&mut g[i + 1..], -z_bar, self.upper_row(i));
            axpy(&mut g_upper[s..s + d - 1 - i], -z_bar, &x[i + 1..]);
        }
        // Lᵀ·v̄ = z̄ by rows of L, bottom up.
        for i in (0..d).rev() {
            let v_bar = g[i];
            let s = lower_start(i);
            axpy(&mut g[..i], -v_bar, self.lower_row(i));
            axpy(&mut g_lower[s..s + i], -v_bar, &z[..i]);
        }
        Layer::<F>::forward_point(&self.perm, g, &mut []);
    }

    /// Reverse mode through the forward of one row. On entry `g` holds `∂J/∂x`, on exit
    /// `∂J/∂z`; `zc` (then a copy of `z`) and `a` (then `U·z`) are scratch.
    ///
    /// With `a = U·z`, `b = L·a`, `x = P·b`: `b̄ = Pᵀ·x̄`, `ā = Lᵀ·b̄`, `z̄ = Uᵀ·ā`;
    /// `∂J/∂L[i][j] = b̄_i·a_j` and `∂J/∂U[i][j] = ā_i·z_j` (so `∂J/∂log_diag_i =
    /// ā_i·z_i·U[i][i]`, plus `w` from the log-det, added by the caller).
    fn forward_backward_row(
        &self,
        z: ArrayView1<'_, F>,
        g: &mut [F],
        zc: &mut [F],
        a: &mut [F],
        diag: &[F],
        (g_lower, g_upper, g_diag): (&mut [F], &mut [F], &mut [F]),
    ) {
        let d = self.dim();
        zc.iter_mut().zip(z.iter()).for_each(|(c, &z)| *c = z);
        a.copy_from_slice(zc);
        self.multiply_upper(a, |i| diag[i]);
        Layer::<F>::inverse_point(&self.perm, g, &mut []);
        // Lᵀ·b̄ by rows of L, top down: row i reads b̄_i before any later row adds to it.
        for i in 0..d {
            let b_bar = g[i];
            let s = lower_start(i);
            axpy(&mut g[..i], b_bar, self.lower_row(i));
            axpy(&mut g_lower[s..s + i], b_bar, &a[..i]);
        }
        // Uᵀ·ā by rows of U, bottom up: row i reads ā_i before any earlier row adds to it.
        for i in (0..d).rev() {
            let a_bar = g[i];
            g_diag[i] += a_bar * zc[i] * diag[i];
            let s = upper_start(d, i);
            axpy(&mut g_upper[s..s + d - 1 - i], a_bar, &zc[i + 1..]);
            axpy(&mut g[i + 1..], a_bar, self.upper_row(i));
            g[i] = a_bar * diag[i];
        }
    }
}

impl<F: Float> LuLinear<F> {
    /// `w` ← the dense `W = P·L·U` (`a`, `b`, `t`: `dim × dim` scratch): `L·U` by one
    /// product, then its rows permuted.
    fn dense_forward(&self, w: &mut [F], [a, b, t]: [&mut [F]; 3], diag: &[F]) {
        let d = self.dim();
        self.dense_factors(a, b, diag);
        square_product(d, a, b, t);
        for (row, &p) in w.chunks_exact_mut(d).zip(self.perm.as_slice()) {
            row.copy_from_slice(&t[p * d..(p + 1) * d]);
        }
    }

    /// `l` ← the dense `L`, `u` ← the dense `U` with diagonal `diag` (row-major).
    fn dense_factors(&self, l: &mut [F], u: &mut [F], diag: &[F]) {
        let d = self.dim();
        l.fill(F::zero());
        u.fill(F::zero());
        for i in 0..d {
            l[i * d..i * d + i].copy_from_slice(self.lower_row(i));
            l[i * d + i] = F::one();
            u[i * d + i] = diag[i];
            u[i * d + i + 1..(i + 1) * d].copy_from_slice(self.upper_row(i));
        }
    }

    /// `w` ← the dense `W⁻¹ = U⁻¹·L⁻¹·Pᵀ`: the triangular inverses, their product, its
    /// columns permuted (`W⁻¹[i][c] = (U⁻¹L⁻¹)[i][perm[c]]`).
    fn dense_inverse(&self, w: &mut [F], [a, b, t]: [&mut [F]; 3], col: &mut [F], inv_diag: &[F]) {
        let d = self.dim();
        self.lower_inverse(a, col);
        self.upper_inverse(b, col, inv_diag);
        square_product(d, b, a, t);
        for (w_row, t_row) in w.chunks_exact_mut(d).zip(t.chunks_exact(d)) {
            for (w, &p) in w_row.iter_mut().zip(self.perm.as_slice()) {
                *w = t_row[p];
            }
        }
    }

    /// `m` ← `L⁻¹` (row-major), column `j` by forward substitution from row `j` (the
    /// entries above it are zero).
    fn lower_inverse(&self, m: &mut [F], col: &mut [F]) {
        let d = self.dim();
        m.fill(F::zero());
        for j in 0..d {
            col[j] = F::one();
            for i in j + 1..d {
                col[i] = -dot(&self.lower_row(i)[j..], &col[j..i]);
            }
            for i in j..d {
                m[i * d + j] = col[i];
            }
        }
    }

    /// `m` ← `U⁻¹` (row-major), column `j` by back substitution from row `j` (the entries
    /// below it are zero), `1/U[i][i] = inv_diag[i]`.
    fn upper_inverse(&self, m: &mut [F], col: &mut [F], inv_diag: &[F]) {
        let d = self.dim();
        m.fill(F::zero());
        for j in 0..d {
            col[j] = inv_diag[j];
            for i in (0..j).rev() {
                col[i] = -dot(&self.upper_row(i)[..j - i], &col[i + 1..=j]) * inv_diag[i];
            }
            for i in 0..=j {
                m[i * d + j] = col[i];
            }
        }
    }

    /// [`Layer::inverse_backward_block`] on a large block, as matrix products over all its
    /// rows at once (rows of `V`, `Z`, `X` are the `v`, `z`, `x` of `backward_row`):
    /// `V = Y` permuted by `Pᵀ`, `Z = V·L⁻ᵀ`, `X = Z·U⁻ᵀ`, `Z̄ = X̄·U⁻¹`, `V̄ = Z̄·L⁻¹`,
    /// `Ȳ = V̄` permuted by `P`; `∂J/∂U = −(Z̄ᵀX)` on and above the diagonal (times `U[i][i]`
    /// on it, for `log_diag`), `∂J/∂L = −(V̄ᵀZ)` below it. Workspace: `exp(log_diag)`, a
    /// column, `L⁻¹`, `U⁻¹`, `Z̄ᵀX`, `V̄ᵀZ`, and three `rows × D` matrices.
    fn backward_product(
        &self,
        y: ArrayView2<'_, F>,
        mut grad: ArrayViewMut2<'_, F>,
        (g_lower, g_upper, g_diag): (&mut [F], &mut [F], &mut [F]),
        ws: &mut Workspace<F>,
    ) {
        let (rows, d) = y.dim();
        let [diag, col, l_inv, u_inv, m_u, m_l, a, b, c, gather] = ws.slices([
            d,
            d,
            d * d,
            d * d,
            d * d,
            d * d,
            rows * d,
            rows * d,
            rows * d,
            gather_len(&grad),
        ]);
        diag.iter_mut()
            .zip(&self.log_diag)
            .for_each(|(e, &l)| *e = l.exp());
        self.lower_inverse(l_inv, col);
        // `m_l` holds `exp(−log_diag)` until it receives `V̄ᵀZ`.
        let inv_diag = &mut m_l[..d];
        inv_diag
            .iter_mut()
            .zip(&self.log_diag)
            .for_each(|(e, &l)| *e = (-l).exp());
        self.upper_inverse(u_inv, col, inv_diag);
        // a = V, b = Z, c = X.
        let inverse = self.perm.inverse_slice();
        for (v, y) in a.chunks_exact_mut(d).zip(y.rows()) {
            for (v, &k) in v.iter_mut().zip(inverse) {
                *v = y[k];
            }
        }
        let (l_inv, u_inv) = (&*l_inv, &*u_inv);
        matmul((rows, d, d), a, false, l_inv, true, b, false);
        matmul((rows, d, d), b, false, u_inv, true, c, false);
        // a = Z̄, then c = V̄.
        let x_bar = match grad.as_slice() {
            Some(g) => g,
            None => {
                gather_rows(grad.view(), gather);
                &*gather
            }
        };
        matmul((rows, d, d), x_bar, false, u_inv, false, a, false);
        matmul((d, rows, d), a, true, c, false, m_u, false);
        matmul((rows, d, d), a, false, l_inv, false, c, false);
        matmul((d, rows, d), c, true, b, false, m_l, false);
        let perm = self.perm.as_slice();
        for (mut g, v_bar) in grad.rows_mut().into_iter().zip(c.chunks_exact(d)) {
            for (g, &p) in g.iter_mut().zip(perm) {
                *g = v_bar[p];
            }
        }
        for i in 0..d {
            g_diag[i] -= m_u[i * d + i] * diag[i];
            let s = upper_start(d, i);
            for (g, &m) in g_upper[s..s + d - 1 - i]
                .iter_mut()
                .zip(&m_u[i * d + i + 1..(i + 1) * d])
            {
                *g -= m;
            }
            let s = lower_start(i);
            for (g, &m) in g_lower[s..s + i].iter_mut().zip(&m_l[i * d..i * d + i]) {
                *g -= m;
            }
        }
    }

    /// [`Layer::forward_backward_block`] on a large block, as matrix products over all its
    /// rows at once (rows of `A`, `B̄`, `Ā` are the `a`, `b̄`, `ā` of
    /// `forward_backward_row`): `A = Z·Uᵀ`, `B̄ = X̄` permuted by `Pᵀ`, `Ā = B̄·L`,
    /// `Z̄ = Ā·U`; `∂J/∂L = B̄ᵀA` below the diagonal, `∂J/∂U = ĀᵀZ` on and above it (times
    /// `U[i][i]` on it, for `log_diag`). Workspace: `exp(log_diag)`, `L`, `U`, `B̄ᵀA`,
    /// `ĀᵀZ`, three `rows × D` matrices, and a gathered copy of `z` when it is strided.
    fn forward_backward_product(
        &self,
        z: ArrayView2<'_, F>,
        mut grad: ArrayViewMut2<'_, F>,
        (g_lower, g_upper, g_diag): (&mut [F], &mut [F], &mut [F]),
        ws: &mut Workspace<F>,
    ) {
        let (rows, d) = z.dim();
        let [diag, l, u, m_l, m_u, a, b_bar, a_bar, gather] = ws.slices([
            d,
            d * d,
            d * d,
            d * d,
            d * d,
            rows * d,
            rows * d,
            rows * d,
            gather_len(&z),
        ]);
        diag.iter_mut()
            .zip(&self.log_diag)
            .for_each(|(e, &l)| *e = l.exp());
        self.dense_factors(l, u, diag);
        let (l, u) = (&*l, &*u);
        let z_s = match z.as_slice() {
            Some(z) => z,
            None => {
                gather_rows(z, gather);
                &*gather
            }
        };
        matmul((rows, d, d), z_s, false, u, true, a, false);
        let perm = self.perm.as_slice();
        for (b, g) in b_bar.chunks_exact_mut(d).zip(grad.rows()) {
            for (&g, &p) in g.iter().zip(perm) {
                b[p] = g;
            }
        }
        matmul((rows, d, d), b_bar, false, l, false, a_bar, false);
        matmul((d, rows, d), b_bar, true, a, false, m_l, false);
        matmul((d, rows, d), a_bar, true, z_s, false, m_u, false);
        // a = Z̄.
        matmul((rows, d, d), a_bar, false, u, false, a, false);
        match grad.as_slice_mut() {
            Some(g) => g.copy_from_slice(a),
            None => {
                let a = ArrayView2::from_shape((rows, d), &*a).expect("rows × dim scratch");
                grad.assign(&a);
            }
        }
        for i in 0..d {
            g_diag[i] += m_u[i * d + i] * diag[i];
            let s = upper_start(d, i);
            for (g, &m) in g_upper[s..s + d - 1 - i]
                .iter_mut()
                .zip(&m_u[i * d + i + 1..(i + 1) * d])
            {
                *g += m;
            }
            let s = lower_start(i);
            for (g, &m) in g_lower[s..s + i].iter_mut().zip(&m_l[i * d..i * d + i]) {
                *g += m;
            }
        }
    }
}

impl<F: Float> Layer<F> for LuLinear<F> {
    fn kind(&self) -> &'static str {
        "linear"
    }

    /// Computes `exp(log_diag)` once per block (workspace buffer 0); a small block is then
    /// mapped row by row (the point kernel, the same bits), a large one ([`use_product`])
    /// by one product with the dense `W = P·L·U` (formed in buffer 2 from `L·U`, in 4–6;
    /// the product in 3).
    fn forward_block(
        &self,
        x: ArrayViewMut2<'_, F>,
        mut log_det: ArrayViewMut1<'_, F>,
        ws: &mut Workspace<F>,
    ) {
        let (rows, d) = (x.nrows(), self.dim());
        check_block("linear", d, x.ncols(), rows, log_det.len());
        let product = use_product(rows, d);
        let (w_len, out_len, g_len) = if product {
            (d * d, rows * d, gather_len(&x))
        } else {
            (0, 0, 0)
        };
        let [diag, buf, w, out, a, b, t, gather] =
            ws.slices([d, d, w_len, out_len, w_len, w_len, w_len, g_len]);
        diag.iter_mut()
            .zip(&self.log_diag)
            .for_each(|(e, &l)| *e = l.exp());
        let diag = &*diag;
        if product {
            self.dense_forward(w, [a, b, t], diag);
            map_rows_by(x, w, gather, out);
        } else {
            for_each_row(x, buf, |row| self.forward_row(row, |i| diag[i]));
        }
        let ld = self.log_det();
        log_det.map_inplace(|l| *l += ld);
    }

    /// Computes `exp(−log_diag)` once per block (workspace buffer 0); a small block is then
    /// solved row by row (the point kernel, the same bits), a large one ([`use_product`])
    /// multiplied by the dense `W⁻¹ = U⁻¹·L⁻¹·Pᵀ` (formed in buffer 2 from the triangular
    /// inverses, in 4–6; the product in 3).
    fn inverse_block(
        &self,
        y: ArrayViewMut2<'_, F>,
        mut log_det: ArrayViewMut1<'_, F>,
        ws: &mut Workspace<F>,
    ) {
        let (rows, d) = (y.nrows(), self.dim());
        check_block("linear", d, y.ncols(), rows, log_det.len());
        let product = use_product(rows, d);
        let (w_len, out_len, g_len) = if product {
            (d * d, rows * d, gather_len(&y))
        } else {
            (0, 0, 0)
        };
        let [inv_diag, buf, w_inv, out, a, b, t, gather] =
            ws.slices([d, d, w_len, out_len, w_len, w_len, w_len, g_len]);
        inv_diag
            .iter_mut()
            .zip(&self.log_diag)
            .for_each(|(e, &l)| *e = (-l).exp());
        let inv_diag = &*inv_diag;
        if product {
            self.dense_inverse(w_inv, [a, b, t], buf, inv_diag);
            map_rows_by(y, w_inv, gather, out);
        } else {
            for_each_row(y, buf, |row| self.inverse_row(row, |i| inv_diag[i]));
        }
        let ld = -self.log_det();
        log_det.map_inplace(|l| *l += ld);
    }

    fn forward_point(&self, x: &mut [F], _scratch: &mut [F]) -> F {
        assert_eq!(
            x.len(),
            self.dim(),
            "linear: the point has the wrong length"
        );
        self.forward_row(x, |i| self.log_diag[i].exp());
        self.log_det()
    }

    fn inverse_point(&self, y: &mut [F], _scratch: &mut [F]) -> F {
        assert_eq!(
            y.len(),
            self.dim(),
            "linear: the point has the wrong length"
        );
        self.inverse_row(y, |i| (-self.log_diag[i]).exp());
        -self.log_det()
    }

    fn param_len(&self) -> usize {
        self.lower.len() + self.upper.len() + self.log_diag.len()
    }

    /// `lower` `[D(D−1)/2]`, `upper` `[D(D−1)/2]`, `log_diag` `[D]`.
    fn visit_params(&self, visit: &mut dyn FnMut(&str, &[usize], &[F])) {
        visit("lower", &[self.lower.len()], &self.lower);
        visit("upper", &[self.upper.len()], &self.upper);
        visit("log_diag", &[self.log_diag.len()], &self.log_diag);
    }

    fn visit_params_mut(&mut self, visit: &mut dyn FnMut(&str, &[usize], &mut [F])) {
        let (m, d) = (self.lower.len(), self.log_diag.len());
        visit("lower", &[m], &mut self.lower);
        visit("upper", &[m], &mut self.upper);
        visit("log_diag", &[d], &mut self.log_diag);
    }

    /// A small block: recomputes each row's inverse (workspace buffers: `exp(−log_diag)`,
    /// `z = L⁻¹Pᵀy`, `x`, a gradient row for strided blocks), then runs the transposed
    /// solves; see `backward_row` for the formulas. A large one ([`use_product`]): the same
    /// formulas as matrix products, see `backward_product`. The log-det adds
    /// `−Σ_rows weight` to every `∂J/∂log_diag_i`.
    fn inverse_backward_block(
        &self,
        y: ArrayView2<'_, F>,
        grad: ArrayViewMut2<'_, F>,
        weight: ArrayView1<'_, F>,
        param_grad: &mut [F],
        ws: &mut Workspace<F>,
    ) {
        let d = self.dim();
        check_block("linear", d, y.ncols(), y.nrows(), weight.len());
        assert_eq!(grad.dim(), y.dim(), "linear: y and grad shapes differ");
        assert_eq!(
            param_grad.len(),
            self.param_len(),
            "linear: param_grad has the wrong length"
        );
        let m = self.lower.len();
        let (g_lower, rest) = param_grad.split_at_mut(m);
        let (g_upper, g_diag) = rest.split_at_mut(m);
        let w_sum = weight.iter().fold(F::zero(), |s, &w| s + w);
        g_diag.iter_mut().for_each(|g| *g -= w_sum);
        if use_product(y.nrows(), d) {
            return self.backward_product(y, grad, (g_lower, g_upper, g_diag), ws);
        }
        let [inv_diag, z, x, buf] = ws.slices([d, d, d, d]);
        inv_diag
            .iter_mut()
            .zip(&self.log_diag)
            .for_each(|(e, &l)| *e = (-l).exp());
        for_each_grad_row(y, grad, buf, |y_row, g_row| {
            self.backward_row(
                y_row,
                g_row,
                z,
                x,
                inv_diag,
                (&mut *g_lower, &mut *g_upper, &mut *g_diag),
            );
        });
    }

    /// A small block: recomputes each row's `U·z` (workspace buffers: `exp(log_diag)`, a
    /// copy of `z`, `U·z`, a gradient row for strided blocks), then runs the transposed
    /// products; see `forward_backward_row` for the formulas. A large one
    /// ([`use_product`]): the same formulas as matrix products, see
    /// `forward_backward_product`. The log-det adds `Σ_rows weight` to every
    /// `∂J/∂log_diag_i`.
    fn forward_backward_block(
        &self,
        z: ArrayView2<'_, F>,
        grad: ArrayViewMut2<'_, F>,
        weight: ArrayView1<'_, F>,
        param_grad: &mut [F],
        ws: &mut Workspace<F>,
    ) {
        let d = self.dim();
        check_block("linear", d, z.ncols(), z.nrows(), weight.len());
        assert_eq!(grad.dim(), z.dim(), "linear: z and grad shapes differ");
        assert_eq!(
            param_grad.len(),
            self.param_len(),
            "linear: param_grad has the wrong length"
        );
        let m = self.lower.len();
        let (g_lower, rest) = param_grad.split_at_mut(m);
        let (g_upper, g_diag) = rest.split_at_mut(m);
        let w_sum = weight.iter().fold(F::zero(), |s, &w| s + w);
        g_diag.iter_mut().for_each(|g| *g += w_sum);
        if use_product(z.nrows(), d) {
            return self.forward_backward_product(z, grad, (g_lower, g_upper, g_diag), ws);
        }
        let [diag, zc, a, buf] = ws.slices([d, d, d, d]);
        diag.iter_mut()
            .zip(&self.log_diag)
            .for_each(|(e, &l)| *e = l.exp());
        for_each_grad_row(z, grad, buf, |z_row, g_row| {
            self.forward_backward_row(
                z_row,
                g_row,
                zc,
                a,
                diag,
                (&mut *g_lower, &mut *g_upper, &mut *g_diag),
            );
        });
    }
}

/// Which pass of an [`OrthogonalLinear`] a backward goes through: the forward applies the
/// reflections last to first, the inverse first to last, so either backward is the other's
/// with the order of the vectors reversed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    Forward,
    Inverse,
}

/// An orthogonal map `y = H_1·H_2·…·H_D·x`, the Householder reflections
/// `H_k = I − 2·v_k·v_kᵀ/‖v_k‖²`; log-det 0 both ways, the inverse is the transpose
/// (`x = H_D·…·H_1·y`). A `v_k` with `‖v_k‖² = 0` acts as the identity (zero gradient).
/// With `D = 1` the map is `y = −x` whatever `v_1 ≠ 0`.
///
/// Learnable tensor: `vectors` `[D, D]`, row `k` is `v_{k+1}` (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct OrthogonalLinear<F> {
    dim: usize,
    vectors: Vec<F>,
}

impl<F: Float> OrthogonalLinear<F> {
    /// A random orthogonal start: every `v_k` drawn from the standard normal distribution.
    pub fn new<R: Rng + ?Sized>(dim: usize, rng: &mut R) -> Self {
        let vectors = (0..dim * dim).map(|_| F::standard_normal(rng)).collect();
        Self { dim, vectors }
    }

    /// From the vectors, row-major `[dim, dim]` (row `k` is `v_{k+1}`). Panics on a wrong
    /// length.
    pub fn from_vectors(dim: usize, vectors: Vec<F>) -> Self {
        assert_eq!(
            vectors.len(),
            dim * dim,
            "OrthogonalLinear::from_vectors: dim {dim} needs {} values",
            dim * dim
        );
        Self { dim, vectors }
    }

    /// The number of coordinates.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The vectors, row-major `[D, D]`.
    pub fn vectors(&self) -> &[F] {
        &self.vectors
    }

    /// `v_{k+1}`: row `k`.
    #[inline(always)]
    fn vector(&self, k: usize) -> &[F] {
        &self.vectors[k * self.dim..(k + 1) * self.dim]
    }

    /// `x ← H·x = x − 2·(vᵀx/n)·v` for `n = ‖v‖²` (nothing when `n == 0`). The ratio is
    /// formed before scaling `v`, so a tiny but non-zero `v` does not overflow.
    #[inline(always)]
    fn reflect(v: &[F], n: F, x: &mut [F]) {
        if n == F::zero() {
            return;
        }
        let t = dot(v, x) / n;
        axpy(x, -(t + t), v);
    }

    /// `x ← H_1·…·H_D·x` (the last reflection first), `norm(k) = ‖v_{k+1}‖²`.
    #[inline(always)]
    fn forward_row(&self, x: &mut [F], norm: impl Fn(usize) -> F) {
        for k in (0..self.dim).rev() {
            Self::reflect(self.vector(k), norm(k), x);
        }
    }

    /// `y ← H_D·…·H_1·y` (the first reflection first).
    #[inline(always)]
    fn inverse_row(&self, y: &mut [F], norm: impl Fn(usize) -> F) {
        for k in 0..self.dim {
            Self::reflect(self.vector(k), norm(k), y);
        }
    }

    /// The index of the `k`-th reflection `pass` applies (from 0).
    #[inline(always)]
    fn applied(&self, pass: Pass, k: usize) -> usize {
        match pass {
            Pass::Inverse => k,
            Pass::Forward => self.dim - 1 - k,
        }
    }

    /// `x ← ` the map of `pass` applied to `x`.
    #[inline(always)]
    fn run(&self, pass: Pass, x: &mut [F], norms: &[F]) {
        match pass {
            Pass::Inverse => self.inverse_row(x, |k| norms[k]),
            Pass::Forward => self.forward_row(x, |k| norms[k]),
        }
    }

    /// `‖v_{k+1}‖²` for every `k`, into `norms`.
    fn norms(&self, norms: &mut [F]) {
        for (k, n) in norms.iter_mut().enumerate() {
            let v = self.vector(k);
            *n = dot(v, v);
        }
    }

    /// Reverse mode through `pass` on one row (`u` scratch), written for the inverse
    /// (the forward takes the vectors in reverse order). The inverse runs
    /// `u_{k+1} = H_k·u_k` from `u_0 = y`; going back, `u_k = H_k·u_{k+1}` (a reflection is
    /// its own inverse) and `ū_k = H_k·ū_{k+1}`. With `a = ū_{k+1}ᵀv`, `b = vᵀu_k`,
    /// `α = a/n`, `β = b/n`: `∂J/∂v += −2(β·ū_{k+1} + α·u_k) + 4αβ·v`.
    fn backward_row(
        &self,
        pass: Pass,
        y: ArrayView1<'_, F>,
        g: &mut [F],
        u: &mut [F],
        norms: &[F],
        gv: &mut [F],
    ) {
        let d = self.dim;
        u.iter_mut().zip(y.iter()).for_each(|(u, &y)| *u = y);
        self.run(pass, u, norms);
        let two = F::one() + F::one();
        for k in (0..d).rev() {
            let k = self.applied(pass, k);
            let n = norms[k];
            if n == F::zero() {
                continue;
            }
            let v = self.vector(k);
            Self::reflect(v, n, u);
            let alpha = dot(g, v) / n;
            let beta = dot(v, u) / n;
            let gv = &mut gv[k * d..(k + 1) * d];
            axpy(gv, -two * beta, g);
            axpy(gv, -two * alpha, u);
            axpy(gv, two * two * alpha * beta, v);
            axpy(g, -two * alpha, v);
        }
    }
}

impl<F: Float> OrthogonalLinear<F> {
    /// Both block directions: every `‖v_k‖²` once per block (workspace buffer 0); a small
    /// block is then mapped row by row (the point kernel, the same bits), a large one
    /// ([`use_product`]) by one product with the dense matrix of the map (`W`, or `Wᵀ`
    /// for the inverse; formed in buffer 2, the product in 3).
    fn block(&self, x: ArrayViewMut2<'_, F>, ws: &mut Workspace<F>, inverse: bool) {
        let (rows, d) = (x.nrows(), self.dim);
        let product = use_product(rows, d);
        let (w_len, out_len, g_len) = if product {
            (d * d, rows * d, gather_len(&x))
        } else {
            (0, 0, 0)
        };
        let [norms, buf, w, out, gather] = ws.slices([d, d, w_len, out_len, g_len]);
        self.norms(norms);
        let norms = &*norms;
        let apply = |v: &mut [F]| {
            if inverse {
                self.inverse_row(v, |k| norms[k]);
            } else {
                self.forward_row(v, |k| norms[k]);
            }
        };
        if product {
            dense_into(d, w, buf, apply);
            map_rows_by(x, w, gather, out);
        } else {
            for_each_row(x, buf, apply);
        }
    }
}

impl<F: Float> OrthogonalLinear<F> {
    /// `s ← H·s` for a row-major `dim × dim` `s` and `H = I − 2·v·vᵀ/n` (nothing when
    /// `n == 0`): `r = vᵀs/n` (in `r`), then every row `s_i −= 2·v_i·r`.
    fn reflect_left(v: &[F], n: F, s: &mut [F], r: &mut [F]) {
        if n == F::zero() {
            return;
        }
        let d = v.len();
        r.fill(F::zero());
        for (&v_i, row) in v.iter().zip(s.chunks_exact(d)) {
            axpy(r, v_i, row);
        }
        r.iter_mut().for_each(|r| *r = *r / n);
        for (&v_i, row) in v.iter().zip(s.chunks_exact_mut(d)) {
            axpy(row, -(v_i + v_i), r);
        }
    }

    /// [`Layer::inverse_backward_block`] on a large block ([`use_product`]), written for
    /// the inverse; [`Layer::forward_backward_block`] is the same with the vectors in
    /// reverse order (`H_k` read as `H_{D+1−k}`, so `W` is the dense inverse). The inverse
    /// maps `x = M·y` for `M = H_D·…·H_1 = Wᵀ`, so `Ȳ = X̄·Wᵀ`: one product with the dense
    /// forward matrix. For the vectors: with `u_k` the row entering `H_k` and `ū_{k+1}` the
    /// gradient leaving it, `S_k = Σ_rows ū_{k+1}·u_kᵀ = H_{k+1}·…·H_D · G · H_1·…·H_{k−1}`
    /// for `G = X̄ᵀ·Y` (one product over the rows), so `S_1 = H_2·…·H_D·G` and
    /// `S_{k+1} = H_{k+1}·S_k·H_k`, two rank-one updates each. Then, as `backward_row`
    /// summed over the rows, `∂J/∂v_k += −2(S_k·v + S_kᵀ·v)/n + 4(vᵀS_k·v)/n²·v` for
    /// `v = v_k`, `n = ‖v‖²`. Workspace: the norms, a column, `W`, `S`, two vectors, the
    /// `rows × D` product, and gathered copies of `y` and `grad` when they are strided.
    /// Callgrind, instructions per 256-row `f32` block, row kernels → this: D = 16 3.59 M →
    /// 262 k, D = 64 45.0 M → 8.24 M (most of it the `O(D³)` sweeps; the products ≈ 0.75 M).
    fn backward_product(
        &self,
        pass: Pass,
        y: ArrayView2<'_, F>,
        mut grad: ArrayViewMut2<'_, F>,
        param_grad: &mut [F],
        ws: &mut Workspace<F>,
    ) {
        let (rows, d) = y.dim();
        let nth = |k| self.applied(pass, k);
        let [norms, col, w, s, p, q, out, y_gather, g_gather] = ws.slices([
            d,
            d,
            d * d,
            d * d,
            d,
            d,
            rows * d,
            gather_len(&y),
            gather_len(&grad),
        ]);
        self.norms(norms);
        let norms = &*norms;
        let other = match pass {
            Pass::Inverse => Pass::Forward,
            Pass::Forward => Pass::Inverse,
        };
        dense_into(d, w, col, |v| self.run(other, v, norms));
        let y_s = match y.as_slice() {
            Some(y) => y,
            None => {
                gather_rows(y, y_gather);
                &*y_gather
            }
        };
        let x_bar = match grad.as_slice() {
            Some(g) => g,
            None => {
                gather_rows(grad.view(), g_gather);
                &*g_gather
            }
        };
        matmul((d, rows, d), x_bar, true, y_s, false, s, false);
        matmul((rows, d, d), x_bar, false, w, true, out, false);
        match grad.as_slice_mut() {
            Some(g) => g.copy_from_slice(out),
            None => {
                let out = ArrayView2::from_shape((rows, d), &*out).expect("rows × dim scratch");
                grad.assign(&out);
            }
        }
        for k in (1..d).rev() {
            Self::reflect_left(self.vector(nth(k)), norms[nth(k)], s, q);
        }
        let two = F::one() + F::one();
        let zero = F::zero();
        for k in 0..d {
            let (v, n) = (self.vector(nth(k)), norms[nth(k)]);
            // The next left reflection, `H_{k+1}`, if there is one that is not the identity.
            let next = (k + 1 < d && norms[nth(k + 1)] != zero)
                .then(|| (self.vector(nth(k + 1)), norms[nth(k + 1)]));
            if n != zero {
                for (p, row) in p.iter_mut().zip(s.chunks_exact(d)) {
                    *p = dot(row, v);
                }
            }
            // One sweep over the rows of `S`: `q = S_kᵀ·v`, then `S ← S·H_k` (row `i` less
            // `2(p_i/n)·v`), then `r = v_{k+1}ᵀ·S` for the left reflection (in `col`).
            q.fill(zero);
            col.fill(zero);
            for (i, row) in s.chunks_exact_mut(d).enumerate() {
                if n != zero {
                    axpy(q, v[i], row);
                    let t = p[i] / n;
                    axpy(row, -(t + t), v);
                }
                if let Some((u, _)) = next {
                    axpy(col, u[i], row);
                }
            }
            if n != zero {
                let c = dot(v, p) / n / n;
                let gv = &mut param_grad[nth(k) * d..(nth(k) + 1) * d];
                for (((g, &p), &q), &v) in gv.iter_mut().zip(&*p).zip(&*q).zip(v) {
                    *g += two * two * c * v - two * ((p + q) / n);
                }
            }
            if let Some((u, m)) = next {
                col.iter_mut().for_each(|r| *r = *r / m);
                for (&u_i, row) in u.iter().zip(s.chunks_exact_mut(d)) {
                    axpy(row, -(u_i + u_i), col);
                }
            }
        }
    }
}

impl<F: Float> Layer<F> for OrthogonalLinear<F> {
    fn kind(&self) -> &'static str {
        "linear"
    }

    fn forward_block(
        &self,
        x: ArrayViewMut2<'_, F>,
        log_det: ArrayViewMut1<'_, F>,
        ws: &mut Workspace<F>,
    ) {
        check_block("linear", self.dim, x.ncols(), x.nrows(), log_det.len());
        self.block(x, ws, false);
    }

    fn inverse_block(
        &self,
        y: ArrayViewMut2<'_, F>,
        log_det: ArrayViewMut1<'_, F>,
        ws: &mut Workspace<F>,
    ) {
        check_block("linear", self.dim, y.ncols(), y.nrows(), log_det.len());
        self.block(y, ws, true);
    }

    fn forward_point(&self, x: &mut [F], _scratch: &mut [F]) -> F {
        assert_eq!(x.len(), self.dim, "linear: the point has the wrong length");
        self.forward_row(x, |k| dot(self.vector(k), self.vector(k)));
        F::zero()
    }

    fn inverse_point(&self, y: &mut [F], _scratch: &mut [F]) -> F {
        assert_eq!(y.len(), self.dim, "linear: the point has the wrong length");
        self.inverse_row(y, |k| dot(self.vector(k), self.vector(k)));
        F::zero()
    }

    fn param_len(&self) -> usize {
        self.vectors.len()
    }

    /// `vectors` `[D, D]`.
    fn visit_params(&self, visit: &mut dyn FnMut(&str, &[usize], &[F])) {
        visit("vectors", &[self.dim, self.dim], &self.vectors);
    }

    fn visit_params_mut(&mut self, visit: &mut dyn FnMut(&str, &[usize], &mut [F])) {
        visit("vectors", &[self.dim, self.dim], &mut self.vectors);
    }

    /// Recomputes each row's inverse (workspace buffers: the norms, the running `u`, a
    /// gradient row for strided blocks) and walks the reflections back; see
    /// `backward_row`; a large block ([`use_product`]) takes matrix products instead, see
    /// `backward_product`. The log-det is 0, so `weight` does not matter.
    fn inverse_backward_block(
        &self,
        y: ArrayView2<'_, F>,
        grad: ArrayViewMut2<'_, F>,
        weight: ArrayView1<'_, F>,
        param_grad: &mut [F],
        ws: &mut Workspace<F>,
    ) {
        let d = self.dim;
        check_block("linear", d, y.ncols(), y.nrows(), weight.len());
        assert_eq!(grad.dim(), y.dim(), "linear: y and grad shapes differ");
        assert_eq!(
            param_grad.len(),
            self.param_len(),
            "linear: param_grad has the wrong length"
        );
        self.backward_block(Pass::Inverse, y, grad, param_grad, ws);
    }

    /// As the inverse backward, with the vectors in reverse order; see `Pass`. The log-det
    /// is 0, so `weight` does not matter.
    fn forward_backward_block(
        &self,
        z: ArrayView2<'_, F>,
        grad: ArrayViewMut2<'_, F>,
        weight: ArrayView1<'_, F>,
        param_grad: &mut [F],
        ws: &mut Workspace<F>,
    ) {
        let d = self.dim;
        check_block("linear", d, z.ncols(), z.nrows(), weight.len());
        assert_eq!(grad.dim(), z.dim(), "linear: z and grad shapes differ");
        assert_eq!(
            param_grad.len(),
            self.param_len(),
            "linear: param_grad has the wrong length"
        );
        self.backward_block(Pass::Forward, z, grad, param_grad, ws);
    }
}

impl<F: Float> OrthogonalLinear<F> {
    /// Both block backwards, through `pass` at its input `v`: row by row (workspace
    /// buffers: the norms, the running `u`, a gradient row for strided blocks), or by
    /// matrix products for a large block ([`use_product`]).
    fn backward_block(
        &self,
        pass: Pass,
        v: ArrayView2<'_, F>,
        grad: ArrayViewMut2<'_, F>,
        param_grad: &mut [F],
        ws: &mut Workspace<F>,
    ) {
        let d = self.dim;
        if use_product(v.nrows(), d) {
            return self.backward_product(pass, v, grad, param_grad, ws);
        }
        let [norms, u, buf] = ws.slices([d, d, d]);
        self.norms(norms);
        for_each_grad_row(v, grad, buf, |v_row, g_row| {
            self.backward_row(pass, v_row, g_row, u, norms, param_grad);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::checks::{
        Direction, all_entries, backward, check_input_gradient, check_param_gradient,
        set_flat_params,
    };
    use crate::testing::log_abs_det_fd;
    use ndarray::{Array1, Array2, ShapeBuilder, s};
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    const DIMS: [usize; 6] = [1, 2, 3, 5, 8, 16];

    fn rng(seed: u64) -> StdRng {
        StdRng::seed_from_u64(seed)
    }

    fn normals(rng: &mut StdRng, n: usize, scale: f64) -> Vec<f64> {
        (0..n).map(|_| scale * f64::standard_normal(rng)).collect()
    }

    /// A random LU layer: a seeded permutation, entries of `L` and `U` of scale 0.3,
    /// `log_diag` in (−0.7, 0.7).
    fn random_lu(dim: usize, rng: &mut StdRng) -> LuLinear<f64> {
        let m = dim * dim.saturating_sub(1) / 2;
        let seed = rng.random_range(0..u64::MAX);
        LuLinear::from_parts(
            seeded_permutation(dim, seed),
            normals(rng, m, 0.3),
            normals(rng, m, 0.3),
            (0..dim).map(|_| rng.random_range(-0.7..0.7)).collect(),
        )
    }

    /// Every layer the tests run on: both types at every dimension, random parameters.
    fn layers(seed: u64) -> Vec<(String, Box<dyn Layer<f64>>)> {
        let mut r = rng(seed);
        let mut out: Vec<(String, Box<dyn Layer<f64>>)> = Vec::new();
        for dim in DIMS {
            out.push((format!("lu dim {dim}"), Box::new(random_lu(dim, &mut r))));
            out.push((
                format!("orthogonal dim {dim}"),
                Box::new(OrthogonalLinear::<f64>::new(dim, &mut r)),
            ));
        }
        out
    }

    fn random_rows(rows: usize, dim: usize, rng: &mut StdRng) -> Array2<f64> {
        Array2::from_shape_simple_fn((rows, dim), || rng.random_range(-2.0..2.0))
    }

    fn forward(l: &dyn Layer<f64>, x: &Array2<f64>) -> (Array2<f64>, Array1<f64>) {
        let mut y = x.clone();
        let mut ld = Array1::zeros(x.nrows());
        l.forward_block(y.view_mut(), ld.view_mut(), &mut Workspace::default());
        (y, ld)
    }

    fn inverse(l: &dyn Layer<f64>, y: &Array2<f64>) -> (Array2<f64>, Array1<f64>) {
        let mut x = y.clone();
        let mut ld = Array1::zeros(y.nrows());
        l.inverse_block(x.view_mut(), ld.view_mut(), &mut Workspace::default());
        (x, ld)
    }

    fn point_forward(l: &dyn Layer<f64>, x: &[f64]) -> (Vec<f64>, f64) {
        assert_eq!(l.point_scratch(), 0);
        let mut y = x.to_vec();
        let ld = l.forward_point(&mut y, &mut []);
        (y, ld)
    }

    fn point_inverse(l: &dyn Layer<f64>, y: &[f64]) -> (Vec<f64>, f64) {
        let mut x = y.to_vec();
        let ld = l.inverse_point(&mut x, &mut []);
        (x, ld)
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
    }

    fn assert_close(a: &Array2<f64>, b: &Array2<f64>, tol: f64, what: &str) {
        assert_eq!(a.dim(), b.dim());
        for (&p, &q) in a.iter().zip(b) {
            assert!(close(p, q, tol), "{what}: {p} vs {q}");
        }
    }

    /// The dense matrix of a linear layer: its forward map applied to the unit vectors.
    fn dense(l: &dyn Layer<f64>, dim: usize) -> Array2<f64> {
        let eye = Array2::from_shape_fn((dim, dim), |(i, j)| f64::from(u8::from(i == j)));
        forward(l, &eye).0.reversed_axes()
    }

    #[test]
    fn dot_matches_the_plain_sum() {
        let mut r = rng(36);
        for n in 0..40 {
            let a = normals(&mut r, n, 1.0);
            let b = normals(&mut r, n + 3, 1.0);
            let plain: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            // Over the shorter length, either way round.
            assert!(close(dot(&a, &b), plain, 1e-14), "n = {n}");
            assert_eq!(dot(&a, &b), dot(&b, &a));
        }
    }

    #[test]
    fn lu_identity_is_the_identity() {
        let mut r = rng(1);
        for dim in DIMS {
            let l = LuLinear::<f64>::identity(dim);
            assert_eq!(l.permutation(), (0..dim).collect::<Vec<_>>().as_slice());
            let x = random_rows(7, dim, &mut r);
            let (y, ld) = forward(&l, &x);
            assert_eq!(y, x);
            assert!(ld.iter().all(|&l| l == 0.0));
            let (z, ld) = inverse(&l, &x);
            assert_eq!(z, x);
            assert!(ld.iter().all(|&l| l == 0.0));
        }
    }

    #[test]
    fn lu_seeded_starts_as_its_permutation() {
        let mut r = rng(2);
        for dim in DIMS {
            for seed in [0, 7, 42] {
                let l = LuLinear::<f64>::seeded(dim, seed);
                let p = Permute::seeded(dim, seed);
                assert_eq!(l.permutation(), seeded_permutation(dim, seed).as_slice());
                let x = random_rows(5, dim, &mut r);
                let (y, ld) = forward(&l, &x);
                let (py, _) = forward(&p, &x);
                assert_eq!(y, py);
                assert!(ld.iter().all(|&l| l == 0.0));
                let (z, _) = inverse(&l, &x);
                assert_eq!(z, inverse(&p, &x).0);
            }
        }
        // A non-trivial permutation at these sizes, so the test can fail.
        assert_ne!(seeded_permutation(16, 7), (0..16).collect::<Vec<_>>());
    }

    #[test]
    fn lu_is_the_product_of_its_packed_factors() {
        // D = 3 by hand: lower = [L10, L20, L21], upper = [U01, U02, U12].
        let l = LuLinear::from_parts(
            vec![2, 0, 1],
            vec![0.5, -1.0, 2.0],
            vec![3.0, -0.25, 1.5],
            vec![0.1, -0.2, 0.3],
        );
        let (d0, d1, d2) = (0.1f64.exp(), (-0.2f64).exp(), 0.3f64.exp());
        let lo = ndarray::arr2(&[[1.0, 0.0, 0.0], [0.5, 1.0, 0.0], [-1.0, 2.0, 1.0]]);
        let up = ndarray::arr2(&[[d0, 3.0, -0.25], [0.0, d1, 1.5], [0.0, 0.0, d2]]);
        // (P·v)[i] = v[perm[i]]: row i of P is e_{perm[i]}.
        let p = ndarray::arr2(&[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]);
        assert_close(&dense(&l, 3), &p.dot(&lo).dot(&up), 1e-15, "D = 3");
        assert_eq!(Layer::<f64>::param_len(&l), 3 + 3 + 3);

        // Larger: the packing formulas against a dense product built entry by entry.
        let mut r = rng(3);
        for dim in DIMS {
            let l = random_lu(dim, &mut r);
            let (mut lo, mut up) = (Array2::eye(dim), Array2::zeros((dim, dim)));
            let (mut a, mut b) = (0, 0);
            for i in 0..dim {
                for j in 0..i {
                    lo[[i, j]] = l.lower()[a];
                    a += 1;
                }
                up[[i, i]] = l.log_diag()[i].exp();
                for j in i + 1..dim {
                    up[[i, j]] = l.upper()[b];
                    b += 1;
                }
            }
            let p = Array2::from_shape_fn((dim, dim), |(i, j)| {
                f64::from(u8::from(l.permutation()[i] == j))
            });
            assert_close(&dense(&l, dim), &p.dot(&lo).dot(&up), 1e-14, "dense");
        }
    }

    #[test]
    fn lu_in_one_dimension_is_a_scale() {
        let l = LuLinear::from_parts(vec![0], vec![], vec![], vec![0.75]);
        assert_eq!(Layer::<f64>::param_len(&l), 1);
        let (y, ld) = point_forward(&l, &[2.0]);
        assert_eq!((y[0], ld), (2.0 * 0.75f64.exp(), 0.75));
        let (x, ld) = point_inverse(&l, &y);
        assert!(close(x[0], 2.0, 1e-15));
        assert_eq!(ld, -0.75);
    }

    /// The dense product `H_1·…·H_D` of the reflections.
    fn reflections_product(o: &OrthogonalLinear<f64>) -> Array2<f64> {
        let d = o.dim();
        let mut m = Array2::eye(d);
        for k in 0..d {
            let v = Array1::from(o.vectors()[k * d..(k + 1) * d].to_vec());
            let n = v.dot(&v);
            let mut h = Array2::<f64>::eye(d);
            for i in 0..d {
                for j in 0..d {
                    h[[i, j]] -= 2.0 * v[i] * v[j] / n;
                }
            }
            m = m.dot(&h);
        }
        m
    }

    #[test]
    fn orthogonal_is_the_product_of_its_reflections_and_preserves_norms() {
        let mut r = rng(4);
        for dim in DIMS {
            let o = OrthogonalLinear::<f64>::new(dim, &mut r);
            let w = dense(&o, dim);
            assert_close(&w, &reflections_product(&o), 1e-13, "product");
            // WᵀW = I, and not the identity itself.
            assert_close(&w.t().dot(&w), &Array2::eye(dim), 1e-13, "orthogonal");
            assert!(
                (&w - &Array2::<f64>::eye(dim))
                    .iter()
                    .any(|v| v.abs() > 0.1)
            );
            let x = random_rows(20, dim, &mut r);
            let (y, ld) = forward(&o, &x);
            assert!(ld.iter().all(|&l| l == 0.0));
            for (a, b) in x.rows().into_iter().zip(y.rows()) {
                assert!(close(a.dot(&a).sqrt(), b.dot(&b).sqrt(), 1e-13));
            }
        }
    }

    #[test]
    fn orthogonal_in_one_dimension_negates() {
        let o = OrthogonalLinear::from_vectors(1, vec![-0.3]);
        assert_eq!(point_forward(&o, &[1.25]), (vec![-1.25], 0.0));
        assert_eq!(point_inverse(&o, &[1.25]), (vec![-1.25], 0.0));
    }

    #[test]
    fn round_trip_both_ways() {
        let mut r = rng(5);
        for (name, l) in layers(6) {
            let x = random_rows(11, dim_of(&name), &mut r);
            let (y, ld_f) = forward(&*l, &x);
            let (back, ld_i) = inverse(&*l, &y);
            assert_close(&back, &x, 1e-12, &name);
            let (z, _) = inverse(&*l, &x);
            assert_close(&forward(&*l, &z).0, &x, 1e-12, &name);
            for (a, b) in ld_f.iter().zip(&ld_i) {
                assert_eq!(*a, -*b, "{name}");
            }
            // Points too.
            for row in x.rows() {
                let (y, _) = point_forward(&*l, row.as_slice().unwrap());
                let (back, _) = point_inverse(&*l, &y);
                for (a, b) in back.iter().zip(row) {
                    assert!(close(*a, *b, 1e-12), "{name}");
                }
            }
        }
    }

    /// The dimension of a test layer (from its name).
    fn dim_of(name: &str) -> usize {
        name.split(' ').next_back().unwrap().parse().unwrap()
    }

    #[test]
    fn forward_log_det_matches_finite_differences() {
        let mut r = rng(7);
        for (name, l) in layers(8) {
            let dim = dim_of(&name);
            for _ in 0..3 {
                let x = normals(&mut r, dim, 1.0);
                let (_, ld) = point_forward(&*l, &x);
                let fd = log_abs_det_fd(|v| point_forward(&*l, v).0, &x);
                assert!(close(ld, fd, 1e-7), "{name}: {ld} vs {fd}");
                // And not trivially zero for LU.
                if name.starts_with("lu") && dim > 1 {
                    assert!(ld.abs() > 1e-3, "{name}");
                }
            }
        }
    }

    #[test]
    fn inverse_log_det_is_minus_forward_log_det_at_the_image() {
        let mut r = rng(9);
        for (name, l) in layers(10) {
            let x = random_rows(6, dim_of(&name), &mut r);
            let (y, ld_f) = forward(&*l, &x);
            let (_, ld_i) = inverse(&*l, &y);
            assert_eq!(ld_i, -&ld_f, "{name}");
            let fd = log_abs_det_fd(|v| point_inverse(&*l, v).0, y.row(0).as_slice().unwrap());
            assert!(close(ld_i[0], fd, 1e-7), "{name}: {} vs {fd}", ld_i[0]);
        }
    }

    #[test]
    fn log_dets_are_added_to_what_is_there() {
        let mut r = rng(11);
        for (name, l) in layers(12) {
            let x = random_rows(5, dim_of(&name), &mut r);
            let start = Array1::from_shape_fn(5, |i| i as f64 - 1.5);
            let (_, ld) = forward(&*l, &x);
            let mut y = x.clone();
            let mut acc = start.clone();
            l.forward_block(y.view_mut(), acc.view_mut(), &mut Workspace::default());
            assert_eq!(acc, &start + &ld, "{name}");
            let mut acc = start.clone();
            l.inverse_block(y.view_mut(), acc.view_mut(), &mut Workspace::default());
            assert_eq!(acc, &start - &ld, "{name}");
        }
    }

    #[test]
    fn point_path_equals_block_path_bit_for_bit() {
        let mut r = rng(13);
        for (name, l) in layers(14) {
            let x = random_rows(9, dim_of(&name), &mut r);
            let (y, ld_f) = forward(&*l, &x);
            let (z, ld_i) = inverse(&*l, &x);
            for i in 0..9 {
                let row = x.row(i).to_vec();
                let (py, pl) = point_forward(&*l, &row);
                assert_eq!(py, y.row(i).to_vec(), "{name}");
                assert_eq!(pl, ld_f[i], "{name}");
                let (pz, pl) = point_inverse(&*l, &row);
                assert_eq!(pz, z.row(i).to_vec(), "{name}");
                assert_eq!(pl, ld_i[i], "{name}");
            }
        }
    }

    fn backward_inputs(
        rows: usize,
        dim: usize,
        r: &mut StdRng,
    ) -> (Array2<f64>, Array2<f64>, Array1<f64>) {
        let y = random_rows(rows, dim, r);
        let x_bar = Array2::from_shape_simple_fn((rows, dim), || f64::standard_normal(r));
        let w = Array1::from_shape_simple_fn(rows, || r.random_range(-2.0..2.0));
        (y, x_bar, w)
    }

    /// How closely a gradient must match its finite difference.
    fn agree(tol: f64) -> impl Fn(f64, f64) -> bool {
        move |a, b| close(a, b, tol)
    }

    /// The parameter gradient is not trivially zero, except for the one reflection of
    /// D = 1, which is −1 whatever its vector.
    fn assert_not_trivial(name: &str, pg: &[f64]) {
        if name == "orthogonal dim 1" {
            assert!(pg[0].abs() < 1e-12, "{name}: {}", pg[0]);
        } else {
            assert!(pg.iter().any(|g| g.abs() > 1e-3), "{name}");
        }
    }

    #[test]
    fn backward_input_gradient_matches_finite_differences() {
        let mut r = rng(15);
        for (name, l) in layers(16) {
            let (y, x_bar, w) = backward_inputs(3, dim_of(&name), &mut r);
            let entries = all_entries(&y);
            let dir = Direction::Inverse;
            check_input_gradient(&*l, dir, &y, &x_bar, &w, 1e-6, &entries, agree(1e-6), &name);
        }
    }

    #[test]
    fn backward_param_gradient_matches_finite_differences() {
        let mut r = rng(17);
        for (name, mut l) in layers(18) {
            let (y, x_bar, w) = backward_inputs(4, dim_of(&name), &mut r);
            let dir = Direction::Inverse;
            let pg = check_param_gradient(&mut *l, dir, &y, &x_bar, &w, 1e-6, agree(1e-6), &name);
            assert_not_trivial(&name, &pg);
        }
    }

    #[test]
    fn forward_backward_matches_finite_differences() {
        let mut r = rng(40);
        for (name, mut l) in layers(41) {
            let (z, x_bar, w) = backward_inputs(3, dim_of(&name), &mut r);
            let entries = all_entries(&z);
            let dir = Direction::Forward;
            check_input_gradient(&*l, dir, &z, &x_bar, &w, 1e-6, &entries, agree(1e-6), &name);
            let pg = check_param_gradient(&mut *l, dir, &z, &x_bar, &w, 1e-6, agree(1e-6), &name);
            assert_not_trivial(&name, &pg);
        }
    }

    /// The product path of the backward of `dir` (40 rows) against finite differences
    /// directly, input (four entries) and parameter gradients, both layers at D = 5 and 8.
    fn product_path_matches_fd(dir: Direction, seed: u64) {
        let mut r = rng(seed);
        for dim in [5, 8] {
            let mut lu = random_lu(dim, &mut r);
            let mut o = OrthogonalLinear::<f64>::new(dim, &mut r);
            let pair: [(&str, &mut dyn Layer<f64>); 2] = [("lu", &mut lu), ("orthogonal", &mut o)];
            for (name, l) in pair {
                let rows = 40;
                assert!(use_product(rows, dim));
                let (v, x_bar, w) = backward_inputs(rows, dim, &mut r);
                let name = format!("{name} dim {dim}");
                let entries = [(0, 0), (7, dim - 1), (39, dim / 2), (20, 1)];
                check_input_gradient(&*l, dir, &v, &x_bar, &w, 1e-6, &entries, agree(1e-5), &name);
                let pg = check_param_gradient(l, dir, &v, &x_bar, &w, 1e-6, agree(1e-5), &name);
                assert!(pg.iter().any(|g| g.abs() > 1e-3), "{name}");
            }
        }
    }

    #[test]
    fn product_backward_matches_finite_differences() {
        product_path_matches_fd(Direction::Inverse, 37);
    }

    #[test]
    fn forward_backward_product_path_matches_finite_differences() {
        product_path_matches_fd(Direction::Forward, 42);
    }

    /// The backward of `dir` adds to `param_grad` and gives the same input gradient again;
    /// the layers take `rows` rows in turn (5 take the row kernels, 40 the products).
    fn check_adds_to_param_grad(dir: Direction, seed: u64, layer_seed: u64, rows: &[usize]) {
        let mut r = rng(seed);
        for ((name, l), &rows) in layers(layer_seed).into_iter().zip(rows.iter().cycle()) {
            let (v, x_bar, w) = backward_inputs(rows, dim_of(&name), &mut r);
            let (g, pg) = backward(&*l, dir, &v, &x_bar, &w);
            let start: Vec<f64> = (0..pg.len()).map(|i| i as f64 * 0.5 - 3.0).collect();
            let mut acc = start.clone();
            let mut g2 = x_bar.clone();
            let ws = &mut Workspace::default();
            dir.backward_block(&*l, v.view(), g2.view_mut(), w.view(), &mut acc, ws);
            assert_eq!(g2, g, "{name}");
            for ((a, s), p) in acc.iter().zip(&start).zip(&pg) {
                assert!(close(*a, s + p, 1e-14), "{name}");
            }
        }
    }

    #[test]
    fn backward_adds_to_param_grad() {
        check_adds_to_param_grad(Direction::Inverse, 19, 20, &[5]);
    }

    #[test]
    fn forward_backward_adds_to_param_grad() {
        check_adds_to_param_grad(Direction::Forward, 45, 46, &[5, 5, 40, 40]);
    }

    /// The backward of `dir` on a column-major `v`, into every other column of a wider
    /// gradient, gives `(g, pg)` (its result on contiguous blocks) and leaves the other
    /// columns alone.
    #[allow(clippy::too_many_arguments)]
    fn strided_backward_matches(
        l: &dyn Layer<f64>,
        dir: Direction,
        v: &Array2<f64>,
        x_bar: &Array2<f64>,
        w: &Array1<f64>,
        (g, pg): (&Array2<f64>, &[f64]),
        ws: &mut Workspace<f64>,
        name: &str,
    ) {
        let (rows, dim) = v.dim();
        let mut v_f = Array2::<f64>::zeros((rows, dim).f());
        v_f.assign(v);
        let mut g_wide = Array2::<f64>::zeros((rows, 2 * dim));
        g_wide.slice_mut(s![.., 1..2 * dim;2]).assign(x_bar);
        let mut pg2 = vec![0.0; pg.len()];
        let g_view = g_wide.slice_mut(s![.., 1..2 * dim;2]);
        dir.backward_block(l, v_f.view(), g_view, w.view(), &mut pg2, ws);
        assert_eq!(g_wide.slice(s![.., 1..2 * dim;2]), g, "{name}");
        assert!(g_wide.slice(s![.., 0..2 * dim;2]).iter().all(|&v| v == 0.0));
        assert_eq!(pg2, pg, "{name}");
    }

    /// The backward of `dir` on pairs of rows (the row kernels) gives `(g, pg)`, its result
    /// on the whole block (the products).
    fn row_kernel_backward_matches(
        l: &dyn Layer<f64>,
        dir: Direction,
        v: &Array2<f64>,
        x_bar: &Array2<f64>,
        w: &Array1<f64>,
        (g, pg): (&Array2<f64>, &[f64]),
        name: &str,
    ) {
        let mut pg_rows = vec![0.0; pg.len()];
        let mut g_rows = x_bar.clone();
        for start in (0..v.nrows()).step_by(2) {
            let rows = s![start..start + 2, ..];
            dir.backward_block(
                l,
                v.slice(rows),
                g_rows.slice_mut(rows),
                w.slice(s![start..start + 2]),
                &mut pg_rows,
                &mut Workspace::default(),
            );
        }
        assert_close(g, &g_rows, 1e-12, name);
        for (a, b) in pg.iter().zip(&pg_rows) {
            assert!(close(*a, *b, 1e-11), "{name}: {a} vs {b}");
        }
    }

    /// The backward of `dir` at `v` (rows 1 and 3 not finite) keeps the other rows' input
    /// gradients as they are at `clean`.
    fn backward_keeps_clean_rows(
        l: &dyn Layer<f64>,
        dir: Direction,
        v: &Array2<f64>,
        clean: &Array2<f64>,
        x_bar: &Array2<f64>,
        name: &str,
    ) {
        let w = Array1::ones(v.nrows());
        let (g, _) = backward(l, dir, v, x_bar, &w);
        let (g_clean, _) = backward(l, dir, clean, x_bar, &w);
        for i in (0..v.nrows()).filter(|&i| i != 1 && i != 3) {
            assert_eq!(g.row(i), g_clean.row(i), "{name} {dir:?}");
        }
    }

    /// The backward of `dir` in f32 against f64 (to 1e-4 on 4 rows, 1e-3 on more), for
    /// blocks of each of `rows_list` rows.
    fn check_f32_matches_f64(dir: Direction, seed: u64, rows_list: &[usize]) {
        let mut r = rng(seed);
        for &rows in rows_list {
            let o64 = OrthogonalLinear::<f64>::new(5, &mut r);
            let o32 = OrthogonalLinear::<f32>::from_vectors(
                5,
                o64.vectors().iter().map(|&v| v as f32).collect(),
            );
            let lu64 = random_lu(5, &mut r);
            let lu32 = LuLinear::<f32>::from_parts(
                lu64.permutation().to_vec(),
                lu64.lower().iter().map(|&v| v as f32).collect(),
                lu64.upper().iter().map(|&v| v as f32).collect(),
                lu64.log_diag().iter().map(|&v| v as f32).collect(),
            );
            let pairs: [(&dyn Layer<f64>, &dyn Layer<f32>); 2] = [(&o64, &o32), (&lu64, &lu32)];
            for (l64, l32) in pairs {
                let (v, x_bar, w) = backward_inputs(rows, 5, &mut r);
                let (g, pg) = backward(l64, dir, &v, &x_bar, &w);
                let mut g32 = x_bar.mapv(|v| v as f32);
                let mut pg32 = vec![0.0f32; pg.len()];
                dir.backward_block(
                    l32,
                    v.mapv(|v| v as f32).view(),
                    g32.view_mut(),
                    w.mapv(|v| v as f32).view(),
                    &mut pg32,
                    &mut Workspace::default(),
                );
                let tol = if rows > 4 { 1e-3 } else { 1e-4 };
                for (a, b) in g32.iter().zip(&g).chain(pg32.iter().zip(&pg)) {
                    assert!(
                        close(f64::from(*a), *b, tol),
                        "{dir:?} {rows} rows: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn backward_matches_f64_in_f32() {
        check_f32_matches_f64(Direction::Inverse, 29, &[4]);
    }

    #[test]
    fn forward_backward_matches_f64_in_f32() {
        check_f32_matches_f64(Direction::Forward, 53, &[4, 40]);
    }

    #[test]
    fn params_are_visited_in_layout_order() {
        let mut r = rng(21);
        for dim in DIMS {
            let m = dim * (dim - 1) / 2;
            let mut lu = random_lu(dim, &mut r);
            let mut seen = Vec::new();
            Layer::<f64>::visit_params(&lu, &mut |n, s, v| {
                seen.push((n.to_string(), s.to_vec(), v.to_vec()))
            });
            assert_eq!(
                seen,
                vec![
                    ("lower".to_string(), vec![m], lu.lower().to_vec()),
                    ("upper".to_string(), vec![m], lu.upper().to_vec()),
                    ("log_diag".to_string(), vec![dim], lu.log_diag().to_vec()),
                ]
            );
            assert_eq!(Layer::<f64>::param_len(&lu), 2 * m + dim);
            let mut names = Vec::new();
            Layer::<f64>::visit_params_mut(&mut lu, &mut |n, s, v| {
                names.push((n.to_string(), s.to_vec(), v.len()))
            });
            assert_eq!(
                names,
                seen.iter()
                    .map(|(n, s, v)| (n.clone(), s.clone(), v.len()))
                    .collect::<Vec<_>>()
            );
            // Flat values written in layout order land in the named tensors.
            let flat: Vec<f64> = (0..2 * m + dim).map(|i| i as f64 * 1e-3).collect();
            set_flat_params(&mut lu, &flat);
            assert_eq!(lu.lower(), &flat[..m]);
            assert_eq!(lu.upper(), &flat[m..2 * m]);
            assert_eq!(lu.log_diag(), &flat[2 * m..]);

            let mut o = OrthogonalLinear::<f64>::new(dim, &mut r);
            let mut seen = Vec::new();
            Layer::<f64>::visit_params(&o, &mut |n, s, v| {
                seen.push((n.to_string(), s.to_vec(), v.to_vec()))
            });
            assert_eq!(
                seen,
                vec![("vectors".to_string(), vec![dim, dim], o.vectors().to_vec())]
            );
            let flat: Vec<f64> = (0..dim * dim).map(|i| i as f64 + 1.0).collect();
            set_flat_params(&mut o, &flat);
            assert_eq!(o.vectors(), flat.as_slice());
            assert_eq!(Layer::<f64>::kind(&o), "linear");
            assert_eq!(Layer::<f64>::kind(&lu), "linear");
        }
    }

    #[test]
    fn one_big_block_equals_blocks_of_256() {
        let mut r = rng(22);
        for (name, l) in layers(23) {
            let dim = dim_of(&name);
            let (y, x_bar, w) = backward_inputs(700, dim, &mut r);
            let (fy, fl) = forward(&*l, &y);
            let (iy, il) = inverse(&*l, &y);
            let (g, pg) = backward(&*l, Direction::Inverse, &y, &x_bar, &w);
            let mut ws = Workspace::default();
            let mut pg_blocks = vec![0.0; pg.len()];
            for start in (0..700).step_by(256) {
                let end = (start + 256).min(700);
                let rows = s![start..end, ..];
                let mut b = y.slice(rows).to_owned();
                let mut ld = Array1::zeros(end - start);
                l.forward_block(b.view_mut(), ld.view_mut(), &mut ws);
                assert_eq!(b, fy.slice(rows), "{name}");
                assert_eq!(ld, fl.slice(s![start..end]), "{name}");
                let mut b = y.slice(rows).to_owned();
                let mut ld = Array1::zeros(end - start);
                l.inverse_block(b.view_mut(), ld.view_mut(), &mut ws);
                assert_eq!(b, iy.slice(rows), "{name}");
                assert_eq!(ld, il.slice(s![start..end]), "{name}");
                let mut gb = x_bar.slice(rows).to_owned();
                l.inverse_backward_block(
                    y.slice(rows),
                    gb.view_mut(),
                    w.slice(s![start..end]),
                    &mut pg_blocks,
                    &mut ws,
                );
                assert_eq!(gb, g.slice(rows), "{name}");
            }
            for (a, b) in pg.iter().zip(&pg_blocks) {
                assert!(close(*a, *b, 1e-12), "{name}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn works_on_non_contiguous_blocks() {
        let mut r = rng(24);
        // 6 rows take the row kernels, 40 the matrix products.
        for ((name, l), rows) in layers(25)
            .into_iter()
            .zip([6, 40, 40, 6].into_iter().cycle())
        {
            let dim = dim_of(&name);
            let (y, x_bar, w) = backward_inputs(rows, dim, &mut r);
            let (fy, fl) = forward(&*l, &y);
            let (iy, il) = inverse(&*l, &y);
            let (g, pg) = backward(&*l, Direction::Inverse, &y, &x_bar, &w);
            let mut ws = Workspace::default();
            // Column-major: every row strided.
            let mut fortran = Array2::<f64>::zeros((rows, dim).f());
            fortran.assign(&y);
            let mut ld = Array1::zeros(rows);
            l.forward_block(fortran.view_mut(), ld.view_mut(), &mut ws);
            assert_eq!(fortran, fy, "{name}");
            assert_eq!(ld, fl, "{name}");
            // Every other column of a wider block; the others stay untouched.
            let mut wide = random_rows(rows, 2 * dim, &mut r);
            wide.slice_mut(s![.., 0..2 * dim;2]).assign(&y);
            let before = wide.clone();
            let mut ld = Array1::zeros(rows);
            l.inverse_block(wide.slice_mut(s![.., 0..2 * dim;2]), ld.view_mut(), &mut ws);
            assert_eq!(wide.slice(s![.., 0..2 * dim;2]), iy, "{name}");
            assert_eq!(
                wide.slice(s![.., 1..2 * dim;2]),
                before.slice(s![.., 1..2 * dim;2])
            );
            assert_eq!(ld, il, "{name}");
            // Backward on strided y and grad.
            let dir = Direction::Inverse;
            strided_backward_matches(&*l, dir, &y, &x_bar, &w, (&g, &pg), &mut ws, &name);
        }
    }

    #[test]
    fn workspace_does_not_grow_on_repeated_calls() {
        let mut r = rng(26);
        for (name, l) in layers(27) {
            let dim = dim_of(&name);
            let (y, x_bar, w) = backward_inputs(40, dim, &mut r);
            let mut ws = Workspace::default();
            let mut pg = vec![0.0; l.param_len()];
            let mut run = |ws: &mut Workspace<f64>| {
                let mut b = y.clone();
                let mut ld = Array1::zeros(40);
                l.forward_block(b.view_mut(), ld.view_mut(), ws);
                l.inverse_block(b.view_mut(), ld.view_mut(), ws);
                let mut f = Array2::<f64>::zeros((40, dim).f());
                f.assign(&y);
                l.inverse_block(f.view_mut(), ld.view_mut(), ws);
                let mut g = x_bar.clone();
                l.inverse_backward_block(f.view(), g.view_mut(), w.view(), &mut pg, ws);
            };
            run(&mut ws);
            let cap = ws.capacity();
            for _ in 0..3 {
                run(&mut ws);
            }
            assert_eq!(ws.capacity(), cap, "{name}");
        }
    }

    /// The product paths (a 300-row block at D = 16, contiguous and strided) do not grow
    /// the workspace after a warm-up call: with [`matmul`] they need no other heap memory
    /// (the integration test `tests/linear_allocations.rs` counts allocations).
    #[test]
    fn product_paths_do_not_grow_the_workspace() {
        let (rows, dim) = (300, 16);
        assert!(use_product(rows, dim));
        let mut r = rng(36);
        let lu = random_lu(dim, &mut r);
        let o = OrthogonalLinear::<f64>::new(dim, &mut r);
        let pair: [(&str, &dyn Layer<f64>); 2] = [("lu", &lu), ("orthogonal", &o)];
        for (name, l) in pair {
            let (y, x_bar, w) = backward_inputs(rows, dim, &mut r);
            let mut pg = vec![0.0; l.param_len()];
            let mut b = y.clone();
            let mut f = Array2::<f64>::zeros((rows, dim).f());
            let mut g = x_bar.clone();
            let mut g_f = Array2::<f64>::zeros((rows, dim).f());
            let mut ld = Array1::zeros(rows);
            let mut ws = Workspace::default();
            let mut run = |ws: &mut Workspace<f64>| {
                b.assign(&y);
                f.assign(&y);
                l.forward_block(b.view_mut(), ld.view_mut(), ws);
                l.inverse_block(b.view_mut(), ld.view_mut(), ws);
                l.forward_block(f.view_mut(), ld.view_mut(), ws);
                l.inverse_block(f.view_mut(), ld.view_mut(), ws);
                g.assign(&x_bar);
                g_f.assign(&x_bar);
                l.inverse_backward_block(y.view(), g.view_mut(), w.view(), &mut pg, ws);
                l.inverse_backward_block(f.view(), g_f.view_mut(), w.view(), &mut pg, ws);
            };
            run(&mut ws);
            let cap = ws.capacity();
            assert!(cap >= rows * dim, "{name}: the products use the workspace");
            for _ in 0..3 {
                run(&mut ws);
            }
            assert_eq!(ws.capacity(), cap, "{name}");
            assert_close(&f, &b, 1e-12, name);
            assert_close(&g_f, &g, 1e-12, name);
        }
    }

    #[test]
    fn works_in_f32() {
        let mut r = rng(28);
        for dim in [1, 4, 16] {
            let lu64 = random_lu(dim, &mut r);
            let lu = LuLinear::<f32>::from_parts(
                lu64.permutation().to_vec(),
                lu64.lower().iter().map(|&v| v as f32).collect(),
                lu64.upper().iter().map(|&v| v as f32).collect(),
                lu64.log_diag().iter().map(|&v| v as f32).collect(),
            );
            let o = OrthogonalLinear::<f32>::new(dim, &mut r);
            let f32_layers: [&dyn Layer<f32>; 2] = [&lu, &o];
            for l in f32_layers {
                let x = Array2::from_shape_simple_fn((33, dim), || r.random_range(-2.0f32..2.0));
                let mut v = x.clone();
                let mut ld = Array1::<f32>::zeros(33);
                let mut ws = Workspace::default();
                l.forward_block(v.view_mut(), ld.view_mut(), &mut ws);
                let ld_f = ld.clone();
                // The point path agrees with a large block closely, with a small one (the
                // same kernel) bit for bit, in f32 too.
                let mut small = x.slice(s![..4, ..]).to_owned();
                let mut small_ld = Array1::<f32>::zeros(4);
                l.forward_block(small.view_mut(), small_ld.view_mut(), &mut ws);
                let mut p = x.row(3).to_vec();
                assert_eq!(l.forward_point(&mut p, &mut []), ld_f[3]);
                assert_eq!(p, small.row(3).to_vec());
                for (a, b) in p.iter().zip(v.row(3)) {
                    assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
                }
                l.inverse_block(v.view_mut(), ld.view_mut(), &mut ws);
                for (a, b) in v.iter().zip(&x) {
                    assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
                }
                assert!(ld.iter().all(|&l| l.abs() <= 1e-6));
                // Backward runs and is finite.
                let mut g = Array2::<f32>::ones((33, dim));
                let mut pg = vec![0.0f32; l.param_len()];
                let w = Array1::<f32>::ones(33);
                l.inverse_backward_block(x.view(), g.view_mut(), w.view(), &mut pg, &mut ws);
                assert!(g.iter().chain(&pg).all(|v| v.is_finite()));
            }
        }
    }

    #[test]
    fn product_path_matches_the_row_kernels() {
        // 64 rows take the matrix products at every test dimension, 2 rows the row kernels
        // (whose values, log-dets and gradients the other tests check against finite
        // differences).
        let mut r = rng(34);
        for (name, l) in layers(35) {
            let dim = dim_of(&name);
            assert!(use_product(64, dim) && !use_product(2, dim));
            let (y, x_bar, w) = backward_inputs(64, dim, &mut r);
            let (fy, fl) = forward(&*l, &y);
            let (iy, il) = inverse(&*l, &y);
            let (g, pg) = backward(&*l, Direction::Inverse, &y, &x_bar, &w);
            for start in (0..64).step_by(2) {
                let rows = s![start..start + 2, ..];
                let (f2, fl2) = forward(&*l, &y.slice(rows).to_owned());
                assert_close(&f2, &fy.slice(rows).to_owned(), 1e-12, &name);
                assert_eq!(fl2, fl.slice(s![start..start + 2]), "{name}");
                let (i2, il2) = inverse(&*l, &y.slice(rows).to_owned());
                assert_close(&i2, &iy.slice(rows).to_owned(), 1e-12, &name);
                assert_eq!(il2, il.slice(s![start..start + 2]), "{name}");
            }
            let dir = Direction::Inverse;
            row_kernel_backward_matches(&*l, dir, &y, &x_bar, &w, (&g, &pg), &name);
        }
    }

    #[test]
    fn non_finite_and_extreme_rows_stay_in_their_row() {
        let mut r = rng(30);
        // Both types take the row kernels (6 rows) at some dimensions, the products (40) at others.
        for ((name, l), rows) in layers(31)
            .into_iter()
            .zip([6, 6, 40, 40].into_iter().cycle())
        {
            let dim = dim_of(&name);
            let mut x = random_rows(rows, dim, &mut r);
            let clean = x.clone();
            x[[1, 0]] = f64::NAN;
            x[[3, dim - 1]] = f64::INFINITY;
            x.row_mut(4).fill(1e150);
            for inverse_direction in [false, true] {
                let run = |b: &Array2<f64>| {
                    if inverse_direction {
                        inverse(&*l, b)
                    } else {
                        forward(&*l, b)
                    }
                };
                let (out, ld) = run(&x);
                let (out_clean, _) = run(&clean);
                for i in (0..rows).filter(|&i| i != 1 && i != 3 && i != 4) {
                    assert_eq!(out.row(i), out_clean.row(i), "{name}");
                }
                assert!(ld.iter().all(|l| l.is_finite()), "{name}");
                assert!(out.row(1).iter().any(|v| v.is_nan()), "{name}");
                assert!(out.row(4).iter().all(|v| v.is_finite()), "{name}");
                // A point alone gives the same.
                let (p, pl) = if inverse_direction {
                    point_inverse(&*l, x.row(4).as_slice().unwrap())
                } else {
                    point_forward(&*l, x.row(4).as_slice().unwrap())
                };
                for (a, b) in p.iter().zip(out.row(4)) {
                    assert!(close(*a, *b, 1e-12), "{name}: {a} vs {b}");
                }
                assert_eq!(pl, ld[4]);
            }
            // The backward pass keeps clean rows' input gradients clean.
            let x_bar = random_rows(rows, dim, &mut r);
            backward_keeps_clean_rows(&*l, Direction::Inverse, &x, &clean, &x_bar, &name);
        }
    }

    #[test]
    fn a_zero_householder_vector_is_the_identity_reflection_with_zero_gradient() {
        let mut r = rng(32);
        let dim = 4;
        let mut vectors = normals(&mut r, dim * dim, 1.0);
        vectors[2 * dim..3 * dim].fill(0.0);
        let o = OrthogonalLinear::from_vectors(dim, vectors.clone());
        let mut without = OrthogonalLinear::from_vectors(dim, vectors.clone());
        // The same map as the product of the three other reflections.
        let mut expected = Array2::eye(dim);
        for k in [0, 1, 3] {
            let v = Array1::from(vectors[k * dim..(k + 1) * dim].to_vec());
            let n = v.dot(&v);
            let h = Array2::eye(dim)
                - Array2::from_shape_fn((dim, dim), |(i, j)| 2.0 * v[i] * v[j] / n);
            expected = expected.dot(&h);
        }
        assert_close(&dense(&o, dim), &expected, 1e-14, "zero vector");
        // 5 rows take the row kernels, 40 the matrix products.
        for rows in [5, 40] {
            let (y, x_bar, w) = backward_inputs(rows, dim, &mut r);
            let (g, pg) = backward(&o, Direction::Inverse, &y, &x_bar, &w);
            assert!(g.iter().chain(&pg).all(|v| v.is_finite()));
            assert!(
                pg[2 * dim..3 * dim].iter().all(|&v| v == 0.0),
                "{rows} rows"
            );
            assert!(pg[..2 * dim].iter().any(|&v| v != 0.0), "{rows} rows");
        }
        let (y, _, _) = backward_inputs(5, dim, &mut r);
        // All vectors zero: the identity, and D = 1 too.
        set_flat_params(&mut without, &vec![0.0; dim * dim]);
        assert_eq!(forward(&without, &y).0, y);
        let one = OrthogonalLinear::from_vectors(1, vec![0.0]);
        assert_eq!(point_forward(&one, &[2.5]), (vec![2.5], 0.0));
    }

    #[test]
    fn tiny_householder_vectors_give_the_same_reflection() {
        let mut r = rng(33);
        let dim = 6;
        let vectors = normals(&mut r, dim * dim, 1.0);
        let o = OrthogonalLinear::from_vectors(dim, vectors.clone());
        let tiny =
            OrthogonalLinear::from_vectors(dim, vectors.iter().map(|v| v * 1e-150).collect());
        assert_close(&dense(&tiny, dim), &dense(&o, dim), 1e-12, "tiny");
        let (y, x_bar, w) = backward_inputs(3, dim, &mut r);
        let (g, pg) = backward(&tiny, Direction::Inverse, &y, &x_bar, &w);
        let (g_ref, pg_ref) = backward(&o, Direction::Inverse, &y, &x_bar, &w);
        assert_close(&g, &g_ref, 1e-12, "tiny gradient");
        // The map is scale-invariant in v: the gradient scales by 1/1e-150.
        for (a, b) in pg.iter().zip(&pg_ref) {
            assert!(a.is_finite() && close(a * 1e-150, *b, 1e-10), "{a} vs {b}");
        }
    }

    #[test]
    fn forward_backward_product_path_matches_the_row_kernels() {
        let mut r = rng(43);
        for (name, l) in layers(44) {
            let dim = dim_of(&name);
            assert!(use_product(64, dim) && !use_product(2, dim));
            let (z, x_bar, w) = backward_inputs(64, dim, &mut r);
            let dir = Direction::Forward;
            let (g, pg) = backward(&*l, dir, &z, &x_bar, &w);
            row_kernel_backward_matches(&*l, dir, &z, &x_bar, &w, (&g, &pg), &name);
        }
    }

    #[test]
    fn forward_backward_on_non_contiguous_blocks() {
        let mut r = rng(47);
        // 6 rows take the row kernels, 40 the matrix products.
        for ((name, l), rows) in layers(48)
            .into_iter()
            .zip([6, 40, 40, 6].into_iter().cycle())
        {
            let dim = dim_of(&name);
            let (z, x_bar, w) = backward_inputs(rows, dim, &mut r);
            let dir = Direction::Forward;
            let (g, pg) = backward(&*l, dir, &z, &x_bar, &w);
            let ws = &mut Workspace::default();
            strided_backward_matches(&*l, dir, &z, &x_bar, &w, (&g, &pg), ws, &name);
        }
    }

    #[test]
    fn forward_backward_does_not_grow_the_workspace() {
        let mut r = rng(49);
        for (name, l) in layers(50) {
            let dim = dim_of(&name);
            let mut ws = Workspace::default();
            let mut pg = vec![0.0; l.param_len()];
            let mut run = |ws: &mut Workspace<f64>, r: &mut StdRng| {
                for rows in [5, 40] {
                    let (z, x_bar, w) = backward_inputs(rows, dim, r);
                    let mut z_f = Array2::<f64>::zeros((rows, dim).f());
                    z_f.assign(&z);
                    let mut g = x_bar.clone();
                    l.forward_backward_block(z.view(), g.view_mut(), w.view(), &mut pg, ws);
                    l.forward_backward_block(z_f.view(), g.view_mut(), w.view(), &mut pg, ws);
                }
            };
            run(&mut ws, &mut r);
            let cap = ws.capacity();
            for _ in 0..3 {
                run(&mut ws, &mut r);
            }
            assert_eq!(ws.capacity(), cap, "{name}");
        }
    }

    #[test]
    fn forward_backward_keeps_non_finite_rows_in_their_row() {
        let mut r = rng(51);
        for ((name, l), rows) in layers(52)
            .into_iter()
            .zip([6, 6, 40, 40].into_iter().cycle())
        {
            let dim = dim_of(&name);
            let mut z = random_rows(rows, dim, &mut r);
            let clean = z.clone();
            z[[1, 0]] = f64::NAN;
            z[[3, dim - 1]] = f64::INFINITY;
            let x_bar = random_rows(rows, dim, &mut r);
            backward_keeps_clean_rows(&*l, Direction::Forward, &z, &clean, &x_bar, &name);
        }
    }

    #[test]
    #[should_panic(expected = "columns")]
    fn a_block_of_the_wrong_width_panics() {
        let l = LuLinear::<f64>::identity(3);
        let mut x = Array2::<f64>::zeros((2, 4));
        let mut ld = Array1::<f64>::zeros(2);
        l.forward_block(x.view_mut(), ld.view_mut(), &mut Workspace::default());
    }
}
