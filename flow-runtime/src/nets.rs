//! Small MLP conditioners, on row blocks and on single points (stack scratch, no heap).
//!
//! A batch of rows goes through [`Mlp::forward_block`]: per layer one pass of a
//! register-tiled kernel (`Dense::block_into`: tiles of 4 rows × 16 `f32` outputs, the
//! weights read from a small panel on the stack, the bias and the activation applied as each
//! tile is stored), into caller-provided scratch; no packing of the rows and no allocation,
//! which matters for the small matrices of a conditioner (a 64 × 64 layer on a few hundred
//! rows). A single point goes through [`Mlp::hidden_point`] (the last hidden activation,
//! in scratch whose size depends only on the hidden widths) and then
//! [`Mlp::output_point`] for a window of output units at a time, so no buffer ever has to
//! be as large as the output. Both add each output's terms in the same order, with the same
//! (fused where the processor has FMA) multiply-adds: a point and a row of any block get the
//! same values, bit for bit. The backward pass ([`Mlp::backward_block`]) runs the same
//! tiles on the transposed products `xᵀ·δ` (added into the weight gradient) and `δ·Wᵀ`,
//! reading the transposed operands in place: no packing buffer and no allocation either.

use std::any::TypeId;

use ndarray::linalg::general_mat_mul;
use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2};
use rand::{Rng, RngExt};

use crate::float::Float;
use crate::made::Group;

#[cfg(target_arch = "x86_64")]
mod avx2_f32;

/// The hidden activation of a conditioner (conditioners need not be invertible).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// max(0, x)
    Relu,
    /// tanh x
    Tanh,
    /// x for x > 0, exp(x) − 1 otherwise
    Elu,
    /// x·sigmoid(x)
    Silu,
}

/// The logistic sigmoid `1/(1+exp(−x))`, without overflow for either sign of `x`.
#[inline(always)]
fn sigmoid<F: Float>(x: F) -> F {
    if x >= F::zero() {
        F::one() / (F::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (F::one() + e)
    }
}

impl Activation {
    /// The activation of the pre-activation `x`. NaN stays NaN.
    #[inline(always)]
    pub fn apply<F: Float>(self, x: F) -> F {
        match self {
            // Written so that a NaN propagates (`F::max` would drop it).
            Activation::Relu => {
                if x < F::zero() {
                    F::zero()
                } else {
                    x
                }
            }
            Activation::Tanh => x.tanh(),
            Activation::Elu => {
                if x > F::zero() {
                    x
                } else {
                    x.exp_m1()
                }
            }
            Activation::Silu => x * sigmoid(x),
        }
    }

    /// `v = act(v)` for every value of `v`.
    #[inline]
    pub fn apply_slice<F: Float>(self, v: &mut [F]) {
        self.add_bias_apply(v, &[]);
    }

    /// `v = act(v + bias)` for every row of `v` (row-major, rows of `bias.len()` values),
    /// or `v = act(v)` when `bias` is empty. One loop per variant, so the variant is not
    /// matched per value and the loop vectorises where the activation allows.
    #[inline]
    pub fn add_bias_apply<F: Float>(self, v: &mut [F], bias: &[F]) {
        #[inline(always)]
        fn run<F: Float>(v: &mut [F], bias: &[F], f: impl Fn(F) -> F) {
            if bias.is_empty() {
                v.iter_mut().for_each(|x| *x = f(*x));
            } else {
                for row in v.chunks_exact_mut(bias.len()) {
                    for (x, &b) in row.iter_mut().zip(bias) {
                        *x = f(*x + b);
                    }
                }
            }
        }
        match self {
            Activation::Relu => run(v, bias, |x| Activation::Relu.apply(x)),
            Activation::Tanh => run(v, bias, |x| Activation::Tanh.apply(x)),
            Activation::Elu => run(v, bias, |x| Activation::Elu.apply(x)),
            Activation::Silu => run(v, bias, |x| Activation::Silu.apply(x)),
        }
    }

    /// `z = g · act'(z)` elementwise (`z` the pre-activations, `g` the gradients of the
    /// activations): one loop per variant, as in [`Activation::add_bias_apply`].
    #[inline]
    pub(crate) fn mul_derivative<F: Float>(self, z: &mut [F], g: &[F]) {
        assert_eq!(z.len(), g.len(), "mul_derivative: lengths differ");
        #[inline(always)]
        fn run<F: Float>(z: &mut [F], g: &[F], d: impl Fn(F) -> F) {
            for (z, &g) in z.iter_mut().zip(g) {
                *z = g * d(*z);
            }
        }
        match self {
            Activation::Relu => run(z, g, |x| Activation::Relu.derivative(x)),
            Activation::Tanh => run(z, g, |x| Activation::Tanh.derivative(x)),
            Activation::Elu => run(z, g, |x| Activation::Elu.derivative(x)),
            Activation::Silu => run(z, g, |x| Activation::Silu.derivative(x)),
        }
    }

    /// The derivative of [`Activation::apply`] with respect to the pre-activation `x`
    /// (for `Relu`, 0 at `x = 0`, as PyTorch does).
    #[inline(always)]
    pub fn derivative<F: Float>(self, x: F) -> F {
        match self {
            Activation::Relu => {
                if x > F::zero() {
                    F::one()
                } else if x <= F::zero() {
                    F::zero()
                } else {
                    x // NaN
                }
            }
            Activation::Tanh => {
                let t = x.tanh();
                F::one() - t * t
            }
            Activation::Elu => {
                if x > F::zero() {
                    F::one()
                } else {
                    x.exp()
                }
            }
            // d/dx x·σ(x) = σ(x) + x·σ(x)·σ(−x), with 1 − σ(x) = σ(−x) computed stably.
            Activation::Silu => {
                let s = sigmoid(x);
                s + x * s * sigmoid(-x)
            }
        }
    }
}

/// A dense layer: `out = input · weight + bias`, `weight` of shape (inputs, outputs).
#[derive(Debug, Clone, PartialEq)]
pub struct Dense<F> {
    /// (inputs, outputs)
    pub weight: Array2<F>,
    /// (outputs,)
    pub bias: Array1<F>,
}

impl<F: Float> Dense<F> {
    /// Number of inputs.
    #[inline]
    pub fn inputs(&self) -> usize {
        self.weight.nrows()
    }

    /// Number of outputs.
    #[inline]
    pub fn outputs(&self) -> usize {
        self.weight.ncols()
    }

    /// PyTorch's `nn.Linear` default: weights and biases U(−1/√inputs, 1/√inputs).
    fn uniform<R: Rng + ?Sized>(inputs: usize, outputs: usize, rng: &mut R) -> Self {
        let bound = 1.0 / (inputs as f64).sqrt();
        let mut draw = || F::of(rng.random_range(-bound..bound));
        let weight = Array2::from_shape_simple_fn((inputs, outputs), &mut draw);
        let bias = Array1::from_shape_simple_fn(outputs, &mut draw);
        Self { weight, bias }
    }

    /// All weights and biases zero.
    fn zeros(inputs: usize, outputs: usize) -> Self {
        Self {
            weight: Array2::zeros((inputs, outputs)),
            bias: Array1::zeros(outputs),
        }
    }

    /// `out[o] = (Σ_j input(j)·weight[j, col + o]) + bias[col + o]` for
    /// `o in 0..out.len()`: one row, any window of outputs. The terms are added in the
    /// order of `j` from zero and the bias last, exactly as [`Dense::block_into`] adds
    /// them, so a point, a row of a block of any size and any window of outputs get the same
    /// values, bit for bit.
    #[inline(always)]
    fn row_into(&self, input: impl Fn(usize) -> F, col: usize, out: &mut [F]) {
        let k = self.inputs();
        if k <= ROW_WINDOW {
            let mut x = [F::zero(); ROW_WINDOW];
            for (j, v) in x[..k].iter_mut().enumerate() {
                *v = input(j);
            }
            return self.row_from(&x[..k], col, out);
        }
        // A long input a window at a time into a stack buffer, so that the kernel takes a
        // slice (and is compiled once, in this crate): the terms still add in the order of
        // `j`, so the sums do not depend on the window.
        let n = self.outputs();
        let weight = self.weight.as_standard_layout();
        let w = weight.as_slice().expect("standard layout");
        out.fill(F::zero());
        let mut x = [F::zero(); ROW_WINDOW];
        for j0 in (0..k).step_by(ROW_WINDOW) {
            let x = &mut x[..ROW_WINDOW.min(k - j0)];
            for (t, v) in x.iter_mut().enumerate() {
                *v = input(j0 + t);
            }
            F::accumulate(out, x, &w[j0 * n + col..], n);
        }
        self.add_bias(col, out);
    }

    /// [`Dense::row_into`] for an input already in a slice (`x.len()` inputs).
    #[inline(always)]
    fn row_from(&self, x: &[F], col: usize, out: &mut [F]) {
        debug_assert_eq!(x.len(), self.inputs());
        let weight = self.weight.as_standard_layout();
        let w = weight.as_slice().expect("standard layout");
        out.fill(F::zero());
        F::accumulate(out, x, &w[col..], self.outputs());
        self.add_bias(col, out);
    }

    /// `out[o] += bias[col + o]`, the last term of every sum.
    #[inline(always)]
    fn add_bias(&self, col: usize, out: &mut [F]) {
        let bias = self.bias.as_slice().expect("bias is contiguous");
        let width = out.len();
        for (o, &b) in out.iter_mut().zip(&bias[col..col + width]) {
            *o += b;
        }
    }

    /// `out[o] = act((Σ_j input(j)·weight[j, o]) + bias[o])` for one point (`act` = identity
    /// when `None`).
    #[inline(always)]
    fn point(&self, input: impl Fn(usize) -> F, out: &mut [F], act: Option<Activation>) {
        self.row_into(input, 0, out);
        if let Some(act) = act {
            act.apply_slice(out);
        }
    }

    /// `c = act(a·weight + bias)` on a block of `rows` rows: `a` row-major with rows of
    /// [`Dense::inputs`] values, `c` row-major with rows of [`Dense::outputs`] values.
    /// Register tiles of 4 rows by 16 `f32` (8 `f64`) outputs, or 8 rows by 8 (4) for a
    /// narrow rest: each column of tiles copies its weights into a small panel on the stack,
    /// reads the rows in place, and adds the bias and applies the activation as each tile
    /// is stored. Fewer rows than a tile go row by row. The same sums as
    /// [`Dense::row_into`], bit for bit.
    #[inline]
    fn block_into(&self, a: &[F], rows: usize, c: &mut [F], act: Option<Activation>) {
        F::dense_block(self, a, rows, c, act);
    }

    /// [`Dense::block_into`]'s kernel, instantiated in this crate for `f32` and `f64` by
    /// [`MatrixKernels`].
    fn block_kernel(&self, a: &[F], rows: usize, c: &mut [F], act: Option<Activation>) {
        let (k, n) = (self.inputs(), self.outputs());
        assert!(
            a.len() >= rows * k && c.len() >= rows * n,
            "dense block too small"
        );
        let bias = self.bias.as_slice().expect("bias is contiguous");
        let weight = self.weight.as_standard_layout();
        let w = weight.as_slice().expect("standard layout");
        if rows < TILE_ROWS {
            for (x, out) in a.chunks_exact(k).zip(c.chunks_exact_mut(n)).take(rows) {
                self.row_from(x, 0, out);
                if let Some(act) = act {
                    act.apply_slice(out);
                }
            }
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if let (Some(a), Some(w), Some(bias), Kernel::Avx2) =
            (as_f32(a), as_f32(w), as_f32(bias), Kernel::detect())
        {
            let operands = avx2_f32::Operands {
                a,
                rows,
                k,
                w,
                n,
                bias,
            };
            // SAFETY: `Kernel::detect` found AVX2 and FMA.
            unsafe { avx2_f32::dense(&operands, as_f32_mut(c).expect("F is f32"), act) };
            return;
        }
        let block = Block {
            w,
            bias,
            k,
            n,
            a,
            rows,
            layout: Layout::default(),
        };
        match act {
            None => block.run(c, |v| v),
            Some(Activation::Relu) => block.run(c, |v| Activation::Relu.apply(v)),
            Some(Activation::Tanh) => block.run(c, |v| Activation::Tanh.apply(v)),
            Some(Activation::Elu) => block.run(c, |v| Activation::Elu.apply(v)),
            Some(Activation::Silu) => block.run(c, |v| Activation::Silu.apply(v)),
        }
    }

    /// The products of this layer's backward pass, for `x` its input (rows × inputs) and
    /// `delta = ∂J/∂out` (rows × outputs): adds `∂J/∂W = xᵀ·δ` into `grad_w` (row-major,
    /// the layout of `weight`) and writes `∂J/∂x = δ·Wᵀ` into `grad_x` (overwritten).
    /// The tile kernels of [`Dense::block_into`] read `x` and `W` transposed in place:
    /// nothing is allocated or copied. (Operands not in standard layout go through
    /// ndarray's `general_mat_mul`, which allocates a packing buffer.)
    fn backward(
        &self,
        x: ArrayView2<'_, F>,
        delta: ArrayView2<'_, F>,
        grad_w: &mut [F],
        mut grad_x: ArrayViewMut2<'_, F>,
    ) {
        let (k, n) = (self.inputs(), self.outputs());
        let rows = x.nrows();
        debug_assert_eq!(grad_w.len(), k * n);
        let weight = self.weight.as_slice();
        if let (Some(x_s), Some(d), Some(w), true) = (
            x.as_slice(),
            delta.as_slice(),
            weight,
            grad_x.is_standard_layout(),
        ) {
            let gx = grad_x.as_slice_mut().expect("standard layout");
            matmul((k, rows, n), x_s, true, d, false, grad_w, true);
            matmul((rows, n, k), d, false, w, true, gx, false);
            return;
        }
        let mut gw = ArrayViewMut2::from_shape((k, n), grad_w).expect("k × n gradient");
        general_mat_mul(F::one(), &x.t(), &delta, F::one(), &mut gw);
        general_mat_mul(F::one(), &delta, &self.weight.t(), F::zero(), &mut grad_x);
    }
}

/// The matrix kernels of the conditioners, compiled once, in this crate, for `f32` and
/// `f64`: the generic layers reach them through these (non-generic) methods, so a crate
/// that declares a flow calls them instead of compiling its own copies of the register
/// tiles (most of the code a flow would otherwise make rustc generate: see
/// `benches/compile_time.sh`). Implemented for the two [`Float`] types only.
pub trait MatrixKernels: Sized {
    /// `Dense::block_into`: `c = act(a·weight + bias)` on a block of `rows` rows.
    fn dense_block(
        layer: &Dense<Self>,
        a: &[Self],
        rows: usize,
        c: &mut [Self],
        act: Option<Activation>,
    );

    /// `out[o] += Σ_j x[j]·w[j·stride + o]`: the row kernel of `Dense::row_into`.
    fn accumulate(out: &mut [Self], x: &[Self], w: &[Self], stride: usize);

    /// The feature-major MADE kernel: the sums of one group of units of a masked layer.
    fn made_units(
        group: &Group<Self>,
        src: &[Self],
        rows: usize,
        dst: &mut [Self],
        first: usize,
        act: Option<Activation>,
    );

    /// `nets::matmul`: `c (+)= a·b`, either operand maybe stored transposed.
    #[allow(clippy::too_many_arguments)]
    fn matmul(
        dims: (usize, usize, usize),
        a: &[Self],
        a_t: bool,
        b: &[Self],
        b_t: bool,
        c: &mut [Self],
        add: bool,
    );
}

macro_rules! impl_matrix_kernels {
    ($t:ty) => {
        impl MatrixKernels for $t {
            #[inline(never)]
            fn dense_block(
                layer: &Dense<$t>,
                a: &[$t],
                rows: usize,
                c: &mut [$t],
                act: Option<Activation>,
            ) {
                layer.block_kernel(a, rows, c, act);
            }

            #[inline(never)]
            fn accumulate(out: &mut [$t], x: &[$t], w: &[$t], stride: usize) {
                accumulate_kernel(out, x, w, stride);
            }

            #[inline(never)]
            fn made_units(
                group: &Group<$t>,
                src: &[$t],
                rows: usize,
                dst: &mut [$t],
                first: usize,
                act: Option<Activation>,
            ) {
                crate::made::units_t_kernel(group, src, rows, dst, first, act);
            }

            #[inline(never)]
            fn matmul(
                dims: (usize, usize, usize),
                a: &[$t],
                a_t: bool,
                b: &[$t],
                b_t: bool,
                c: &mut [$t],
                add: bool,
            ) {
                matmul_kernel(dims, a, a_t, b, b_t, c, add);
            }
        }
    };
}

impl_matrix_kernels!(f32);
impl_matrix_kernels!(f64);

/// `s` as `f32` values when `F` is `f32`.
fn as_f32<F: Float>(s: &[F]) -> Option<&[f32]> {
    (TypeId::of::<F>() == TypeId::of::<f32>())
        // SAFETY: `F` is `f32`.
        .then(|| unsafe { std::slice::from_raw_parts(s.as_ptr().cast(), s.len()) })
}

/// `s` as `f32` values when `F` is `f32`.
fn as_f32_mut<F: Float>(s: &mut [F]) -> Option<&mut [f32]> {
    (TypeId::of::<F>() == TypeId::of::<f32>())
        // SAFETY: `F` is `f32`.
        .then(|| unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast(), s.len()) })
}

