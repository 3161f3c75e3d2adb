//! The reverse-mode passes. `Trainable`: the inverse pass over a block, keeping the value
//! entering each step on a tape, then each step's backward from the base side to the data
//! side. `Variational`: the same through the forward pass, from the data side back to the
//! base. A fused run recomputes its few intermediate values per entry instead of storing
//! them, and chains its kernels' `inverse_backward` (or `forward_backward`).

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::Ident;

use super::chain::{Direction, Step, block_step, generics, steps};
use super::{Names, runtime};
use crate::ir::Flow;

/// `impl Parameters`: the flat parameter layout, every layer's tensors then the base's.
pub(super) fn parameters(flow: &Flow, names: &Names) -> TokenStream {
    let rt = runtime();
    let Names { ty, float, fields } = names;
    let generics = generics(flow);
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let field_names: Vec<String> = fields.iter().map(Ident::to_string).collect();
    quote! {
        impl #impl_generics #rt::Parameters<#float> for #ty #ty_generics #where_clause {
            fn param_len(&self) -> usize {
                0 #(+ #rt::Layer::<#float>::param_len(&self.#fields))*
                    + #rt::BaseDistribution::<#float>::param_len(&self.base)
            }

            fn visit_params(&self, visit: &mut dyn FnMut(&str, &str, &[usize], &[#float])) {
                #(#rt::Layer::<#float>::visit_params(&self.#fields, &mut |name, shape, values| visit(#field_names, name, shape, values));)*
                #rt::BaseDistribution::<#float>::visit_params(&self.base, &mut |name, shape, values| visit("base", name, shape, values));
            }

            fn visit_params_mut(&mut self, visit: &mut dyn FnMut(&str, &str, &[usize], &mut [#float])) {
                #(#rt::Layer::<#float>::visit_params_mut(&mut self.#fields, &mut |name, shape, values| visit(#field_names, name, shape, values));)*
                #rt::BaseDistribution::<#float>::visit_params_mut(&mut self.base, &mut |name, shape, values| visit("base", name, shape, values));
            }

            fn layers_mut(&mut self) -> ::std::vec::Vec<&mut dyn #rt::Layer<#float>> {
                ::std::vec![#(&mut self.#fields as &mut dyn #rt::Layer<#float>),*]
            }

            fn visit_buffers(&self, visit: &mut dyn FnMut(&str, &str, &[usize], &[#float])) {
                #(#rt::Layer::<#float>::visit_buffers(&self.#fields, &mut |name, shape, values| visit(#field_names, name, shape, values));)*
            }

            fn visit_buffers_mut(&mut self, visit: &mut dyn FnMut(&str, &str, &[usize], &mut [#float])) {
                #(#rt::Layer::<#float>::visit_buffers_mut(&mut self.#fields, &mut |name, shape, values| visit(#field_names, name, shape, values));)*
            }
        }
    }
}

/// `impl Trainable`.
pub(super) fn trainable(flow: &Flow, names: &Names) -> TokenStream {
    if !flow.has_density() {
        return quote!();
    }
    let rt = runtime();
    let Names { ty, float, fields } = names;
    let generics = generics(flow);
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let grads: Vec<Ident> = fields.iter().map(|f| format_ident!("grad_{}", f)).collect();
    // The layers' slices of the flat gradient, then the base's.
    let layer_count = fields.len() + 1;
    let backward = backward_body(flow, names, &grads);
    let batch_statistics = flow.layers.iter().any(|l| l.kind.uses_batch_statistics());
    quote! {
        impl #impl_generics #rt::Trainable<#float> for #ty #ty_generics #where_clause {
            fn uses_batch_statistics(&self) -> bool {
                #batch_statistics
            }

            #[allow(unused_variables, unused_mut)]
            fn log_prob_backward_block(
                &self,
                x: #rt::ndarray::ArrayView2<'_, #float>,
                mut log_prob: #rt::ndarray::ArrayViewMut1<'_, #float>,
                weight: #rt::ndarray::ArrayView1<'_, #float>,
                mut grad: #rt::ndarray::ArrayViewMut2<'_, #float>,
                param_grad: &mut [#float],
                tape: &mut ::std::vec::Vec<#float>,
                ws: &mut #rt::Workspace<#float>,
            ) {
                use #rt::{Elementwise as _, Layer as _};
                let [#(#grads,)* grad_base] = #rt::trainable::split_params::<#layer_count, #float>(
                    param_grad,
                    [#(#rt::Layer::<#float>::param_len(&self.#fields),)* #rt::BaseDistribution::<#float>::param_len(&self.base)],
                );
                #backward
            }
        }
    }
}

fn backward_body(flow: &Flow, names: &Names, grads: &[Ident]) -> TokenStream {
    let rt = runtime();
    let float = &names.float;
    // The steps in the order the inverse pass runs them: from the data side.
    let mut inverse_steps = steps(flow);
    inverse_steps.reverse();
    let tape: Vec<Ident> = (0..=inverse_steps.len())
        .map(|k| format_ident!("t{}", k))
        .collect();
    let tape_len = tape.len();
    let last = &tape[tape_len - 1];
    let passes = inverse_steps.iter().enumerate().map(|(k, step)| {
        let (input, output) = (&tape[k], &tape[k + 1]);
        let apply = match step {
            // A layer normalising with batch statistics runs its training pass here.
            Step::Single(i) if flow.layers[*i].kind.uses_batch_statistics() => {
                let field = &names.fields[*i];
                quote!(self.#field.inverse_block_training(#output.view_mut(), log_prob.view_mut(), ws);)
            }
            _ => block_step(
                step,
                names,
                Direction::Inverse,
                &quote!(#output),
                &quote!(log_prob),
            ),
        };
        quote! {
            #output.assign(&#input);
            #apply
        }
    });
    let backwards = inverse_steps.iter().enumerate().rev().map(|(k, step)| {
        let input = &tape[k];
        step_backward(flow, step, names, grads, input)
    });
    quote! {
        let [#(mut #tape),*] = #rt::workspace::tape_views::<#tape_len, #float>(tape, x.nrows(), x.ncols());
        t0.assign(&x);
        log_prob.fill(0.0);
        #(#passes)*
        #rt::trainable::base_backward(&self.base, #last.view(), log_prob.view_mut(), weight, grad.view_mut(), grad_base);
        #(#backwards)*
    }
}

/// One step's backward, with `input` the block its inverse received.
fn step_backward(
    flow: &Flow,
    step: &Step,
    names: &Names,
    grads: &[Ident],
    input: &Ident,
) -> TokenStream {
    let rt = runtime();
    match step {
        Step::Single(i) => {
            let (field, grad) = (&names.fields[*i], &grads[*i]);
            let method = if flow.layers[*i].kind.uses_batch_statistics() {
                quote!(inverse_backward_block_training)
            } else {
                quote!(inverse_backward_block)
            };
            quote!(self.#field.#method(#input.view(), grad.view_mut(), weight, #grad, ws);)
        }
        Step::Fused(run) => {
            // Inverse order: the run's last (data-side) layer first. `v_i` enters layer i.
            let values: Vec<Ident> = run.iter().map(|i| format_ident!("v_{}", i)).collect();
            let top = run.len() - 1;
            let recompute = (1..run.len()).rev().map(|k| {
                let (field, from, to) = (&names.fields[run[k]], &values[k], &values[k - 1]);
                quote!(let (#to, _) = self.#field.inverse(j, #from);)
            });
            let chain = run.iter().zip(&values).map(|(&i, v)| {
                let (field, grad) = (&names.fields[i], &grads[i]);
                quote!(let g = self.#field.inverse_backward(j, #v, g, w, #grad);)
            });
            let entry = &values[top];
            quote! {
                #rt::layers::map_rows_backward(#input.view(), grad.view_mut(), weight, |j, #entry, g, w| {
                    #(#recompute)*
                    #(#chain)*
                    g
                });
            }
        }
    }
}

/// `impl Variational`: the forward pass over a block of base points, keeping the value
/// entering each step, the caller's gradient at the output, then each step's
/// `forward_backward` from the data side back to the base.
pub(super) fn variational(flow: &Flow, names: &Names) -> TokenStream {
    let rt = runtime();
    let Names { ty, float, fields } = names;
    let generics = generics(flow);
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let grads: Vec<Ident> = fields.iter().map(|f| format_ident!("grad_{}", f)).collect();
    let layer_count = fields.len() + 1;
    let forward_steps = steps(flow);
    let tape: Vec<Ident> = (0..=forward_steps.len())
        .map(|k| format_ident!("t{}", k))
        .collect();
    let tape_len = tape.len();
    let last = &tape[tape_len - 1];
    let passes = forward_steps.iter().enumerate().map(|(k, step)| {
        let (input, output) = (&tape[k], &tape[k + 1]);
        let apply = block_step(
            step,
            names,
            Direction::Forward,
            &quote!(#output),
            &quote!(log_det),
        );
        quote! {
            #output.assign(&#input);
            #apply
        }
    });
    let backwards = forward_steps
        .iter()
        .enumerate()
        .rev()
        .map(|(k, step)| step_forward_backward(step, names, &grads, &tape[k]));
    quote! {
        impl #impl_generics #rt::Variational<#float> for #ty #ty_generics #where_clause {
            #[allow(unused_variables, unused_mut)]
            fn sample_backward_block(
                &self,
                z: #rt::ndarray::ArrayView2<'_, #float>,
                mut log_det: #rt::ndarray::ArrayViewMut1<'_, #float>,
                weight: #rt::ndarray::ArrayView1<'_, #float>,
                output_grad: &mut #rt::variational::OutputGrad<'_, #float>,
                mut grad: #rt::ndarray::ArrayViewMut2<'_, #float>,
                param_grad: &mut [#float],
                tape: &mut ::std::vec::Vec<#float>,
                ws: &mut #rt::Workspace<#float>,
            ) {
                use #rt::{Elementwise as _, Layer as _};
                let [#(#grads,)* _grad_base] = #rt::trainable::split_params::<#layer_count, #float>(
                    param_grad,
                    [#(#rt::Layer::<#float>::param_len(&self.#fields),)* #rt::BaseDistribution::<#float>::param_len(&self.base)],
                );
                let [#(mut #tape),*] = #rt::workspace::tape_views::<#tape_len, #float>(tape, z.nrows(), z.ncols());
                t0.assign(&z);
                #(#passes)*
                output_grad(#last.view(), grad.view_mut());
                #(#backwards)*
            }
        }
    }
}

/// One step's backward through its forward, with `input` the block its forward received.
fn step_forward_backward(
    step: &Step,
    names: &Names,
    grads: &[Ident],
    input: &Ident,
) -> TokenStream {
    let rt = runtime();
    match step {
        Step::Single(i) => {
            let (field, grad) = (&names.fields[*i], &grads[*i]);
            quote!(self.#field.forward_backward_block(#input.view(), grad.view_mut(), weight, #grad, ws);)
        }
        Step::Fused(run) => {
            // Forward order: the run's first (base-side) layer first. `v_i` enters layer i.
            let values: Vec<Ident> = run.iter().map(|i| format_ident!("v_{}", i)).collect();
            let recompute = (0..run.len() - 1).map(|k| {
                let (field, from, to) = (&names.fields[run[k]], &values[k], &values[k + 1]);
                quote!(let (#to, _) = self.#field.forward(j, #from);)
            });
            let chain = run.iter().zip(&values).rev().map(|(&i, v)| {
                let (field, grad) = (&names.fields[i], &grads[i]);
                quote!(let g = self.#field.forward_backward(j, #v, g, w, #grad);)
            });
            let entry = &values[0];
            quote! {
                #rt::layers::map_rows_backward(#input.view(), grad.view_mut(), weight, |j, #entry, g, w| {
                    #(#recompute)*
                    #(#chain)*
                    g
                });
            }
        }
    }
}
