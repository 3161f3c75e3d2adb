//! MADE (Germain et al. 2015): an MLP whose weight matrices are masked so that output `i`
//! depends only on the inputs that come before coordinate `i` in an autoregressive order.
//! The conditioner of the autoregressive layers ([`crate::layers::Autoregressive`]).
//!
//! Degrees: input coordinate `c` gets `m(c) =` its position in the order plus one
//! (`1..=D`); hidden unit `k` of every hidden layer gets `k mod (D − 1) + 1` (`1..D−1`,
//! cyclically), or `0` when `D = 1` (it then sees no input). A weight is kept when
//!
//! * input `j` → hidden unit `k`: `m(k) ≥ m(j)`;
//! * hidden unit `j` → hidden unit `k` of the next layer: `m(k) ≥ m(j)`;
//! * hidden unit `j` (or, without hidden layers, input `j`) → an output of coordinate `c`:
//!   `m(c) > m(j)`,
//!
//! so every path from input `j` to an output of coordinate `c` has `m(j) < m(c)`. With every
//! hidden layer at least `D − 1` wide each degree appears in every layer, and output `c`
//! sees all of its predecessors. The masked weights are exactly zero and stay zero: the
//! mask is applied at construction and after every [`Made::visit_params_mut`] (the only way
//! the optimiser and the loader change parameters), and their gradient is zero.
//!
//! Outputs: `P` per coordinate, coordinate-major: output `c·P + p` is parameter `p` of
//! coordinate `c`, so one coordinate's parameters are contiguous.
//!
//! Besides the dense [`Mlp`] (the point kernels, the taped passes of the backward mode), the
//! batch kernels [`Made::forward_t`] and [`Made::pass_t`] read only the kept weights, on
//! blocks stored feature-major (one contiguous run of rows per input, unit or output).
//! Units of a layer with the same degree read the same inputs and are computed together;
//! a hidden unit of degree `d` is computed in pass `d` of the sequential direction, when
//! every input it reads is final, so the `D` passes of that direction together cost one
//! masked pass of the network.

use ndarray::ArrayView2;
use rand::Rng;

use crate::float::Float;
use crate::layers::permute::seeded_permutation;
use crate::nets::{Activation, Dense, Mlp, MlpTape, madd};

/// The autoregressive order of a layer: which coordinate comes first, second, …
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Coordinates `0, 1, …, D − 1`.
    Natural,
    /// Coordinates `D − 1, …, 1, 0`.
    Reverse,
    /// The coordinates in the order `seeded_permutation(D, seed)` (the permutation of
    /// [`crate::layers::Permute::seeded`]): position `k` holds coordinate `perm[k]`.
    Seeded(u64),
}

impl Order {
    /// `order[k]` = the coordinate at position `k`, for `k in 0..dim`.
    pub fn coordinates(&self, dim: usize) -> Vec<usize> {
        match *self {
            Order::Natural => (0..dim).collect(),
            Order::Reverse => (0..dim).rev().collect(),
            Order::Seeded(seed) => seeded_permutation(dim, seed),
        }
    }
}

/// A masked autoregressive MLP: `dim` inputs, `dim · P` outputs (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Made<F> {
    /// The network; its masked weights are zero. Private so that nothing writes them
    /// without the mask being re-applied.
    net: Mlp<F>,
    /// `order[k]`: the coordinate at position `k`.
    order: Vec<usize>,
    /// Outputs per coordinate.
    per_coordinate: usize,
    /// One flag per parameter, in the flat layout of [`Made::visit_params`]: `false` for a
    /// masked weight (biases are never masked).
    keep: Vec<bool>,
    /// For each layer, its units in groups of one pass each (see [`Group`]), in
    /// increasing pass: the plan of [`Made::pass_t`].
    passes: Vec<Vec<Group<F>>>,
    /// For each layer, its units in groups of up to [`MAX_UNITS`] across passes: the plan
    /// of [`Made::forward_t`].
    whole: Vec<Vec<Group<F>>>,
}

/// The most units one call of the feature-major kernel computes (their sums stay in
/// registers: two 256-bit vectors per unit).
const MAX_UNITS: usize = 6;