/// Outputs per pass of the row-by-row fallback of [`Mlp::forward_block`] (stack memory).
const ROW_WINDOW: usize = 64;

/// Rows of a register tile of [`Dense::block_into`]; blocks of fewer rows go row by row.
const TILE_ROWS: usize = 4;

/// Elements of the panel of weights [`Dense::block_into`] copies a tile's columns into
/// (stack memory: 8 KiB of `f32`, 128 rows of 16).
const PANEL: usize = 2048;

/// The operands of [`Dense::block_into`] and [`matmul`]: `c = ep(a·w + bias)` (or
/// `c += a·w`, see [`Layout::add`]), `a` rows × k, `w` k × n, `c` row-major rows × n.
struct Block<'a, F> {
    w: &'a [F],
    /// `n` values, or empty for a plain product ([`matmul`]: no bias, and the epilogue
    /// is not applied).
    bias: &'a [F],
    k: usize,
    n: usize,
    a: &'a [F],
    rows: usize,
    layout: Layout,
}

/// How the operands of a [`Block`] are stored (the default: `a` and `w` row-major, `c`
/// overwritten). The transposed layouts serve the backward pass, `∂J/∂W = xᵀ·δ` and
/// `∂J/∂x = δ·Wᵀ`, without copying an operand.
#[derive(Clone, Copy, Default)]
struct Layout {
    /// `a` is stored transposed: entry `(i, kk)` at `a[kk·rows + i]` (a row-major
    /// k × rows matrix), instead of `a[i·k + kk]`.
    a_t: bool,
    /// `w` is stored transposed: entry `(kk, j)` at `w[j·k + kk]` (a row-major n × k
    /// matrix), instead of `w[kk·n + j]`.
    w_t: bool,
    /// `c += a·w`: the sums start from the values in `c` (no bias, no epilogue needed).
    add: bool,
}

/// `c = a·b`, or `c += a·b` when `add`, for `a` m × k and `b` k × n, each given as a
/// row-major matrix or (`a_t`, `b_t`) as its transpose in row-major storage; `c` row-major
/// m × n. The register tiles of [`Dense::block_into`], with the panel of `b` on the stack:
/// no packing buffer, no allocation (also the dense products of `layers::linear`).
#[inline]
pub(crate) fn matmul<F: Float>(
    dims: (usize, usize, usize),
    a: &[F],
    a_t: bool,
    b: &[F],
    b_t: bool,
    c: &mut [F],
    add: bool,
) {
    F::matmul(dims, a, a_t, b, b_t, c, add);
}

/// [`matmul`]'s kernel, instantiated in this crate for `f32` and `f64` by
/// [`MatrixKernels`].
fn matmul_kernel<F: Float>(
    (m, k, n): (usize, usize, usize),
    a: &[F],
    a_t: bool,
    b: &[F],
    b_t: bool,
    c: &mut [F],
    add: bool,
) {
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "matmul operands too small"
    );
    if k == 0 {
        if !add {
            c[..m * n].fill(F::zero());
        }
        return;
    }
    let block = Block {
        w: b,
        bias: &[],
        k,
        n,
        a,
        rows: m,
        layout: Layout { a_t, w_t: b_t, add },
    };
    block.run(&mut c[..m * n], |v| v);
}

/// Which compilation of the tiles runs: both add the same terms in the same order as the
/// row kernel of the same processor ([`accumulate_kernel`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// Whatever the target has, a multiply and an add.
    Plain,
    /// AVX2 and FMA: fused multiply-adds in 256-bit vectors.
    Avx2,
}

impl Kernel {
    /// The best this processor runs (detected once, cached by `std`).
    #[inline(always)]
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma() {
            return Kernel::Avx2;
        }
        Kernel::Plain
    }
}

/// What a tile does with its sums: where they start (zero, or the partial sums in `c`
/// from the previous panel of a long `k`) and whether they are final (then stored as
/// `ep(sum + bias)`, else stored as they are for the next panel).
#[derive(Clone, Copy)]
struct Pass {
    first: bool,
    last: bool,
}

