//! The one table of layer knowledge: for every layer kind, its DSL name and options, its
//! domain and image, whether it is elementwise (fusable), and its runtime type and
//! constructor. Adding a layer touches this file, `lower.rs` (reading its options), one
//! runtime file, and their tests.

use proc_macro2::TokenStream;
use quote::quote;

use crate::ir::{
    Activation, AutoregressiveSpec, Base, CouplingSpec, CouplingTransform, LayerKind, LinearSpec,
    MaskSpec, Order, PermuteSpec, SplineSpec, Support,
};

/// What the DSL accepts for one layer name.
pub struct LayerEntry {
    pub name: &'static str,
    /// Named options (`key = value`).
    pub options: &'static [&'static str],
    /// How many positional arguments it takes at most.
    pub positional: usize,
    /// The ways to write it, for messages.
    pub usage: &'static [&'static str],
}

impl LayerEntry {
    /// The ways to write the layer, as a message reads them: "`shift` or `shift(1.5)`".
    pub fn usage_text(&self) -> String {
        let forms: Vec<String> = self.usage.iter().map(|u| format!("`{u}`")).collect();
        match forms.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => format!("`{}`", self.name),
        }
    }
}

/// Every layer the DSL knows, plus `repeat`.
pub const LAYERS: &[LayerEntry] = &[
    LayerEntry {
        name: "affine",
        options: &[],
        positional: 0,
        usage: &["affine"],
    },
    LayerEntry {
        name: "shift",
        options: &[],
        positional: 1,
        usage: &["shift", "shift(1.5)"],
    },
    LayerEntry {
        name: "scale",
        options: &[],
        positional: 1,
        usage: &["scale", "scale(2.0)"],
    },
    LayerEntry {
        name: "sigmoid",
        options: &[],
        positional: 0,
        usage: &["sigmoid"],
    },
    LayerEntry {
        name: "logit",
        options: &[],
        positional: 0,
        usage: &["logit"],
    },
    LayerEntry {
        name: "tanh",
        options: &[],
        positional: 0,
        usage: &["tanh"],
    },
    LayerEntry {
        name: "atanh",
        options: &[],
        positional: 0,
        usage: &["atanh"],
    },
    LayerEntry {
        name: "softplus",
        options: &[],
        positional: 0,
        usage: &["softplus"],
    },
    LayerEntry {
        name: "exp",
        options: &[],
        positional: 0,
        usage: &["exp"],
    },
    LayerEntry {
        name: "log",
        options: &[],
        positional: 0,
        usage: &["log"],
    },
    LayerEntry {
        name: "leaky_relu",
        options: &["slope"],
        positional: 0,
        usage: &["leaky_relu(slope = 0.01)"],
    },
    LayerEntry {
        name: "permute",
        options: &["seed"],
        positional: 1,
        usage: &[
            "permute(reverse)",
            "permute(seed = 7)",
            "permute([2, 0, 1])",
        ],
    },
    LayerEntry {
        name: "coupling",
        options: &["mask", "transform", "hidden", "activation"],
        positional: 0,
        usage: &["coupling(mask = even, transform = affine, hidden = [64, 64], activation = relu)"],
    },
    LayerEntry {
        name: "spline",
        options: &["bins", "bound"],
        positional: 0,
        usage: &["spline", "spline(bins = 8, bound = 5.0)"],
    },
    LayerEntry {
        name: "linear",
        options: &["seed"],
        positional: 1,
        usage: &["linear", "linear(seed = 3)", "linear(orthogonal)"],
    },
    LayerEntry {
        name: "autoregressive",
        options: &["transform", "hidden", "activation", "order", "seed"],
        positional: 0,
        usage: &[
            "autoregressive(transform = affine, hidden = [64, 64], activation = relu, order = natural)",
        ],
    },
    LayerEntry {
        name: "inverse_autoregressive",
        options: &["transform", "hidden", "activation", "order", "seed"],
        positional: 0,
        usage: &[
            "inverse_autoregressive(transform = affine, hidden = [64, 64], activation = relu, order = natural)",
        ],
    },
    LayerEntry {
        name: "actnorm",
        options: &[],
        positional: 0,
        usage: &["actnorm"],
    },
    LayerEntry {
        name: "batch_norm",
        options: &["momentum", "eps"],
        positional: 0,
        usage: &["batch_norm", "batch_norm(momentum = 0.1, eps = 1e-5)"],
    },
    LayerEntry {
        name: "planar",
        options: &[],
        positional: 0,
        usage: &["planar"],
    },
    LayerEntry {
        name: "radial",
        options: &[],
        positional: 0,
        usage: &["radial"],
    },
    LayerEntry {
        name: "repeat",
        options: &[],
        positional: 1,
        usage: &["repeat(4) { … }"],
    },
];

