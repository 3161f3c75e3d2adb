//! Reusable scratch memory for the batch kernels: grown on demand, never shrunk, so a
//! flow evaluated repeatedly allocates nothing in steady state.

/// Scratch buffers a layer borrows for one row block: buffers of the flow's float, and
/// `f64` buffers for layers that accumulate in `f64` whatever the float.
#[derive(Debug, Default)]
pub struct Workspace<F> {
    buffers: Vec<Vec<F>>,
    wide: Vec<Vec<f64>>,
}

impl<F: Copy + Default> Workspace<F> {
    /// `N` scratch slices of the requested lengths (contents unspecified).
    pub fn slices<const N: usize>(&mut self, lens: [usize; N]) -> [&mut [F]; N] {
        carve(&mut self.buffers, lens)
    }

    /// `N` scratch slices of the float and `M` of `f64`, of the requested lengths
    /// (contents unspecified).
    pub fn slices_and_wide<const N: usize, const M: usize>(
        &mut self,
        lens: [usize; N],
        wide_lens: [usize; M],
    ) -> ([&mut [F]; N], [&mut [f64]; M]) {
        (
            carve(&mut self.buffers, lens),
            carve(&mut self.wide, wide_lens),
        )
    }

    /// `M` scratch slices of `f64` of the requested lengths (contents unspecified).
    pub fn wide_slices<const M: usize>(&mut self, lens: [usize; M]) -> [&mut [f64]; M] {
        carve(&mut self.wide, lens)
    }

    /// Elements currently reserved, of either type (for allocation tests).
    pub fn capacity(&self) -> usize {
        let narrow: usize = self.buffers.iter().map(Vec::capacity).sum();
        narrow + self.wide.iter().map(Vec::capacity).sum::<usize>()
    }
}

/// The first `N` of `buffers` (added and grown as needed), cut to `lens`.
fn carve<T: Copy + Default, const N: usize>(
    buffers: &mut Vec<Vec<T>>,
    lens: [usize; N],
) -> [&mut [T]; N] {
    if buffers.len() < N {
        buffers.resize_with(N, Vec::new);
    }
    for (buf, &len) in buffers.iter_mut().zip(&lens) {
        if buf.len() < len {
            buf.resize(len, T::default());
        }
    }
    let mut bufs = buffers.iter_mut();
    lens.map(|len| &mut bufs.next().expect("N buffers exist")[..len])
}

/// A thread's scratch for whole-flow evaluation: a copy of the current row block, buffers
/// for the backward pass, and the layers' workspace.
#[derive(Debug, Default)]
pub struct FlowScratch<F> {
    /// The current row block (row-major).
    pub rows: Vec<F>,
    /// The values entering each step of the inverse pass, kept for the backward pass.
    pub tape: Vec<F>,
    /// A gradient block, when the caller does not want the input gradient.
    pub grad: Vec<F>,
    /// Per-row values: weights, log-probabilities.
    pub per_row: [Vec<F>; 2],
    /// A second parameter-gradient buffer, for the half of a batch run on another thread.
    pub spare_grad: Vec<F>,
    /// What the layers borrow.
    pub layers: Workspace<F>,
}

/// `N` row-major `rows × dim` matrices carved from `buf` (grown if needed; contents
/// unspecified): the tape of a backward pass.
pub fn tape_views<const N: usize, F: Copy + Default>(
    buf: &mut Vec<F>,
    rows: usize,
    dim: usize,
) -> [ndarray::ArrayViewMut2<'_, F>; N] {
    let len = rows * dim;
    if buf.len() < N * len {
        buf.resize(N * len, F::default());
    }
    let mut rest = &mut buf[..N * len];
    std::array::from_fn(|_| {
        let (chunk, tail) = std::mem::take(&mut rest).split_at_mut(len);
        rest = tail;
        ndarray::ArrayViewMut2::from_shape((rows, dim), chunk).expect("rows × dim elements")
    })
}
