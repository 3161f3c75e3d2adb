//! The chain's code: the fused block kernels behind `Flow` and `Density`, and the
//! heap-free point API (for a forward-only flow, its refused scoring methods). Consecutive elementwise layers become one `map_rows` pass over
//! their nested kernels, so their log-dets add up in registers.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::quote;
use syn::Ident;

use super::{Names, runtime};
use crate::ir::Flow;

/// A step of the chain: a run of elementwise layers fused into one pass, or one layer.
pub(super) enum Step {
    Fused(Vec<usize>),
    Single(usize),
}

/// Groups consecutive elementwise layers.
pub(super) fn steps(flow: &Flow) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for (i, layer) in flow.layers.iter().enumerate() {
        match steps.last_mut() {
            Some(Step::Fused(run)) if layer.kind.is_elementwise() => run.push(i),
            _ if layer.kind.is_elementwise() => steps.push(Step::Fused(vec![i])),
            _ => steps.push(Step::Single(i)),
        }
    }
    steps
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Direction {
    Forward,
    Inverse,
}

/// The scalar map of a fused run: its layers nested as `(&first, (&second, …))` in
/// `Forward(…)` or `Inverse(…)`, whose kernels the runtime inlines into one loop.
fn fused_kernel(run: &[usize], fields: &[Ident], direction: Direction) -> TokenStream {
    let rt = runtime();
    let nested = run
        .iter()
        .rev()
        .map(|&i| {
            let field = &fields[i];
            quote!(&self.#field)
        })
        .reduce(|rest, layer| quote!((#layer, #rest)))
        .expect("a fused run has at least one layer");
    match direction {
        Direction::Forward => quote!(#rt::layers::Forward(#nested)),
        Direction::Inverse => quote!(#rt::layers::Inverse(#nested)),
    }
}

fn block_body(flow: &Flow, names: &Names, direction: Direction) -> TokenStream {
    let mut steps = steps(flow);
    if direction == Direction::Inverse {
        steps.reverse();
    }
    let calls = steps
        .iter()
        .map(|step| block_step(step, names, direction, &quote!(x), &quote!(log_det)));
    quote!(#(#calls)*)
}

/// The body of `forward_values_block` (sampling) when the chain has a fused run, whose
/// log-dets it skips (`map_rows_values`); `None` when it would be `forward_block`'s.
fn values_body(flow: &Flow, names: &Names) -> Option<TokenStream> {
    let rt = runtime();
    let steps = steps(flow);
    if !steps.iter().any(|step| matches!(step, Step::Fused(_))) {
        return None;
    }
    let calls = steps.iter().map(|step| match step {
        Step::Fused(run) => {
            let kernel = fused_kernel(run, &names.fields, Direction::Forward);
            quote!(#rt::layers::map_rows_values(x.view_mut(), log_det.view_mut(), #kernel);)
        }
        Step::Single(_) => block_step(
            step,
            names,
            Direction::Forward,
            &quote!(x),
            &quote!(log_det),
        ),
    });
    Some(quote!(#(#calls)*))
}

/// One step over a block held in `target`, adding log-dets to `log_det`.
pub(super) fn block_step(
    step: &Step,
    names: &Names,
    direction: Direction,
    target: &TokenStream,
    log_det: &TokenStream,
) -> TokenStream {
    let rt = runtime();
    match step {
        Step::Fused(run) => {
            let kernel = fused_kernel(run, &names.fields, direction);
            quote!(#rt::layers::map_rows(#target.view_mut(), #log_det.view_mut(), #kernel);)
        }
        Step::Single(i) => {
            let field = &names.fields[*i];
            let method = match direction {
                Direction::Forward => quote!(forward_block),
                Direction::Inverse => quote!(inverse_block),
            };
            quote!(self.#field.#method(#target.view_mut(), #log_det.view_mut(), ws);)
        }
    }
}

fn point_body(flow: &Flow, names: &Names, direction: Direction) -> TokenStream {
    let rt = runtime();
    let mut steps = steps(flow);
    if direction == Direction::Inverse {
        steps.reverse();
    }
    let method = match direction {
        Direction::Forward => quote!(forward_point),
        Direction::Inverse => quote!(inverse_point),
    };
    let calls = steps.iter().map(|step| match step {
        Step::Fused(run) => {
            let kernel = fused_kernel(run, &names.fields, direction);
            quote!(log_det += #rt::layers::map_point(&mut x, #kernel);)
        }
        Step::Single(i) => {
            let field = &names.fields[*i];
            quote!(log_det += self.#field.#method(&mut x, &mut scratch);)
        }
    });
    quote!(#(#calls)*)
}

pub(super) fn base_type(flow: &Flow) -> TokenStream {
    flow.base
        .runtime_type(&runtime(), &super::float_type(flow.float))
}

pub(super) fn generics(flow: &Flow) -> syn::Generics {
    flow.header
        .as_ref()
        .map(|h| h.generics.clone())
        .unwrap_or_default()
}

/// `impl Flow`, and `impl Density` when every layer has an analytic inverse.
pub(super) fn flow_traits(flow: &Flow, names: &Names) -> TokenStream {
    let rt = runtime();
    let Names { ty, float, fields } = names;
    let generics = generics(flow);
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let base = base_type(flow);
    let forward = block_body(flow, names, Direction::Forward);
    let forward_values = values_body(flow, names).map(|body| {
        quote! {
            #[allow(unused_variables)]
            fn forward_values_block(
                &self,
                mut x: #rt::ndarray::ArrayViewMut2<'_, #float>,
                mut log_det: #rt::ndarray::ArrayViewMut1<'_, #float>,
                ws: &mut #rt::Workspace<#float>,
            ) {
                use #rt::Layer as _;
                #body
            }
        }
    });
    let inverse = block_body(flow, names, Direction::Inverse);
    let density = if flow.has_density() {
        quote! {
            impl #impl_generics #rt::Density<#float> for #ty #ty_generics #where_clause {
                #[allow(unused_variables)]
                fn inverse_block(
                    &self,
                    mut x: #rt::ndarray::ArrayViewMut2<'_, #float>,
                    mut log_det: #rt::ndarray::ArrayViewMut1<'_, #float>,
                    ws: &mut #rt::Workspace<#float>,
                ) {
                    use #rt::Layer as _;
                    #inverse
                }
            }
        }
    } else {
        quote!()
    };
    quote! {
        impl #impl_generics #rt::Flow<#float> for #ty #ty_generics #where_clause {
            type Base = #base;

            fn dim(&self) -> usize {
                Self::DIM
            }

            fn base(&self) -> &#base {
                &self.base
            }

            fn layers(&self) -> ::std::vec::Vec<&dyn #rt::Layer<#float>> {
                ::std::vec![#(&self.#fields as &dyn #rt::Layer<#float>),*]
            }

            #[allow(unused_variables)]
            fn forward_block(
                &self,
                mut x: #rt::ndarray::ArrayViewMut2<'_, #float>,
                mut log_det: #rt::ndarray::ArrayViewMut1<'_, #float>,
                ws: &mut #rt::Workspace<#float>,
            ) {
                use #rt::Layer as _;
                #forward
            }

            #forward_values
        }

        #density
    }
}

/// The single-point API on `[F; D]` (no heap) and `rand`'s `Distribution<[F; D]>`.
pub(super) fn point_api(flow: &Flow, names: &Names) -> TokenStream {
    let rt = runtime();
    let Names { ty, float, .. } = names;
    let generics = generics(flow);
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let dim = super::dim_tokens(&flow.dim);
    let point = quote!([#float; #dim]);
    let scratch_len = flow
        .layers
        .iter()
        .map(|l| l.kind.point_scratch())
        .max()
        .unwrap_or(0);
    let scratch_len = proc_macro2::Literal::usize_unsuffixed(scratch_len);
    let forward = point_body(flow, names, Direction::Forward);
    let inverse_methods = if flow.has_density() {
        let inverse = point_body(flow, names, Direction::Inverse);
        quote! {
            /// Maps one data point to the base: `(z, log|det ∂f⁻¹/∂x|)`. No heap use.
            #[allow(unused_mut, unused_variables)]
            pub fn inverse_point(&self, x: #point) -> (#point, #float) {
                use #rt::Layer as _;
                let mut x = x;
                let mut scratch: [#float; #scratch_len] = [0.0; #scratch_len];
                let mut log_det: #float = 0.0;
                #inverse
                (x, log_det)
            }

            /// `log p(x)` of one point: `-inf` outside the support, an error for
            /// non-finite input. No heap use.
            pub fn log_prob_point(&self, x: #point) -> ::core::result::Result<#float, #rt::FlowError> {
                #rt::flow::check_point(&x)?;
                let (z, log_det) = self.inverse_point(x);
                let base = #rt::BaseDistribution::<#float>::log_prob_point(&self.base, &z);
                ::core::result::Result::Ok(#rt::flow::finite_or_minus_infinity(base + log_det))
            }
        }
    } else {
        forward_only_methods(flow, names, &point)
    };
    quote! {
        impl #impl_generics #ty #ty_generics #where_clause {
            /// Maps one base point to the data space: `(x, log|det ∂f/∂z|)`. No heap use.
            #[allow(unused_mut, unused_variables)]
            pub fn forward_point(&self, z: #point) -> (#point, #float) {
                use #rt::Layer as _;
                let mut x = z;
                let mut scratch: [#float; #scratch_len] = [0.0; #scratch_len];
                let mut log_det: #float = 0.0;
                #forward
                (x, log_det)
            }

            #inverse_methods

            /// One draw from the flow. No heap use.
            pub fn sample_point<R: #rt::rand::Rng + ?Sized>(&self, rng: &mut R) -> #point {
                let mut z: #point = [0.0; #dim];
                #rt::BaseDistribution::<#float>::sample_point(&self.base, &mut z, rng);
                self.forward_point(z).0
            }
        }

        impl #impl_generics #rt::rand::distr::Distribution<#point> for #ty #ty_generics #where_clause {
            fn sample<R: #rt::rand::Rng + ?Sized>(&self, rng: &mut R) -> #point {
                self.sample_point(rng)
            }
        }
    }
}

/// The scoring methods of a flow with a forward-only layer, as methods that no call can
/// satisfy: each requires `AnalyticInverse` of that layer's type, which it lacks, so a call
/// is a compile error at the call site whose message (the trait's `on_unimplemented`)
/// names the layer. The bound is spanned on the user's layer token. The method's lifetime
/// keeps the bound from being checked where the method is declared.
fn forward_only_methods(flow: &Flow, names: &Names, point: &TokenStream) -> TokenStream {
    let rt = runtime();
    let float = &names.float;
    let layer = flow
        .forward_only_layer()
        .expect("called for flows with a forward-only layer");
    let layer_type = layer.kind.runtime_type(&rt, float);
    let bound = respan(
        quote!(#layer_type: #rt::flow::AnalyticInverse<'a>),
        layer.span,
    );
    let never = quote!(::core::unreachable!(
        "a forward-only layer has no AnalyticInverse"
    ));
    let result = quote!(::core::result::Result);
    let array1 = quote!(#rt::ndarray::Array1<#float>);
    let array2 = quote!(#rt::ndarray::Array2<#float>);
    let view = quote!(#rt::ndarray::ArrayView2<'a, #float>);
    quote! {
        /// Not available: this flow has a layer without an analytic inverse, so it has no
        /// density at arbitrary points. `sample_and_log_prob` scores the flow's own draws.
        #[allow(unused_variables)]
        pub fn log_prob<'a>(&self, x: #view) -> #result<#array1, #rt::FlowError> where #bound {
            #never
        }

        /// Not available: see `log_prob`.
        #[allow(unused_variables)]
        pub fn inverse<'a>(&self, x: #view) -> #result<#array2, #rt::FlowError> where #bound {
            #never
        }

        /// Not available: see `log_prob`.
        #[allow(unused_variables)]
        pub fn log_prob_point<'a>(&self, x: #point) -> #result<#float, #rt::FlowError> where #bound {
            #never
        }

        /// Not available: see `log_prob`.
        #[allow(unused_variables)]
        pub fn inverse_point<'a>(&self, x: #point) -> (#point, #float) where #bound {
            #never
        }
    }
}

/// `tokens` with every token (inside groups too) given `span`, so that rustc points at the
/// user's layer wherever it reports on them.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|tree| match tree {
            TokenTree::Group(group) => {
                let mut new = Group::new(group.delimiter(), respan(group.stream(), span));
                new.set_span(span);
                TokenTree::Group(new)
            }
            mut other => {
                other.set_span(span);
                other
            }
        })
        .collect()
}