impl<F: Float> Block<'_, F> {
    /// Tiles 16 `f32` or 8 `f64` outputs wide (two 256-bit vectors per row), and 8 or 4
    /// (one vector) for a narrow rest.
    #[inline(always)]
    fn run(&self, c: &mut [F], ep: impl Fn(F) -> F) {
        let kernel = Kernel::detect();
        if size_of::<F>() == 4 {
            self.columns::<16, 8>(c, &ep, kernel);
        } else {
            self.columns::<8, 4>(c, &ep, kernel);
        }
    }

    /// The outputs in columns of `WIDE`, and of `NARROW` for a narrow rest.
    #[inline(always)]
    fn columns<const WIDE: usize, const NARROW: usize>(
        &self,
        c: &mut [F],
        ep: &impl Fn(F) -> F,
        kernel: Kernel,
    ) {
        let mut panel = [F::zero(); PANEL];
        let mut j0 = 0;
        while j0 < self.n {
            if self.n - j0 > NARROW {
                self.column::<WIDE, WIDE>(j0, &mut panel, c, ep, kernel);
                j0 += WIDE;
            } else {
                self.column::<NARROW, WIDE>(j0, &mut panel, c, ep, kernel);
                j0 += NARROW;
            }
        }
    }

    /// Outputs `j0..j0 + NR` (fewer at the right edge) of every row: their weights are
    /// copied into `panel` (rows of `NR`, zero-padded; a long `k` a panel at a time), then
    /// each tile of rows runs over the panel.
    #[inline(always)]
    fn column<const NR: usize, const WIDE: usize>(
        &self,
        j0: usize,
        panel: &mut [F; PANEL],
        c: &mut [F],
        ep: &impl Fn(F) -> F,
        kernel: Kernel,
    ) {
        let (k, n) = (self.k, self.n);
        let cols = NR.min(n - j0);
        let per_panel = PANEL / NR;
        for k0 in (0..k).step_by(per_panel) {
            let kc = per_panel.min(k - k0);
            let p = &mut panel[..kc * NR];
            if self.layout.w_t {
                // `w` holds wᵀ (n × k): the panel's column `t` is row `j0 + t` of it.
                if cols < NR {
                    p.fill(F::zero());
                }
                for (t, src) in self.w[j0 * k..].chunks(k).take(cols).enumerate() {
                    for (dst, &v) in p.chunks_exact_mut(NR).zip(&src[k0..k0 + kc]) {
                        dst[t] = v;
                    }
                }
            } else if cols == NR {
                let rows = p.chunks_exact_mut(NR).zip(self.w[k0 * n + j0..].chunks(n));
                for (dst, w) in rows {
                    let dst: &mut [F; NR] = dst.try_into().expect("panel rows of NR");
                    dst.copy_from_slice(&w[..NR]);
                }
            } else {
                let rows = p.chunks_exact_mut(NR).zip(self.w[k0 * n + j0..].chunks(n));
                for (dst, w) in rows {
                    let mut row = [F::zero(); NR];
                    for (d, &w) in row.iter_mut().zip(&w[..cols]) {
                        *d = w;
                    }
                    dst.copy_from_slice(&row);
                }
            }
            let pass = Pass {
                first: k0 == 0 && !self.layout.add,
                last: k0 + kc == k,
            };
            // Tiles of four rows by two vectors, or of eight rows by one (so that either
            // way eight independent sums hide the latency of the multiply-adds).
            if NR == WIDE {
                self.row_tiles::<NR, TILE_ROWS>(p, j0, k0, c, ep, pass, kernel);
            } else {
                self.row_tiles::<NR, { 2 * TILE_ROWS }>(p, j0, k0, c, ep, pass, kernel);
            }
        }
    }

    /// The tiles of `MR` rows of one panel, in a function of its own (so that the
    /// accumulators and the rows' addresses live in registers), compiled for AVX2 and FMA
    /// when `fma`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn row_tiles<const NR: usize, const MR: usize>(
        &self,
        panel: &[F],
        j0: usize,
        k0: usize,
        c: &mut [F],
        ep: &impl Fn(F) -> F,
        pass: Pass,
        kernel: Kernel,
    ) {
        // The products of the backward pass (no bias, maybe a transposed `a`) have their
        // own compilation of the tiles, so that the loops of the forward pass stay as
        // they are.
        if self.bias.is_empty() {
            self.row_tiles_on::<NR, MR, true>(panel, j0, k0, c, ep, pass, kernel);
        } else {
            self.row_tiles_on::<NR, MR, false>(panel, j0, k0, c, ep, pass, kernel);
        }
    }

    /// [`Block::row_tiles`] for a layer (`MM` false: bias and epilogue) or a plain
    /// product ([`matmul`], `MM` true: the sums stored as they are, `a` maybe transposed).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn row_tiles_on<const NR: usize, const MR: usize, const MM: bool>(
        &self,
        panel: &[F],
        j0: usize,
        k0: usize,
        c: &mut [F],
        ep: &impl Fn(F) -> F,
        pass: Pass,
        kernel: Kernel,
    ) {
        #[cfg(target_arch = "x86_64")]
        if kernel == Kernel::Avx2 {
            // SAFETY: `Kernel::detect` found the features `row_tiles_fma` is compiled for.
            unsafe { self.row_tiles_fma::<NR, MR, MM>(panel, j0, k0, c, ep, pass) };
            return;
        }
        let _ = kernel;
        self.row_tiles_plain::<NR, MR, MM>(panel, j0, k0, c, ep, pass);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[inline(never)]
    fn row_tiles_fma<const NR: usize, const MR: usize, const MM: bool>(
        &self,
        panel: &[F],
        j0: usize,
        k0: usize,
        c: &mut [F],
        ep: &impl Fn(F) -> F,
        pass: Pass,
    ) {
        self.row_tiles_with::<true, NR, MR, MM>(panel, j0, k0, c, ep, pass);
    }

    #[inline(never)]
    fn row_tiles_plain<const NR: usize, const MR: usize, const MM: bool>(
        &self,
        panel: &[F],
        j0: usize,
        k0: usize,
        c: &mut [F],
        ep: &impl Fn(F) -> F,
        pass: Pass,
    ) {
        self.row_tiles_with::<false, NR, MR, MM>(panel, j0, k0, c, ep, pass);
    }

    #[inline(always)]
    fn row_tiles_with<const FMA: bool, const NR: usize, const MR: usize, const MM: bool>(
        &self,
        panel: &[F],
        j0: usize,
        k0: usize,
        c: &mut [F],
        ep: &impl Fn(F) -> F,
        pass: Pass,
    ) {
        let (k, n) = (self.k, self.n);
        let kc = panel.len() / NR;
        for i0 in (0..self.rows).step_by(MR) {
            // The last tile repeats its last row in place of the missing ones.
            let valid = MR.min(self.rows - i0);
            let c = &mut c[i0 * n..(i0 + valid) * n];
            if MM && self.layout.a_t {
                self.tile_t_with::<FMA, NR, MR>(i0, valid, k0, panel, j0, c, pass);
            } else {
                let a: [&[F]; MR] =
                    std::array::from_fn(|r| &self.a[(i0 + r.min(valid - 1)) * k + k0..][..kc]);
                self.tile_with::<FMA, NR, MR, MM>(&a, panel, j0, c, ep, pass);
            }
        }
    }

    /// `acc[r][t] (+)= Σ_kk a[r][kk]·panel[kk][t]` (the terms in the order of `kk`, one
    /// multiply-add per row and output, the accumulators in registers), then stored (as
    /// they are when `MM`, a plain product).
    #[inline(always)]
    fn tile_with<const FMA: bool, const NR: usize, const MR: usize, const MM: bool>(
        &self,
        a: &[&[F]; MR],
        panel: &[F],
        j0: usize,
        c: &mut [F],
        ep: &impl Fn(F) -> F,
        pass: Pass,
    ) {
        let n = self.n;
        let cols = NR.min(n - j0);
        let mut acc = [[F::zero(); NR]; MR];
        if !pass.first {
            for (acc, c) in acc.iter_mut().zip(c.chunks_exact(n)) {
                acc[..cols].copy_from_slice(&c[j0..j0 + cols]);
            }
        }
        // The rows as iterators zipped with the panel's rows, so that the loop carries no
        // index to check (written out for the two tile heights).
        let w = panel
            .chunks_exact(NR)
            .map(|w| -> &[F; NR] { w.try_into().expect("NR") });
        if let (Ok([a0, a1, a2, a3]), Ok(acc)) = (
            <&[&[F]; 4]>::try_from(&a[..]),
            <&mut [_; 4]>::try_from(&mut acc[..]),
        ) {
            let x = a0.iter().zip(*a1).zip(*a2).zip(*a3);
            for ((((&x0, &x1), &x2), &x3), w) in x.zip(w) {
                multiply_add::<F, FMA, NR, 4>(acc, [x0, x1, x2, x3], w);
            }
        } else if let (Ok([a0, a1, a2, a3, a4, a5, a6, a7]), Ok(acc)) = (
            <&[&[F]; 8]>::try_from(&a[..]),
            <&mut [_; 8]>::try_from(&mut acc[..]),
        ) {
            let x =
                (a0.iter().zip(*a1).zip(*a2).zip(*a3)).zip(a4.iter().zip(*a5).zip(*a6).zip(*a7));
            for (((((&x0, &x1), &x2), &x3), (((&x4, &x5), &x6), &x7)), w) in x.zip(w) {
                multiply_add::<F, FMA, NR, 8>(acc, [x0, x1, x2, x3, x4, x5, x6, x7], w);
            }
        } else {
            unreachable!("tiles have 4 or 8 rows");
        }
        for (acc, c) in acc.iter().zip(c.chunks_exact_mut(n)) {
            let out = &mut c[j0..j0 + cols];
            if !pass.last || MM {
                out.copy_from_slice(&acc[..cols]);
            } else if cols == NR {
                let bias: &[F; NR] = self.bias[j0..j0 + NR].try_into().expect("NR biases");
                let out: &mut [F; NR] = out.try_into().expect("NR outputs");
                for ((o, &v), &b) in out.iter_mut().zip(acc).zip(bias) {
                    *o = ep(v + b);
                }
            } else {
                for ((o, &v), &b) in out.iter_mut().zip(acc).zip(&self.bias[j0..]) {
                    *o = ep(v + b);
                }
            }
        }
    }

    /// The tile of rows `i0..i0 + valid` for a transposed `a` (row `kk` of its storage
    /// holds entry `kk` of every row), the sums added to `c` or stored as they are (a
    /// [`matmul`]: no bias, no epilogue); the last tile repeats its last row.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn tile_t_with<const FMA: bool, const NR: usize, const MR: usize>(
        &self,
        i0: usize,
        valid: usize,
        k0: usize,
        panel: &[F],
        j0: usize,
        c: &mut [F],
        pass: Pass,
    ) {
        debug_assert!(self.bias.is_empty());
        let n = self.n;
        let cols = NR.min(n - j0);
        let lda = self.rows;
        let kc = panel.len() / NR;
        let mut acc = [[F::zero(); NR]; MR];
        if !pass.first {
            for (acc, c) in acc.iter_mut().zip(c.chunks_exact(n)) {
                acc[..cols].copy_from_slice(&c[j0..j0 + cols]);
            }
        }
        let at = self.a[k0 * lda..(k0 + kc) * lda].chunks_exact(lda);
        let w = panel
            .chunks_exact(NR)
            .map(|w| -> &[F; NR] { w.try_into().expect("NR") });
        if valid == MR {
            for (x, w) in at.zip(w) {
                let x: &[F; MR] = x[i0..i0 + MR].try_into().expect("MR");
                multiply_add::<F, FMA, NR, MR>(&mut acc, *x, w);
            }
        } else {
            let idx: [usize; MR] = std::array::from_fn(|r| i0 + r.min(valid - 1));
            for (x, w) in at.zip(w) {
                multiply_add::<F, FMA, NR, MR>(&mut acc, idx.map(|i| x[i]), w);
            }
        }
        for (acc, c) in acc.iter().zip(c.chunks_exact_mut(n)) {
            c[j0..j0 + cols].copy_from_slice(&acc[..cols]);
        }
    }
}

