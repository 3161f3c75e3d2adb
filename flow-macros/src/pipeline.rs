//! The whole macro as one plain function over `proc_macro2` tokens:
//! parse → lower to IR → check → expand (or errors plus a stub).

use proc_macro2::TokenStream;
use quote::quote;

use crate::{check, expand, lower, parse};

/// Expands one `flow!` invocation.
pub fn flow(tokens: TokenStream) -> TokenStream {
    let syntax = match parse::parse(tokens.clone()) {
        Ok(syntax) => syntax,
        Err(error) => {
            // Still define the type, with the name and settings that can be read, so that
            // uses of it do not fail too.
            let flow = lower::recover(&parse::recover(tokens));
            let stub = expand::stub(&flow);
            return with_errors(flow.header.is_some(), [error], stub);
        }
    };
    let lowered = lower::lower(&syntax);
    let mut errors = lowered.errors;
    let flow = &lowered.flow;
    match check::check(flow, &lowered.unknown_support_at) {
        Ok(checked) if errors.is_empty() => return expand::expand(flow, &checked),
        Ok(_) => {}
        Err(more) => errors.extend(more),
    }
    let stub = expand::stub(flow);
    with_errors(flow.header.is_some(), errors, stub)
}

/// The errors and the stub, as items (named form) or as a block ending in a value.
fn with_errors(
    item: bool,
    errors: impl IntoIterator<Item = syn::Error>,
    stub: TokenStream,
) -> TokenStream {
    let errors = errors.into_iter().map(|e| e.to_compile_error());
    if item {
        quote!(#(#errors)* #stub)
    } else {
        quote!({ #(#errors)* #stub <DeclaredFlow as ::core::default::Default>::default() })
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
    fn a_forward_only_flow_has_no_density_and_refuses_scoring_at_the_call() {
        let code = flow(quote!(pub struct Ring { dim = 2; affine; planar; radial })).to_string();
        assert!(!code.contains("Density < f32 > for Ring"), "{code}");
        assert!(!code.contains("Trainable < f32 > for Ring"), "{code}");
        assert!(code.contains("Variational < f32 > for Ring"), "{code}");
        assert!(code.contains("Parameters < f32 > for Ring"), "{code}");
        // The first forward-only layer is named in the bounds of the refused methods.
        assert_eq!(
            code.matches(
                "Planar < f32 > : :: flowgen :: __private :: flow :: AnalyticInverse < 'a >"
            )
            .count(),
            4,
            "{code}"
        );
        assert!(!code.contains("compile_error"), "{code}");
    }

    #[test]
    fn batch_norm_trains_on_batch_statistics() {
        let code = flow(quote!(pub struct Normed { dim = 2; coupling(mask = even); batch_norm }))
            .to_string();
        assert!(
            code.contains("fn uses_batch_statistics (& self) -> bool { true }"),
            "{code}"
        );
        assert!(
            code.contains("batch_norm_1 . inverse_block_training"),
            "{code}"
        );
        assert!(
            code.contains("batch_norm_1 . inverse_backward_block_training"),
            "{code}"
        );
        let plain = flow(quote!(pub struct Plain { dim = 2; coupling(mask = even) })).to_string();
        assert!(
            plain.contains("fn uses_batch_statistics (& self) -> bool { false }"),
            "{plain}"
        );
        assert!(!plain.contains("_training"), "{plain}");
    }

    #[test]
    fn an_invalid_flow_gives_all_errors_and_a_stub() {
        let code = flow(quote!(pub struct Bad { dim = 2; afine; relu })).to_string();
        assert_eq!(code.matches("compile_error").count(), 2, "{code}");
        assert!(code.contains("pub struct Bad"), "{code}");
    }

    #[test]
    fn a_syntax_error_in_the_item_form_still_defines_the_type() {
        let code = flow(quote!(pub struct Broken { dim = 2; affine sigmoid })).to_string();
        assert_eq!(code.matches("compile_error").count(), 1, "{code}");
        assert!(code.contains("pub struct Broken"), "{code}");
        assert!(!code.starts_with('{'), "{code}");
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
