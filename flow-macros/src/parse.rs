//! Tokens → syntax tree. The grammar is generic (settings, calls with arguments, blocks);
//! which names and options exist is decided later, against the layer table, so that every
//! unknown name can be reported at once with a suggestion.
//!
//! ```text
//! input   := item | body
//! item    := attr* vis 'struct' IDENT generics? '{' body '}'
//! body    := stmt (';' stmt)* ';'?          (a ';' after a '{…}' block is optional)
//! stmt    := IDENT '=' value                (a setting: dim, base, float)
//!          | call                           (a layer, or repeat(n) { body })
//! call    := IDENT ('(' arg (',' arg)* ','? ')')? ('{' body '}')?
//! arg     := IDENT '=' value | value
//! value   := '-'? INT | '-'? FLOAT | IDENT | '[' value,* ']' | IDENT '(' arg,* ')'
//! ```

use proc_macro2::{Span, TokenStream};
use syn::parse::{Parse, ParseStream};
use syn::{Attribute, Generics, Ident, Token, Visibility, braced, bracketed, parenthesized};

/// A whole `flow!` invocation.
#[derive(Debug, Clone)]
pub struct FlowSyntax {
    /// Present in the named item form `flow! { pub struct Name { … } }`.
    pub header: Option<ItemHeader>,
    pub stmts: Vec<Stmt>,
}

/// `attrs vis struct Name<generics>` of the item form.
#[derive(Debug, Clone)]
pub struct ItemHeader {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub ident: Ident,
    pub generics: Generics,
}

/// One statement of the body.
#[derive(Debug, Clone)]
pub enum Stmt {
    /// `key = value`
    Setting { key: Ident, value: Value },
    /// A layer or a `repeat`.
    Call(Call),
}

/// `name(args) { body }`, both parts optional.
#[derive(Debug, Clone)]
pub struct Call {
    pub name: Ident,
    pub args: Vec<Arg>,
    pub body: Option<Vec<Stmt>>,
}

/// One argument of a call.
#[derive(Debug, Clone)]
pub enum Arg {
    Named { key: Ident, value: Value },
    Positional(Value),
}

/// An argument value.
#[derive(Debug, Clone)]
pub enum Value {
    Number(Number),
    Ident(Ident),
    List { items: Vec<Value>, span: Span },
    Call(Call),
}

/// A numeric literal, possibly negated.
#[derive(Debug, Clone)]
pub struct Number {
    pub value: f64,
    /// Written without a decimal point or exponent.
    pub is_integer: bool,
    /// As written, e.g. `-0.5`.
    pub text: String,
    pub place: Place,
}

/// Where a value was written: its first and last tokens, so that an error underlines all
/// of `-0.5` and not only `0.5`.
#[derive(Debug, Clone, Copy)]
pub struct Place {
    pub first: Span,
    pub last: Span,
}

impl From<Span> for Place {
    fn from(span: Span) -> Self {
        Place {
            first: span,
            last: span,
        }
    }
}

impl Place {
    /// An error underlining the whole place.
    pub fn error(self, message: impl std::fmt::Display) -> syn::Error {
        let mut first = proc_macro2::Punct::new('-', proc_macro2::Spacing::Alone);
        first.set_span(self.first);
        let mut last = proc_macro2::Punct::new('-', proc_macro2::Spacing::Alone);
        last.set_span(self.last);
        let tokens: TokenStream = [proc_macro2::TokenTree::from(first), last.into()]
            .into_iter()
            .collect();
        syn::Error::new_spanned(tokens, message)
    }
}

impl Value {
    pub fn place(&self) -> Place {
        match self {
            Value::Number(n) => n.place,
            Value::Ident(i) => i.span().into(),
            Value::List { span, .. } => (*span).into(),
            Value::Call(c) => c.name.span().into(),
        }
    }

    /// How the value reads to a user, for messages ("the number `-1`", "a list", …).
    pub fn describe(&self) -> String {
        match self {
            Value::Number(n) => format!("the number `{}`", n.text),
            Value::Ident(i) => format!("the name `{i}`"),
            Value::List { .. } => "a list".into(),
            Value::Call(c) => format!("the call `{}(…)`", c.name),
        }
    }
}

/// Parses a `flow!` invocation.
pub fn parse(tokens: TokenStream) -> syn::Result<FlowSyntax> {
    syn::parse2(tokens)
}

impl Parse for FlowSyntax {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if starts_item(input) {
            let attrs = input.call(Attribute::parse_outer)?;
            let vis: Visibility = input.parse()?;
            input.parse::<Token![struct]>()?;
            let ident: Ident = input.parse()?;
            let mut generics: Generics = input.parse()?;
            generics.where_clause = input.parse()?;
            let content;
            braced!(content in input);
            let stmts = parse_body(&content)?;
            if !input.is_empty() {
                return Err(input.error(
                    "unexpected tokens after the flow's `{ … }` body: one `flow!` declares one `struct Name { … }`; remove them, or declare another flow in its own `flow!`",
                ));
            }
            let header = ItemHeader {
                attrs,
                vis,
                ident,
                generics,
            };
            Ok(FlowSyntax {
                header: Some(header),
                stmts,
            })
        } else {
            Ok(FlowSyntax {
                header: None,
                stmts: parse_body(input)?,
            })
        }
    }
}