/// Names people reach for that are not bijections, with the reason and the fix.
pub const NOT_BIJECTIONS: &[(&str, &str)] = &[
    (
        "relu",
        "`relu` is not a bijection: it sends every negative value to 0, so the flow could not be \
         inverted and has no density; use `leaky_relu(slope = 0.01)` or `softplus` \
         (`relu` is fine as a coupling's `activation = relu`: conditioners need not be invertible)",
    ),
    (
        "dropout",
        "`dropout` is not a bijection: it zeroes coordinates at random, so the flow could not be \
         inverted; remove it (regularise the conditioners instead, e.g. smaller `hidden`)",
    ),
    (
        "abs",
        "`abs` is not a bijection: x and −x map to the same value; use `softplus` or `exp` for a \
         positive output",
    ),
];

/// The header settings.
pub const SETTINGS: &[&str] = &["dim", "base", "float"];

/// The values of `base = …`.
pub const BASES: &[&str] = &["normal", "uniform", "student_t", "logistic"];
/// The values of `float = …`.
pub const FLOATS: &[&str] = &["f32", "f64"];
/// The named masks.
pub const MASKS: &[&str] = &["even", "odd", "first_half", "second_half"];
/// The coupling transforms.
pub const TRANSFORMS: &[&str] = &["affine", "additive", "spline"];
/// The autoregressive orders (besides `seed = k`).
pub const ORDERS: &[&str] = &["natural", "reverse"];
/// The conditioner activations.
pub const ACTIVATIONS: &[&str] = &["relu", "tanh", "elu", "silu"];

