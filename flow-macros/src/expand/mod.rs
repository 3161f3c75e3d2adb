//! IR → Rust code: the flow's struct with one field per layer, its constructor, the fused
//! block kernels behind the runtime's `Flow`/`Density` traits, the heap-free point API,
//! and — when the flow has errors — a stub of the type so no follow-on errors appear.

use proc_macro2::TokenStream;
use quote::{ToTokens, format_ident, quote};
use syn::Ident;

use crate::check::Checked;
use crate::ir::{Dim, FloatType, Flow, Layer};

mod backward;
mod chain;
mod model;
mod stub;

pub use stub::stub;

/// The one path through which generated code reaches the runtime.
pub fn runtime() -> TokenStream {
    quote!(::flowgen::__private)
}

/// The generated code of a checked flow.
pub fn expand(flow: &Flow, checked: &Checked) -> TokenStream {
    let names = Names::of(flow);
    let model = model::model(flow, checked, &names);
    let traits = chain::flow_traits(flow, &names);
    let points = chain::point_api(flow, &names);
    let parameters = backward::parameters(flow, &names);
    let trainable = backward::trainable(flow, &names);
    let variational = backward::variational(flow, &names);
    let items = quote! {
        #model
        #traits
        #parameters
        #trainable
        #variational
        #points
    };
    match &flow.header {
        Some(_) => items,
        None => {
            let ident = &names.ty;
            quote! {{
                #items
                <#ident as ::core::default::Default>::default()
            }}
        }
    }
}

/// Names shared by the generated items.
pub(crate) struct Names {
    /// The struct's name.
    pub ty: Ident,
    /// `f32` or `f64`.
    pub float: TokenStream,
    /// One field per layer: `affine_0`, `coupling_1`, …
    pub fields: Vec<Ident>,
}

impl Names {
    fn of(flow: &Flow) -> Self {
        let ty = flow
            .header
            .as_ref()
            .map_or_else(|| format_ident!("DeclaredFlow"), |h| h.ident.clone());
        Names {
            ty,
            float: float_type(flow.float),
            fields: field_names(&flow.layers),
        }
    }
}

/// The dimension as a token: the literal, or the const generic parameter. An invalid
/// dimension (never expanded: the error stub makes its point methods generic) becomes 1.
pub(crate) fn dim_tokens(dim: &Dim) -> TokenStream {
    match dim {
        Dim::Literal { value, .. } => {
            proc_macro2::Literal::u64_unsuffixed(*value).into_token_stream()
        }
        Dim::Generic(ident) => ident.into_token_stream(),
        Dim::Invalid => quote!(1),
    }
}

pub(crate) fn float_type(float: FloatType) -> TokenStream {
    match float {
        FloatType::F32 => quote!(f32),
        FloatType::F64 => quote!(f64),
    }
}

fn field_names(layers: &[Layer]) -> Vec<Ident> {
    layers
        .iter()
        .enumerate()
        .map(|(i, l)| format_ident!("{}_{}", l.kind.name(), i))
        .collect()
}