/// What can still be read of an invocation that does not parse: the header of the item
/// form, and the body's settings (`key = value` at its top level), so that the error stub
/// can have the name, dimension and float type that were meant.
pub struct Recovered {
    pub header: Option<ItemHeader>,
    pub settings: Vec<(Ident, Value)>,
}

/// Reads what it can of an invocation that does not parse; see [`Recovered`].
pub fn recover(tokens: TokenStream) -> Recovered {
    struct Header(Option<ItemHeader>, TokenStream);
    impl Parse for Header {
        fn parse(input: ParseStream) -> syn::Result<Self> {
            if !starts_item(input) {
                return Ok(Header(None, input.parse()?));
            }
            let attrs = input.call(Attribute::parse_outer)?;
            let vis: Visibility = input.parse()?;
            input.parse::<Token![struct]>()?;
            let ident: Ident = input.parse()?;
            let mut generics: Generics = input.parse()?;
            generics.where_clause = input.parse()?;
            let body = if input.peek(syn::token::Brace) {
                let content;
                braced!(content in input);
                content.parse()?
            } else {
                TokenStream::new()
            };
            input.parse::<TokenStream>()?;
            let header = ItemHeader {
                attrs,
                vis,
                ident,
                generics,
            };
            Ok(Header(Some(header), body))
        }
    }
    let (header, body) = match syn::parse2::<Header>(tokens) {
        Ok(Header(header, body)) => (header, body),
        Err(_) => (None, TokenStream::new()),
    };
    Recovered {
        header,
        settings: recover_settings(body),
    }
}

/// Every `key = value` at the top level of a body (named arguments are inside
/// parentheses, so these are the settings), even where the statements around them do not
/// parse.
fn recover_settings(body: TokenStream) -> Vec<(Ident, Value)> {
    use proc_macro2::{Spacing, TokenTree};
    let tokens: Vec<TokenTree> = body.into_iter().collect();
    let mut settings = Vec::new();
    for (i, window) in tokens.windows(2).enumerate() {
        let [TokenTree::Ident(key), TokenTree::Punct(eq)] = window else {
            continue;
        };
        if eq.as_char() != '=' || eq.spacing() != Spacing::Alone {
            continue;
        }
        let rest: TokenStream = tokens[i + 2..].iter().cloned().collect();
        let value = |input: ParseStream| {
            let value = parse_value(input)?;
            input.parse::<TokenStream>()?;
            Ok(value)
        };
        if let Ok(value) = syn::parse::Parser::parse2(value, rest) {
            settings.push((key.clone(), value));
        }
    }
    settings
}

/// Whether the input is the named item form (`… struct Name { … }`).
fn starts_item(input: ParseStream) -> bool {
    let fork = input.fork();
    fork.call(Attribute::parse_outer).is_ok()
        && fork.parse::<Visibility>().is_ok()
        && fork.peek(Token![struct])
}

fn parse_body(input: ParseStream) -> syn::Result<Vec<Stmt>> {
    let mut stmts = Vec::new();
    while !input.is_empty() {
        let stmt = parse_stmt(input)?;
        let ended_with_block = matches!(&stmt, Stmt::Call(Call { body: Some(_), .. }));
        stmts.push(stmt);
        if input.is_empty() {
            break;
        }
        if input.peek(Token![;]) {
            input.parse::<Token![;]>()?;
        } else if !ended_with_block {
            return Err(input.error("expected `;` between the statements of a flow"));
        }
    }
    Ok(stmts)
}

fn parse_stmt(input: ParseStream) -> syn::Result<Stmt> {
    if input.peek(Ident) && input.peek2(Token![=]) && !input.peek2(Token![==]) {
        let key: Ident = input.parse()?;
        input.parse::<Token![=]>()?;
        let value = parse_value(input)?;
        return Ok(Stmt::Setting { key, value });
    }
    let call = parse_call(input)?;
    Ok(Stmt::Call(call))
}

fn parse_call(input: ParseStream) -> syn::Result<Call> {
    let name: Ident = input.parse().map_err(|e| {
        syn::Error::new(
            e.span(),
            "expected a layer name: each statement of a flow is a layer, like `affine` or `coupling(mask = even)`, or a setting, like `dim = 2`",
        )
    })?;
    let args = if input.peek(syn::token::Paren) {
        let content;
        parenthesized!(content in input);
        let mut args = Vec::new();
        while !content.is_empty() {
            args.push(parse_arg(&content)?);
            if content.is_empty() {
                break;
            }
            content.parse::<Token![,]>()?;
        }
        args
    } else {
        Vec::new()
    };
    let body = if input.peek(syn::token::Brace) {
        let content;
        braced!(content in input);
        Some(parse_body(&content)?)
    } else {
        None
    };
    Ok(Call { name, args, body })
}

