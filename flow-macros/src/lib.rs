//! The `flow!` proc-macro of flowgen. The entry point only forwards to
//! [`pipeline::flow`], a plain function over `proc_macro2` tokens:
//! `parse` (syntax tree) → `lower` (typed IR, names and options resolved against `table`)
//! → `check` (bijectivity, dimensions, supports) → `expand` (generated code).

mod check;
mod expand;
mod ir;
mod lower;
mod parse;
mod pipeline;
mod suggest;
mod table;

/// Declares a normalizing flow; see the `flowgen` crate's documentation for the DSL.
#[proc_macro]
pub fn flow(tokens: proc_macro::TokenStream) -> proc_macro::TokenStream {
    pipeline::flow(tokens.into()).into()
}
