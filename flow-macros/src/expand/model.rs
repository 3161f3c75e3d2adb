//! The flow's struct, its constants (dimension, support), dimension rules for a generic
//! `dim`, and its constructors.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};

use super::{Names, runtime};
use crate::check::{Checked, DimBound, FinalSupport};
use crate::ir::{Flow, Support};

pub(super) fn model(flow: &Flow, checked: &Checked, names: &Names) -> TokenStream {
    let rt = runtime();
    let Names { ty, float, fields } = names;
    let (attrs, vis, generics) = match &flow.header {
        Some(h) => (h.attrs.clone(), h.vis.clone(), h.generics.clone()),
        None => (
            Vec::new(),
            syn::Visibility::Inherited,
            syn::Generics::default(),
        ),
    };
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let dim = super::dim_tokens(&flow.dim);
    let types = flow.layers.iter().map(|l| l.kind.runtime_type(&rt, float));
    let dim_expr = quote!(Self::DIM);
    let constructors = flow
        .layers
        .iter()
        .map(|l| l.kind.constructor(&rt, &dim_expr));
    let base_type = flow.base.runtime_type(&rt, float);
    let base = flow.base.constructor(&rt, &dim_expr);
    let support = support_const(&checked.final_support, &rt, &dim);
    let architecture = architecture_text(flow);
    let rules: Vec<TokenStream> = checked
        .dim_rules
        .iter()
        .map(|rule| {
            let condition = match rule.bound {
                DimBound::AtLeast(n) => {
                    let n = proc_macro2::Literal::u64_unsuffixed(n);
                    quote!(Self::DIM >= #n)
                }
                DimBound::AtMost(n) => {
                    let n = proc_macro2::Literal::u64_unsuffixed(n);
                    quote!(Self::DIM <= #n)
                }
                DimBound::Equals(n) => {
                    let n = proc_macro2::Literal::u64_unsuffixed(n);
                    quote!(Self::DIM == #n)
                }
            };
            let message = &rule.message;
            quote_spanned!(rule.span=> ::core::assert!(#condition, #message);)
        })
        .collect();
    let (rules_const, rules_use) = if rules.is_empty() {
        (quote!(), quote!())
    } else {
        (
            quote! {
                /// Dimension rules checked at compile time once the dimension is known.
                const DIM_RULES: () = { #(#rules)* };
            },
            quote! {
                #[allow(clippy::let_unit_value)]
                let () = Self::DIM_RULES;
            },
        )
    };
    quote! {
        #(#attrs)*
        #[derive(Debug, Clone, PartialEq)]
        #vis struct #ty #impl_generics #where_clause {
            #(pub #fields: #types,)*
            /// The base distribution.
            pub base: #base_type,
        }

        impl #impl_generics #ty #ty_generics #where_clause {
            /// The number of coordinates.
            pub const DIM: usize = #dim;
            /// The support of each coordinate of the data, tracked through the chain.
            pub const SUPPORT: [#rt::Support; #dim] = #support;
            #rules_const

            /// The architecture as canonical DSL text (every option spelled out): the
            /// fingerprint saved with trained parameters and checked when they are loaded.
            pub fn architecture() -> ::std::string::String {
                ::std::format!(#architecture, Self::DIM)
            }

            /// Saves the parameters as safetensors, tagged with [`Self::architecture`].
            pub fn save(&self, path: impl ::core::convert::AsRef<::std::path::Path>) -> ::core::result::Result<(), #rt::FlowError> {
                #rt::io::save(self, path, &Self::architecture())
            }

            /// Loads parameters saved by [`Self::save`]: a file of another architecture, or
            /// a corrupt one, is an error and leaves the flow unchanged.
            pub fn load(&mut self, path: impl ::core::convert::AsRef<::std::path::Path>) -> ::core::result::Result<(), #rt::FlowError> {
                #rt::io::load(self, path, &Self::architecture())
            }

            /// A fresh flow: couplings and learnable elementwise layers start as the
            /// identity, conditioners' hidden layers are drawn from `rng`.
            pub fn new<R: #rt::rand::Rng + ?Sized>(rng: &mut R) -> Self {
                #rules_use
                let _ = &rng;
                Self { #(#fields: #constructors,)* base: #base }
            }
        }

        impl #impl_generics ::core::default::Default for #ty #ty_generics #where_clause {
            /// The flow built by `new` from a fixed seed: deterministic.
            fn default() -> Self {
                Self::new(&mut <#rt::rand::rngs::StdRng as #rt::rand::SeedableRng>::seed_from_u64(0))
            }
        }
    }
}

/// `"flowgen; dim = {}; base = …; float = …; layer; layer; …"`, a format string whose one
/// argument is the dimension.
fn architecture_text(flow: &Flow) -> String {
    let base = flow.base.describe();
    let float = match flow.float {
        crate::ir::FloatType::F32 => "f32",
        crate::ir::FloatType::F64 => "f64",
    };
    let layers: Vec<String> = flow
        .layers
        .iter()
        .map(|l| l.kind.describe().replace('{', "{{").replace('}', "}}"))
        .collect();
    format!(
        "flowgen; dim = {{}}; base = {base}; float = {float}; {}",
        layers.join("; ")
    )
}

fn support_const(support: &FinalSupport, rt: &TokenStream, dim: &TokenStream) -> TokenStream {
    let token = |s: &Support| match s {
        Support::Real => quote!(#rt::Support::Real),
        Support::UnitInterval => quote!(#rt::Support::UnitInterval),
        Support::Symmetric => quote!(#rt::Support::Symmetric),
        Support::Positive => quote!(#rt::Support::Positive),
    };
    match support {
        FinalSupport::PerCoordinate(list) => {
            let items = list.iter().map(token);
            quote!([#(#items),*])
        }
        FinalSupport::AllCoordinates(s) => {
            let s = token(s);
            quote!([#s; #dim])
        }
    }
}
