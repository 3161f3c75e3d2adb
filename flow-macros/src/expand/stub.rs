//! What the macro emits when the flow has errors: the errors, plus a stub of the type with
//! the same name and API, so that code using the flow does not fail a second time.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::GenericParam;

use super::{dim_tokens, float_type, runtime};
use crate::ir::{Dim, FloatType};
use crate::parse::ItemHeader;

/// The stub items for a flow that did not check (wrap them in a block for the expression
/// form, as for a valid flow).
pub fn stub(header: Option<&ItemHeader>, dim: &Dim, float: FloatType) -> TokenStream {
    let rt = runtime();
    let float = float_type(float);
    let dim = dim_tokens(dim);
    let (ty, vis, mut generics) = match header {
        Some(h) => (h.ident.clone(), h.vis.clone(), h.generics.clone()),
        None => (
            format_ident!("DeclaredFlow"),
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
    let unreachable = quote!(::core::unreachable!("this flow did not compile"));
    let point = quote!([#float; #dim]);
    quote! {
        #[derive(Debug, Clone, PartialEq, Default)]
        #vis struct #ty #impl_generics #where_clause {}

        #[allow(unused_variables, unreachable_code)]
        impl #impl_generics #ty #ty_generics #where_clause {
            pub const DIM: usize = #dim;
            pub const SUPPORT: [#rt::Support; #dim] = [#rt::Support::Real; #dim];
            pub fn new<R: #rt::rand::Rng + ?Sized>(rng: &mut R) -> Self { #unreachable }
            pub fn forward_point(&self, z: #point) -> (#point, #float) { #unreachable }
            pub fn inverse_point(&self, x: #point) -> (#point, #float) { #unreachable }
            pub fn log_prob_point(&self, x: #point) -> ::core::result::Result<#float, #rt::FlowError> { #unreachable }
            pub fn sample_point<R: #rt::rand::Rng + ?Sized>(&self, rng: &mut R) -> #point { #unreachable }
        }

        #[allow(unused_variables)]
        impl #impl_generics #rt::Flow<#float> for #ty #ty_generics #where_clause {
            type Base = #rt::StandardNormal;
            fn dim(&self) -> usize { #unreachable }
            fn base(&self) -> &#rt::StandardNormal { #unreachable }
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
        impl #impl_generics #rt::Trainable<#float> for #ty #ty_generics #where_clause {
            fn param_len(&self) -> usize { #unreachable }
            fn visit_params(&self, visit: &mut dyn FnMut(&str, &str, &[usize], &[#float])) { #unreachable }
            fn visit_params_mut(&mut self, visit: &mut dyn FnMut(&str, &str, &[usize], &mut [#float])) { #unreachable }
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

        impl #impl_generics #rt::rand::distr::Distribution<#point> for #ty #ty_generics #where_clause {
            fn sample<R: #rt::rand::Rng + ?Sized>(&self, rng: &mut R) -> #point { #unreachable }
        }
    }
}
