//! Syntax tree → IR: resolves settings, unrolls `repeat`, reads each layer's options
//! against the layer table, and reports every unknown name, option, value or type —
//! all of them, each spanned on its token, with a "did you mean" where one is close.

use proc_macro2::Span;
use syn::{Error, GenericParam, Ident};

use crate::ir::{
    Activation, Base, CouplingSpec, CouplingTransform, Dim, FloatType, Flow, Layer, LayerKind,
    MaskSpec, Num, PermuteSpec,
};
use crate::parse::{Arg, Call, FlowSyntax, ItemHeader, Number, Place, Stmt, Value};
use crate::suggest::did_you_mean;
use crate::table;

/// The IR of the flow (with the layers that could be read) and the errors found.
/// `complete` is false when some layer could not be read, so chain-wide rules must wait.
pub struct Lowered {
    pub flow: Flow,
    pub complete: bool,
    pub errors: Vec<Error>,
}

/// Lowers a parsed invocation.
pub fn lower(syntax: &FlowSyntax) -> Lowered {
    let mut cx = Lowering {
        errors: Vec::new(),
        header: syntax.header.as_ref(),
    };
    if let Some(header) = &syntax.header {
        cx.generics(header);
    }
    let mut settings = Settings::default();
    let mut layers = Vec::new();
    let mut complete = true;
    for stmt in &syntax.stmts {
        match stmt {
            Stmt::Setting { key, value } => cx.setting(&mut settings, key, value),
            Stmt::Call(call) => complete &= cx.layer(call, &mut layers),
        }
    }
    let dim = match settings.dim {
        Some(dim) => dim,
        None if settings.dim_written => Dim::Invalid,
        None => {
            let span = syntax
                .header
                .as_ref()
                .map_or_else(Span::call_site, |h| h.ident.span());
            cx.errors.push(Error::new(
                span,
                "a flow needs its dimension: start the body with `dim = 2;` (a number, or a const generic parameter such as `dim = D;`)",
            ));
            Dim::Invalid
        }
    };
    if layers.is_empty() && complete {
        let span = syntax
            .header
            .as_ref()
            .map_or_else(Span::call_site, |h| h.ident.span());
        cx.errors.push(Error::new(
            span,
            "a flow needs at least one layer, e.g. `affine`",
        ));
        complete = false;
    }
    let flow = Flow {
        header: syntax.header.clone(),
        dim,
        base: settings.base.unwrap_or(Base::Normal),
        float: settings.float.unwrap_or(FloatType::F32),
        layers,
    };
    Lowered {
        flow,
        complete,
        errors: cx.errors,
    }
}

#[derive(Default)]
struct Settings {
    dim: Option<Dim>,
    /// A `dim = …` was written, valid or not (so a bad one is not also reported missing).
    dim_written: bool,
    base: Option<Base>,
    float: Option<FloatType>,
}

struct Lowering<'a> {
    errors: Vec<Error>,
    header: Option<&'a ItemHeader>,
}