/// Up to [`MAX_UNITS`] units of one layer computed together by the feature-major kernel,
/// with a copy of their weights packed in the order the kernel reads them.
/// (Public only as the argument of [`MatrixKernels::made_units`], unconstructible outside.)
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq)]
pub struct Group<F> {
    /// The pass of the sequential direction that computes them ([`Made::pass_t`]): the
    /// degree of hidden units, the position in the order of the outputs' coordinate (in
    /// a group of [`Made::forward_t`]'s plan, the first of its passes).
    pass: usize,
    /// The units.
    units: Vec<usize>,
    /// The inputs the units read, increasing: every input a kept weight of one of them
    /// reads (the others' weights from it are masked, zero).
    inputs: Vec<usize>,
    /// `weights[i·G + g] = weight[inputs[i], units[g]]` (`G` units), and `bias[g]`:
    /// copies of the network's, refreshed whenever the parameters change.
    weights: Vec<F>,
    bias: Vec<F>,
}

impl<F: Float> Group<F> {
    /// A group of `units` reading `inputs`, weights not yet copied.
    fn new(pass: usize, units: Vec<usize>, inputs: Vec<usize>) -> Self {
        Self {
            pass,
            weights: vec![F::zero(); inputs.len() * units.len()],
            bias: vec![F::zero(); units.len()],
            units,
            inputs,
        }
    }

    /// Copies the group's weights and biases from `layer`.
    fn refresh(&mut self, layer: &Dense<F>) {
        let g = self.units.len();
        for (w, &j) in self.weights.chunks_exact_mut(g).zip(&self.inputs) {
            for (w, &u) in w.iter_mut().zip(&self.units) {
                *w = layer.weight[[j, u]];
            }
        }
        for (b, &u) in self.bias.iter_mut().zip(&self.units) {
            *b = layer.bias[u];
        }
    }

    /// Splits the group into groups of at most [`MAX_UNITS`] units, of balanced sizes.
    fn split(self) -> Vec<Self> {
        let n = self.units.len();
        let parts = n.div_ceil(MAX_UNITS);
        let mut out = Vec::with_capacity(parts);
        let mut start = 0;
        for p in 0..parts {
            let end = start + (n - start) / (parts - p);
            let units = self.units[start..end].to_vec();
            out.push(Self::new(self.pass, units, self.inputs.clone()));
            start = end;
        }
        out
    }
}

/// The degree of hidden unit `k` in a MADE on `dim` coordinates.
fn hidden_degree(dim: usize, k: usize) -> usize {
    if dim == 1 { 0 } else { k % (dim - 1) + 1 }
}

impl<F: Float> Made<F> {
    /// A MADE on `order.len()` coordinates in the autoregressive order `order` (a
    /// permutation: `order[k]` is the coordinate at position `k`), `per_coordinate`
    /// outputs per coordinate, and the given hidden widths. Hidden layers are random (as
    /// [`Mlp::new`] draws them, then masked); the output layer is zero, so the network
    /// starts by outputting 0.
    ///
    /// Panics if `order` is empty or not a permutation, if `per_coordinate` is 0, or if a
    /// hidden layer has fewer than `D − 1` units (then some coordinate cannot see all of
    /// its predecessors); `flow!` checks these at compile time.
    pub fn new<R: Rng + ?Sized>(
        order: &[usize],
        hidden: &[usize],
        per_coordinate: usize,
        activation: Activation,
        rng: &mut R,
    ) -> Self {
        let dim = order.len();
        assert!(dim > 0, "made: dim must be at least 1");
        assert!(
            per_coordinate > 0,
            "made: at least one output per coordinate is needed"
        );
        let mut position = vec![usize::MAX; dim];
        for (k, &c) in order.iter().enumerate() {
            assert!(
                c < dim && position[c] == usize::MAX,
                "made: the order {order:?} is not a permutation of 0..{dim}"
            );
            position[c] = k;
        }
        for (l, &width) in hidden.iter().enumerate() {
            assert!(
                width + 1 >= dim,
                "made: hidden layer {l} has {width} units but dim = {dim} needs at least \
                 dim − 1 = {} (each degree 1..dim−1 must appear in every hidden layer, or \
                 some coordinate cannot see all of its predecessors); widen the layer",
                dim - 1
            );
        }
        let net = Mlp::new(dim, hidden, dim * per_coordinate, activation, rng);

        // Degrees of the inputs of each layer, then of the outputs' coordinates.
        let input_degrees: Vec<usize> = (0..dim).map(|c| position[c] + 1).collect();
        let mut keep = Vec::with_capacity(net.param_len());
        let mut below = input_degrees.clone();
        for (l, layer) in net.layers.iter().enumerate() {
            let last = l + 1 == net.layers.len();
            let above: Vec<usize> = if last {
                (0..layer.outputs())
                    .map(|o| input_degrees[o / per_coordinate])
                    .collect()
            } else {
                (0..layer.outputs())
                    .map(|k| hidden_degree(dim, k))
                    .collect()
            };
            for &d_in in &below {
                for &d_out in &above {
                    keep.push(if last { d_out > d_in } else { d_out >= d_in });
                }
            }
            keep.extend(std::iter::repeat_n(true, layer.outputs()));
            below = above;
        }
        let exact = unit_groups(&net, &keep, &position, per_coordinate);
        let whole = exact.iter().map(|l| merge_groups(l)).collect();
        let passes = exact
            .into_iter()
            .map(|l| l.into_iter().flat_map(Group::split).collect())
            .collect();
        let mut made = Self {
            net,
            order: order.to_vec(),
            per_coordinate,
            keep,
            passes,
            whole,
        };
        made.apply_mask();
        made
    }

