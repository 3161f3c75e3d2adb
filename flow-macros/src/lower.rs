//! Syntax tree → IR: resolves settings, unrolls `repeat`, reads each layer's options
//! against the layer table, and reports every unknown name, option, value or type —
//! all of them, each spanned on its token, with a "did you mean" where one is close.

use proc_macro2::Span;
use syn::{Error, GenericParam, Ident};

use crate::ir::{
    Activation, AutoregressiveSpec, Base, CouplingSpec, CouplingTransform, Dim, FloatType, Flow,
    Layer, LayerKind, LinearSpec, MaskSpec, Num, Order, PermuteSpec, SplineSpec,
};
use crate::parse::{Arg, Call, FlowSyntax, ItemHeader, Number, Place, Recovered, Stmt, Value};
use crate::suggest::did_you_mean;
use crate::table;

/// The IR of the flow (with the layers that could be read) and the errors found.
pub struct Lowered {
    pub flow: Flow,
    /// Positions `i` in `flow.layers` where the support entering `layers[i]` is unknown,
    /// because something before it could not be read (a layer, or the base; `i` may be
    /// `layers.len()`). Support tracking restarts there from "unknown", so a typo does not
    /// hide later support errors, nor cause false ones.
    pub unknown_support_at: Vec<usize>,
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
    let mut unknown_support_at = Vec::new();
    for stmt in &syntax.stmts {
        match stmt {
            Stmt::Setting { key, value } => cx.setting(&mut settings, key, value),
            Stmt::Call(call) => {
                if !cx.layer(call, &mut layers) {
                    complete = false;
                    if unknown_support_at.last() != Some(&layers.len()) {
                        unknown_support_at.push(layers.len());
                    }
                }
            }
        }
    }
    if settings.base_unknown && unknown_support_at.first() != Some(&0) {
        unknown_support_at.insert(0, 0);
    }
    let dim = match settings.dim {
        Some(dim) => dim,
        None if settings.written.contains("dim") => Dim::Invalid,
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
        unknown_support_at,
        errors: cx.errors,
    }
}

/// The flow the error stub stands for when the invocation did not parse: its header and
/// whichever settings could be read (errors in them are dropped: the syntax error is the
/// one reported), no layers.
pub fn recover(recovered: &Recovered) -> Flow {
    let mut cx = Lowering {
        errors: Vec::new(),
        header: recovered.header.as_ref(),
    };
    let mut settings = Settings::default();
    for (key, value) in &recovered.settings {
        cx.setting(&mut settings, key, value);
    }
    Flow {
        header: recovered.header.clone(),
        dim: settings.dim.unwrap_or(Dim::Invalid),
        base: settings.base.unwrap_or(Base::Normal),
        float: settings.float.unwrap_or(FloatType::F32),
        layers: Vec::new(),
    }
}