impl Lowering<'_> {
    fn error(&mut self, place: impl Into<Place>, message: impl Into<String>) {
        self.errors.push(place.into().error(message.into()));
    }

    /// A flow struct's only generic parameters are `const D: usize` dimensions.
    fn generics(&mut self, header: &ItemHeader) {
        for param in &header.generics.params {
            match param {
                GenericParam::Const(c) if is_usize(&c.ty) => {}
                GenericParam::Const(c) => self.errors.push(Error::new_spanned(
                    &c.ty,
                    format!("a flow's dimension parameter must be a `usize`: write `const {}: usize`", c.ident),
                )),
                other => self.errors.push(Error::new_spanned(
                    other,
                    "a flow struct takes only const dimension parameters, like `struct Chain<const D: usize>`; the float type is chosen with `float = f32 | f64`",
                )),
            }
        }
    }

    fn setting(&mut self, settings: &mut Settings, key: &Ident, value: &Value) {
        let name = key.to_string();
        let duplicate = match name.as_str() {
            "dim" => std::mem::replace(&mut settings.dim_written, true),
            "base" => settings.base.is_some(),
            "float" => settings.float.is_some(),
            _ => {
                let hint = did_you_mean(&name, table::SETTINGS.iter().copied());
                if hint.contains("`dim`") {
                    settings.dim_written = true;
                }
                self.error(
                    key.span(),
                    format!("unknown setting `{name}`{hint} (the settings are `dim = N`, `base = normal | uniform` and `float = f32 | f64`)"),
                );
                return;
            }
        };
        if duplicate {
            self.error(key.span(), format!("`{name}` is set twice; keep one"));
            return;
        }
        match name.as_str() {
            "dim" => settings.dim = self.dim(value),
            "base" => {
                settings.base = self.choice(value, table::BASES, "`base`").map(|b| match b {
                    "uniform" => Base::Uniform,
                    _ => Base::Normal,
                })
            }
            _ => {
                settings.float = self
                    .choice(value, table::FLOATS, "`float`")
                    // An unknown float falls back to its suggestion, so the stub has the
                    // type the user meant and no follow-on type errors appear.
                    .or_else(|| match value {
                        Value::Ident(i) => {
                            crate::suggest::closest(&i.to_string(), table::FLOATS.iter().copied())
                        }
                        _ => None,
                    })
                    .map(|f| match f {
                        "f64" => FloatType::F64,
                        _ => FloatType::F32,
                    })
            }
        }
    }

    fn dim(&mut self, value: &Value) -> Option<Dim> {
        match value {
            Value::Number(n) if n.is_integer && n.value >= 0.0 => Some(Dim::Literal {
                value: n.value as u64,
                span: n.place.last,
            }),
            Value::Ident(ident) if self.const_param(ident).is_some() => {
                // A non-`usize` parameter was reported with the generics.
                let usize_param = self.const_param(ident).is_some_and(|c| is_usize(&c.ty));
                Some(if usize_param {
                    Dim::Generic(ident.clone())
                } else {
                    Dim::Invalid
                })
            }
            Value::Ident(ident) => {
                self.error(
                    ident.span(),
                    format!("`dim = {ident}`: `{ident}` is not a const generic parameter of this flow; write a number, or declare it: `struct Name<const {ident}: usize> {{ dim = {ident}; … }}`"),
                );
                None
            }
            other => {
                self.error(
                    other.place(),
                    format!("`dim` must be a non-negative integer like `dim = 2` or a const generic parameter, found {}", other.describe()),
                );
                None
            }
        }
    }

    /// The const generic parameter named `ident`, if the struct declares one.
    fn const_param(&self, ident: &Ident) -> Option<&syn::ConstParam> {
        self.header?.generics.params.iter().find_map(|p| match p {
            GenericParam::Const(c) if c.ident == *ident => Some(c),
            _ => None,
        })
    }

    /// Lowers one layer call (or `repeat`), appending to `out`; false if it could not be read.
    fn layer(&mut self, call: &Call, out: &mut Vec<Layer>) -> bool {
        let name = call.name.to_string();
        let span = call.name.span();
        if name == "repeat" {
            return self.repeat(call, out);
        }
        if table::SETTINGS.contains(&name.as_str()) {
            self.error(span, format!("`{name}` is a setting: write `{name} = …`"));
            return false;
        }
        if let Some((_, why)) = table::NOT_BIJECTIONS.iter().find(|(n, _)| *n == name) {
            self.error(span, *why);
            return false;
        }
        let Some(entry) = table::entry(&name) else {
            let hint = did_you_mean(&name, table::layer_names());
            let all: Vec<&str> = table::layer_names().collect();
            self.error(
                span,
                format!(
                    "unknown layer `{name}`{hint} (the layers are: {})",
                    all.join(", ")
                ),
            );
            return false;
        };
        if call.body.is_some() {
            self.error(
                span,
                format!("`{name}` takes no `{{ … }}` block; only `repeat(n) {{ … }}` does"),
            );
            return false;
        }
        let (args, args_ok) = self.args(call, entry);
        let kind = match name.as_str() {
            "affine" => Some(LayerKind::Affine),
            "sigmoid" => Some(LayerKind::Sigmoid),
            "logit" => Some(LayerKind::Logit),
            "tanh" => Some(LayerKind::Tanh),
            "atanh" => Some(LayerKind::Atanh),
            "softplus" => Some(LayerKind::Softplus),
            "exp" => Some(LayerKind::Exp),
            "log" => Some(LayerKind::Log),
            "shift" => self.optional_number(&args, "shift").map(LayerKind::Shift),
            "scale" => self.optional_number(&args, "scale").map(LayerKind::Scale),
            "leaky_relu" => self.leaky_relu(&args, span),
            "permute" => self.permute(&args, span),
            "coupling" => self.coupling(&args, span),
            _ => unreachable!("every table entry is lowered"),
        };
        match kind {
            Some(kind) if args_ok => {
                out.push(Layer { kind, span });
                true
            }
            _ => false,
        }
    }

    fn repeat(&mut self, call: &Call, out: &mut Vec<Layer>) -> bool {
        let span = call.name.span();
        let count = match call.args.as_slice() {
            [Arg::Positional(v)] => self.count(v, "`repeat`"),
            _ => {
                self.error(span, "write `repeat(n) { … }` with one count, e.g. `repeat(4) { coupling(mask = even); permute(reverse) }`");
                None
            }
        };
        let Some(body) = &call.body else {
            self.error(
                span,
                "`repeat(n)` needs a `{ … }` block of layers to repeat",
            );
            return false;
        };
        let mut inner = Vec::new();
        let mut complete = true;
        for stmt in body {
            match stmt {
                Stmt::Call(c) => complete &= self.layer(c, &mut inner),
                Stmt::Setting { key, .. } => {
                    self.error(key.span(), format!("`{key} = …` is a setting of the whole flow: put it before the layers, not inside `repeat`"));
                    complete = false;
                }
            }
        }
        match count {
            Some((0, count_span)) => {
                self.error(
                    count_span,
                    "`repeat(0)` repeats nothing: use a count of at least 1, or remove the block",
                );
                false
            }
            Some((n, _)) if complete => {
                for _ in 0..n {
                    out.extend(inner.iter().cloned());
                }
                true
            }
            _ => false,
        }
    }

    /// Splits and validates a call's arguments against the table entry.
    /// Returns the arguments that could be read, and whether all of them could.
    fn args<'c>(&mut self, call: &'c Call, entry: &table::LayerEntry) -> (Args<'c>, bool) {
        let mut args = Args {
            named: Vec::new(),
            positional: Vec::new(),
        };
        let mut ok = true;
        for arg in &call.args {
            match arg {
                Arg::Named { key, value } => {
                    let k = key.to_string();
                    if !entry.options.contains(&k.as_str()) {
                        let hint = did_you_mean(&k, entry.options.iter().copied());
                        let known = if entry.options.is_empty() {
                            "it takes no named options".to_string()
                        } else {
                            format!("its options: {}", entry.options.join(", "))
                        };
                        self.error(
                            key.span(),
                            format!(
                                "`{}` has no option `{k}`{hint} ({known}; write `{}`)",
                                entry.name, entry.usage
                            ),
                        );
                        ok = false;
                    } else if args.named.iter().any(|(n, _)| *n == k) {
                        self.error(key.span(), format!("option `{k}` is given twice; keep one"));
                        ok = false;
                    } else {
                        args.named.push((k, value));
                    }
                }
                Arg::Positional(value) => args.positional.push(value),
            }
        }
        if args.positional.len() > entry.positional {
            let extra = args.positional[entry.positional];
            let message = if entry.positional == 0 {
                format!(
                    "`{}` takes no positional arguments (write `{}`)",
                    entry.name, entry.usage
                )
            } else {
                format!(
                    "`{}` takes at most {} positional argument (write `{}`)",
                    entry.name, entry.positional, entry.usage
                )
            };
            self.error(extra.place(), message);
            ok = false;
        }
        args.positional.truncate(entry.positional);
        (args, ok)
    }

    fn optional_number(&mut self, args: &Args, layer: &str) -> Option<Option<Num>> {
        match args.positional.first() {
            None => Some(None),
            Some(v) => self.number(v, &format!("`{layer}(…)`")).map(Some),
        }
    }

    fn leaky_relu(&mut self, args: &Args, span: Span) -> Option<LayerKind> {
        let slope = match args.get("slope") {
            Some(v) => self.number(v, "`slope`")?,
            None => Num {
                value: 0.01,
                place: span.into(),
            },
        };
        Some(LayerKind::LeakyRelu { slope })
    }

    fn permute(&mut self, args: &Args, span: Span) -> Option<LayerKind> {
        let how = "permute(reverse), permute(seed = 7) or permute([2, 0, 1])";
        match (args.positional.first(), args.get("seed")) {
            (Some(_), Some(seed)) => {
                self.error(
                    seed.place(),
                    format!("give `permute` one order, not both; write {how}"),
                );
                None
            }
            (None, Some(seed)) => self
                .count(seed, "`seed`")
                .map(|(s, _)| LayerKind::Permute(PermuteSpec::Seed(s))),
            (Some(Value::Ident(i)), None) if i == "reverse" => {
                Some(LayerKind::Permute(PermuteSpec::Reverse))
            }
            (Some(Value::List { items, span }), None) => {
                let perm = items
                    .iter()
                    .map(|v| self.count(v, "a permutation entry").map(|(p, _)| p))
                    .collect::<Vec<_>>();
                let perm = perm.into_iter().collect::<Option<Vec<u64>>>()?;
                Some(LayerKind::Permute(PermuteSpec::Explicit {
                    perm,
                    span: *span,
                }))
            }
            (Some(other), None) => {
                let hint = match other {
                    Value::Ident(i) => did_you_mean(&i.to_string(), ["reverse", "seed"]),
                    _ => String::new(),
                };
                self.error(other.place(), format!("`permute` takes `reverse`, `seed = k` or a list of indices{hint} (write {how})"));
                None
            }
            (None, None) => {
                self.error(span, format!("`permute` needs an order: {how}"));
                None
            }
        }
    }

    fn coupling(&mut self, args: &Args, span: Span) -> Option<LayerKind> {
        let mask = match args.get("mask") {
            Some(v) => self.mask(v),
            None => {
                self.error(span, "`coupling` needs a `mask` saying which coordinates pass through unchanged: add `mask = even` (and alternate it with `mask = odd`), or `first_half`, `second_half`, `[1, 0, …]`");
                None
            }
        };
        let transform = match args.get("transform") {
            Some(v) => self
                .choice(v, table::TRANSFORMS, "`transform`")
                .map(|t| match t {
                    "additive" => CouplingTransform::Additive,
                    _ => CouplingTransform::Affine,
                }),
            None => Some(CouplingTransform::Affine),
        };
        let hidden = match args.get("hidden") {
            Some(Value::List { items, .. }) => items
                .iter()
                .map(|v| self.count(v, "a hidden width"))
                .collect::<Vec<_>>()
                .into_iter()
                .collect::<Option<Vec<_>>>(),
            Some(other) => {
                self.error(
                    other.place(),
                    format!(
                        "`hidden` is a list of layer widths like `hidden = [64, 64]`, found {}",
                        other.describe()
                    ),
                );
                None
            }
            None => Some(vec![(64, span.into()), (64, span.into())]),
        };
        let activation = match args.get("activation") {
            Some(v) => self
                .choice(v, table::ACTIVATIONS, "`activation`")
                .map(|a| match a {
                    "tanh" => Activation::Tanh,
                    "elu" => Activation::Elu,
                    "silu" => Activation::Silu,
                    _ => Activation::Relu,
                }),
            None => Some(Activation::Relu),
        };
        Some(LayerKind::Coupling(CouplingSpec {
            mask: mask?,
            transform: transform?,
            hidden: hidden?,
            activation: activation?,
        }))
    }

    fn mask(&mut self, value: &Value) -> Option<MaskSpec> {
        match value {
            Value::List { items, span } => {
                let mut kept = Vec::new();
                for item in items {
                    match item {
                        Value::Number(Number {
                            value,
                            is_integer: true,
                            ..
                        }) if *value == 0.0 || *value == 1.0 => kept.push(*value == 1.0),
                        other => {
                            self.error(other.place(), format!("an explicit mask holds 1 (keep the coordinate) or 0 (transform it), e.g. `mask = [1, 0, 1]`; found {}", other.describe()));
                            return None;
                        }
                    }
                }
                Some(MaskSpec::Explicit { kept, span: *span })
            }
            other => self.choice(other, table::MASKS, "`mask`").map(|m| match m {
                "odd" => MaskSpec::Odd,
                "first_half" => MaskSpec::FirstHalf,
                "second_half" => MaskSpec::SecondHalf,
                _ => MaskSpec::Even,
            }),
        }
    }

    /// A name from a fixed list.
    fn choice(
        &mut self,
        value: &Value,
        allowed: &'static [&'static str],
        what: &str,
    ) -> Option<&'static str> {
        let list = allowed
            .iter()
            .map(|a| format!("`{a}`"))
            .collect::<Vec<_>>()
            .join(", ");
        match value {
            Value::Ident(ident) => {
                let name = ident.to_string();
                if let Some(found) = allowed.iter().find(|a| **a == name) {
                    return Some(found);
                }
                let hint = did_you_mean(&name, allowed.iter().copied());
                self.error(
                    ident.span(),
                    format!("unknown {what} `{name}`{hint} (expected one of {list})"),
                );
                None
            }
            other => {
                self.error(
                    other.place(),
                    format!("{what} expects one of {list}, found {}", other.describe()),
                );
                None
            }
        }
    }

    fn number(&mut self, value: &Value, what: &str) -> Option<Num> {
        match value {
            Value::Number(n) => Some(Num {
                value: n.value,
                place: n.place,
            }),
            other => {
                self.error(
                    other.place(),
                    format!(
                        "{what} expects a number like `1.5`, found {}",
                        other.describe()
                    ),
                );
                None
            }
        }
    }

    /// A non-negative integer.
    fn count(&mut self, value: &Value, what: &str) -> Option<(u64, Place)> {
        match value {
            Value::Number(n) if n.is_integer && n.value >= 0.0 => Some((n.value as u64, n.place)),
            other => {
                self.error(
                    other.place(),
                    format!(
                        "{what} expects a non-negative integer, found {}",
                        other.describe()
                    ),
                );
                None
            }
        }
    }
}