    /// The network (its masked weights are zero).
    pub fn net(&self) -> &Mlp<F> {
        &self.net
    }

    /// The number of coordinates `D`.
    pub fn dim(&self) -> usize {
        self.order.len()
    }

    /// `order[k]`: the coordinate at position `k` of the autoregressive order.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// Outputs per coordinate `P` (output `c·P + p` is parameter `p` of coordinate `c`).
    pub fn per_coordinate(&self) -> usize {
        self.per_coordinate
    }

    /// Whether flat parameter `i` (layout of [`Made::visit_params`]) is free (`false`: a
    /// masked weight, always zero).
    pub fn is_free(&self, i: usize) -> bool {
        self.keep[i]
    }

    /// Elements of the `hidden` scratch of [`Made::forward_t`] and [`Made::pass_t`] on
    /// `rows` rows: every hidden layer's values, feature-major, one after the other.
    pub fn hidden_t_len(&self, rows: usize) -> usize {
        rows * self.net.hidden_total()
    }

    /// The network on a block of `rows` rows stored feature-major: input `j` of row `r`
    /// at `xt[j·rows + r]`, output `o` at `out[o·rows + r]` (at least `rows ·` outputs
    /// elements); `hidden` is scratch of [`Made::hidden_t_len`] elements. Skips most
    /// masked weights (those outside a group's inputs) and adds the rest in the order of
    /// the dense kernels, so for finite inputs the outputs are those of
    /// [`Mlp::forward_block`], bit for bit (a masked weight adds an exact zero there).
    pub fn forward_t(&self, xt: &[F], rows: usize, hidden: &mut [F], out: &mut [F]) {
        self.layers_t(None, xt, rows, hidden, out);
    }

    /// Pass `k` of the sequential direction on a feature-major block (as
    /// [`Made::forward_t`]): the hidden units of degree `k` into `hidden`, then the `P`
    /// outputs of coordinate `order[k]` into `out` (output `p` at `out[p·rows + r]`). The
    /// inputs at positions before `k` must be final and the hidden units of lower
    /// degrees those of passes `0..k` on the same `hidden`; the outputs are then those of
    /// [`Made::forward_t`] on the block.
    pub fn pass_t(&self, k: usize, xt: &[F], rows: usize, hidden: &mut [F], out: &mut [F]) {
        self.layers_t(Some(k), xt, rows, hidden, out);
    }

    /// The groups of every layer (of one pass when `pass` is given), layer by layer.
    fn layers_t(
        &self,
        pass: Option<usize>,
        xt: &[F],
        rows: usize,
        hidden: &mut [F],
        out: &mut [F],
    ) {
        assert!(
            xt.len() >= rows * self.dim() && hidden.len() >= self.hidden_t_len(rows),
            "made: feature-major buffers too small"
        );
        let layers = &self.net.layers;
        let act = self.net.activation;
        let plan = if pass.is_some() {
            &self.passes
        } else {
            &self.whole
        };
        // The first output of the pass's coordinate (the first unit of `out`).
        let first = pass.map_or(0, |k| self.order[k] * self.per_coordinate);
        // `prev..here`: the previous hidden layer's values in `hidden`.
        let (mut prev, mut here) = (0, 0);
        for (l, (layer, groups)) in layers.iter().zip(plan).enumerate() {
            let last = l + 1 == layers.len();
            let (done, rest) = hidden.split_at_mut(here);
            let src: &[F] = if l == 0 { xt } else { &done[prev..] };
            let groups = groups.iter().filter(|g| pass.is_none_or(|p| g.pass == p));
            for group in groups {
                if last {
                    F::made_units(group, src, rows, out, first, None);
                } else {
                    F::made_units(group, src, rows, rest, 0, Some(act));
                }
            }
            prev = here;
            here += rows * layer.outputs();
        }
    }