#[derive(Default)]
struct Settings {
    /// The settings written, valid or not (so a bad `dim` is not also reported missing,
    /// and a second one is reported as a duplicate).
    written: std::collections::BTreeSet<&'static str>,
    /// Settings whose value was read from a misspelt key (`dimm = 2`).
    guessed: std::collections::BTreeSet<&'static str>,
    dim: Option<Dim>,
    base: Option<Base>,
    /// `base = …` could not be read: the support it gives is unknown.
    base_unknown: bool,
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
        let Some(&setting) = table::SETTINGS.iter().find(|s| **s == name) else {
            let hint = did_you_mean(&name, table::SETTINGS.iter().copied());
            self.error(
                key.span(),
                format!("unknown setting `{name}`{hint} (the settings are `dim = N`, `base = normal | uniform | student_t(df = 5.0) | logistic` and `float = f32 | f64`)"),
            );
            // Read the value as the setting it most likely meant, quietly (the typo is
            // the error), so that the other rules and the error stub see what was meant.
            if let Some(meant) = crate::suggest::closest(&name, table::SETTINGS.iter().copied())
                && !settings.written.contains(meant)
            {
                let reported = self.errors.len();
                self.setting_value(settings, meant, value);
                self.errors.truncate(reported);
                settings.guessed.insert(meant);
            }
            return;
        };
        // A value guessed from a misspelt key gives way to the real setting.
        if settings.written.contains(setting) && !settings.guessed.remove(setting) {
            self.error(key.span(), format!("`{name}` is set twice; keep one"));
            return;
        }
        self.setting_value(settings, setting, value);
    }

    /// Reads the value of the setting `name` (one of `table::SETTINGS`).
    fn setting_value(&mut self, settings: &mut Settings, name: &'static str, value: &Value) {
        settings.written.insert(name);
        // An unknown name falls back to its suggestion, so the stub has the type the user
        // meant and no follow-on type errors appear.
        let closest = |allowed: &'static [&'static str]| match value {
            Value::Ident(i) => crate::suggest::closest(&i.to_string(), allowed.iter().copied()),
            _ => None,
        };
        match name {
            "dim" => settings.dim = self.dim(value),
            "base" => {
                let read = self.base(value);
                // A base that could not be read gives an unknown support, not a guessed one.
                settings.base_unknown = read.is_none();
                settings.base = read.or_else(|| {
                    closest(table::BASES).map(|b| match b {
                        "uniform" => Base::Uniform,
                        "logistic" => Base::Logistic,
                        _ => Base::Normal,
                    })
                });
            }
            _ => {
                settings.float = self
                    .choice(value, table::FLOATS, "float")
                    .or_else(|| closest(table::FLOATS))
                    .map(|f| match f {
                        "f64" => FloatType::F64,
                        _ => FloatType::F32,
                    });
            }
        }
    }

    /// `normal`, `normal(learnable)`, `uniform`, `student_t(df = ν)` or `logistic`.
    fn base(&mut self, value: &Value) -> Option<Base> {
        let forms = "`normal`, `normal(learnable)`, `uniform`, `student_t(df = 5.0)` or `logistic`";
        let Value::Call(call) = value else {
            return match self.choice(value, table::BASES, "base")? {
                "uniform" => Some(Base::Uniform),
                "logistic" => Some(Base::Logistic),
                "student_t" => {
                    self.error(value.place(), "`base = student_t` needs its degrees of freedom: write `base = student_t(df = 5.0)` (smaller `df`, heavier tails)");
                    None
                }
                _ => Some(Base::Normal),
            };
        };
        let name = call.name.to_string();
        match (name.as_str(), call.args.as_slice()) {
            ("normal", [Arg::Positional(Value::Ident(i))]) if i == "learnable" => {
                Some(Base::LearnableNormal)
            }
            ("student_t", [Arg::Named { key, value }]) if key == "df" => {
                let df = self.number(value, "`df`")?;
                if df.value <= 0.0 {
                    self.error(df.place, format!("`student_t(df = {:?})`: the degrees of freedom must be positive, e.g. `df = 5.0`", df.value));
                    return None;
                }
                Some(Base::StudentT { df: df.value })
            }
            ("normal" | "student_t", _) => {
                self.error(
                    call.name.span(),
                    format!("`base = {name}(…)` is written {forms}"),
                );
                None
            }
            _ => {
                let hint = did_you_mean(&name, table::BASES.iter().copied());
                self.error(
                    call.name.span(),
                    format!("unknown `base` `{name}`{hint} (expected {forms})"),
                );
                None
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
            "spline" => self.spline(&args, span).map(LayerKind::Spline),
            "linear" => self.linear(&args),
            "autoregressive" => self.autoregressive(&args, span, false),
            "inverse_autoregressive" => self.autoregressive(&args, span, true),
            "actnorm" => Some(LayerKind::ActNorm),
            "batch_norm" => self.batch_norm(&args, span),
            "planar" => Some(LayerKind::Planar),
            "radial" => Some(LayerKind::Radial),
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
        let example = "e.g. `repeat(4) { coupling(mask = even); permute(reverse) }`";
        let count = match call.args.as_slice() {
            [Arg::Positional(v)] => self.count(v, "`repeat`"),
            [] => {
                self.error(span, format!("`repeat` needs a count, how many times to repeat its block: write `repeat(n) {{ … }}` with one count, {example}"));
                None
            }
            [Arg::Named { key, .. }, ..] => {
                self.error(key.span(), format!("`repeat` takes its count without a name: write `repeat(n) {{ … }}` with one count, {example}"));
                None
            }
            [_, extra, ..] => {
                let place = match extra {
                    Arg::Positional(v) => v.place(),
                    Arg::Named { key, .. } => key.span().into(),
                };
                self.error(place, format!("`repeat` takes one count, not {}: write `repeat(n) {{ … }}` with one count, {example}", call.args.len()));
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
                                "`{}` has no option `{k}`{hint} ({known}; write {})",
                                entry.name,
                                entry.usage_text()
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
            let message = match entry.positional {
                0 => format!(
                    "`{}` takes no positional arguments; write {}",
                    entry.name,
                    entry.usage_text()
                ),
                1 => format!(
                    "`{}` takes at most 1 positional argument; remove the extra ones: write {}",
                    entry.name,
                    entry.usage_text()
                ),
                n => format!(
                    "`{}` takes at most {n} positional arguments; remove the extra ones: write {}",
                    entry.name,
                    entry.usage_text()
                ),
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
            Some(v) => self.number(v, &format!("`{layer}`")).map(Some),
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
        let how = table::entry("permute").map_or_else(String::new, table::LayerEntry::usage_text);
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
        let transform = self.transform(args);
        let hidden = self.hidden(args, span);
        let activation = self.activation(args);
        Some(LayerKind::Coupling(CouplingSpec {
            mask: mask?,
            transform: transform?,
            hidden: hidden?,
            activation: activation?,
        }))
    }

    /// A conditioned layer's `transform`: `affine` (the default), `additive`, `spline` or
    /// `spline(bins = …, bound = …)`.
    fn transform(&mut self, args: &Args) -> Option<CouplingTransform> {
        match args.get("transform") {
            Some(Value::Call(call)) if call.name == "spline" => {
                let entry = table::entry("spline").expect("spline is in the table");
                if call.body.is_some() {
                    self.error(call.name.span(), "`spline(…)` takes no `{ … }` block");
                    return None;
                }
                let (spline_args, ok) = self.args(call, entry);
                let spec = self.spline(&spline_args, call.name.span());
                spec.filter(|_| ok).map(CouplingTransform::Spline)
            }
            Some(Value::Ident(i)) if i == "spline" => Some(CouplingTransform::Spline(
                SplineSpec::default_at(i.span().into()),
            )),
            Some(v) => self
                .choice(v, table::TRANSFORMS, "transform")
                .map(|t| match t {
                    "additive" => CouplingTransform::Additive,
                    _ => CouplingTransform::Affine,
                }),
            None => Some(CouplingTransform::Affine),
        }
    }

    /// A conditioner's `hidden` widths (default `[64, 64]`).
    fn hidden(&mut self, args: &Args, span: Span) -> Option<Vec<(u64, Place)>> {
        match args.get("hidden") {
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
        }
    }

    /// A conditioner's `activation` (default `relu`).
    fn activation(&mut self, args: &Args) -> Option<Activation> {
        match args.get("activation") {
            Some(v) => self
                .choice(v, table::ACTIVATIONS, "activation")
                .map(|a| match a {
                    "tanh" => Activation::Tanh,
                    "elu" => Activation::Elu,
                    "silu" => Activation::Silu,
                    _ => Activation::Relu,
                }),
            None => Some(Activation::Relu),
        }
    }

    /// `spline(bins = K, bound = B)`, defaults 8 and 5.0 (rules on them are in `check`).
    fn spline(&mut self, args: &Args, span: Span) -> Option<SplineSpec> {
        let defaults = SplineSpec::default_at(span.into());
        let bins = match args.get("bins") {
            Some(v) => self.count(v, "`bins`"),
            None => Some(defaults.bins),
        };
        let bound = match args.get("bound") {
            Some(v) => self.number(v, "`bound`"),
            None => Some(defaults.bound),
        };
        Some(SplineSpec {
            bins: bins?,
            bound: bound?,
        })
    }

    /// `batch_norm(momentum = 0.1, eps = 1e-5)`, both optional (`check` tests their ranges).
    fn batch_norm(&mut self, args: &Args, span: Span) -> Option<LayerKind> {
        let place = span.into();
        let momentum = match args.get("momentum") {
            Some(v) => self.number(v, "`momentum`"),
            None => Some(Num { value: 0.1, place }),
        };
        let eps = match args.get("eps") {
            Some(v) => self.number(v, "`eps`"),
            None => Some(Num { value: 1e-5, place }),
        };
        Some(LayerKind::BatchNorm {
            momentum: momentum?,
            eps: eps?,
        })
    }

    /// `linear`, `linear(seed = k)`, `linear(orthogonal)`, or `linear(n)` (which `check`
    /// compares with `dim`).
    fn linear(&mut self, args: &Args) -> Option<LayerKind> {
        let how = table::entry("linear").map_or_else(String::new, table::LayerEntry::usage_text);
        let seed = match args.get("seed") {
            Some(v) => Some(self.count(v, "`seed`")?.0),
            None => None,
        };
        match (args.positional.first(), seed) {
            (None, seed) => Some(LayerKind::Linear(LinearSpec::Lu { seed }, None)),
            (Some(Value::Ident(i)), None) if i == "orthogonal" => {
                Some(LayerKind::Linear(LinearSpec::Orthogonal, None))
            }
            (Some(Value::Ident(i)), Some(_)) if i == "orthogonal" => {
                self.error(i.span(), format!("`linear(orthogonal)` has no permutation to seed: remove `seed`, or use the LU form; write {how}"));
                None
            }
            (Some(Value::Number(n)), seed) if n.is_integer && n.value >= 0.0 => Some(
                LayerKind::Linear(LinearSpec::Lu { seed }, Some((n.value as u64, n.place))),
            ),
            (Some(other), _) => {
                let hint = match other {
                    Value::Ident(i) => did_you_mean(&i.to_string(), ["orthogonal"]),
                    _ => String::new(),
                };
                self.error(other.place(), format!("`linear` takes `orthogonal`, a width equal to `dim`, or no argument; found {}{hint} (write {how})", other.describe()));
                None
            }
        }
    }

    /// `autoregressive(…)` and `inverse_autoregressive(…)`.
    fn autoregressive(&mut self, args: &Args, span: Span, inverse: bool) -> Option<LayerKind> {
        let transform = self.transform(args);
        let hidden = self.hidden(args, span);
        let activation = self.activation(args);
        let order = match (args.get("order"), args.get("seed")) {
            (Some(_), Some(seed)) => {
                self.error(seed.place(), "give one order, not both: `order = natural`, `order = reverse`, or `seed = k` for a seeded random order");
                None
            }
            (None, Some(seed)) => self.count(seed, "`seed`").map(|(s, _)| Order::Seed(s)),
            (Some(v), None) => self.choice(v, table::ORDERS, "order").map(|o| match o {
                "reverse" => Order::Reverse,
                _ => Order::Natural,
            }),
            (None, None) => Some(Order::Natural),
        };
        Some(LayerKind::Autoregressive(AutoregressiveSpec {
            inverse,
            transform: transform?,
            hidden: hidden?,
            activation: activation?,
            order: order?,
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
            other => self.choice(other, table::MASKS, "mask").map(|m| match m {
                "odd" => MaskSpec::Odd,
                "first_half" => MaskSpec::FirstHalf,
                "second_half" => MaskSpec::SecondHalf,
                _ => MaskSpec::Even,
            }),
        }
    }

    /// A name from a fixed list, the value of the option or setting `key`.
    fn choice(
        &mut self,
        value: &Value,
        allowed: &'static [&'static str],
        key: &str,
    ) -> Option<&'static str> {
        let what = format!("`{key}`");
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
                let also = if key == "mask" {
                    ", or a list of 1s (kept) and 0s (transformed) like `[1, 0]`"
                } else {
                    ""
                };
                self.error(
                    other.place(),
                    format!(
                        "{what} takes a name, one of {list}{also}; found {}: write e.g. `{key} = {}`",
                        other.describe(),
                        allowed[0]
                    ),
                );
                None
            }
        }
    }

    /// A finite number; `what` names it in messages (`` `scale` ``, `` `slope` ``).
    fn number(&mut self, value: &Value, what: &str) -> Option<Num> {
        match value {
            Value::Number(n) if !n.value.is_finite() => {
                let why = if n.value.is_nan() {
                    "is not a number"
                } else {
                    "overflows f64 (whose largest value is about 1.8e308)"
                };
                let example = if n.value < 0.0 { "-1.5" } else { "1.5" };
                self.error(
                    n.place,
                    format!(
                        "{what} needs a finite constant; `{}` {why}: write a finite number, e.g. `{example}`",
                        n.text
                    ),
                );
                None
            }
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
        assert!(matches!(c.transform, CouplingTransform::Affine));
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
        // The unknown layers (and base) leave the support entering the first layer unknown.
        assert_eq!(l.unknown_support_at, [0]);
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
    fn non_finite_constants_are_errors() {
        let l = lower_tokens(
            quote!(dim = 2; scale(1e999); shift(-1e999); leaky_relu(slope = 1e999); scale(1e308)),
        );
        let m = messages(&l);
        assert_eq!(m.len(), 3, "{m:?}");
        assert!(
            m[0].starts_with("`scale` needs a finite constant; `1e999` overflows f64"),
            "{m:?}"
        );
        assert!(
            m[1].contains("`shift` needs a finite constant; `-1e999`"),
            "{m:?}"
        );
        assert!(m[1].contains("e.g. `-1.5`"), "{m:?}");
        assert!(m[2].contains("`slope` needs a finite constant"), "{m:?}");
        // The finite ones are kept, and every kept constant is finite.
        assert_eq!(l.flow.layers.len(), 1);
        assert!(
            crate::pipeline::flow(quote!(dim = 2; scale(1e999)))
                .to_string()
                .contains("compile_error")
        );
    }

    #[test]
    fn repeat_needs_one_count() {
        let m = messages(&lower_tokens(quote!(dim = 2; repeat { affine })));
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].starts_with("`repeat` needs a count"), "{m:?}");
        let m = messages(&lower_tokens(quote!(dim = 2; repeat(2, 3) { affine })));
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].starts_with("`repeat` takes one count, not 2"), "{m:?}");
    }

    #[test]
    fn a_misspelt_setting_still_gives_its_value() {
        let l = lower_tokens(quote!(dimm = 3; flaot = f64; affine));
        assert_eq!(l.errors.len(), 2, "{:?}", messages(&l));
        assert!(matches!(l.flow.dim, Dim::Literal { value: 3, .. }));
        assert_eq!(l.flow.float, FloatType::F64);
        // … and gives way to the real setting, which is no duplicate.
        let l = lower_tokens(quote!(dimm = 3; dim = 2; affine));
        assert_eq!(l.errors.len(), 1, "{:?}", messages(&l));
        assert!(matches!(l.flow.dim, Dim::Literal { value: 2, .. }));
        assert!(l.unknown_support_at.is_empty());
        let l = lower_tokens(quote!(dim = 2; base = unifrom; affine));
        assert_eq!(l.unknown_support_at, [0]);
        assert_eq!(l.flow.base, Base::Uniform);
    }

    #[test]
    fn settings_are_recovered_from_an_invocation_that_does_not_parse() {
        let tokens = quote!(pub struct B<const D: usize> { float = f64; dim = D; affine sigmoid });
        assert!(parse(tokens.clone()).is_err());
        let flow = recover(&crate::parse::recover(tokens));
        assert_eq!(flow.header.unwrap().ident, "B");
        assert!(matches!(flow.dim, Dim::Generic(_)));
        assert_eq!(flow.float, FloatType::F64);
        let flow = recover(&crate::parse::recover(
            quote!(dim = 3 base = uniform; coupling(mask = even) 7),
        ));
        assert!(matches!(flow.dim, Dim::Literal { value: 3, .. }));
        assert_eq!(flow.base, Base::Uniform);
    }

    #[test]
    fn generic_dim_must_be_a_const_parameter() {
        let ok = lower(&parse(quote!(pub struct S<const D: usize> { dim = D; affine })).unwrap());
        assert!(matches!(ok.flow.dim, Dim::Generic(_)));
        let bad = lower(&parse(quote!(pub struct S { dim = D; affine })).unwrap());
        assert!(messages(&bad)[0].contains("not a const generic parameter"));
    }

    #[test]
    fn reads_the_new_layers_options() {
        let l = lower_tokens(quote!(
            dim = 3;
            spline(bins = 4, bound = 2.5);
            linear(seed = 9);
            linear(orthogonal);
            inverse_autoregressive(transform = spline, hidden = [8], activation = tanh, seed = 3);
            coupling(mask = odd, transform = spline(bins = 16))
        ));
        assert!(l.errors.is_empty(), "{:?}", messages(&l));
        let kinds: Vec<&LayerKind> = l.flow.layers.iter().map(|l| &l.kind).collect();
        assert!(matches!(kinds[0], LayerKind::Spline(s) if s.bins.0 == 4 && s.bound.value == 2.5));
        assert!(matches!(
            kinds[1],
            LayerKind::Linear(LinearSpec::Lu { seed: Some(9) }, None)
        ));
        assert!(matches!(
            kinds[2],
            LayerKind::Linear(LinearSpec::Orthogonal, None)
        ));
        let LayerKind::Autoregressive(ar) = kinds[3] else {
            panic!()
        };
        assert!(ar.inverse);
        assert!(
            matches!(ar.transform, CouplingTransform::Spline(s) if s.bins.0 == 8 && s.bound.value == 5.0)
        );
        assert_eq!(ar.order, Order::Seed(3));
        assert_eq!(ar.activation, Activation::Tanh);
        let LayerKind::Coupling(c) = kinds[4] else {
            panic!()
        };
        assert!(
            matches!(c.transform, CouplingTransform::Spline(s) if s.bins.0 == 16 && s.bound.value == 5.0)
        );
        assert_eq!(
            kinds[4].describe(),
            "coupling(mask = odd, transform = spline(bins = 16, bound = 5.0), hidden = [64, 64], activation = relu)"
        );
        assert_eq!(
            kinds[3].describe(),
            "inverse_autoregressive(transform = spline(bins = 8, bound = 5.0), hidden = [8], activation = tanh, seed = 3)"
        );
    }

    #[test]
    fn reports_bad_new_layer_options() {
        let m = messages(&lower_tokens(quote!(
            dim = 3;
            spline(bins = 2.5);
            linear(orthgonal);
            linear(orthogonal, seed = 1);
            autoregressive(order = natural, seed = 2);
            autoregressive(order = random);
            coupling(mask = even, transform = spline(bns = 4))
        )));
        assert_eq!(m.len(), 6, "{m:?}");
        assert!(
            m[0].contains("`bins` expects a non-negative integer"),
            "{m:?}"
        );
        assert!(m[1].contains("did you mean `orthogonal`?"), "{m:?}");
        assert!(m[2].contains("has no permutation to seed"), "{m:?}");
        assert!(m[3].contains("give one order, not both"), "{m:?}");
        assert!(m[4].contains("unknown `order` `random`"), "{m:?}");
        assert!(
            m[5].contains("`spline` has no option `bns`; did you mean `bins`?"),
            "{m:?}"
        );
    }

    #[test]
    fn reads_the_new_bases() {
        let base = |tokens| lower_tokens(tokens).flow.base;
        assert_eq!(
            base(quote!(dim = 2; base = normal(learnable); affine)),
            Base::LearnableNormal
        );
        assert_eq!(
            base(quote!(dim = 2; base = student_t(df = 3.5); affine)),
            Base::StudentT { df: 3.5 }
        );
        assert_eq!(
            base(quote!(dim = 2; base = logistic; affine)),
            Base::Logistic
        );
        let m = messages(&lower_tokens(quote!(dim = 2; base = student_t; affine)));
        assert!(m[0].contains("write `base = student_t(df = 5.0)`"), "{m:?}");
        let m = messages(&lower_tokens(
            quote!(dim = 2; base = student_t(df = 0.0); affine),
        ));
        assert!(m[0].contains("must be positive"), "{m:?}");
        let m = messages(&lower_tokens(quote!(dim = 2; base = normal(fixed); affine)));
        assert!(m[0].contains("`normal(learnable)`"), "{m:?}");
        let m = messages(&lower_tokens(
            quote!(dim = 2; base = studentt(df = 2.0); affine),
        ));
        assert!(m[0].contains("did you mean `student_t`?"), "{m:?}");
    }
}
