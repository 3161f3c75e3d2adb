//! The forward kernel of a dense layer in `f32` on processors with AVX2 and FMA:
//! `c = act(a·w + bias)` in register tiles of 6 rows × 16 outputs (12 accumulators, so
//! that the two FMA pipes always have an independent sum to work on; the other registers
//! hold the two vectors of weights and the broadcast input). One row tile at a time runs
//! over every column of outputs, so its rows stay in L1 while the weights (a few KiB for
//! a conditioner) are read in place, row by row: nothing is packed or copied. Outputs
//! past the last multiple of 16 use masked loads and stores (a tile of 6 rows × 16, or of
//! 8 rows × 8 for a rest of at most 8). The bias and the activation are applied as each
//! tile is stored.
//!
//! Each output is `((Σ_kk a[kk]·w[kk]) + bias)`, the terms added in the order of `kk` from
//! zero with one fused multiply-add each, then the bias: the sums of the row kernel
//! (`Dense::row_into` compiled with FMA), bit for bit.

use std::arch::x86_64::*;

use super::Activation;

/// Rows of a tile 16 outputs wide (two vectors per row: 12 accumulators).
const MR_WIDE: usize = 6;

/// Rows of a tile at most 8 outputs wide (one vector per row: 8 accumulators).
const MR_NARROW: usize = 8;

/// The operands of [`dense`]: `a` row-major `rows × k`, `w` row-major `k × n`, `bias` of
/// `n` values.
pub(super) struct Operands<'a> {
    pub a: &'a [f32],
    pub rows: usize,
    pub k: usize,
    pub w: &'a [f32],
    pub n: usize,
    pub bias: &'a [f32],
}

/// `c = act(a·w + bias)` (row-major `rows × n`; `act` the identity when `None`).
///
/// # Safety
/// The processor must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dense(d: &Operands<'_>, c: &mut [f32], act: Option<Activation>) {
    let Operands {
        a,
        rows,
        k,
        w,
        n,
        bias,
    } = *d;
    assert!(
        rows > 0 && k > 0 && a.len() >= rows * k && w.len() >= k * n && bias.len() >= n,
        "dense f32 operands too small"
    );
    assert!(c.len() >= rows * n, "dense f32 output too small");
    let relu = act == Some(Activation::Relu);
    let wide = n / 16 * 16;
    let rest = n - wide;
    if n > 8 {
        for i0 in (0..rows).step_by(MR_WIDE) {
            let tile = Tile::<MR_WIDE>::at(a, k, i0, rows);
            for j0 in (0..wide).step_by(16) {
                // SAFETY: columns `j0..j0 + 16 ≤ n`; `tile` checked its rows.
                unsafe { tile.run::<2>(w, n, bias, j0, 16, relu, c) };
            }
            if rest > 8 {
                // SAFETY: the masks read and write only columns `wide..n`.
                unsafe { tile.run::<2>(w, n, bias, wide, rest, relu, c) };
            }
        }
    }
    if n % 16 != 0 && rest <= 8 {
        for i0 in (0..rows).step_by(MR_NARROW) {
            let tile = Tile::<MR_NARROW>::at(a, k, i0, rows);
            // SAFETY: the mask reads and writes only columns `wide..n`.
            unsafe { tile.run::<1>(w, n, bias, wide, rest, relu, c) };
        }
    }
    // ReLU was applied as the tiles were stored; any other activation goes over the block.
    if let Some(act) = act.filter(|_| !relu) {
        act.apply_slice(&mut c[..rows * n]);
    }
}

/// Rows `i0..i0 + valid` of `a` (`MR` at most), as the addresses of `MR` rows: the last
/// valid row repeated in place of missing ones (their sums are computed, not stored).
struct Tile<const MR: usize> {
    rows: [*const f32; MR],
    k: usize,
    i0: usize,
    valid: usize,
}

impl<const MR: usize> Tile<MR> {
    #[inline(always)]
    fn at(a: &[f32], k: usize, i0: usize, rows: usize) -> Self {
        let valid = MR.min(rows - i0);
        Self {
            rows: std::array::from_fn(|r| a[(i0 + r.min(valid - 1)) * k..][..k].as_ptr()),
            k,
            i0,
            valid,
        }
    }