    /// Sets every masked weight to zero and refreshes the groups' copies of the weights.
    fn apply_mask(&mut self) {
        let keep = &self.keep;
        let mut offset = 0;
        self.net.visit_params_mut(|_, _, _, values| {
            for (v, &k) in values.iter_mut().zip(&keep[offset..]) {
                if !k {
                    *v = F::zero();
                }
            }
            offset += values.len();
        });
        for plan in [&mut self.passes, &mut self.whole] {
            for (groups, layer) in plan.iter_mut().zip(&self.net.layers) {
                groups.iter_mut().for_each(|g| g.refresh(layer));
            }
        }
    }

    /// Every weight and bias, masked ones included (they are zero).
    pub fn param_len(&self) -> usize {
        self.net.param_len()
    }

    /// [`Mlp::visit_params`]: `(layer, "weight" | "bias", shape, values)`.
    pub fn visit_params(&self, visit: impl FnMut(usize, &'static str, &[usize], &[F])) {
        self.net.visit_params(visit);
    }

    /// [`Mlp::visit_params_mut`], then the mask is re-applied: whatever the visitor wrote
    /// into a masked weight is replaced by zero.
    pub fn visit_params_mut(&mut self, visit: impl FnMut(usize, &'static str, &[usize], &mut [F])) {
        self.net.visit_params_mut(visit);
        self.apply_mask();
    }

    /// [`Mlp::backward_block`] with the masked weights' gradient zero: the network's
    /// gradient goes into `param_scratch` (at least [`Made::param_len`] elements, contents
    /// unspecified on entry) and its free entries are added into `param_grad`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_block(
        &self,
        input: ArrayView2<'_, F>,
        tape: &mut MlpTape<'_, F>,
        out_grad: ArrayView2<'_, F>,
        input_grad: ndarray::ArrayViewMut2<'_, F>,
        param_grad: &mut [F],
        scratch: &mut [F],
        param_scratch: &mut [F],
    ) {
        assert_eq!(
            param_grad.len(),
            self.param_len(),
            "made: param_grad has the wrong length"
        );
        let own = &mut param_scratch[..self.param_len()];
        own.fill(F::zero());
        self.net
            .backward_block(input, tape, out_grad, input_grad, own, scratch);
        for ((g, &d), &k) in param_grad.iter_mut().zip(&*own).zip(&self.keep) {
            if k {
                *g += d;
            }
        }
    }
}

/// The groups of every layer of `net` (see [`Group`]) from the kept flags `keep`, for
/// coordinates at positions `position` and `per` outputs per coordinate. Panics if a
/// group reads a value its pass does not have yet (a coordinate at position `q` is
/// final from pass `q + 1`; a unit from its own pass), which the degrees rule out.
fn unit_groups<F: Float>(
    net: &Mlp<F>,
    keep: &[bool],
    position: &[usize],
    per: usize,
) -> Vec<Vec<Group<F>>> {
    let dim = position.len();
    let mut groups = Vec::with_capacity(net.layers.len());
    // The first pass that has each input of the current layer.
    let mut ready: Vec<usize> = position.iter().map(|&q| q + 1).collect();
    let mut offset = 0;
    for (l, layer) in net.layers.iter().enumerate() {
        let (n_in, n_out) = (layer.inputs(), layer.outputs());
        let last = l + 1 == net.layers.len();
        let mut layer_groups: Vec<Group<F>> = Vec::new();
        for u in 0..n_out {
            let pass = if last {
                position[u / per]
            } else {
                hidden_degree(dim, u)
            };
            let inputs: Vec<usize> = (0..n_in)
                .filter(|&j| keep[offset + j * n_out + u])
                .collect();
            assert!(
                inputs.iter().all(|&j| ready[j] <= pass),
                "made: unit {u} of layer {l} reads a value pass {pass} does not have"
            );
            match layer_groups
                .iter_mut()
                .find(|g| g.pass == pass && g.inputs == inputs)
            {
                Some(g) => g.units.push(u),
                None => layer_groups.push(Group::new(pass, vec![u], inputs)),
            }
        }
        layer_groups.sort_by_key(|g| g.pass);
        ready = (0..n_out).map(|u| hidden_degree(dim, u)).collect();
        offset += n_in * n_out + n_out;
        groups.push(layer_groups);
    }
    groups
}

/// The groups of one layer (of one pass each, in increasing pass) merged in order into
/// groups of up to [`MAX_UNITS`] units reading the union of their inputs, and larger ones
/// split: fewer, fuller calls of the kernel for [`Made::forward_t`].
fn merge_groups<F: Float>(groups: &[Group<F>]) -> Vec<Group<F>> {
    let mut merged: Vec<Group<F>> = Vec::new();
    for g in groups {
        match merged.last_mut() {
            Some(m) if m.units.len() + g.units.len() <= MAX_UNITS => {
                m.units.extend_from_slice(&g.units);
                m.inputs.extend_from_slice(&g.inputs);
                m.inputs.sort_unstable();
                m.inputs.dedup();
            }
            _ => merged.push(Group::new(g.pass, g.units.clone(), g.inputs.clone())),
        }
    }
    merged
        .into_iter()
        .map(|m| Group::new(m.pass, m.units, m.inputs))
        .flat_map(Group::split)
        .collect()
}

/// `dst[(u − first)·rows + r] = act(Σ_j src[j·rows + r]·weight[j, u] + bias[u])` for the
/// units `u` of `group`, the sum over the group's inputs in increasing `j` (feature-major
/// `src` and `dst`, `act` the identity when `None`). The multiply-add of the dense kernels
/// (fused where the processor has FMA), compiled for AVX2 where it has it, and compiled
/// once, in this crate: the layers call it as [`MatrixKernels::made_units`].
pub(crate) fn units_t_kernel<F: Float>(
    group: &Group<F>,
    src: &[F],
    rows: usize,
    dst: &mut [F],
    first: usize,
    act: Option<Activation>,
) {
    #[cfg(target_arch = "x86_64")]
    if crate::nets::has_avx2_fma() {
        // SAFETY: the processor has the features `units_t_fma` is compiled for.
        unsafe { units_t_fma(group, src, rows, dst, first, act) };
        return;
    }
    units_t_with::<F, false>(group, src, rows, dst, first, act);
}

/// [`units_t_with`] compiled for AVX2 and FMA, with fused multiply-adds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn units_t_fma<F: Float>(
    group: &Group<F>,
    src: &[F],
    rows: usize,
    dst: &mut [F],
    first: usize,
    act: Option<Activation>,
) {
    units_t_with::<F, true>(group, src, rows, dst, first, act);
}

