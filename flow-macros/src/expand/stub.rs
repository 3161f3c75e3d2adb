//! What the macro emits when the flow has errors: the errors, plus a stub of the type with
//! the same name and API, so that code using the flow does not fail a second time.
//!
//! The stub has every item the valid type has (its constants, constructors, `architecture`,
//! `save`/`load`, the point API and the trait impls), with bodies that are never run. When
//! the dimension is not known (missing, invalid, or `dim = 0`), the point methods take and
//! return `[F; N]` for any `N`, so that no length written by the user is a second error.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::GenericParam;

use super::chain::base_type;
use super::{dim_tokens, float_type, runtime};
use crate::ir::{Dim, Flow};

/// The stub items for a flow that did not check (wrap them in a block for the expression
/// form, as for a valid flow). Only its header, dimension, base and float type are used.
pub fn stub(flow: &Flow) -> TokenStream {
    let rt = runtime();
    let float = float_type(flow.float);
    let base = base_type(flow);
    let (ty, attrs, vis, mut generics) = match &flow.header {
        Some(h) => (
            h.ident.clone(),
            h.attrs.clone(),
            h.vis.clone(),
            h.generics.clone(),
        ),
        None => (
            format_ident!("DeclaredFlow"),
            Vec::new(),
            syn::Visibility::Inherited,
            syn::Generics::default(),
        ),
    };
    // Only const dimension parameters are valid (anything else was reported).
    generics.params = generics
        .params
        .into_iter()
        .filter(|p| matches!(p, GenericParam::Const(_)))
        .collect();
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();

    // The point type, the length parameter the point methods take (when the dimension is
    // unknown), and the `SUPPORT` constant's type.
    let known_dim = match &flow.dim {
        Dim::Literal { value: 0, .. } | Dim::Invalid => None,
        dim => Some(dim_tokens(dim)),
    };
    let n = format_ident!("__FLOWGEN_N");
    let (dim, point, len_param, support) = match &known_dim {
        Some(dim) => (
            dim.clone(),
            quote!([#float; #dim]),
            quote!(),
            quote!(pub const SUPPORT: [#rt::Support; #dim] = [#rt::Support::Real; #dim];),
        ),
        None => (
            quote!(1),
            quote!([#float; #n]),
            quote!(<const #n: usize>),
            quote!(pub const SUPPORT: &'static [#rt::Support] = &[];),
        ),
    };
    let (point_generics, len_sample) = if known_dim.is_some() {
        (generics.clone(), quote!())
    } else {
        let mut g = generics.clone();
        g.params.push(syn::parse_quote!(const #n: usize));
        (g, quote!(const #n: usize,))
    };
    let (point_impl_generics, _, _) = point_generics.split_for_impl();
    let unreachable = quote!(::core::unreachable!("this flow did not compile"));
    let path = quote!(impl ::core::convert::AsRef<::std::path::Path>);
    let result = quote!(::core::result::Result);
    quote! {
        #(#attrs)*
        #[derive(Debug, Clone, PartialEq, Default)]
        #vis struct #ty #impl_generics #where_clause {}

        #[allow(unused_variables, unreachable_code)]
        impl #impl_generics #ty #ty_generics #where_clause {
            pub const DIM: usize = #dim;
            #support
            pub fn architecture() -> ::std::string::String { #unreachable }
            pub fn save(&self, path: #path) -> #result<(), #rt::FlowError> { #unreachable }
            pub fn load(&mut self, path: #path) -> #result<(), #rt::FlowError> { #unreachable }
            pub fn new<R: #rt::rand::Rng + ?Sized>(rng: &mut R) -> Self { #unreachable }
            pub fn forward_point #len_param (&self, z: #point) -> (#point, #float) { #unreachable }
            pub fn inverse_point #len_param (&self, x: #point) -> (#point, #float) { #unreachable }
            pub fn log_prob_point #len_param (&self, x: #point) -> #result<#float, #rt::FlowError> { #unreachable }
            pub fn sample_point<#len_sample R: #rt::rand::Rng + ?Sized>(&self, rng: &mut R) -> #point { #unreachable }
        }

        #[allow(unused_variables)]
        impl #impl_generics #rt::Flow<#float> for #ty #ty_generics #where_clause {
            type Base = #base;
            fn dim(&self) -> usize { #unreachable }
            fn base(&self) -> &#base { #unreachable }
            fn layers(&self) -> ::std::vec::Vec<&dyn #rt::Layer<#float>> { #unreachable }
            fn forward_block(
                &self,
                x: #rt::ndarray::ArrayViewMut2<'_, #float>,
                log_det: #rt::ndarray::ArrayViewMut1<'_, #float>,
                ws: &mut #rt::Workspace<#float>,
            ) { #unreachable }
        }

        #[allow(unused_variables)]
        impl #impl_generics #rt::Density<#float> for #ty #ty_generics #where_clause {
            fn inverse_block(
                &self,
                x: #rt::ndarray::ArrayViewMut2<'_, #float>,
                log_det: #rt::ndarray::ArrayViewMut1<'_, #float>,
                ws: &mut #rt::Workspace<#float>,
            ) { #unreachable }
        }

        #[allow(unused_variables)]
        impl #impl_generics #rt::Parameters<#float> for #ty #ty_generics #where_clause {
            fn param_len(&self) -> usize { #unreachable }
            fn visit_params(&self, visit: &mut dyn FnMut(&str, &str, &[usize], &[#float])) { #unreachable }
            fn visit_params_mut(&mut self, visit: &mut dyn FnMut(&str, &str, &[usize], &mut [#float])) { #unreachable }
            fn layers_mut(&mut self) -> ::std::vec::Vec<&mut dyn #rt::Layer<#float>> { #unreachable }
        }

        #[allow(unused_variables)]
        impl #impl_generics #rt::Trainable<#float> for #ty #ty_generics #where_clause {
            fn log_prob_backward_block(
                &self,
                x: #rt::ndarray::ArrayView2<'_, #float>,
                log_prob: #rt::ndarray::ArrayViewMut1<'_, #float>,
                weight: #rt::ndarray::ArrayView1<'_, #float>,
                grad: #rt::ndarray::ArrayViewMut2<'_, #float>,
                param_grad: &mut [#float],
                tape: &mut ::std::vec::Vec<#float>,
                ws: &mut #rt::Workspace<#float>,
            ) { #unreachable }
        }

        #[allow(unused_variables)]
        impl #impl_generics #rt::Variational<#float> for #ty #ty_generics #where_clause {
            fn sample_backward_block(
                &self,
                z: #rt::ndarray::ArrayView2<'_, #float>,
                log_det: #rt::ndarray::ArrayViewMut1<'_, #float>,
                weight: #rt::ndarray::ArrayView1<'_, #float>,
                output_grad: &mut #rt::variational::OutputGrad<'_, #float>,
                grad: #rt::ndarray::ArrayViewMut2<'_, #float>,
                param_grad: &mut [#float],
                tape: &mut ::std::vec::Vec<#float>,
                ws: &mut #rt::Workspace<#float>,
            ) { #unreachable }
        }

        impl #point_impl_generics #rt::rand::distr::Distribution<#point> for #ty #ty_generics #where_clause {
            fn sample<R: #rt::rand::Rng + ?Sized>(&self, rng: &mut R) -> #point { #unreachable }
        }
    }
}