    /// The outputs `j0..j0 + 8·V` of the tile's rows, of which the first `cols` are
    /// real (the rest masked off): the sums over the
    /// weights `w` (row-major, rows of `n`), plus the bias, ReLU when `relu`, stored in
    /// `c` (row-major, rows of `n`).
    ///
    /// # Safety
    /// AVX2 and FMA; every unmasked column `j0 + 8·v + t` below `n`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn run<const V: usize>(
        &self,
        w: &[f32],
        n: usize,
        bias: &[f32],
        j0: usize,
        cols: usize,
        relu: bool,
        c: &mut [f32],
    ) {
        assert!(
            cols <= 8 * V && j0 + cols <= n && j0 + cols <= bias.len() && w.len() >= self.k * n,
            "dense f32 tile out of bounds"
        );
        let lanes = |v: usize| cols.saturating_sub(8 * v).min(8);
        let full: [bool; V] = std::array::from_fn(|v| lanes(v) == 8);
        let masks: [__m256i; V] = std::array::from_fn(|v| mask_vector(lanes(v)));
        // SAFETY: AVX2 (the caller).
        let mut acc = [[unsafe { _mm256_setzero_ps() }; V]; MR];
        let w = w[j0..].as_ptr();
        for kk in 0..self.k {
            // SAFETY: row `kk < k` of `w`, its unmasked columns below `n` (the caller),
            // and entry `kk` of each row of `a` (`at` took `k` values of each).
            unsafe {
                let row = w.add(kk * n);
                let wv: [__m256; V] =
                    std::array::from_fn(|v| load(row.add(8 * v), full[v], masks[v]));
                for (acc, p) in acc.iter_mut().zip(&self.rows) {
                    let x = _mm256_broadcast_ss(&*p.add(kk));
                    for (acc, &wv) in acc.iter_mut().zip(&wv) {
                        *acc = _mm256_fmadd_ps(x, wv, *acc);
                    }
                }
            }
        }
        // SAFETY: AVX2 (the caller).
        let zero = unsafe { _mm256_setzero_ps() };
        // SAFETY: the unmasked bias entries are below `n`.
        let b: [__m256; V] = std::array::from_fn(|v| unsafe {
            load(bias[j0..].as_ptr().add(8 * v), full[v], masks[v])
        });
        for (r, acc) in acc.iter().enumerate().take(self.valid) {
            let out = c[(self.i0 + r) * n + j0..].as_mut_ptr();
            for v in 0..V {
                // SAFETY: AVX2 (the caller); the unmasked columns of row `i0 + r < rows`
                // are in `c`.
                unsafe {
                    let mut x = _mm256_add_ps(acc[v], b[v]);
                    if relu {
                        // `max(0, x)` in this operand order keeps a NaN and a `−0` as
                        // `Activation::apply` does.
                        x = _mm256_max_ps(zero, x);
                    }
                    store(out.add(8 * v), x, full[v], masks[v]);
                }
            }
        }
    }
}

/// The mask of the first `cols` of 8 lanes.
#[inline(always)]
fn mask_vector(cols: usize) -> __m256i {
    // SAFETY: plain register arithmetic (the caller runs with AVX2).
    unsafe {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(cols as i32), lanes)
    }
}

/// 8 values from `p`, or (not `full`) the lanes of `mask`, the others zero.
#[inline(always)]
unsafe fn load(p: *const f32, full: bool, mask: __m256i) -> __m256 {
    // SAFETY: the caller's: the loaded lanes are in bounds (masked lanes never fault).
    unsafe {
        if full {
            _mm256_loadu_ps(p)
        } else {
            _mm256_maskload_ps(p, mask)
        }
    }
}

/// Stores 8 values at `p`, or (not `full`) the lanes of `mask`.
#[inline(always)]
unsafe fn store(p: *mut f32, v: __m256, full: bool, mask: __m256i) {
    // SAFETY: the caller's: the stored lanes are in bounds.
    unsafe {
        if full {
            _mm256_storeu_ps(p, v)
        } else {
            _mm256_maskstore_ps(p, mask, v)
        }
    }
}