/// The loops of [`units_t_kernel`]: the sums of all the group's units at once, then the
/// activation.
#[inline(always)]
fn units_t_with<F: Float, const FMA: bool>(
    group: &Group<F>,
    src: &[F],
    rows: usize,
    dst: &mut [F],
    first: usize,
    act: Option<Activation>,
) {
    assert!(
        group.inputs.iter().all(|&j| src.len() >= (j + 1) * rows)
            && group
                .units
                .iter()
                .all(|&u| u >= first && dst.len() >= (u - first + 1) * rows),
        "made: feature-major block too small"
    );
    match group.units.len() {
        1 => sums::<F, FMA, 1>(group, src, rows, dst, first),
        2 => sums::<F, FMA, 2>(group, src, rows, dst, first),
        3 => sums::<F, FMA, 3>(group, src, rows, dst, first),
        4 => sums::<F, FMA, 4>(group, src, rows, dst, first),
        5 => sums::<F, FMA, 5>(group, src, rows, dst, first),
        6 => sums::<F, FMA, 6>(group, src, rows, dst, first),
        _ => unreachable!("groups have 1 to MAX_UNITS units"),
    }
    if let Some(act) = act {
        for &u in &group.units {
            act.apply_slice(&mut dst[(u - first) * rows..][..rows]);
        }
    }
}

/// The sums plus bias of the `G` units of `group`: tiles of 16 `f32` (8 `f64`) rows,
/// two 256-bit vectors per unit, then the rest a row at a time.
#[inline(always)]
fn sums<F: Float, const FMA: bool, const G: usize>(
    group: &Group<F>,
    src: &[F],
    rows: usize,
    dst: &mut [F],
    first: usize,
) {
    if size_of::<F>() == 4 {
        tiles::<F, FMA, G, 16>(group, src, rows, dst, first);
    } else {
        tiles::<F, FMA, G, 8>(group, src, rows, dst, first);
    }
}