/// `acc[r][t] = x[r]·w[t] + acc[r][t]`: one step of a tile.
#[inline(always)]
fn multiply_add<F: Float, const FMA: bool, const NR: usize, const MR: usize>(
    acc: &mut [[F; NR]; MR],
    x: [F; MR],
    w: &[F; NR],
) {
    for (acc, x) in acc.iter_mut().zip(x) {
        for (acc, &w) in acc.iter_mut().zip(w) {
            *acc = madd::<F, FMA>(x, w, *acc);
        }
    }
}

/// Whether this processor has AVX2 and FMA (detected once, cached by `std`): the kernels
/// then use fused multiply-adds in 256-bit vectors, as matrixmultiply's do.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// `x·w + o`: rounded once with `FMA`, else a multiply and an add.
#[inline(always)]
pub(crate) fn madd<F: Float, const FMA: bool>(x: F, w: F, o: F) -> F {
    if FMA { x.mul_add(w, o) } else { o + x * w }
}

/// `out[o] += Σ_j x[j]·w[j·stride + o]` for `o in 0..out.len()`, adding the terms in
/// the order of `j` with the multiply-add of [`Dense::block_into`] (fused where the
/// processor has FMA), so its sums are those of the block kernel.
#[inline(always)]
fn accumulate_kernel<F: Float>(out: &mut [F], x: &[F], w: &[F], stride: usize) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the processor has the features `accumulate_fma` is compiled for.
        unsafe { accumulate_fma(out, x, w, stride) };
        return;
    }
    accumulate_with::<F, false>(out, x, w, stride);
}

/// [`accumulate_with`] compiled for AVX2 and FMA, with fused multiply-adds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn accumulate_fma<F: Float>(out: &mut [F], x: &[F], w: &[F], stride: usize) {
    accumulate_with::<F, true>(out, x, w, stride);
}

/// The loops of [`accumulate_kernel`]: four rows of `w` per pass over `out` (so `out` is loaded
/// and stored a quarter as often; the sums are those of one row at a time), inner loops
/// over plain slices that vectorise.
#[inline(always)]
fn accumulate_with<F: Float, const FMA: bool>(out: &mut [F], x: &[F], w: &[F], stride: usize) {
    // Full windows of `ROW_ACC` outputs (eight 256-bit vectors of `f32`) keep their sums in
    // registers across all the inputs; the rest is read and written four inputs at a time.
    let full = if size_of::<F>() == 4 {
        out.len() / ROW_ACC * ROW_ACC
    } else {
        0
    };
    let (head, rest) = out.split_at_mut(full);
    for (c, window) in head.chunks_exact_mut(ROW_ACC).enumerate() {
        let window: &mut [F; ROW_ACC] = window.try_into().expect("ROW_ACC outputs");
        let mut acc = *window;
        for (j, &xj) in x.iter().enumerate() {
            let w: &[F; ROW_ACC] = w[j * stride + c * ROW_ACC..][..ROW_ACC]
                .try_into()
                .expect("ROW_ACC weights");
            for (a, &wt) in acc.iter_mut().zip(w) {
                *a = madd::<F, FMA>(xj, wt, *a);
            }
        }
        *window = acc;
    }
    accumulate_rest::<F, FMA>(rest, x, &w[full..], stride);
}

/// Outputs per register window of [`accumulate_with`] (`f32`).
const ROW_ACC: usize = 64;

/// [`accumulate_with`] on outputs whose sums do not stay in registers: four inputs per pass.
#[inline(always)]
fn accumulate_rest<F: Float, const FMA: bool>(out: &mut [F], x: &[F], w: &[F], stride: usize) {
    let (k, width) = (x.len(), out.len());
    if width == 0 {
        return;
    }
    let mut j = 0;
    while j + 4 <= k {
        let (x0, x1, x2, x3) = (x[j], x[j + 1], x[j + 2], x[j + 3]);
        let w0 = &w[j * stride..][..width];
        let w1 = &w[(j + 1) * stride..][..width];
        let w2 = &w[(j + 2) * stride..][..width];
        let w3 = &w[(j + 3) * stride..][..width];
        for ((((o, &a), &b), &c), &d) in out.iter_mut().zip(w0).zip(w1).zip(w2).zip(w3) {
            let v = madd::<F, FMA>(x0, a, *o);
            let v = madd::<F, FMA>(x1, b, v);
            let v = madd::<F, FMA>(x2, c, v);
            *o = madd::<F, FMA>(x3, d, v);
        }
        j += 4;
    }
    while j < k {
        let xj = x[j];
        for (o, &a) in out.iter_mut().zip(&w[j * stride..][..width]) {
            *o = madd::<F, FMA>(xj, a, *o);
        }
        j += 1;
    }
}

/// A multilayer perceptron with the same activation after every hidden layer and a linear
/// last layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Mlp<F> {
    /// The layers, input first.
    pub layers: Vec<Dense<F>>,
    /// The hidden activation.
    pub activation: Activation,
}

impl<F: Float> Mlp<F> {
    /// An MLP `inputs → hidden[0] → … → outputs`. Hidden layers are initialised like
    /// PyTorch's `nn.Linear` (weights and biases U(−1/√fan_in, 1/√fan_in)); the last layer
    /// is all zeros, so the network starts by outputting 0 (Glow's trick: a fresh coupling
    /// is the identity). With `hidden` empty the network is one (zero) linear layer.
    ///
    /// Panics if `inputs`, `outputs` or a hidden width is 0.
    pub fn new<R: Rng + ?Sized>(
        inputs: usize,
        hidden: &[usize],
        outputs: usize,
        activation: Activation,
        rng: &mut R,
    ) -> Self {
        assert!(inputs > 0, "an MLP needs at least one input");
        assert!(outputs > 0, "an MLP needs at least one output");
        assert!(
            hidden.iter().all(|&h| h > 0),
            "hidden layer widths must be at least 1, got {hidden:?}"
        );
        let mut layers = Vec::with_capacity(hidden.len() + 1);
        let mut fan_in = inputs;
        for &width in hidden {
            layers.push(Dense::uniform(fan_in, width, rng));
            fan_in = width;
        }
        layers.push(Dense::zeros(fan_in, outputs));
        Self { layers, activation }
    }

    /// Draws the output layer like the hidden ones (PyTorch's default, U(±1/√fan_in)), as
    /// zuko and FlowJAX initialise their conditioners: the coupling then no longer starts as
    /// the identity. (On two moons this trains to a lower NLL in 2000 steps than the
    /// zero start; see the two_moons example.)
    pub fn randomize_output_layer<R: Rng + ?Sized>(&mut self, rng: &mut R) {
        let last = self.layers.len() - 1;
        let (inputs, outputs) = (self.layers[last].inputs(), self.layers[last].outputs());
        self.layers[last] = Dense::uniform(inputs, outputs, rng);
    }

    /// Number of inputs.
    pub fn inputs(&self) -> usize {
        self.layers[0].inputs()
    }

    /// Number of outputs.
    pub fn outputs(&self) -> usize {
        self.layers[self.layers.len() - 1].outputs()
    }

    /// The hidden layers (all but the last).
    fn hidden(&self) -> &[Dense<F>] {
        &self.layers[..self.layers.len() - 1]
    }

    /// The widest hidden layer (0 with no hidden layers): [`Mlp::forward_block`] on `rows`
    /// rows needs `rows · max_hidden()` elements in `hidden_a`, and as many in `hidden_b`
    /// when there are at least two hidden layers.
    pub fn max_hidden(&self) -> usize {
        self.hidden().iter().map(Dense::outputs).max().unwrap_or(0)
    }

    /// Elements of `hidden_b` that [`Mlp::forward_block`] needs for `rows` rows (0 with
    /// fewer than two hidden layers).
    pub fn hidden_b_len(&self, rows: usize) -> usize {
        if self.hidden().len() >= 2 {
            rows * self.max_hidden()
        } else {
            0
        }
    }

    /// The network on a block of rows: `out = net(input)` row by row. `hidden_a` and
    /// `hidden_b` are scratch (contents unspecified on entry and exit) of at least
    /// `rows · max_hidden()` elements each (`hidden_b` may be empty with fewer than two
    /// hidden layers, see [`Mlp::hidden_b_len`]). Allocates nothing itself.
    pub fn forward_block(
        &self,
        input: ArrayView2<'_, F>,
        out: ArrayViewMut2<'_, F>,
        hidden_a: &mut [F],
        hidden_b: &mut [F],
    ) {
        let rows = input.nrows();
        assert_eq!(
            input.ncols(),
            self.inputs(),
            "MLP input has the wrong number of columns"
        );
        assert_eq!(
            out.dim(),
            (rows, self.outputs()),
            "MLP output has the wrong shape"
        );
        let hidden = self.hidden();
        assert!(
            hidden_a.len() >= rows * self.max_hidden() && hidden_b.len() >= self.hidden_b_len(rows),
            "MLP hidden scratch too small: {} and {} elements, {} and {} needed",
            hidden_a.len(),
            hidden_b.len(),
            rows * self.max_hidden(),
            self.hidden_b_len(rows)
        );

        let Some((first, rest)) = hidden.split_first() else {
            self.last_layer(input, None, out);
            return;
        };
        let act = Some(self.activation);
        let mut cur: &mut [F] = hidden_a;
        let mut next: &mut [F] = hidden_b;
        let mut width = first.outputs();
        match input.as_slice() {
            Some(x) => first.block_into(x, rows, &mut cur[..rows * width], act),
            // A strided input: row by row, the same sums.
            None => {
                for (r, h) in cur[..rows * width].chunks_exact_mut(width).enumerate() {
                    first.point(|j| input[[r, j]], h, act);
                }
            }
        }
        for layer in rest {
            let out_width = layer.outputs();
            layer.block_into(
                &cur[..rows * width],
                rows,
                &mut next[..rows * out_width],
                act,
            );
            std::mem::swap(&mut cur, &mut next);
            width = out_width;
        }
        self.last_layer(input, Some(&cur[..rows * width]), out);
    }

