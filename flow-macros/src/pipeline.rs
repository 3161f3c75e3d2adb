//! The whole macro as one plain function over `proc_macro2` tokens:
//! parse → lower to IR → check → expand (or errors plus a stub).

use proc_macro2::TokenStream;

use crate::{check, expand, lower, parse};

/// Expands one `flow!` invocation.
pub fn flow(tokens: TokenStream) -> TokenStream {
    let syntax = match parse::parse(tokens) {
        Ok(syntax) => syntax,
        Err(error) => {
            let stub = expand::stub(None);
            let error = error.into_compile_error();
            return quote::quote!({ #error #stub });
        }
    };
    let lowered = lower::lower(&syntax);
    let mut errors = lowered.errors;
    if let Some(flow) = &lowered.flow {
        match check::check(flow, lowered.complete) {
            Ok(checked) if errors.is_empty() => return expand::expand(flow, &checked),
            Ok(_) => {}
            Err(more) => errors.extend(more),
        }
    }
    let errors = errors.iter().map(syn::Error::to_compile_error);
    let stub = expand::stub(Some(&syntax));
    match syntax.header {
        Some(_) => quote::quote!(#(#errors)* #stub),
        None => quote::quote!({ #(#errors)* #stub }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn a_valid_flow_expands_to_a_struct_and_trait_impls() {
        let code =
            flow(quote!(pub struct Moons { dim = 2; affine; coupling(mask = even); sigmoid }))
                .to_string();
        assert!(code.contains("pub struct Moons"), "{code}");
        assert!(code.contains("affine_0"), "{code}");
        assert!(code.contains("coupling_1"), "{code}");
        assert!(
            code.contains(":: flowgen :: __private :: Density < f32 > for Moons"),
            "{code}"
        );
        assert!(!code.contains("compile_error"), "{code}");
    }

    #[test]
    fn an_invalid_flow_gives_all_errors_and_a_stub() {
        let code = flow(quote!(pub struct Bad { dim = 2; afine; relu })).to_string();
        assert_eq!(code.matches("compile_error").count(), 2, "{code}");
        assert!(code.contains("pub struct Bad"), "{code}");
    }

    #[test]
    fn the_expression_form_is_a_block_ending_in_a_value() {
        let code = flow(quote!(dim = 2; affine)).to_string();
        assert!(code.starts_with('{'), "{code}");
        assert!(
            code.contains("DeclaredFlow as :: core :: default :: Default"),
            "{code}"
        );
    }
}