/// [`sums`] with `R` rows a tile.
#[inline(always)]
fn tiles<F: Float, const FMA: bool, const G: usize, const R: usize>(
    group: &Group<F>,
    src: &[F],
    rows: usize,
    dst: &mut [F],
    first: usize,
) {
    let units: &[usize; G] = group.units[..].try_into().expect("G units");
    let bias: &[F; G] = group.bias[..].try_into().expect("G biases");
    let weights = || {
        group
            .inputs
            .iter()
            .zip(group.weights.chunks_exact(G))
            .map(|(&j, w)| (j * rows, <&[F; G]>::try_from(w).expect("G weights")))
    };
    let mut r0 = 0;
    while r0 + R <= rows {
        let mut acc = [[F::zero(); R]; G];
        for (offset, w) in weights() {
            let x: &[F; R] = src[offset + r0..][..R].try_into().expect("R");
            for (acc, &w) in acc.iter_mut().zip(w) {
                for (a, &x) in acc.iter_mut().zip(x) {
                    *a = madd::<F, FMA>(x, w, *a);
                }
            }
        }
        for ((acc, &u), &b) in acc.iter().zip(units).zip(bias) {
            let d: &mut [F; R] = (&mut dst[(u - first) * rows + r0..][..R])
                .try_into()
                .expect("R");
            for (d, &a) in d.iter_mut().zip(acc) {
                *d = a + b;
            }
        }
        r0 += R;
    }
    for r in r0..rows {
        let mut acc = [F::zero(); G];
        for (offset, w) in weights() {
            let x = src[offset + r];
            for (a, &w) in acc.iter_mut().zip(w) {
                *a = madd::<F, FMA>(x, w, *a);
            }
        }
        for ((&a, &u), &b) in acc.iter().zip(units).zip(bias) {
            dst[(u - first) * rows + r] = a + b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// `reach[c][j]`: whether some path of kept weights leads from input `j` to an output
    /// of coordinate `c` (boolean products of the masks).
    fn reach(made: &Made<f64>) -> Vec<Vec<bool>> {
        let d = made.dim();
        let mut offset = 0;
        // paths[j][u]: input j reaches unit u of the current layer.
        let mut paths: Vec<Vec<bool>> = (0..d).map(|j| (0..d).map(|u| u == j).collect()).collect();
        for layer in &made.net().layers {
            let (n_in, n_out) = (layer.inputs(), layer.outputs());
            let keep = &made.keep[offset..offset + n_in * n_out];
            paths = paths
                .iter()
                .map(|p| {
                    (0..n_out)
                        .map(|o| (0..n_in).any(|i| p[i] && keep[i * n_out + o]))
                        .collect()
                })
                .collect();
            offset += n_in * n_out + n_out;
        }
        let per = made.per_coordinate();
        (0..d)
            .map(|c| {
                (0..d)
                    .map(|j| (0..per).any(|p| paths[j][c * per + p]))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn orders_are_permutations() {
        assert_eq!(Order::Natural.coordinates(4), [0, 1, 2, 3]);
        assert_eq!(Order::Reverse.coordinates(4), [3, 2, 1, 0]);
        assert_eq!(Order::Seeded(7).coordinates(6), seeded_permutation(6, 7));
    }

    #[test]
    fn each_output_sees_exactly_its_predecessors() {
        let mut r = StdRng::seed_from_u64(0);
        for dim in [1, 2, 3, 5] {
            for order in [Order::Natural, Order::Reverse, Order::Seeded(3)] {
                let order = order.coordinates(dim);
                let narrowest = (dim - 1).max(1);
                for hidden in [vec![], vec![narrowest], vec![narrowest + 3, narrowest]] {
                    for per in [1, 2] {
                        let made: Made<f64> =
                            Made::new(&order, &hidden, per, Activation::Tanh, &mut r);
                        let reach = reach(&made);
                        for (kc, &c) in order.iter().enumerate() {
                            for (kj, &j) in order.iter().enumerate() {
                                assert_eq!(
                                    reach[c][j],
                                    kj < kc,
                                    "dim {dim} order {order:?} hidden {hidden:?}: {c} ← {j}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn masked_weights_start_zero_and_stay_zero() {
        let mut r = StdRng::seed_from_u64(1);
        let order = Order::Seeded(5).coordinates(4);
        let mut made: Made<f64> = Made::new(&order, &[6, 5], 2, Activation::Relu, &mut r);
        let mut flat = Vec::new();
        made.visit_params(|_, _, _, v| flat.extend_from_slice(v));
        let masked = (0..flat.len()).filter(|&i| !made.is_free(i)).count();
        assert!(masked > 0);
        for (i, v) in flat.iter().enumerate() {
            if !made.is_free(i) {
                assert_eq!(*v, 0.0, "parameter {i}");
            }
        }
        made.visit_params_mut(|_, _, _, v| v.fill(1.5));
        flat.clear();
        made.visit_params(|_, _, _, v| flat.extend_from_slice(v));
        for (i, v) in flat.iter().enumerate() {
            assert_eq!(*v, if made.is_free(i) { 1.5 } else { 0.0 }, "parameter {i}");
        }
    }

    /// A MADE with every free parameter drawn from N(0, 0.5²)-ish uniform values.
    fn random_made(order: &[usize], hidden: &[usize], per: usize, r: &mut StdRng) -> Made<f64> {
        use rand::RngExt;
        let mut made = Made::new(order, hidden, per, Activation::Tanh, r);
        made.visit_params_mut(|_, _, _, v| {
            v.iter_mut().for_each(|x| *x = r.random_range(-1.0..1.0))
        });
        made
    }

    /// `x` (rows × dim, row-major) feature-major.
    fn transpose(x: &[f64], rows: usize, cols: usize) -> Vec<f64> {
        (0..cols * rows)
            .map(|i| x[(i % rows) * cols + i / rows])
            .collect()
    }

    #[test]
    fn feature_major_pass_equals_the_dense_network_bit_for_bit() {
        use rand::RngExt;
        let mut r = StdRng::seed_from_u64(2);
        for dim in [1, 2, 5] {
            for order in [Order::Natural, Order::Seeded(3)] {
                let order = order.coordinates(dim);
                let narrowest = (dim - 1).max(1);
                for hidden in [vec![], vec![narrowest + 2], vec![narrowest + 7, narrowest]] {
                    for per in [1, 2] {
                        let made = random_made(&order, &hidden, per, &mut r);
                        let n_out = dim * per;
                        for rows in [1, 7, 16, 37] {
                            let x: Vec<f64> =
                                (0..rows * dim).map(|_| r.random_range(-2.0..2.0)).collect();
                            let mut dense = vec![0.0; rows * n_out];
                            let (mut a, mut b) = (vec![0.0; rows * 20], vec![0.0; rows * 20]);
                            made.net().forward_block(
                                ArrayView2::from_shape((rows, dim), &x[..]).unwrap(),
                                ndarray::ArrayViewMut2::from_shape((rows, n_out), &mut dense[..])
                                    .unwrap(),
                                &mut a,
                                &mut b,
                            );
                            let xt = transpose(&x, rows, dim);
                            let mut hidden_t = vec![f64::NAN; made.hidden_t_len(rows)];
                            let mut out = vec![f64::NAN; rows * n_out];
                            made.forward_t(&xt, rows, &mut hidden_t, &mut out);
                            assert_eq!(out, transpose(&dense, rows, n_out), "{order:?} {hidden:?}");
                            // The passes one at a time give the same outputs.
                            let mut hidden_t = vec![f64::NAN; made.hidden_t_len(rows)];
                            let mut one = vec![f64::NAN; rows * per];
                            for (k, &c) in order.iter().enumerate() {
                                made.pass_t(k, &xt, rows, &mut hidden_t, &mut one);
                                assert_eq!(one[..], out[c * per * rows..(c + 1) * per * rows]);
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "hidden layer 1 has 3 units but dim = 5 needs at least dim − 1 = 4")]
    fn too_narrow_a_hidden_layer_panics() {
        let _: Made<f64> = Made::new(
            &[0, 1, 2, 3, 4],
            &[8, 3],
            2,
            Activation::Relu,
            &mut StdRng::seed_from_u64(0),
        );
    }

    #[test]
    #[should_panic(expected = "is not a permutation")]
    fn a_bad_order_panics() {
        let _: Made<f64> = Made::new(
            &[0, 1, 1],
            &[4],
            1,
            Activation::Relu,
            &mut StdRng::seed_from_u64(0),
        );
    }
}
