//! The learnable parameters of a flow, as optimisers and parameter files see them: one
//! flat layout, visited tensor by tensor. Every generated flow implements [`Parameters`],
//! whether it is trained by maximum likelihood ([`crate::Trainable`]) or by reverse KL
//! ([`crate::Variational`]).

use crate::float::Float;
use crate::flow::Flow;
use crate::layers::Layer;

/// A flow's learnable parameters in one flat layout: each layer's tensors in order from
/// the base to the data, then the base distribution's.
pub trait Parameters<F: Float>: Flow<F> {
    /// The number of learnable parameters: the length of the flat gradient buffer.
    fn param_len(&self) -> usize;

    /// Visits each learnable tensor as `(layer field, tensor name, shape, values)`, in the
    /// order of the flat parameter layout.
    #[allow(clippy::type_complexity)]
    fn visit_params(&self, visit: &mut dyn FnMut(&str, &str, &[usize], &[F]));

    /// Visits each learnable tensor mutably, in the same order.
    #[allow(clippy::type_complexity)]
    fn visit_params_mut(&mut self, visit: &mut dyn FnMut(&str, &str, &[usize], &mut [F]));

    /// The layers, mutably, in order from the base to the data (the order of
    /// [`Flow::layers`]).
    fn layers_mut(&mut self) -> Vec<&mut dyn Layer<F>>;

    /// Visits each buffer — state saved with the parameters but not learnt by gradient
    /// (`batch_norm`'s running statistics) — as `(layer field, name, shape, values)`. The
    /// default, for a flow without such layers, visits nothing; generated flows visit
    /// their layers' [`Layer::visit_buffers`].
    #[allow(clippy::type_complexity)]
    fn visit_buffers(&self, _visit: &mut dyn FnMut(&str, &str, &[usize], &[F])) {}

    /// Visits each buffer mutably, in the same order as [`Parameters::visit_buffers`].
    #[allow(clippy::type_complexity)]
    fn visit_buffers_mut(&mut self, _visit: &mut dyn FnMut(&str, &str, &[usize], &mut [F])) {}

    /// Everything a parameter file holds: the parameters, then the buffers.
    #[allow(clippy::type_complexity)]
    fn visit_state(&self, visit: &mut dyn FnMut(&str, &str, &[usize], &[F])) {
        self.visit_params(visit);
        self.visit_buffers(visit);
    }

    /// [`Parameters::visit_state`], mutably.
    #[allow(clippy::type_complexity)]
    fn visit_state_mut(&mut self, visit: &mut dyn FnMut(&str, &str, &[usize], &mut [F])) {
        self.visit_params_mut(visit);
        self.visit_buffers_mut(visit);
    }

    /// Whether some layer waits for a data-dependent initialisation (an `actnorm` that has
    /// seen no data yet): then [`crate::Trainable::initialize_from_data`] should run
    /// before training, as [`crate::fit`] does on its first minibatch.
    fn needs_data_init(&self) -> bool {
        self.layers().iter().any(|l| l.needs_data_init())
    }

    /// Marks every layer initialised (see [`Layer::mark_data_initialized`]): what
    /// [`crate::io::load`] does, since loaded parameters must not be overwritten.
    fn mark_data_initialized(&mut self) {
        for layer in self.layers_mut() {
            layer.mark_data_initialized();
        }
    }

    /// The flat gradient buffer `grad` (length [`Parameters::param_len`]) as named views:
    /// visits `(layer field, tensor name, shape, gradient)` tensor by tensor, in the layout
    /// of [`Parameters::visit_params`].
    ///
    /// # Panics
    /// If `grad` is shorter than [`Parameters::param_len`].
    #[allow(clippy::type_complexity)]
    fn visit_grads(&self, grad: &[F], visit: &mut dyn FnMut(&str, &str, &[usize], &[F])) {
        let mut offset = 0;
        self.visit_params(&mut |layer, tensor, shape, values| {
            visit(layer, tensor, shape, &grad[offset..offset + values.len()]);
            offset += values.len();
        });
    }

    /// Copies the parameters into `out` (length [`Parameters::param_len`]), flat.
    fn params_to_slice(&self, out: &mut [F]) {
        let mut offset = 0;
        self.visit_params(&mut |_, _, _, values| {
            out[offset..offset + values.len()].copy_from_slice(values);
            offset += values.len();
        });
    }

    /// Sets the parameters from a flat slice (length [`Parameters::param_len`]).
    fn params_from_slice(&mut self, values: &[F]) {
        let mut offset = 0;
        self.visit_params_mut(&mut |_, _, _, p| {
            p.copy_from_slice(&values[offset..offset + p.len()]);
            offset += p.len();
        });
    }
}