    /// The last (linear) layer of [`Mlp::forward_block`], from the last hidden activations
    /// (row-major) or, with no hidden layer, from the input itself.
    fn last_layer(
        &self,
        input: ArrayView2<'_, F>,
        last_hidden: Option<&[F]>,
        mut out: ArrayViewMut2<'_, F>,
    ) {
        let last = &self.layers[self.layers.len() - 1];
        let rows = input.nrows();
        let k = last.inputs();
        let x = last_hidden.or_else(|| input.to_slice());
        if let (Some(x), Some(out)) = (x, out.as_slice_mut()) {
            last.block_into(x, rows, out, None);
            return;
        }
        // A strided input or output: row by row, a window of outputs at a time in stack
        // memory, the same sums.
        let n = last.outputs();
        let mut buf = [F::zero(); ROW_WINDOW];
        for (r, mut out_row) in out.rows_mut().into_iter().enumerate() {
            for start in (0..n).step_by(ROW_WINDOW) {
                let window = &mut buf[..ROW_WINDOW.min(n - start)];
                match last_hidden {
                    Some(h) => last.row_into(|j| h[r * k + j], start, window),
                    None => last.row_into(|j| input[[r, j]], start, window),
                }
                for (o, &v) in out_row.iter_mut().skip(start).zip(window.iter()) {
                    *o = v;
                }
            }
        }
    }

    /// Scratch elements [`Mlp::hidden_point`] needs: the widest even-numbered hidden
    /// layer plus the widest odd-numbered one (the two ping-pong halves), at most the sum
    /// of the two largest hidden widths. Depends only on the hidden widths.
    pub fn point_scratch(&self) -> usize {
        let (even, odd) = self.split_widths();
        even + odd
    }

    /// (widest even-numbered hidden layer, widest odd-numbered hidden layer).
    fn split_widths(&self) -> (usize, usize) {
        let mut even = 0;
        let mut odd = 0;
        for (l, layer) in self.hidden().iter().enumerate() {
            let w = if l % 2 == 0 { &mut even } else { &mut odd };
            *w = (*w).max(layer.outputs());
        }
        (even, odd)
    }

