//! What the macro emits when the flow has errors: the errors, plus a stub of the type with
//! the same name and API, so that code using the flow does not fail a second time.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::{float_type, runtime};
use crate::ir::FloatType;
use crate::parse::{FlowSyntax, Stmt, Value};

/// The stub for a flow that did not check.
pub fn stub(syntax: Option<&FlowSyntax>) -> TokenStream {
    let rt = runtime();
    let float = float_type(syntax.map_or(FloatType::F32, declared_float));
    let header = syntax.and_then(|s| s.header.as_ref());
    let (ty, vis, generics) = match header {
        Some(h) => (h.ident.clone(), h.vis.clone(), h.generics.clone()),
        None => (
            format_ident!("DeclaredFlow"),
            syn::Visibility::Inherited,
            syn::Generics::default(),
        ),
    };
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let unreachable = quote!(::core::unreachable!("this flow did not compile"));
    let items = quote! {
        #[derive(Debug, Clone, PartialEq, Default)]
        #vis struct #ty #impl_generics #where_clause {}

        impl #impl_generics #ty #ty_generics #where_clause {
            pub fn new<R: #rt::rand::Rng + ?Sized>(_rng: &mut R) -> Self { #unreachable }
        }

        impl #impl_generics #rt::Flow<#float> for #ty #ty_generics #where_clause {
            type Base = #rt::StandardNormal;
            fn dim(&self) -> usize { #unreachable }
            fn base(&self) -> &#rt::StandardNormal { #unreachable }
            fn layers(&self) -> ::std::vec::Vec<&dyn #rt::Layer<#float>> { #unreachable }
            fn forward_block(
                &self,
                _x: #rt::ndarray::ArrayViewMut2<'_, #float>,
                _log_det: #rt::ndarray::ArrayViewMut1<'_, #float>,
                _ws: &mut #rt::Workspace<#float>,
            ) { #unreachable }
        }

        impl #impl_generics #rt::Density<#float> for #ty #ty_generics #where_clause {
            fn inverse_block(
                &self,
                _x: #rt::ndarray::ArrayViewMut2<'_, #float>,
                _log_det: #rt::ndarray::ArrayViewMut1<'_, #float>,
                _ws: &mut #rt::Workspace<#float>,
            ) { #unreachable }
        }
    };
    match header {
        Some(_) => items,
        None => quote!({ #items #ty {} }),
    }
}

/// `float = f64` if the invocation says so, even when other parts do not check.
fn declared_float(syntax: &FlowSyntax) -> FloatType {
    let f64_declared = syntax.stmts.iter().any(|s| {
        matches!(s, Stmt::Setting { key, value: Value::Ident(v) } if key == "float" && v == "f64")
    });
    if f64_declared {
        FloatType::F64
    } else {
        FloatType::F32
    }
}
