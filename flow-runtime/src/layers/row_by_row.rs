//! What the layers that map each row on its own, through a kernel on one point, share
//! ([`crate::layers::planar`], [`crate::layers::radial`]): running a kernel over the rows of
//! a block, the shape checks of the block methods, and the [`Layer`](crate::Layer) methods
//! built on the two row kernels ([`row_by_row_methods`]).

use ndarray::{ArrayView2, ArrayViewMut2};

use crate::fastmath;
use crate::float::Float;
use crate::layers::check_block;

/// `Σ a[i]·b[i]` over the shorter length, in index order.
#[inline]
pub(crate) fn dot<F: Float>(a: &[F], b: &[F]) -> F {
    a.iter().zip(b).fold(F::zero(), |s, (&a, &b)| s + a * b)
}

/// The logistic function `1/(1 + e^{−x})` (0 and 1 at the extremes, no NaN).
#[inline]
pub(crate) fn sigmoid<F: Float>(x: F) -> F {
    F::one() / (F::one() + fastmath::exp(-x))
}

/// Whether every entry is finite.
#[inline]
pub(crate) fn all_finite<F: Float>(v: &[F]) -> bool {
    v.iter().all(|v| v.is_finite())
}

/// Runs `f(i, row)` on every row `i` of `x` as a contiguous slice: in place when the row
/// is contiguous, else through `buf` (at least `x.ncols()` elements), copied back.
pub(crate) fn for_each_row<F: Float>(
    mut x: ArrayViewMut2<'_, F>,
    buf: &mut [F],
    mut f: impl FnMut(usize, &mut [F]),
) {
    let d = x.ncols();
    let buf = &mut buf[..d];
    for (i, mut row) in x.rows_mut().into_iter().enumerate() {
        match row.as_slice_mut() {
            Some(s) => f(i, s),
            None => {
                buf.iter_mut().zip(row.iter()).for_each(|(b, &v)| *b = v);
                f(i, buf);
                row.iter_mut().zip(buf.iter()).for_each(|(r, &b)| *r = b);
            }
        }
    }
}

/// Runs `f(i, z_row, grad_row)` on every row pair as contiguous slices (strided rows go
/// through `z_buf` and `g_buf`, at least `ncols` elements each; `grad_row` is copied back).
pub(crate) fn for_each_row_pair<F: Float>(
    z: ArrayView2<'_, F>,
    mut grad: ArrayViewMut2<'_, F>,
    z_buf: &mut [F],
    g_buf: &mut [F],
    mut f: impl FnMut(usize, &[F], &mut [F]),
) {
    let d = z.ncols();
    let (z_buf, g_buf) = (&mut z_buf[..d], &mut g_buf[..d]);
    for (i, (z_row, mut g_row)) in z.rows().into_iter().zip(grad.rows_mut()).enumerate() {
        let z_s: &[F] = match z_row.to_slice() {
            Some(s) => s,
            None => {
                z_buf
                    .iter_mut()
                    .zip(z_row.iter())
                    .for_each(|(b, &v)| *b = v);
                z_buf
            }
        };
        match g_row.as_slice_mut() {
            Some(g) => f(i, z_s, g),
            None => {
                g_buf
                    .iter_mut()
                    .zip(g_row.iter())
                    .for_each(|(b, &v)| *b = v);
                f(i, z_s, g_buf);
                g_row
                    .iter_mut()
                    .zip(g_buf.iter())
                    .for_each(|(r, &b)| *r = b);
            }
        }
    }
}

/// Checks the shapes a backward block method receives.
pub(crate) fn check_backward(
    name: &str,
    dim: usize,
    z: (usize, usize),
    grad: (usize, usize),
    weights: usize,
    param_grad: usize,
    param_len: usize,
) {
    check_block(name, dim, z.1, z.0, weights);
    assert_eq!(
        grad, z,
        "{name}: the input and gradient blocks differ in shape"
    );
    assert_eq!(
        param_grad, param_len,
        "{name}: param_grad has {param_grad} entries, the layer {param_len} parameters"
    );
}

/// The [`Layer`](crate::Layer) methods of a layer that maps each row on its own, for use
/// inside its `impl Layer<F>`: `kind` (`$name`), the block methods (row by row through the
/// point kernels, so the same bits; workspace: one row buffer for strided blocks) and the
/// point methods. The layer provides `dim()`, `$coefficients()` (what the row kernels
/// share, computed once per call) and the kernels `forward_row(&coefficients, row)` and
/// `inverse_row(&coefficients, row)`, which map `row` in place and return its log-det.
macro_rules! row_by_row_methods {
    ($name:literal, $coefficients:ident) => {
        fn kind(&self) -> &'static str {
            $name
        }

        fn forward_block(
            &self,
            x: ndarray::ArrayViewMut2<'_, F>,
            mut log_det: ndarray::ArrayViewMut1<'_, F>,
            ws: &mut $crate::workspace::Workspace<F>,
        ) {
            let d = self.dim();
            let (cols, rows) = (x.ncols(), x.nrows());
            $crate::layers::check_block($name, d, cols, rows, log_det.len());
            let c = self.$coefficients();
            let [buf] = ws.slices([d]);
            $crate::layers::row_by_row::for_each_row(x, buf, |i, row| {
                log_det[i] += self.forward_row(&c, row)
            });
        }

        fn inverse_block(
            &self,
            y: ndarray::ArrayViewMut2<'_, F>,
            mut log_det: ndarray::ArrayViewMut1<'_, F>,
            ws: &mut $crate::workspace::Workspace<F>,
        ) {
            let d = self.dim();
            let (cols, rows) = (y.ncols(), y.nrows());
            $crate::layers::check_block($name, d, cols, rows, log_det.len());
            let c = self.$coefficients();
            let [buf] = ws.slices([d]);
            $crate::layers::row_by_row::for_each_row(y, buf, |i, row| {
                log_det[i] += self.inverse_row(&c, row)
            });
        }

        fn forward_point(&self, x: &mut [F], _scratch: &mut [F]) -> F {
            assert_eq!(
                x.len(),
                self.dim(),
                concat!($name, ": the point has the wrong length")
            );
            self.forward_row(&self.$coefficients(), x)
        }

        fn inverse_point(&self, y: &mut [F], _scratch: &mut [F]) -> F {
            assert_eq!(
                y.len(),
                self.dim(),
                concat!($name, ": the point has the wrong length")
            );
            self.inverse_row(&self.$coefficients(), y)
        }
    };
}
pub(crate) use row_by_row_methods;