    /// The activation of the last hidden layer for one point whose input `j` is
    /// `input(j)`, computed in `scratch` (at least [`Mlp::point_scratch`] elements) without
    /// the heap. Feed it to [`Mlp::output_unit`]. With no hidden layers this is an empty
    /// slice and the last layer reads the input itself: use [`Mlp::output_unit_with`].
    pub fn hidden_point<'s>(&self, input: impl Fn(usize) -> F, scratch: &'s mut [F]) -> &'s [F] {
        let hidden = self.hidden();
        let Some((first, rest)) = hidden.split_first() else {
            return &scratch[..0];
        };
        let (even, _) = self.split_widths();
        let (a, b) = scratch.split_at_mut(even);
        let mut cur: &mut [F] = a;
        let mut next: &mut [F] = b;
        let mut width = first.outputs();
        first.point(input, &mut cur[..width], Some(self.activation));
        for layer in rest {
            let out_width = layer.outputs();
            let prev: &[F] = &cur[..width];
            let out = &mut next[..out_width];
            layer.row_from(prev, 0, out);
            self.activation.apply_slice(out);
            std::mem::swap(&mut cur, &mut next);
            width = out_width;
        }
        let cur: &'s [F] = cur;
        &cur[..width]
    }

    /// Output units `first..first + out.len()` of the network for one point, into `out`,
    /// given the input of the last layer as `last_input(j)` (the slice
    /// [`Mlp::hidden_point`] returned, or with no hidden layers the network's input). The
    /// same values as [`Mlp::output_unit_with`], a window of units at a time.
    #[inline]
    pub fn output_point(&self, last_input: impl Fn(usize) -> F, first: usize, out: &mut [F]) {
        self.layers[self.layers.len() - 1].row_into(last_input, first, out);
    }

    /// Output unit `k` of the network for one point, from the last hidden activation
    /// returned by [`Mlp::hidden_point`]: `bias[k] + Σ_j last_hidden[j]·weight[j, k]`.
    #[inline]
    pub fn output_unit(&self, last_hidden: &[F], k: usize) -> F {
        self.output_unit_with(|j| last_hidden[j], k)
    }

    /// Output unit `k` of the network for one point, given the input of the last layer
    /// as `last_input(j)`: the last hidden activation, or with no hidden layers the
    /// network's input itself.
    #[inline]
    pub fn output_unit_with(&self, last_input: impl Fn(usize) -> F, k: usize) -> F {
        let mut out = [F::zero()];
        self.output_point(last_input, k, &mut out);
        out[0]
    }

    /// The number of learnable parameters: every weight and bias of every layer.
    pub fn param_len(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.weight.len() + l.bias.len())
            .sum()
    }

    /// Visits each tensor as `(layer index, "weight" | "bias", shape, values)`, in the flat
    /// parameter layout: layer 0 weight (shape `[inputs, outputs]`, row-major), layer 0
    /// bias (`[outputs]`), layer 1 weight, … The layout of the `param_grad` slice of
    /// [`Mlp::backward_block`].
    ///
    /// Panics if a weight matrix is not in standard (row-major, contiguous) layout, which
    /// every constructor of this module produces.
    pub fn visit_params(&self, mut visit: impl FnMut(usize, &'static str, &[usize], &[F])) {
        for (l, layer) in self.layers.iter().enumerate() {
            let shape = [layer.inputs(), layer.outputs()];
            let weight = layer
                .weight
                .as_slice()
                .expect("MLP weights are in standard layout");
            visit(l, "weight", &shape, weight);
            let bias = layer.bias.as_slice().expect("MLP biases are contiguous");
            visit(l, "bias", &shape[1..], bias);
        }
    }

    /// Visits each tensor mutably, in the order of [`Mlp::visit_params`].
    pub fn visit_params_mut(
        &mut self,
        mut visit: impl FnMut(usize, &'static str, &[usize], &mut [F]),
    ) {
        for (l, layer) in self.layers.iter_mut().enumerate() {
            let shape = [layer.inputs(), layer.outputs()];
            let weight = layer
                .weight
                .as_slice_mut()
                .expect("MLP weights are in standard layout");
            visit(l, "weight", &shape, weight);
            let bias = layer
                .bias
                .as_slice_mut()
                .expect("MLP biases are contiguous");
            visit(l, "bias", &shape[1..], bias);
        }
    }

    /// The sum of the hidden widths: [`Mlp::forward_block_tape`] on `rows` rows needs
    /// `rows · hidden_total()` elements in each half of its [`MlpTape`].
    pub fn hidden_total(&self) -> usize {
        self.hidden().iter().map(Dense::outputs).sum()
    }

    /// [`Mlp::forward_block`] that also keeps what [`Mlp::backward_block`] needs: hidden
    /// layer `l`'s pre-activation and activation, each a row-major `rows × width_l`
    /// matrix, stored one after the other (layer 0 first) in `tape.pre` and `tape.post`
    /// (at least `rows ·` [`Mlp::hidden_total`] elements each; contents on entry
    /// unspecified). Allocates nothing itself.
    pub fn forward_block_tape(
        &self,
        input: ArrayView2<'_, F>,
        out: ArrayViewMut2<'_, F>,
        tape: &mut MlpTape<'_, F>,
    ) {
        let rows = input.nrows();
        assert_eq!(
            input.ncols(),
            self.inputs(),
            "MLP input has the wrong number of columns"
        );
        assert_eq!(
            out.dim(),
            (rows, self.outputs()),
            "MLP output has the wrong shape"
        );
        let need = rows * self.hidden_total();
        assert!(
            tape.pre.len() >= need && tape.post.len() >= need,
            "MLP tape too small: {} and {} elements, {need} needed",
            tape.pre.len(),
            tape.post.len()
        );
        let act = self.activation;
        let (last, hidden) = self
            .layers
            .split_last()
            .expect("an MLP has at least one layer");
        // The same choice of kernel as `forward_block`, so both give the same outputs.
        let mut offset = 0;
        for (l, layer) in hidden.iter().enumerate() {
            let width = layer.outputs();
            let len = rows * width;
            let (done, rest) = tape.post.split_at_mut(offset);
            let pre = &mut tape.pre[offset..offset + len];
            // The kernels of `forward_block`, without the activation: the same values.
            if l > 0 {
                let prev = &done[offset - rows * layer.inputs()..];
                layer.block_into(prev, rows, pre, None);
            } else if let Some(x) = input.to_slice() {
                layer.block_into(x, rows, pre, None);
            } else {
                for (r, z) in pre.chunks_exact_mut(width).enumerate() {
                    layer.row_into(|j| input[[r, j]], 0, z);
                }
            }
            let post = &mut rest[..len];
            post.copy_from_slice(pre);
            act.apply_slice(post);
            offset += len;
        }
        let last_hidden =
            (!hidden.is_empty()).then(|| &tape.post[offset - rows * last.inputs()..offset]);
        self.last_layer(input, last_hidden, out);
    }

    /// Reverse mode through [`Mlp::forward_block_tape`]: given the same `input`, the
    /// `tape` that call filled and `out_grad = ∂J/∂out` (`rows × outputs`), adds `∂J/∂W`
    /// and `∂J/∂b` of every layer into `param_grad` (length [`Mlp::param_len`], the layout
    /// of [`Mlp::visit_params`]) and writes `∂J/∂input` into `input_grad`
    /// (`rows × inputs`, overwritten). `scratch` needs `rows ·` [`Mlp::max_hidden`]
    /// elements (contents unspecified). `tape.pre` is consumed (it holds the hidden
    /// layers' deltas on exit). Allocates nothing itself when `input`, `out_grad` and
    /// `input_grad` are in standard layout (a strided one goes through ndarray's
    /// `general_mat_mul`, which allocates a packing buffer per product).
    pub fn backward_block(
        &self,
        input: ArrayView2<'_, F>,
        tape: &mut MlpTape<'_, F>,
        out_grad: ArrayView2<'_, F>,
        mut input_grad: ArrayViewMut2<'_, F>,
        param_grad: &mut [F],
        scratch: &mut [F],
    ) {
        let rows = input.nrows();
        assert_eq!(
            input.ncols(),
            self.inputs(),
            "MLP input has the wrong number of columns"
        );
        assert_eq!(
            out_grad.dim(),
            (rows, self.outputs()),
            "MLP output gradient has the wrong shape"
        );
        assert_eq!(
            input_grad.dim(),
            (rows, self.inputs()),
            "MLP input gradient has the wrong shape"
        );
        assert_eq!(
            param_grad.len(),
            self.param_len(),
            "MLP parameter gradient has the wrong length"
        );
        let need = rows * self.hidden_total();
        assert!(
            tape.pre.len() >= need && tape.post.len() >= need,
            "MLP tape too small: {} and {} elements, {need} needed",
            tape.pre.len(),
            tape.post.len()
        );
        assert!(
            scratch.len() >= rows * self.max_hidden(),
            "MLP backward scratch too small: {} elements, {} needed",
            scratch.len(),
            rows * self.max_hidden()
        );
        let act = self.activation;
        let post: &[F] = tape.post;
        // The not yet visited front of the pre-activations; the delta of the layer being
        // visited lives just behind it.
        let mut pre: &mut [F] = &mut tape.pre[..need];
        let mut pre_end = need;
        let mut grad_end = param_grad.len();
        let mut delta = out_grad;
        for (l, layer) in self.layers.iter().enumerate().rev() {
            let (n_in, n_out) = (layer.inputs(), layer.outputs());
            let start = grad_end - n_in * n_out - n_out;
            let (gw, gb) = param_grad[start..grad_end].split_at_mut(n_in * n_out);
            grad_end = start;
            // ∂J/∂b = Σ_rows δ
            match delta.as_slice() {
                Some(d) => {
                    for row in d.chunks_exact(n_out) {
                        for (g, &d) in gb.iter_mut().zip(row) {
                            *g += d;
                        }
                    }
                }
                None => {
                    for row in delta.rows() {
                        for (g, &d) in gb.iter_mut().zip(row) {
                            *g += d;
                        }
                    }
                }
            }
            // ∂J/∂W = (layer input)ᵀ·δ, ∂J/∂(layer input) = δ·Wᵀ
            if l == 0 {
                layer.backward(input, delta, gw, input_grad.view_mut());
            } else {
                let len = rows * n_in;
                let prev_post = ArrayView2::from_shape((rows, n_in), &post[pre_end - len..pre_end])
                    .expect("tape sized above");
                let da = ArrayViewMut2::from_shape((rows, n_in), &mut scratch[..len])
                    .expect("scratch sized above");
                layer.backward(prev_post, delta, gw, da);
                // δ of the layer below = ∂J/∂a ⊙ act'(z), written over z.
                let (rest, z) = std::mem::take(&mut pre).split_at_mut(pre_end - len);
                act.mul_derivative(z, &scratch[..len]);
                pre = rest;
                pre_end -= len;
                let z: &[F] = z;
                delta = ArrayView2::from_shape((rows, n_in), z).expect("tape sized above");
            }
        }
    }
}

/// The hidden values a forward pass keeps for the backward pass (see
/// [`Mlp::forward_block_tape`]): borrowed scratch, each half at least
/// `rows ·` [`Mlp::hidden_total`] elements.
#[derive(Debug)]
pub struct MlpTape<'a, F> {
    /// The hidden layers' pre-activations, layer 0 first, each row-major `rows × width`.
    pub pre: &'a mut [F],
    /// The hidden layers' activations, in the same layout.
    pub post: &'a mut [F],
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, ShapeBuilder};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const ACTIVATIONS: [Activation; 4] = [
        Activation::Relu,
        Activation::Tanh,
        Activation::Elu,
        Activation::Silu,
    ];

    fn rng(seed: u64) -> StdRng {
        StdRng::seed_from_u64(seed)
    }

    /// Every weight and bias U(−0.5, 0.5), the last layer included.
    fn randomise(net: &mut Mlp<f64>, rng: &mut StdRng) {
        for layer in &mut net.layers {
            layer.weight.mapv_inplace(|_| rng.random_range(-0.5..0.5));
            layer.bias.mapv_inplace(|_| rng.random_range(-0.5..0.5));
        }
    }

    fn random_input(rows: usize, cols: usize, rng: &mut StdRng) -> Array2<f64> {
        Array2::from_shape_simple_fn((rows, cols), || rng.random_range(-2.0..2.0))
    }

    /// The network on one row, naively, with fresh vectors.
    fn naive_row(net: &Mlp<f64>, x: &[f64]) -> Vec<f64> {
        let mut v = x.to_vec();
        let n = net.layers.len();
        for (l, layer) in net.layers.iter().enumerate() {
            let mut out = vec![0.0; layer.outputs()];
            for (o, out_o) in out.iter_mut().enumerate() {
                let mut s = layer.bias[o];
                for (j, vj) in v.iter().enumerate() {
                    s += vj * layer.weight[[j, o]];
                }
                *out_o = if l + 1 < n {
                    net.activation.apply(s)
                } else {
                    s
                };
            }
            v = out;
        }
        v
    }

    fn batch(net: &Mlp<f64>, input: &Array2<f64>) -> Array2<f64> {
        let rows = input.nrows();
        let mut out = Array2::from_elem((rows, net.outputs()), f64::NAN);
        // Scratch full of NaN: nothing may leak from previous contents.
        let mut a = vec![f64::NAN; rows * net.max_hidden()];
        let mut b = vec![f64::NAN; net.hidden_b_len(rows)];
        net.forward_block(input.view(), out.view_mut(), &mut a, &mut b);
        out
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
    }

    const HIDDEN: [&[usize]; 5] = [&[], &[7], &[9, 4], &[5, 11, 3], &[6, 6, 6, 6]];

    #[test]
    fn new_initialises_like_pytorch_with_zero_last_layer() {
        let mut r = rng(1);
        let net: Mlp<f64> = Mlp::new(4, &[16, 9], 3, Activation::Tanh, &mut r);
        assert_eq!(net.layers.len(), 3);
        assert_eq!(net.layers[0].weight.dim(), (4, 16));
        assert_eq!(net.layers[1].weight.dim(), (16, 9));
        assert_eq!(net.layers[2].weight.dim(), (9, 3));
        for (layer, fan_in) in net.layers[..2].iter().zip([4.0f64, 16.0]) {
            let bound = 1.0 / fan_in.sqrt();
            assert!(
                layer
                    .weight
                    .iter()
                    .chain(&layer.bias)
                    .all(|w| w.abs() <= bound)
            );
            assert!(layer.weight.iter().any(|&w| w != 0.0));
            assert!(layer.bias.iter().any(|&w| w != 0.0));
        }
        assert!(
            net.layers[2]
                .weight
                .iter()
                .chain(&net.layers[2].bias)
                .all(|&w| w == 0.0)
        );
        assert_eq!((net.inputs(), net.outputs(), net.max_hidden()), (4, 3, 16));

        let lin: Mlp<f32> = Mlp::new(3, &[], 2, Activation::Relu, &mut r);
        assert_eq!(lin.layers.len(), 1);
        assert_eq!(lin.layers[0].weight.dim(), (3, 2));
        assert!(lin.layers[0].weight.iter().all(|&w| w == 0.0));
        assert_eq!((lin.max_hidden(), lin.point_scratch()), (0, 0));
    }

    #[test]
    #[should_panic(expected = "hidden layer widths must be at least 1")]
    fn new_rejects_zero_width() {
        let _: Mlp<f64> = Mlp::new(2, &[4, 0], 2, Activation::Relu, &mut rng(0));
    }

    #[test]
    fn randomize_output_layer_draws_like_the_hidden_layers() {
        let mut net = Mlp::<f64>::new(3, &[16], 4, Activation::Relu, &mut rng(3));
        net.randomize_output_layer(&mut rng(4));
        let last = net.layers.last().unwrap();
        let bound = 1.0 / 16f64.sqrt();
        assert!(
            last.weight
                .iter()
                .chain(last.bias.iter())
                .all(|w| w.abs() <= bound)
        );
        assert!(last.weight.iter().any(|&w| w != 0.0));
        assert_eq!((last.inputs(), last.outputs()), (16, 4));
    }

    #[test]
    fn last_layer_zero_gives_zero_output() {
        let mut r = rng(2);
        for hidden in HIDDEN {
            for act in ACTIVATIONS {
                let net: Mlp<f64> = Mlp::new(3, hidden, 5, act, &mut r);
                let x = random_input(17, 3, &mut r);
                assert!(batch(&net, &x).iter().all(|&v| v == 0.0));
                let mut scratch = vec![0.0; net.point_scratch()];
                let input = |j: usize| x[[0, j]];
                let h = net.hidden_point(input, &mut scratch);
                for k in 0..5 {
                    let v = if hidden.is_empty() {
                        net.output_unit_with(input, k)
                    } else {
                        net.output_unit(h, k)
                    };
                    assert_eq!(v, 0.0);
                }
            }
        }
    }

    #[test]
    fn batch_forward_equals_naive_rows() {
        let mut r = rng(3);
        for hidden in HIDDEN {
            for act in ACTIVATIONS {
                let mut net: Mlp<f64> = Mlp::new(4, hidden, 6, act, &mut r);
                randomise(&mut net, &mut r);
                for rows in [1, 5, 64, 257] {
                    let x = random_input(rows, 4, &mut r);
                    let out = batch(&net, &x);
                    for (i, row) in x.rows().into_iter().enumerate() {
                        let expected = naive_row(&net, row.as_slice().unwrap());
                        for (k, e) in expected.iter().enumerate() {
                            assert!(
                                close(out[[i, k]], *e, 1e-12),
                                "{hidden:?} {act:?} rows={rows}: {} vs {e}",
                                out[[i, k]]
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn batch_forward_accepts_strided_input() {
        let mut r = rng(4);
        let mut net: Mlp<f64> = Mlp::new(3, &[5, 4], 2, Activation::Silu, &mut r);
        randomise(&mut net, &mut r);
        let wide = random_input(10, 6, &mut r);
        let strided = wide.slice(ndarray::s![.., ..;2]);
        let mut out = Array2::zeros((10, 2));
        let (mut a, mut b) = (vec![0.0; 50], vec![0.0; 50]);
        net.forward_block(strided, out.view_mut(), &mut a, &mut b);
        let contiguous = strided.to_owned();
        assert_eq!(out, batch(&net, &contiguous));
    }

    #[test]
    fn batch_forward_accepts_strided_output() {
        let mut r = rng(4);
        for hidden in HIDDEN {
            let mut net: Mlp<f64> = Mlp::new(3, hidden, 5, Activation::Elu, &mut r);
            randomise(&mut net, &mut r);
            for rows in [2, 9] {
                let x = random_input(rows, 3, &mut r);
                let mut wide = Array2::from_elem((rows, 10), f64::NAN);
                let mut fortran = Array2::from_elem((rows, 5).f(), f64::NAN);
                let (mut a, mut b) = (vec![0.0; 11 * rows], vec![0.0; 11 * rows]);
                let strided = wide.slice_mut(ndarray::s![.., ..;2]);
                net.forward_block(x.view(), strided, &mut a, &mut b);
                net.forward_block(x.view(), fortran.view_mut(), &mut a, &mut b);
                let expected = batch(&net, &x);
                assert_eq!(wide.slice(ndarray::s![.., ..;2]), expected, "{hidden:?}");
                assert!(
                    wide.slice(ndarray::s![.., 1..;2])
                        .iter()
                        .all(|v| v.is_nan())
                );
                assert_eq!(fortran, expected, "{hidden:?}");
            }
        }
    }

    /// `x·w + b` with `x` rows × k, in f64 from the values as given.
    fn naive_dense<F: Float>(layer: &Dense<F>, x: &[F], rows: usize) -> Vec<f64> {
        let (k, n) = (layer.inputs(), layer.outputs());
        let mut out = vec![0.0; rows * n];
        for i in 0..rows {
            for o in 0..n {
                let mut s = layer.bias[o].to_f64_lossless();
                for j in 0..k {
                    s += x[i * k + j].to_f64_lossless() * layer.weight[[j, o]].to_f64_lossless();
                }
                out[i * n + o] = s;
            }
        }
        out
    }

    /// The block kernel on every shape that exercises its edges (rows not a multiple of the
    /// tile, outputs narrower than a vector or not a multiple of it, inputs longer than a
    /// panel), in f32 and f64: close to the exact products, and bit for bit equal to the
    /// point kernel row by row (any window of outputs) whatever the block.
    fn dense_kernel_matches<F: Float>(tol: f64) {
        let mut r = rng(11);
        for k in [1, 3, 8, 64, 131, 300] {
            for n in [1, 2, 3, 5, 8, 9, 16, 17, 33, 64, 130] {
                let mut layer = Dense::<F>::zeros(k, n);
                layer
                    .weight
                    .mapv_inplace(|_| F::of(r.random_range(-1.0..1.0)));
                layer
                    .bias
                    .mapv_inplace(|_| F::of(r.random_range(-1.0..1.0)));
                for rows in [1, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 64] {
                    let x: Vec<F> = (0..rows * k)
                        .map(|_| F::of(r.random_range(-2.0..2.0)))
                        .collect();
                    let mut c = vec![F::nan(); rows * n];
                    layer.block_into(&x, rows, &mut c, None);
                    let exact = naive_dense(&layer, &x, rows);
                    for (got, e) in c.iter().zip(&exact) {
                        let bound = tol * (1.0 + e.abs()) * (k as f64).sqrt();
                        assert!(
                            (got.to_f64_lossless() - e).abs() <= bound,
                            "k {k} n {n} rows {rows}: {got} vs {e}"
                        );
                    }
                    for (i, row) in c.chunks_exact(n).enumerate() {
                        let mut point = vec![F::nan(); n];
                        layer.point(|j| x[i * k + j], &mut point, None);
                        assert_eq!(row, &point[..], "k {k} n {n} rows {rows} row {i}");
                        if n > 2 {
                            let mut window = [F::nan(); 2];
                            layer.row_into(|j| x[i * k + j], 1, &mut window);
                            assert_eq!(window, [row[1], row[2]]);
                        }
                    }
                    let mut relu = vec![F::nan(); rows * n];
                    layer.block_into(&x, rows, &mut relu, Some(Activation::Relu));
                    for (a, &v) in relu.iter().zip(&c) {
                        assert_eq!(*a, Activation::Relu.apply(v));
                    }
                }
            }
        }
    }

    /// The portable tiles (no FMA; what processors without AVX2 and FMA run) against the
    /// portable row kernel: the same sums, bit for bit.
    #[test]
    fn portable_tiles_equal_the_portable_row_kernel() {
        let mut r = rng(13);
        for (k, n, rows) in [(1, 64, 9), (8, 16, 13), (64, 2, 21), (200, 33, 6)] {
            let w: Vec<f32> = (0..k * n).map(|_| r.random_range(-1.0..1.0)).collect();
            let bias: Vec<f32> = (0..n).map(|_| r.random_range(-1.0..1.0)).collect();
            let a: Vec<f32> = (0..rows * k).map(|_| r.random_range(-2.0..2.0)).collect();
            let block = Block {
                w: &w,
                bias: &bias,
                k,
                n,
                a: &a,
                rows,
                layout: Layout::default(),
            };
            let mut c = vec![f32::NAN; rows * n];
            block.columns::<16, 8>(&mut c, &|v| v, Kernel::Plain);
            for (x, c) in a.chunks_exact(k).zip(c.chunks_exact(n)) {
                let mut row = vec![0.0; n];
                accumulate_with::<f32, false>(&mut row, &x[..k], &w, n);
                for (o, b) in row.iter_mut().zip(&bias) {
                    *o += b;
                }
                assert_eq!(c, &row[..], "k {k} n {n}");
            }
        }
    }

    #[test]
    fn dense_kernel_matches_exact_products_and_the_point_kernel() {
        dense_kernel_matches::<f64>(1e-14);
        dense_kernel_matches::<f32>(1e-6);
    }

    #[test]
    fn point_path_equals_batch_bit_for_bit() {
        let mut r = rng(12);
        for hidden in HIDDEN {
            for act in ACTIVATIONS {
                let mut net: Mlp<f32> = Mlp::new(5, hidden, 7, act, &mut r);
                for layer in &mut net.layers {
                    layer.weight.mapv_inplace(|_| r.random_range(-0.5..0.5));
                    layer.bias.mapv_inplace(|_| r.random_range(-0.5..0.5));
                }
                let x = Array2::from_shape_simple_fn((37, 5), || r.random_range(-2.0f32..2.0));
                let mut out = Array2::zeros((37, 7));
                let mut a = vec![0.0; 37 * net.max_hidden()];
                let mut b = vec![0.0; net.hidden_b_len(37)];
                net.forward_block(x.view(), out.view_mut(), &mut a, &mut b);
                let mut scratch = vec![f32::NAN; net.point_scratch()];
                for (i, row) in x.rows().into_iter().enumerate() {
                    let input = |j: usize| row[j];
                    let h = net.hidden_point(input, &mut scratch);
                    let mut o = [f32::NAN; 7];
                    if hidden.is_empty() {
                        net.output_point(input, 0, &mut o);
                    } else {
                        net.output_point(|j| h[j], 0, &mut o);
                    }
                    assert_eq!(o[..], out.row(i).to_vec()[..], "{hidden:?} {act:?} row {i}");
                }
            }
        }
    }

    #[test]
    fn point_path_equals_batch() {
        let mut r = rng(5);
        for hidden in HIDDEN {
            for act in ACTIVATIONS {
                let mut net: Mlp<f64> = Mlp::new(4, hidden, 6, act, &mut r);
                randomise(&mut net, &mut r);
                let x = random_input(20, 4, &mut r);
                let out = batch(&net, &x);
                let mut scratch = vec![f64::NAN; net.point_scratch()];
                for i in 0..x.nrows() {
                    let input = |j: usize| x[[i, j]];
                    let h = net.hidden_point(input, &mut scratch);
                    for k in 0..6 {
                        let v = if hidden.is_empty() {
                            net.output_unit_with(input, k)
                        } else {
                            net.output_unit(h, k)
                        };
                        assert!(close(v, out[[i, k]], 1e-12), "{hidden:?} {act:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn point_scratch_depends_only_on_hidden_widths() {
        let mut r = rng(6);
        for inputs in [1, 3, 50] {
            for outputs in [1, 7, 100] {
                let net: Mlp<f64> =
                    Mlp::new(inputs, &[5, 11, 3, 8], outputs, Activation::Elu, &mut r);
                // Even layers: 5, 3 → 5; odd layers: 11, 8 → 11.
                assert_eq!(net.point_scratch(), 16);
                assert_eq!(net.max_hidden(), 11);
            }
        }
    }

    #[test]
    fn activation_values() {
        let cases: [(f64, [f64; 4]); 5] = [
            // x, [relu, tanh, elu, silu]
            (0.0, [0.0, 0.0, 0.0, 0.0]),
            (
                1.5,
                [1.5, 1.5f64.tanh(), 1.5, 1.5 / (1.0 + (-1.5f64).exp())],
            ),
            (
                -0.7,
                [
                    0.0,
                    (-0.7f64).tanh(),
                    (-0.7f64).exp() - 1.0,
                    -0.7 / (1.0 + 0.7f64.exp()),
                ],
            ),
            (30.0, [30.0, 1.0, 30.0, 30.0 / (1.0 + (-30.0f64).exp())]),
            (-800.0, [0.0, -1.0, -1.0, 0.0]),
        ];
        for (x, expected) in cases {
            for (act, e) in ACTIVATIONS.into_iter().zip(expected) {
                let v = act.apply(x);
                assert!(close(v, e, 1e-14), "{act:?}({x}) = {v}, expected {e}");
                assert!(
                    close(act.apply(x as f32) as f64, e, 1e-6),
                    "{act:?}({x}) in f32"
                );
            }
        }
        // Large inputs stay finite (stable sigmoid inside silu).
        for act in ACTIVATIONS {
            for x in [-1e308f64, -1e4, 1e4, 1e308] {
                assert!(
                    act.apply(x).is_finite() && act.derivative(x).is_finite(),
                    "{act:?} {x}"
                );
                let x32 = x.clamp(-3e38, 3e38) as f32;
                assert!(
                    act.apply(x32).is_finite() && act.derivative(x32).is_finite(),
                    "{act:?} {x32}"
                );
            }
            assert!(act.apply(f64::NAN).is_nan(), "{act:?} must propagate NaN");
        }
    }

    #[test]
    fn activation_derivatives_match_finite_differences() {
        let h = 1e-6;
        for act in ACTIVATIONS {
            for i in 0..81 {
                let x = -8.0 + 0.2 * i as f64 + 0.0137; // avoids the kinks at 0
                let fd = (act.apply(x + h) - act.apply(x - h)) / (2.0 * h);
                let d = act.derivative(x);
                assert!(close(d, fd, 1e-7), "{act:?}'({x}) = {d}, fd {fd}");
                assert!(
                    close(act.derivative(x as f32) as f64, d, 1e-5),
                    "{act:?}'({x}) in f32"
                );
            }
        }
        assert_eq!(Activation::Relu.derivative(0.0), 0.0);
        assert_eq!(Activation::Elu.derivative(0.0), 1.0);
        assert_eq!(Activation::Silu.derivative(0.0), 0.5);
        assert_eq!(Activation::Tanh.derivative(0.0), 1.0);
    }
    /// Central-difference check: `|g − fd| ≤ 1e-5·max(|g|, |fd|) + 1e-7`.
    fn grad_close(g: f64, fd: f64) -> bool {
        (g - fd).abs() <= 1e-5 * g.abs().max(fd.abs()) + 1e-7
    }

    /// The flat parameters, in the layout of `visit_params`.
    fn flat_params(net: &Mlp<f64>) -> Vec<f64> {
        let mut out = Vec::new();
        net.visit_params(|_, _, _, v| out.extend_from_slice(v));
        out
    }

    /// Sets flat parameter `p` through `visit_params_mut`.
    fn set_param(net: &mut Mlp<f64>, p: usize, value: f64) {
        let mut offset = 0;
        net.visit_params_mut(|_, _, _, v| {
            if (offset..offset + v.len()).contains(&p) {
                v[p - offset] = value;
            }
            offset += v.len();
        });
    }

    /// `forward_block_tape` into fresh NaN-filled buffers: (outputs, pre, post).
    fn tape_forward(net: &Mlp<f64>, x: &Array2<f64>) -> (Array2<f64>, Vec<f64>, Vec<f64>) {
        let rows = x.nrows();
        let mut out = Array2::from_elem((rows, net.outputs()), f64::NAN);
        let mut pre = vec![f64::NAN; rows * net.hidden_total()];
        let mut post = vec![f64::NAN; rows * net.hidden_total()];
        net.forward_block_tape(
            x.view(),
            out.view_mut(),
            &mut MlpTape {
                pre: &mut pre,
                post: &mut post,
            },
        );
        (out, pre, post)
    }

    /// `∂J/∂input` and `∂J/∂θ` (added to `param_grad`) of `J = Σ ⟨out_grad, net(x)⟩`.
    fn backward(
        net: &Mlp<f64>,
        x: &Array2<f64>,
        out_grad: &Array2<f64>,
        param_grad: &mut [f64],
    ) -> Array2<f64> {
        let rows = x.nrows();
        let (_, mut pre, mut post) = tape_forward(net, x);
        let mut input_grad = Array2::from_elem((rows, net.inputs()), f64::NAN);
        let mut scratch = vec![f64::NAN; rows * net.max_hidden()];
        net.backward_block(
            x.view(),
            &mut MlpTape {
                pre: &mut pre,
                post: &mut post,
            },
            out_grad.view(),
            input_grad.view_mut(),
            param_grad,
            &mut scratch,
        );
        input_grad
    }

    fn objective(net: &Mlp<f64>, x: &Array2<f64>, out_grad: &Array2<f64>) -> f64 {
        (batch(net, x) * out_grad).sum()
    }

    #[test]
    fn param_visitors_follow_the_layout() {
        let mut r = rng(7);
        let mut net: Mlp<f64> = Mlp::new(3, &[5, 4], 2, Activation::Tanh, &mut r);
        randomise(&mut net, &mut r);
        let mut seen = Vec::new();
        net.visit_params(|l, kind, shape, v| {
            assert_eq!(shape.iter().product::<usize>(), v.len());
            seen.push((l, kind, shape.to_vec()));
        });
        let expected = [
            (0, "weight", vec![3, 5]),
            (0, "bias", vec![5]),
            (1, "weight", vec![5, 4]),
            (1, "bias", vec![4]),
            (2, "weight", vec![4, 2]),
            (2, "bias", vec![2]),
        ];
        assert_eq!(seen, expected);
        assert_eq!(net.param_len(), 15 + 5 + 20 + 4 + 8 + 2);
        let flat = flat_params(&net);
        assert_eq!(flat.len(), net.param_len());
        // Row-major weights: entry [j, o] of layer 1 is at 20 + j·4 + o.
        assert_eq!(flat[20 + 2 * 4 + 3], net.layers[1].weight[[2, 3]]);
        assert_eq!(flat[40 + 1], net.layers[1].bias[1]);
        set_param(&mut net, 20 + 2 * 4 + 3, 42.0);
        assert_eq!(net.layers[1].weight[[2, 3]], 42.0);
        assert_eq!((net.hidden_total(), net.max_hidden()), (9, 5));
    }

    #[test]
    fn tape_forward_equals_forward_block() {
        let mut r = rng(8);
        for hidden in HIDDEN {
            for act in ACTIVATIONS {
                let mut net: Mlp<f64> = Mlp::new(4, hidden, 6, act, &mut r);
                randomise(&mut net, &mut r);
                for rows in [1, 3, 13] {
                    let x = random_input(rows, 4, &mut r);
                    let (out, pre, post) = tape_forward(&net, &x);
                    assert_eq!(out, batch(&net, &x), "{hidden:?} {act:?} {rows} rows");
                    for (z, a) in pre.iter().zip(&post) {
                        assert_eq!(*a, act.apply(*z));
                    }
                }
            }
        }
    }

    #[test]
    fn backward_block_matches_finite_differences() {
        let mut r = rng(9);
        let h = 1e-5;
        for hidden in HIDDEN {
            for act in ACTIVATIONS {
                let mut net: Mlp<f64> = Mlp::new(3, hidden, 4, act, &mut r);
                randomise(&mut net, &mut r);
                let x = random_input(5, 3, &mut r);
                let g = Array2::from_shape_simple_fn((5, 4), || r.random_range(-1.0..1.0));
                let mut param_grad = vec![0.0; net.param_len()];
                let input_grad = backward(&net, &x, &g, &mut param_grad);
                for i in 0..5 {
                    for j in 0..3 {
                        let (mut up, mut down) = (x.clone(), x.clone());
                        up[[i, j]] += h;
                        down[[i, j]] -= h;
                        let fd =
                            (objective(&net, &up, &g) - objective(&net, &down, &g)) / (2.0 * h);
                        let got = input_grad[[i, j]];
                        assert!(
                            grad_close(got, fd),
                            "{hidden:?} {act:?} input [{i},{j}]: {got} vs {fd}"
                        );
                    }
                }
                let flat = flat_params(&net);
                for (p, &v) in flat.iter().enumerate() {
                    set_param(&mut net, p, v + h);
                    let up = objective(&net, &x, &g);
                    set_param(&mut net, p, v - h);
                    let down = objective(&net, &x, &g);
                    set_param(&mut net, p, v);
                    let fd = (up - down) / (2.0 * h);
                    assert!(
                        grad_close(param_grad[p], fd),
                        "{hidden:?} {act:?} param {p}: {} vs {fd}",
                        param_grad[p]
                    );
                }
            }
        }
    }

    /// Every layout of [`matmul`] (either operand transposed, overwriting or adding), on
    /// shapes that exercise the tiles' edges and a `k` longer than a panel, against the
    /// naive product in f64.
    fn matmul_matches<F: Float>(tol: f64) {
        let mut r = rng(14);
        let mut draw =
            |len: usize| -> Vec<F> { (0..len).map(|_| F::of(r.random_range(-1.0..1.0))).collect() };
        for m in [1, 4, 5, 13] {
            for k in [0, 1, 3, 131, 300] {
                for n in [1, 5, 16, 17, 33] {
                    let (a, b, start) = (draw(m * k), draw(k * n), draw(m * n));
                    for (a_t, b_t, add) in (0..8).map(|i| (i & 1 != 0, i & 2 != 0, i & 4 != 0)) {
                        let at = |i: usize, kk: usize| {
                            let v = if a_t { a[kk * m + i] } else { a[i * k + kk] };
                            v.to_f64_lossless()
                        };
                        let bt = |kk: usize, j: usize| {
                            let v = if b_t { b[j * k + kk] } else { b[kk * n + j] };
                            v.to_f64_lossless()
                        };
                        let mut c = start.clone();
                        matmul((m, k, n), &a, a_t, &b, b_t, &mut c, add);
                        for i in 0..m {
                            for j in 0..n {
                                let base = if add {
                                    start[i * n + j].to_f64_lossless()
                                } else {
                                    0.0
                                };
                                let e = base + (0..k).map(|kk| at(i, kk) * bt(kk, j)).sum::<f64>();
                                let got = c[i * n + j].to_f64_lossless();
                                let bound = tol * (1.0 + e.abs()) * (k as f64 + 1.0).sqrt();
                                assert!(
                                    (got - e).abs() <= bound,
                                    "m {m} k {k} n {n} a_t {a_t} b_t {b_t} add {add}: {got} vs {e}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn matmul_matches_naive_products_in_every_layout() {
        matmul_matches::<f64>(1e-14);
        matmul_matches::<f32>(1e-6);
    }

    /// The portable tiles in the transposed layouts (what processors without AVX2 and FMA
    /// run) against the naive product.
    #[test]
    fn portable_tiles_in_transposed_layouts() {
        let mut r = rng(16);
        for (m, k, n) in [(1, 5, 3), (9, 200, 33), (13, 7, 16), (6, 131, 2)] {
            let a: Vec<f32> = (0..m * k).map(|_| r.random_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..k * n).map(|_| r.random_range(-1.0..1.0)).collect();
            for (a_t, w_t) in [(true, false), (false, true), (true, true)] {
                let start: Vec<f32> = (0..m * n).map(|_| r.random_range(-1.0..1.0)).collect();
                let block = Block {
                    w: &b,
                    bias: &[],
                    k,
                    n,
                    a: &a,
                    rows: m,
                    layout: Layout {
                        a_t,
                        w_t,
                        add: true,
                    },
                };
                let mut c = start.clone();
                block.columns::<16, 8>(&mut c, &|v| v, Kernel::Plain);
                for i in 0..m {
                    for j in 0..n {
                        let mut e = start[i * n + j] as f64;
                        for kk in 0..k {
                            let x = if a_t { a[kk * m + i] } else { a[i * k + kk] };
                            let w = if w_t { b[j * k + kk] } else { b[kk * n + j] };
                            e += x as f64 * w as f64;
                        }
                        let got = c[i * n + j] as f64;
                        assert!((got - e).abs() <= 1e-5 * (1.0 + e.abs()), "{got} vs {e}");
                    }
                }
            }
        }
    }

    /// Strided operands take the `general_mat_mul` path: the same gradients.
    #[test]
    fn backward_block_accepts_strided_operands() {
        let mut r = rng(15);
        let mut net: Mlp<f64> = Mlp::new(3, &[6, 5], 4, Activation::Tanh, &mut r);
        randomise(&mut net, &mut r);
        let x = random_input(9, 3, &mut r);
        let g = random_input(9, 4, &mut r);
        let mut expected = vec![0.0; net.param_len()];
        let expected_input = backward(&net, &x, &g, &mut expected);
        let x_f = x.t().as_standard_layout().to_owned().reversed_axes();
        let g_f = g.t().as_standard_layout().to_owned().reversed_axes();
        assert!(!x_f.is_standard_layout() && !g_f.is_standard_layout());
        let (_, mut pre, mut post) = tape_forward(&net, &x);
        let mut input_grad = Array2::from_elem((3, 9), f64::NAN).reversed_axes();
        let mut param_grad = vec![0.0; net.param_len()];
        let mut scratch = vec![f64::NAN; 9 * net.max_hidden()];
        net.backward_block(
            x_f.view(),
            &mut MlpTape {
                pre: &mut pre,
                post: &mut post,
            },
            g_f.view(),
            input_grad.view_mut(),
            &mut param_grad,
            &mut scratch,
        );
        for (a, e) in input_grad.iter().zip(&expected_input) {
            assert!(close(*a, *e, 1e-13), "{a} vs {e}");
        }
        for (a, e) in param_grad.iter().zip(&expected) {
            assert!(close(*a, *e, 1e-13), "{a} vs {e}");
        }
    }

    #[test]
    fn backward_block_adds_to_param_grad() {
        let mut r = rng(10);
        let mut net: Mlp<f64> = Mlp::new(3, &[6, 5], 4, Activation::Silu, &mut r);
        randomise(&mut net, &mut r);
        let x = random_input(9, 3, &mut r);
        let g = random_input(9, 4, &mut r);
        let mut fresh = vec![0.0; net.param_len()];
        let input_grad = backward(&net, &x, &g, &mut fresh);
        let start: Vec<f64> = (0..net.param_len())
            .map(|_| r.random_range(-3.0..3.0))
            .collect();
        let mut acc = start.clone();
        let again = backward(&net, &x, &g, &mut acc);
        assert_eq!(input_grad, again);
        for ((a, s), f) in acc.iter().zip(&start).zip(&fresh) {
            assert!(close(*a, s + f, 1e-13), "{a} vs {s} + {f}");
        }
    }
}
