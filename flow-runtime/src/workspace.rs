//! Reusable scratch memory for the batch kernels: grown on demand, never shrunk, so a
//! flow evaluated repeatedly allocates nothing in steady state.

/// Scratch buffers a layer borrows for one row block.
#[derive(Debug, Default)]
pub struct Workspace<F> {
    buffers: [Vec<F>; 4],
}

impl<F: Copy + Default> Workspace<F> {
    /// Four scratch slices of the requested lengths (contents unspecified).
    pub fn slices(&mut self, lens: [usize; 4]) -> [&mut [F]; 4] {
        for (buf, &len) in self.buffers.iter_mut().zip(&lens) {
            if buf.len() < len {
                buf.resize(len, F::default());
            }
        }
        let [a, b, c, d] = &mut self.buffers;
        [
            &mut a[..lens[0]],
            &mut b[..lens[1]],
            &mut c[..lens[2]],
            &mut d[..lens[3]],
        ]
    }

    /// Elements currently reserved (for allocation tests).
    pub fn capacity(&self) -> usize {
        self.buffers.iter().map(Vec::capacity).sum()
    }
}

/// A thread's scratch for whole-flow evaluation: a copy of the current row block, and
/// the layers' workspace.
#[derive(Debug, Default)]
pub struct FlowScratch<F> {
    /// The current row block (row-major).
    pub rows: Vec<F>,
    /// What the layers borrow.
    pub layers: Workspace<F>,
}
