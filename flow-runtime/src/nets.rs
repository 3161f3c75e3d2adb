//! Small MLP conditioners, on matrices of row blocks (matrixmultiply through ndarray) and
//! on single points (stack scratch, no heap).

use ndarray::{Array1, Array2};

use crate::float::Float;

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

/// A dense layer: `out = input · weight + bias`, `weight` of shape (inputs, outputs).
#[derive(Debug, Clone, PartialEq)]
pub struct Dense<F> {
    /// (inputs, outputs)
    pub weight: Array2<F>,
    /// (outputs,)
    pub bias: Array1<F>,
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

impl<F: Float> Mlp<F> {}