impl Base {
    /// The runtime type of the flow's `base` field.
    pub fn runtime_type(&self, rt: &TokenStream, float: &TokenStream) -> TokenStream {
        match self {
            Base::Normal => quote!(#rt::StandardNormal),
            Base::Uniform => quote!(#rt::StandardUniform),
            Base::LearnableNormal => quote!(#rt::DiagonalNormal<#float>),
            Base::StudentT { .. } => quote!(#rt::StudentT),
            Base::Logistic => quote!(#rt::Logistic),
        }
    }

    /// An expression building the base at its starting parameters.
    pub fn constructor(&self, rt: &TokenStream, dim: &TokenStream) -> TokenStream {
        match self {
            Base::Normal => quote!(#rt::StandardNormal),
            Base::Uniform => quote!(#rt::StandardUniform),
            Base::LearnableNormal => quote!(#rt::DiagonalNormal::new(#dim)),
            Base::StudentT { df } => quote!(#rt::StudentT::new(#df)),
            Base::Logistic => quote!(#rt::Logistic),
        }
    }

    /// The base as canonical DSL text.
    pub fn describe(&self) -> String {
        match self {
            Base::Normal => "normal".into(),
            Base::Uniform => "uniform".into(),
            Base::LearnableNormal => "normal(learnable)".into(),
            Base::StudentT { df } => format!("student_t(df = {df:?})"),
            Base::Logistic => "logistic".into(),
        }
    }

    /// How messages name the base.
    pub fn origin(&self) -> &'static str {
        match self {
            Base::Normal | Base::LearnableNormal => "the normal base",
            Base::Uniform => "the uniform base",
            Base::StudentT { .. } => "the Student-t base",
            Base::Logistic => "the logistic base",
        }
    }

    /// The support of every coordinate of a base draw.
    pub fn support(&self) -> Support {
        match self {
            Base::Uniform => Support::UnitInterval,
            _ => Support::Real,
        }
    }
}

/// Looks up a layer name.
pub fn entry(name: &str) -> Option<&'static LayerEntry> {
    LAYERS.iter().find(|e| e.name == name)
}

/// All names a user may write at layer position (for "did you mean").
pub fn layer_names() -> impl Iterator<Item = &'static str> {
    LAYERS.iter().map(|e| e.name)
}

impl LayerKind {
    /// The DSL name.
    pub fn name(&self) -> &'static str {
        match self {
            LayerKind::Affine => "affine",
            LayerKind::Shift(_) => "shift",
            LayerKind::Scale(_) => "scale",
            LayerKind::Sigmoid => "sigmoid",
            LayerKind::Logit => "logit",
            LayerKind::Tanh => "tanh",
            LayerKind::Atanh => "atanh",
            LayerKind::Softplus => "softplus",
            LayerKind::Exp => "exp",
            LayerKind::Log => "log",
            LayerKind::LeakyRelu { .. } => "leaky_relu",
            LayerKind::Permute(_) => "permute",
            LayerKind::Coupling(_) => "coupling",
            LayerKind::Spline(_) => "spline",
            LayerKind::Linear(..) => "linear",
            LayerKind::Autoregressive(spec) if spec.inverse => "inverse_autoregressive",
            LayerKind::Autoregressive(_) => "autoregressive",
            LayerKind::ActNorm => "actnorm",
            LayerKind::BatchNorm { .. } => "batch_norm",
            LayerKind::Planar => "planar",
            LayerKind::Radial => "radial",
        }
    }

    /// Whether the layer normalises with the statistics of the training batch
    /// (`batch_norm`): its training pass then couples the rows of a batch.
    pub fn uses_batch_statistics(&self) -> bool {
        matches!(self, LayerKind::BatchNorm { .. })
    }

    /// Whether the layer's inverse is analytic (exact and cheap), so that a flow made of
    /// such layers has a density at any point. `planar` and `radial` are forward-only: a
    /// flow containing them scores only its own draws (`sample_and_log_prob`).
    pub fn has_analytic_inverse(&self) -> bool {
        !matches!(self, LayerKind::Planar | LayerKind::Radial)
    }

    /// Whether the layer maps each coordinate on its own (and can be fused).
    pub fn is_elementwise(&self) -> bool {
        !matches!(
            self,
            LayerKind::Permute(_)
                | LayerKind::Coupling(_)
                | LayerKind::Linear(..)
                | LayerKind::Autoregressive(_)
                | LayerKind::BatchNorm { .. }
                | LayerKind::Planar
                | LayerKind::Radial
        )
    }

    /// The set each coordinate it transforms must lie in.
    pub fn domain(&self) -> Support {
        match self {
            LayerKind::Logit => Support::UnitInterval,
            LayerKind::Atanh => Support::Symmetric,
            LayerKind::Log => Support::Positive,
            _ => Support::Real,
        }
    }

    /// The support of a coordinate after an elementwise layer, given its support before.
    /// Conservative: a set that is not one of the tracked ones widens to ℝ.
    pub fn image(&self, input: Support) -> Support {
        use Support::*;
        match self {
            LayerKind::Sigmoid => UnitInterval,
            LayerKind::Tanh => Symmetric,
            LayerKind::Softplus | LayerKind::Exp => Positive,
            LayerKind::Logit | LayerKind::Atanh | LayerKind::Log | LayerKind::Affine => Real,
            // A spline maps [−B, B] onto itself, so a coordinate may change sign.
            LayerKind::Spline(_) | LayerKind::ActNorm => Real,
            // A non-negative constant shift keeps (0, ∞).
            LayerKind::Shift(Some(c)) if c.value >= 0.0 && input == Positive => Positive,
            LayerKind::Shift(_) => Real,
            // Positive scales keep (0, ∞); scales in (0, 1] keep (0, 1); |c| ≤ 1 keeps (−1, 1).
            LayerKind::Scale(None) if input == Positive => Positive,
            LayerKind::Scale(Some(c)) => match input {
                Positive if c.value > 0.0 => Positive,
                UnitInterval if c.value > 0.0 && c.value <= 1.0 => UnitInterval,
                UnitInterval | Symmetric if c.value.abs() <= 1.0 => Symmetric,
                _ => Real,
            },
            LayerKind::Scale(None) => Real,
            // The identity on positive values; a slope ≤ 1 also keeps (−1, 1).
            LayerKind::LeakyRelu { slope } => match input {
                Symmetric if slope.value > 1.0 => Real,
                other => other,
            },
            LayerKind::Permute(_)
            | LayerKind::Coupling(_)
            | LayerKind::Linear(..)
            | LayerKind::Autoregressive(_)
            | LayerKind::BatchNorm { .. }
            | LayerKind::Planar
            | LayerKind::Radial => Real,
        }
    }

    /// The runtime type of the layer's field.
    pub fn runtime_type(&self, rt: &TokenStream, float: &TokenStream) -> TokenStream {
        let ty = match self {
            LayerKind::Affine => quote!(Affine<#float>),
            LayerKind::Shift(_) => quote!(Shift<#float>),
            LayerKind::Scale(_) => quote!(Scale<#float>),
            LayerKind::Sigmoid => quote!(Sigmoid),
            LayerKind::Logit => quote!(Logit),
            LayerKind::Tanh => quote!(Tanh),
            LayerKind::Atanh => quote!(Atanh),
            LayerKind::Softplus => quote!(Softplus),
            LayerKind::Exp => quote!(Exp),
            LayerKind::Log => quote!(Log),
            LayerKind::LeakyRelu { .. } => quote!(LeakyRelu<#float>),
            LayerKind::Permute(_) => quote!(Permute),
            LayerKind::Coupling(_) => quote!(Coupling<#float>),
            LayerKind::Spline(_) => quote!(Spline<#float>),
            LayerKind::Linear(LinearSpec::Lu { .. }, _) => quote!(LuLinear<#float>),
            LayerKind::Linear(LinearSpec::Orthogonal, _) => quote!(OrthogonalLinear<#float>),
            LayerKind::Autoregressive(_) => quote!(Autoregressive<#float>),
            LayerKind::ActNorm => quote!(ActNorm<#float>),
            LayerKind::BatchNorm { .. } => quote!(BatchNorm<#float>),
            LayerKind::Planar => quote!(Planar<#float>),
            LayerKind::Radial => quote!(Radial<#float>),
        };
        quote!(#rt::layers::#ty)
    }

    /// An expression building the layer at its starting parameters; `dim` is an expression
    /// of type `usize` and `rng` a `&mut R` in scope.
    pub fn constructor(&self, rt: &TokenStream, dim: &TokenStream) -> TokenStream {
        let layers = quote!(#rt::layers);
        match self {
            LayerKind::Affine => quote!(#layers::Affine::identity(#dim)),
            LayerKind::Shift(None) => quote!(#layers::Shift::learnable(#dim)),
            LayerKind::Shift(Some(c)) => {
                let c = c.value;
                quote!(#layers::Shift::constant(#dim, #c))
            }
            LayerKind::Scale(None) => quote!(#layers::Scale::learnable(#dim)),
            LayerKind::Scale(Some(c)) => {
                let c = c.value;
                quote!(#layers::Scale::constant(#dim, #c))
            }
            LayerKind::LeakyRelu { slope } => {
                let s = slope.value;
                quote!(#layers::LeakyRelu::new(#s))
            }
            LayerKind::Sigmoid => quote!(#layers::Sigmoid),
            LayerKind::Logit => quote!(#layers::Logit),
            LayerKind::Tanh => quote!(#layers::Tanh),
            LayerKind::Atanh => quote!(#layers::Atanh),
            LayerKind::Softplus => quote!(#layers::Softplus),
            LayerKind::Exp => quote!(#layers::Exp),
            LayerKind::Log => quote!(#layers::Log),
            LayerKind::Permute(PermuteSpec::Reverse) => quote!(#layers::Permute::reverse(#dim)),
            LayerKind::Permute(PermuteSpec::Seed(seed)) => {
                quote!(#layers::Permute::seeded(#dim, #seed))
            }
            LayerKind::Permute(PermuteSpec::Explicit { perm, .. }) => {
                let perm = perm
                    .iter()
                    .map(|&p| proc_macro2::Literal::u64_unsuffixed(p));
                quote!(#layers::Permute::new(::std::vec![#(#perm),*]))
            }
            LayerKind::Coupling(spec) => coupling_constructor(&layers, dim, spec),
            LayerKind::Spline(spec) => {
                let (bins, bound) = spline_args(spec);
                quote!(#layers::Spline::new(#dim, #bins, #bound))
            }
            LayerKind::Linear(LinearSpec::Lu { seed: None }, _) => {
                quote!(#layers::LuLinear::identity(#dim))
            }
            LayerKind::Linear(LinearSpec::Lu { seed: Some(seed) }, _) => {
                quote!(#layers::LuLinear::seeded(#dim, #seed))
            }
            LayerKind::Linear(LinearSpec::Orthogonal, _) => {
                quote!(#layers::OrthogonalLinear::new(#dim, rng))
            }
            LayerKind::Autoregressive(spec) => autoregressive_constructor(&layers, dim, spec),
            LayerKind::ActNorm => quote!(#layers::ActNorm::new(#dim)),
            LayerKind::BatchNorm { momentum, eps } => {
                let (m, e) = (momentum.value, eps.value);
                quote!(#layers::BatchNorm::new(#dim, #m, #e))
            }
            LayerKind::Planar => quote!(#layers::Planar::new(#dim, rng)),
            LayerKind::Radial => quote!(#layers::Radial::new(#dim, rng)),
        }
    }

    /// The layer as canonical DSL text, every option spelled out (defaults included): the
    /// architecture fingerprint saved with trained parameters.
    pub fn describe(&self) -> String {
        let list = |items: &mut dyn Iterator<Item = String>| items.collect::<Vec<_>>().join(", ");
        match self {
            LayerKind::Shift(Some(c)) => format!("shift({})", c.value),
            LayerKind::Scale(Some(c)) => format!("scale({})", c.value),
            LayerKind::LeakyRelu { slope } => format!("leaky_relu(slope = {})", slope.value),
            LayerKind::Permute(PermuteSpec::Reverse) => "permute(reverse)".into(),
            LayerKind::Permute(PermuteSpec::Seed(seed)) => format!("permute(seed = {seed})"),
            LayerKind::Permute(PermuteSpec::Explicit { perm, .. }) => {
                format!("permute([{}])", list(&mut perm.iter().map(u64::to_string)))
            }
            LayerKind::Spline(spec) => describe_spline(spec),
            LayerKind::BatchNorm { momentum, eps } => format!(
                "batch_norm(momentum = {:?}, eps = {:?})",
                momentum.value, eps.value
            ),
            LayerKind::Linear(LinearSpec::Lu { seed: None }, _) => "linear".into(),
            LayerKind::Linear(LinearSpec::Lu { seed: Some(seed) }, _) => {
                format!("linear(seed = {seed})")
            }
            LayerKind::Linear(LinearSpec::Orthogonal, _) => "linear(orthogonal)".into(),
            LayerKind::Autoregressive(spec) => {
                let order = match spec.order {
                    Order::Natural => "order = natural".to_string(),
                    Order::Reverse => "order = reverse".into(),
                    Order::Seed(seed) => format!("seed = {seed}"),
                };
                format!(
                    "{}(transform = {}, hidden = [{}], activation = {}, {order})",
                    self.name(),
                    describe_transform(&spec.transform),
                    describe_hidden(&spec.hidden),
                    describe_activation(spec.activation)
                )
            }
            LayerKind::Coupling(spec) => {
                let mask = match &spec.mask {
                    MaskSpec::Even => "even".to_string(),
                    MaskSpec::Odd => "odd".into(),
                    MaskSpec::FirstHalf => "first_half".into(),
                    MaskSpec::SecondHalf => "second_half".into(),
                    MaskSpec::Explicit { kept, .. } => {
                        format!(
                            "[{}]",
                            list(&mut kept.iter().map(|&k| u8::from(k).to_string()))
                        )
                    }
                };
                let transform = describe_transform(&spec.transform);
                let activation = describe_activation(spec.activation);
                let hidden = describe_hidden(&spec.hidden);
                format!(
                    "coupling(mask = {mask}, transform = {transform}, hidden = [{hidden}], activation = {activation})"
                )
            }
            other => other.name().to_string(),
        }
    }

    /// Scratch elements the layer's point methods need (see `Layer::point_scratch`).
    pub fn point_scratch(&self) -> usize {
        match self {
            // The conditioner's, plus one coordinate's spline parameters.
            LayerKind::Coupling(spec) => {
                conditioner_scratch(&spec.hidden)
                    + match spec.transform {
                        CouplingTransform::Spline(_) => outputs_per_coordinate(&spec.transform),
                        _ => 0,
                    }
            }
            // The conditioner's, plus one coordinate's outputs.
            LayerKind::Autoregressive(spec) => {
                conditioner_scratch(&spec.hidden) + outputs_per_coordinate(&spec.transform)
            }
            _ => 0,
        }
    }
}

/// The point scratch of an MLP conditioner (`Mlp::point_scratch` bounds it by the two
/// widest hidden layers).
fn conditioner_scratch(hidden: &[(u64, crate::parse::Place)]) -> usize {
    let mut widths: Vec<usize> = hidden.iter().map(|&(h, _)| h as usize).collect();
    widths.sort_unstable_by(|a, b| b.cmp(a));
    widths.iter().take(2).sum()
}

/// The conditioner outputs a transform takes per coordinate (the runtime's
/// `autoregressive::per_coordinate`).
fn outputs_per_coordinate(transform: &CouplingTransform) -> usize {
    match transform {
        CouplingTransform::Affine => 2,
        CouplingTransform::Additive => 1,
        CouplingTransform::Spline(spec) => 3 * spec.bins.0 as usize - 1,
    }
}

fn describe_spline(spec: &SplineSpec) -> String {
    format!(
        "spline(bins = {}, bound = {:?})",
        spec.bins.0, spec.bound.value
    )
}

fn describe_transform(transform: &CouplingTransform) -> String {
    match transform {
        CouplingTransform::Affine => "affine".into(),
        CouplingTransform::Additive => "additive".into(),
        CouplingTransform::Spline(spec) => describe_spline(spec),
    }
}

fn describe_activation(activation: Activation) -> &'static str {
    match activation {
        Activation::Relu => "relu",
        Activation::Tanh => "tanh",
        Activation::Elu => "elu",
        Activation::Silu => "silu",
    }
}

fn describe_hidden(hidden: &[(u64, crate::parse::Place)]) -> String {
    hidden
        .iter()
        .map(|(h, _)| h.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `bins` as a `usize` literal and `bound` as an `f64` literal.
fn spline_args(spec: &SplineSpec) -> (proc_macro2::Literal, proc_macro2::Literal) {
    (
        proc_macro2::Literal::u64_unsuffixed(spec.bins.0),
        proc_macro2::Literal::f64_suffixed(spec.bound.value),
    )
}

fn transform_tokens(layers: &TokenStream, transform: &CouplingTransform) -> TokenStream {
    match transform {
        CouplingTransform::Affine => quote!(#layers::CouplingTransform::Affine),
        CouplingTransform::Additive => quote!(#layers::CouplingTransform::Additive),
        CouplingTransform::Spline(spec) => {
            let (bins, bound) = spline_args(spec);
            quote!(#layers::CouplingTransform::Spline { bins: #bins, bound: #bound })
        }
    }
}

fn activation_tokens(layers: &TokenStream, activation: Activation) -> TokenStream {
    match activation {
        Activation::Relu => quote!(#layers::Activation::Relu),
        Activation::Tanh => quote!(#layers::Activation::Tanh),
        Activation::Elu => quote!(#layers::Activation::Elu),
        Activation::Silu => quote!(#layers::Activation::Silu),
    }
}

fn hidden_tokens(hidden: &[(u64, crate::parse::Place)]) -> TokenStream {
    let hidden = hidden
        .iter()
        .map(|&(h, _)| proc_macro2::Literal::u64_unsuffixed(h));
    quote!(&[#(#hidden),*])
}

fn autoregressive_constructor(
    layers: &TokenStream,
    dim: &TokenStream,
    spec: &AutoregressiveSpec,
) -> TokenStream {
    let transform = transform_tokens(layers, &spec.transform);
    let activation = activation_tokens(layers, spec.activation);
    let hidden = hidden_tokens(&spec.hidden);
    let order = match spec.order {
        Order::Natural => quote!(#layers::Order::Natural),
        Order::Reverse => quote!(#layers::Order::Reverse),
        Order::Seed(seed) => quote!(#layers::Order::Seeded(#seed)),
    };
    let constructor = if spec.inverse {
        quote!(inverse)
    } else {
        quote!(masked)
    };
    quote!(#layers::Autoregressive::#constructor(#dim, #transform, #hidden, #activation, #order, rng))
}

fn coupling_constructor(
    layers: &TokenStream,
    dim: &TokenStream,
    spec: &CouplingSpec,
) -> TokenStream {
    let mask = match &spec.mask {
        MaskSpec::Even => quote!(#layers::Mask::Even),
        MaskSpec::Odd => quote!(#layers::Mask::Odd),
        MaskSpec::FirstHalf => quote!(#layers::Mask::FirstHalf),
        MaskSpec::SecondHalf => quote!(#layers::Mask::SecondHalf),
        MaskSpec::Explicit { kept, .. } => quote!(#layers::Mask::Explicit(&[#(#kept),*])),
    };
    let transform = transform_tokens(layers, &spec.transform);
    let activation = activation_tokens(layers, spec.activation);
    let hidden = hidden_tokens(&spec.hidden);
    quote!(#layers::Coupling::new(#dim, #mask, #transform, #hidden, #activation, rng))
}