pub(crate) fn is_usize(ty: &syn::Type) -> bool {
    matches!(ty, syn::Type::Path(p) if p.qself.is_none() && p.path.is_ident("usize"))
}

struct Args<'c> {
    named: Vec<(String, &'c Value)>,
    positional: Vec<&'c Value>,
}

impl<'c> Args<'c> {
    fn get(&self, key: &str) -> Option<&'c Value> {
        self.named.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;
    use quote::quote;

    fn lower_tokens(tokens: proc_macro2::TokenStream) -> Lowered {
        lower(&parse(tokens).unwrap())
    }

    fn messages(l: &Lowered) -> Vec<String> {
        l.errors.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn lowers_a_valid_flow_with_defaults() {
        let l = lower_tokens(
            quote!(dim = 2; repeat(2) { coupling(mask = even); permute(reverse) }; sigmoid),
        );
        assert!(l.errors.is_empty(), "{:?}", messages(&l));
        let flow = l.flow;
        assert_eq!(flow.layers.len(), 5);
        let LayerKind::Coupling(c) = &flow.layers[0].kind else {
            panic!()
        };
        assert_eq!(c.hidden.iter().map(|h| h.0).collect::<Vec<_>>(), [64, 64]);
        assert_eq!(c.activation, Activation::Relu);
        assert_eq!(c.transform, CouplingTransform::Affine);
        assert_eq!(flow.base, Base::Normal);
        assert_eq!(flow.float, FloatType::F32);
    }

    #[test]
    fn reports_every_unknown_name_at_once_with_suggestions() {
        let l = lower_tokens(
            quote!(dim = 2; afine; coupling(mask = evn, hiden = [8]); sigmoid; base = gaussian),
        );
        let m = messages(&l);
        assert_eq!(m.len(), 4, "{m:?}");
        assert!(
            m[0].contains("unknown layer `afine`; did you mean `affine`? (the layers are"),
            "{m:?}"
        );
        assert!(
            m.iter()
                .any(|s| s.contains("no option `hiden`; did you mean `hidden`?")),
            "{m:?}"
        );
        assert!(
            m.iter()
                .any(|s| s.contains("unknown `mask` `evn`; did you mean `even`?")),
            "{m:?}"
        );
        assert!(
            m.iter().any(|s| s.contains("unknown `base` `gaussian`")),
            "{m:?}"
        );
        assert!(!l.complete);
    }

    #[test]
    fn relu_as_a_layer_is_explained() {
        let l = lower_tokens(quote!(dim = 2; relu));
        assert!(messages(&l)[0].contains("`relu` is not a bijection"));
        assert!(messages(&l)[0].contains("activation = relu"));
    }

    #[test]
    fn relu_as_an_activation_is_fine() {
        let l = lower_tokens(quote!(dim = 2; coupling(mask = even, activation = relu)));
        assert!(l.errors.is_empty(), "{:?}", messages(&l));
    }

    #[test]
    fn wrong_option_types_are_errors() {
        let l = lower_tokens(
            quote!(dim = 2; coupling(mask = even, hidden = 64); leaky_relu(slope = steep)),
        );
        let m = messages(&l);
        assert!(m[0].contains("`hidden` is a list of layer widths"), "{m:?}");
        assert!(m[1].contains("`slope` expects a number"), "{m:?}");
    }

    #[test]
    fn missing_dim_and_repeat_zero() {
        let m = messages(&lower_tokens(quote!(affine)));
        assert!(m[0].contains("a flow needs its dimension"), "{m:?}");
        let m = messages(&lower_tokens(quote!(dim = 2; repeat(0) { affine })));
        assert!(m[0].contains("`repeat(0)` repeats nothing"), "{m:?}");
    }

    #[test]
    fn generic_dim_must_be_a_const_parameter() {
        let ok = lower(&parse(quote!(pub struct S<const D: usize> { dim = D; affine })).unwrap());
        assert!(matches!(ok.flow.dim, Dim::Generic(_)));
        let bad = lower(&parse(quote!(pub struct S { dim = D; affine })).unwrap());
        assert!(messages(&bad)[0].contains("not a const generic parameter"));
    }
}