fn parse_arg(input: ParseStream) -> syn::Result<Arg> {
    if input.peek(Ident) && input.peek2(Token![=]) {
        let key: Ident = input.parse()?;
        input.parse::<Token![=]>()?;
        let value = parse_value(input)?;
        Ok(Arg::Named { key, value })
    } else {
        Ok(Arg::Positional(parse_value(input)?))
    }
}

fn parse_value(input: ParseStream) -> syn::Result<Value> {
    if input.peek(Token![-]) || input.peek(syn::LitInt) || input.peek(syn::LitFloat) {
        return parse_number(input).map(Value::Number);
    }
    if input.peek(syn::token::Bracket) {
        let content;
        let bracket = bracketed!(content in input);
        let mut items = Vec::new();
        while !content.is_empty() {
            items.push(parse_value(&content)?);
            if content.is_empty() {
                break;
            }
            content.parse::<Token![,]>()?;
        }
        return Ok(Value::List {
            items,
            span: bracket.span.join(),
        });
    }
    if input.peek(Ident) {
        if input.peek2(syn::token::Paren) {
            return parse_call(input).map(Value::Call);
        }
        return input.parse().map(Value::Ident);
    }
    Err(input.error("expected a value: a number, a name, or a list like `[64, 64]`"))
}

fn parse_number(input: ParseStream) -> syn::Result<Number> {
    let minus: Option<Token![-]> = input.parse()?;
    let sign = if minus.is_some() { -1.0 } else { 1.0 };
    let (value, is_integer, text, span) = if input.peek(syn::LitInt) {
        let lit: syn::LitInt = input.parse()?;
        (
            lit.base10_parse::<u64>()? as f64,
            true,
            lit.to_string(),
            lit.span(),
        )
    } else {
        let lit: syn::LitFloat = input.parse()?;
        (
            lit.base10_parse::<f64>()?,
            false,
            lit.to_string(),
            lit.span(),
        )
    };
    let first = minus.map_or(span, |m| m.span);
    let text = if minus.is_some() {
        format!("-{text}")
    } else {
        text
    };
    let place = Place { first, last: span };
    Ok(Number {
        value: sign * value,
        is_integer,
        text,
        place,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn layer_names(stmts: &[Stmt]) -> Vec<String> {
        stmts
            .iter()
            .filter_map(|s| match s {
                Stmt::Call(c) => Some(c.name.to_string()),
                Stmt::Setting { .. } => None,
            })
            .collect()
    }

    #[test]
    fn parses_the_expression_form() {
        let f =
            parse(quote!(dim = 2; affine; coupling(mask = even); coupling(mask = odd); sigmoid))
                .unwrap();
        assert!(f.header.is_none());
        assert!(matches!(&f.stmts[0], Stmt::Setting { key, .. } if key == "dim"));
        assert_eq!(
            layer_names(&f.stmts),
            ["affine", "coupling", "coupling", "sigmoid"]
        );
    }

    #[test]
    fn parses_the_item_form_with_repeat_and_generics() {
        let f = parse(quote! {
            pub struct Moons<const D: usize> {
                dim = D; base = normal;
                repeat(4) { coupling(mask = even, hidden = [64, 64]); permute(reverse) }
            }
        })
        .unwrap();
        let h = f.header.unwrap();
        assert_eq!(h.ident, "Moons");
        assert_eq!(h.generics.params.len(), 1);
        let Stmt::Call(repeat) = &f.stmts[2] else {
            panic!("repeat")
        };
        assert_eq!(repeat.name, "repeat");
        assert_eq!(
            layer_names(repeat.body.as_ref().unwrap()),
            ["coupling", "permute"]
        );
    }

    #[test]
    fn parses_values() {
        let f = parse(quote!(dim = 3; shift(-1.5); permute([2, 0, 1]); leaky_relu(slope = 0.1); x(t = spline(bins = 8))))
            .unwrap();
        let Stmt::Call(shift) = &f.stmts[1] else {
            panic!()
        };
        let Arg::Positional(Value::Number(n)) = &shift.args[0] else {
            panic!()
        };
        assert_eq!(n.value, -1.5);
        assert!(!n.is_integer);
        let Stmt::Call(perm) = &f.stmts[2] else {
            panic!()
        };
        let Arg::Positional(Value::List { items, .. }) = &perm.args[0] else {
            panic!()
        };
        assert_eq!(items.len(), 3);
        let Stmt::Call(x) = &f.stmts[4] else { panic!() };
        assert!(matches!(
            &x.args[0],
            Arg::Named {
                value: Value::Call(_),
                ..
            }
        ));
    }

    #[test]
    fn a_missing_semicolon_is_a_syntax_error() {
        let err = parse(quote!(dim = 2; affine sigmoid)).unwrap_err();
        assert!(err.to_string().contains("expected `;`"), "{err}");
    }
}
