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

use ndarray::ArrayView2;
use rand::Rng;

use crate::float::Float;
use crate::layers::permute::seeded_permutation;
use crate::nets::{Activation, Mlp, MlpTape};

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
        let mut made = Self {
            net,
            order: order.to_vec(),
            per_coordinate,
            keep,
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

    /// Sets every masked weight to zero.
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
