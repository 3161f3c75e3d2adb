//! The rules a flow must satisfy (DESIGN.md §4): every layer a bijection, dimensions that
//! fit, and supports that flow from the base through the chain into each layer's domain.
//! All violations are collected, each spanned on its token, stating the rule and the fix.
//! Rules that depend on a const generic `dim` are returned as [`DimRule`]s, which the
//! generated code enforces as `const` assertions when the dimension becomes known.

use std::collections::BTreeSet;

use proc_macro2::Span;
use syn::Error;

use crate::ir::{
    AutoregressiveSpec, CouplingSpec, CouplingTransform, Dim, Flow, Layer, LayerKind, MaskSpec,
    Num, PermuteSpec, SplineSpec, Support,
};

/// What checking learned about a valid flow.
#[derive(Debug)]
pub struct Checked {
    /// The support of each coordinate of the data.
    pub final_support: FinalSupport,
    /// Dimension rules to assert at compile time once a generic `dim` is known.
    pub dim_rules: Vec<DimRule>,
}

/// The data's support: per coordinate when `dim` is a literal, else one bound for all.
#[derive(Debug, PartialEq)]
pub enum FinalSupport {
    PerCoordinate(Vec<Support>),
    AllCoordinates(Support),
}

/// A rule on a generic dimension `D`, asserted where the token that needs it was written.
#[derive(Debug, Clone)]
pub struct DimRule {
    pub bound: DimBound,
    pub message: String,
    pub span: Span,
}

/// What a [`DimRule`] requires of `D`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DimBound {
    AtLeast(u64),
    AtMost(u64),
    Equals(u64),
}

impl DimRule {
    fn new(bound: DimBound, span: Span, message: impl Into<String>) -> Self {
        DimRule {
            bound,
            message: message.into(),
            span,
        }
    }
}

/// Checks a lowered flow. `unknown_support_at` lists the positions in `flow.layers` where
/// lowering dropped something (see `Lowered`): the support entering there is unknown, and
/// the support rule skips unknown coordinates until a layer gives them a known support
/// again, so that every real support error is reported and no follow-on one.
pub fn check(flow: &Flow, unknown_support_at: &[usize]) -> Result<Checked, Vec<Error>> {
    let mut errors = Vec::new();
    let mut dim_rules = Vec::new();
    let known = flow.dim.known();
    if let Dim::Literal { value: 0, span } = flow.dim {
        errors.push(Error::new(
            span,
            "`dim = 0`: a flow needs at least one coordinate; use `dim = 1` or more",
        ));
    }
    if let Dim::Generic(ident) = &flow.dim {
        let message = "flow!: a flow needs dim >= 1; instantiate it with a positive dimension";
        dim_rules.push(DimRule::new(DimBound::AtLeast(1), ident.span(), message));
    }
    for layer in &flow.layers {
        check_layer(layer, known.filter(|&d| d > 0), &mut errors, &mut dim_rules);
    }
    if !matches!(flow.dim, Dim::Generic(_)) {
        dim_rules.clear();
    }
    let final_support = track_supports(flow, unknown_support_at, &mut errors);
    match final_support {
        Some(final_support) if errors.is_empty() => Ok(Checked {
            final_support,
            dim_rules,
        }),
        _ => Err(errors),
    }
}

/// The rules local to one layer: bijectivity of its options and dimension fit.
fn check_layer(
    layer: &Layer,
    dim: Option<usize>,
    errors: &mut Vec<Error>,
    dim_rules: &mut Vec<DimRule>,
) {
    match &layer.kind {
        LayerKind::LeakyRelu { slope } if slope.value <= 0.0 => errors.push(
            slope.place.error(format!(
                "`leaky_relu(slope = {})` is not a bijection: a slope ≤ 0 folds or flattens the negative side; use a positive slope such as `slope = 0.01`",
                slope.value
            )),
        ),
        LayerKind::Scale(Some(c)) if c.value == 0.0 => errors.push(c.place.error(
            "`scale(0.0)` is not a bijection: it sends every value to 0; use a non-zero factor, or a learnable `scale`",
        )),
        LayerKind::Permute(PermuteSpec::Explicit { perm, span }) => check_permutation(perm, *span, dim, errors, dim_rules),
        LayerKind::Coupling(spec) => {
            check_transform(&spec.transform, errors);
            check_coupling(spec, layer.span, dim, errors, dim_rules);
        }
        LayerKind::Spline(spec) => check_spline(spec, errors),
        LayerKind::BatchNorm { momentum, eps } => check_batch_norm(*momentum, *eps, errors),
        LayerKind::Linear(_, Some((width, place))) => match dim {
            Some(d) if *width != d as u64 => errors.push(place.error(format!(
                "`linear({width})` on dim = {d} is not a bijection: an invertible linear map is square, {d} × {d}; write `linear` (its width is always `dim`)"
            ))),
            Some(_) => {}
            None => dim_rules.push(DimRule::new(
                DimBound::Equals(*width),
                place.first,
                format!("flow!: `linear({width})` is square only when the flow's dim is {width}: instantiate it with {width}, or write `linear`"),
            )),
        },
        LayerKind::Autoregressive(spec) => {
            check_transform(&spec.transform, errors);
            check_made(spec, layer, dim, errors, dim_rules);
        }
        _ => {}
    }
}

/// A spline needs a bin and a positive, finite bound.
fn check_spline(spec: &SplineSpec, errors: &mut Vec<Error>) {
    let (bins, place) = spec.bins;
    if bins == 0 {
        errors.push(place.error(
            "a spline with no bins is not a bijection of [−bound, bound] (it has no pieces to map it with); use `bins = 8` or any count ≥ 1",
        ));
    }
    let bound = spec.bound;
    if bound.value <= 0.0 {
        errors.push(bound.place.error(format!(
            "a spline's `bound` is the half-width of the interval [−bound, bound] it reshapes, so it must be positive, found {:?}; use e.g. `bound = 5.0` (outside it the spline is the identity)",
            bound.value
        )));
    }
}

/// The running statistics' momentum is a fraction in (0, 1]; `eps` keeps the variance off 0.
fn check_batch_norm(momentum: Num, eps: Num, errors: &mut Vec<Error>) {
    if !(momentum.value > 0.0 && momentum.value <= 1.0) {
        errors.push(momentum.place.error(format!(
            "`batch_norm`'s `momentum` is the weight of each training batch in the running statistics (running = (1 − momentum)·running + momentum·batch), so it must be in (0, 1], found {:?}; use e.g. `momentum = 0.1`",
            momentum.value
        )));
    }
    if !(eps.value.is_finite() && eps.value > 0.0) {
        errors.push(eps.place.error(format!(
            "`batch_norm`'s `eps` is added to the variance before its square root, so it must be positive and finite, found {:?}; use e.g. `eps = 1e-5`",
            eps.value
        )));
    }
}

fn check_transform(transform: &CouplingTransform, errors: &mut Vec<Error>) {
    if let CouplingTransform::Spline(spec) = transform {
        check_spline(spec, errors);
    }
}

/// MADE's rule: every hidden layer has at least `dim − 1` units, or some coordinate's
/// outputs could not see all the coordinates before it in the order.
fn check_made(
    spec: &AutoregressiveSpec,
    layer: &Layer,
    dim: Option<usize>,
    errors: &mut Vec<Error>,
    dim_rules: &mut Vec<DimRule>,
) {
    let name = layer.kind.name();
    for &(h, place) in &spec.hidden {
        if h == 0 {
            errors.push(place.error("a hidden layer needs at least 1 unit; use a width like 64"));
            continue;
        }
        match dim {
            Some(d) if h + 1 < d as u64 => errors.push(place.error(format!(
                "`{name}` on dim = {d} needs every hidden layer to have at least dim − 1 = {} units, so that each coordinate's outputs can see every coordinate before it in the order (MADE's degrees 1..dim−1 each need a unit); this one has {h}: use `hidden = [{}]` or wider",
                d - 1,
                (d - 1).max(64)
            ))),
            Some(_) => {}
            None => dim_rules.push(DimRule::new(
                DimBound::AtMost(h + 1),
                place.first,
                format!("flow!: an autoregressive hidden layer of {h} units sees every preceding coordinate only when dim <= {}: instantiate the flow with a smaller dimension, or widen `hidden`", h + 1),
            )),
        }
    }
}

fn check_permutation(
    perm: &[u64],
    span: Span,
    dim: Option<usize>,
    errors: &mut Vec<Error>,
    dim_rules: &mut Vec<DimRule>,
) {
    let n = perm.len() as u64;
    let mut seen = vec![false; perm.len()];
    let not_a_permutation = perm.iter().any(|&p| {
        let fresh = p < n && !seen[p as usize];
        if fresh {
            seen[p as usize] = true;
        }
        !fresh
    });
    if not_a_permutation {
        errors.push(Error::new(
            span,
            format!("`permute({perm:?})` is not a permutation: it must list each index 0..{n} exactly once, e.g. `permute({:?})`", (0..n).rev().collect::<Vec<_>>()),
        ));
        return;
    }
    match dim {
        Some(d) if perm.len() != d => errors.push(Error::new(
            span,
            format!("this permutation has {} entries but the flow has dim = {d}; list each of the {d} indices once", perm.len()),
        )),
        Some(_) => {}
        None => dim_rules.push(DimRule::new(
            DimBound::Equals(n),
            span,
            format!("flow!: this permutation lists {n} indices, so the flow's dim must be {n}: instantiate it with {n}, or change the list"),
        )),
    }
}

fn check_coupling(
    spec: &CouplingSpec,
    span: Span,
    dim: Option<usize>,
    errors: &mut Vec<Error>,
    dim_rules: &mut Vec<DimRule>,
) {
    for &(h, hspan) in &spec.hidden {
        if h == 0 {
            errors.push(hspan.error("a hidden layer needs at least 1 unit; use a width like 64"));
        }
    }
    match &spec.mask {
        MaskSpec::Explicit {
            kept,
            span: mask_span,
        } => {
            if !kept.contains(&true) || !kept.contains(&false) {
                errors.push(Error::new(
                    *mask_span,
                    "a coupling must keep at least one coordinate (1) and transform at least one (0); this mask does not, e.g. use `[1, 0]`",
                ));
            } else if let Some(d) = dim {
                if kept.len() != d {
                    errors.push(Error::new(
                        *mask_span,
                        format!("this mask has {} entries but the flow has dim = {d}; give one 0 or 1 per coordinate", kept.len()),
                    ));
                }
            } else {
                let n = kept.len() as u64;
                dim_rules.push(DimRule::new(
                    DimBound::Equals(n),
                    *mask_span,
                    format!("flow!: this coupling mask has {n} entries, so the flow's dim must be {n}: instantiate it with {n}, or change the mask"),
                ));
            }
        }
        named => match dim {
            Some(d) => {
                let kept = named.kept(d);
                if !kept.contains(&true) || !kept.contains(&false) {
                    errors.push(Error::new(
                        span,
                        format!("a coupling needs at least one kept and one transformed coordinate, but dim = {d} leaves one side empty; use dim ≥ 2, or an elementwise layer such as `affine` for dim = 1"),
                    ));
                }
            }
            None => dim_rules.push(DimRule::new(
                DimBound::AtLeast(2),
                span,
                "flow!: a coupling needs dim >= 2 (one kept and one transformed coordinate): instantiate the flow with a dimension of at least 2",
            )),
        },
    }
}

/// A coordinate's support at one point of the chain (`None`: unknown, after something
/// that could not be read), with the name of the layer (or base) that produced it.
type Coord = (Option<Support>, &'static str);

/// The supports of the coordinates at one point of the chain.
enum Coordinates {
    Known(Vec<Coord>),
    /// For a generic `dim`: the set of supports some coordinate may have, and whether some
    /// coordinate's support may be unknown.
    Generic {
        set: BTreeSet<(SupportKey, &'static str)>,
        unknown: bool,
    },
}

type SupportKey = u8;

fn key(s: Support) -> SupportKey {
    s as u8
}

const ALL_SUPPORTS: [Support; 4] = [
    Support::Real,
    Support::UnitInterval,
    Support::Symmetric,
    Support::Positive,
];

fn unkey(k: SupportKey) -> Support {
    ALL_SUPPORTS[k as usize]
}

/// The support an elementwise layer gives whatever it receives (`sigmoid` → (0, 1)), or
/// `None` when its output depends on its input (`scale(0.5)`): what follows an unknown
/// support.
fn settled_image(kind: &LayerKind) -> Option<Support> {
    let mut images = ALL_SUPPORTS
        .into_iter()
        .filter(|s| s.within(kind.domain()))
        .map(|s| kind.image(s));
    let first = images.next()?;
    images.all(|i| i == first).then_some(first)
}

/// The support after an elementwise layer: its image of the input, or of its domain when
/// the input violates it (already reported), so checking goes on from what it outputs.
fn image_of(kind: &LayerKind, input: Option<Support>) -> Option<Support> {
    match input {
        Some(s) if s.within(kind.domain()) => Some(kind.image(s)),
        Some(_) => Some(kind.image(kind.domain())),
        None => settled_image(kind),
    }
}

fn track_supports(
    flow: &Flow,
    unknown_support_at: &[usize],
    errors: &mut Vec<Error>,
) -> Option<FinalSupport> {
    let (start, origin) = (flow.base.support(), flow.base.origin());
    let mut coords = match flow.dim.known() {
        Some(d) => Coordinates::Known(vec![(Some(start), origin); d]),
        None => Coordinates::Generic {
            set: [(key(start), origin)].into(),
            unknown: false,
        },
    };
    for i in 0..=flow.layers.len() {
        if unknown_support_at.contains(&i) {
            coords = match coords {
                Coordinates::Known(c) => Coordinates::Known(vec![(None, origin); c.len()]),
                Coordinates::Generic { .. } => Coordinates::Generic {
                    set: BTreeSet::new(),
                    unknown: true,
                },
            };
        }
        if let Some(layer) = flow.layers.get(i) {
            coords = step(coords, layer, errors);
        }
    }
    match coords {
        Coordinates::Known(c) => c
            .into_iter()
            .map(|(s, _)| s)
            .collect::<Option<Vec<_>>>()
            .map(FinalSupport::PerCoordinate),
        Coordinates::Generic { unknown: true, .. } => None,
        Coordinates::Generic { set, .. } => Some(FinalSupport::AllCoordinates(
            set.iter()
                .map(|&(k, _)| unkey(k))
                .reduce(Support::join)
                .unwrap_or(Support::Real),
        )),
    }
}

/// One layer's effect on the supports; an error if its domain is violated, after which
/// checking goes on from the layer's output.
fn step(coords: Coordinates, layer: &Layer, errors: &mut Vec<Error>) -> Coordinates {
    let name = layer.kind.name();
    match (coords, &layer.kind) {
        (Coordinates::Known(c), LayerKind::Permute(spec)) => {
            let perm = match spec {
                PermuteSpec::Reverse => (0..c.len()).rev().collect(),
                PermuteSpec::Seed(seed) => crate::ir::seeded_permutation(c.len(), *seed),
                PermuteSpec::Explicit { perm, .. } => {
                    perm.iter().map(|&p| p as usize).collect::<Vec<_>>()
                }
            };
            let mut sorted = perm.clone();
            sorted.sort_unstable();
            if sorted != (0..c.len()).collect::<Vec<_>>() {
                // An invalid permutation (already reported): any coordinate may land anywhere.
                let join = c
                    .iter()
                    .map(|&(s, _)| s)
                    .reduce(|a, b| Some(a?.join(b?)))
                    .flatten();
                return Coordinates::Known(vec![(join, name); c.len()]);
            }
            Coordinates::Known(perm.iter().map(|&p| c[p]).collect())
        }
        (Coordinates::Known(c), LayerKind::Coupling(spec)) => {
            let kept = spec.mask.kept(c.len());
            Coordinates::Known(
                c.into_iter()
                    .zip(kept)
                    .map(|(s, k)| if k { s } else { (Some(Support::Real), name) })
                    .collect(),
            )
        }
        (Coordinates::Known(c), LayerKind::Linear(..) | LayerKind::Autoregressive(_)) => {
            Coordinates::Known(vec![(Some(Support::Real), name); c.len()])
        }
        (Coordinates::Generic { .. }, LayerKind::Linear(..) | LayerKind::Autoregressive(_)) => {
            Coordinates::Generic {
                set: [(key(Support::Real), name)].into(),
                unknown: false,
            }
        }
        (generic @ Coordinates::Generic { .. }, LayerKind::Permute(_)) => generic,
        (Coordinates::Generic { mut set, unknown }, LayerKind::Coupling(_)) => {
            set.insert((key(Support::Real), name));
            Coordinates::Generic { set, unknown }
        }
        (Coordinates::Known(c), kind) => {
            let bad: Vec<usize> = (0..c.len())
                .filter(|&j| c[j].0.is_some_and(|s| !s.within(kind.domain())))
                .collect();
            if let Some(&first) = bad.first() {
                let which = if bad.len() == c.len() {
                    "every coordinate".to_string()
                } else {
                    match bad.as_slice() {
                        [one] => format!("coordinate {one}"),
                        many => format!(
                            "coordinates {}",
                            many.iter()
                                .map(usize::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    }
                };
                let (found, origin) = c[first];
                let found = found.expect("only known supports violate a domain");
                errors.push(domain_error(layer, &which, (found, origin)));
            }
            Coordinates::Known(
                c.into_iter()
                    .map(|(s, _)| (image_of(kind, s), name))
                    .collect(),
            )
        }
        (Coordinates::Generic { set, unknown }, kind) => {
            if let Some(&(k, origin)) = set.iter().find(|(k, _)| !unkey(*k).within(kind.domain())) {
                errors.push(domain_error(layer, "some coordinates", (unkey(k), origin)));
            }
            let mut images: BTreeSet<_> = set
                .into_iter()
                .filter_map(|(k, _)| image_of(kind, Some(unkey(k))))
                .map(|s| (key(s), name))
                .collect();
            let settled = if unknown { settled_image(kind) } else { None };
            if let Some(s) = settled {
                images.insert((key(s), name));
            }
            Coordinates::Generic {
                set: images,
                unknown: unknown && settled.is_none(),
            }
        }
    }
}

fn domain_error(layer: &Layer, which: &str, (found, origin): (Support, &'static str)) -> Error {
    let name = layer.kind.name();
    let domain = layer.kind.domain();
    let fix = match domain {
        Support::UnitInterval => "`sigmoid`",
        Support::Symmetric => "`tanh`",
        Support::Positive => "`softplus` or `exp`",
        Support::Real => "a layer onto ℝ",
    };
    let origin = if origin.starts_with("the ") {
        origin.to_string()
    } else {
        format!("`{origin}`")
    };
    Error::new(
        layer.span,
        format!(
            "`{name}` needs its input in {}, but {which} can lie anywhere in {} here (coming from {origin}); put a layer that maps into {} before it, such as {fix}",
            domain.describe(),
            found.describe(),
            domain.describe()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower::lower;
    use crate::parse::parse;
    use quote::quote;

    fn run(tokens: proc_macro2::TokenStream) -> Result<Checked, Vec<String>> {
        let lowered = lower(&parse(tokens).unwrap());
        assert!(lowered.errors.is_empty(), "lowering: {:?}", lowered.errors);
        check(&lowered.flow, &lowered.unknown_support_at)
            .map_err(|e| e.iter().map(|e| e.to_string()).collect())
    }

    /// Every message of an invocation, lowering's and checking's, in order.
    fn all_errors(tokens: proc_macro2::TokenStream) -> Vec<String> {
        let lowered = lower(&parse(tokens).unwrap());
        let mut errors = lowered.errors;
        if let Err(more) = check(&lowered.flow, &lowered.unknown_support_at) {
            errors.extend(more);
        }
        errors.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn support_tracking_goes_on_after_a_domain_error() {
        let m = run(quote!(dim = 2; affine; logit; softplus; atanh)).unwrap_err();
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[0].contains("`logit` needs its input in (0, 1)"), "{m:?}");
        assert!(m[1].contains("`atanh` needs its input in (−1, 1)"), "{m:?}");
        assert!(m[1].contains("coming from `softplus`"), "{m:?}");
        // After the error, `logit`'s output is ℝ, so a second `logit` fails too …
        assert_eq!(
            run(quote!(dim = 2; affine; logit; logit))
                .unwrap_err()
                .len(),
            2
        );
        // … and a layer mapping into the domain again ends the errors.
        let m = run(quote!(dim = 2; exp; log; log; sigmoid; logit)).unwrap_err();
        assert_eq!(m.len(), 1, "{m:?}");
        let m = run(quote!(pub struct S<const D: usize> { dim = D; affine; logit; tanh; log }))
            .unwrap_err();
        assert_eq!(m.len(), 2, "{m:?}");
    }

    #[test]
    fn support_tracking_resumes_after_an_unknown_layer() {
        let m = all_errors(quote!(dim = 2; afine; affine; logit));
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[0].contains("unknown layer `afine`"), "{m:?}");
        assert!(m[1].contains("`logit` needs its input in (0, 1)"), "{m:?}");
        assert!(m[1].contains("coming from `affine`"), "{m:?}");
        // Only the transformed half of a coupling is known again.
        let m = all_errors(quote!(dim = 2; afine; coupling(mask = even); logit));
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[1].contains("coordinate 1 can lie anywhere in ℝ"), "{m:?}");
        let m = all_errors(
            quote!(pub struct S<const D: usize> { dim = D; afine; coupling(mask = even); logit }),
        );
        assert_eq!(m.len(), 2, "{m:?}");
        // Nothing known reaches the `logit`, or what does fits it: no follow-on error.
        for only_the_typo in [
            quote!(dim = 2; afine; logit),
            quote!(dim = 2; sigmoidd; scale(0.5); logit),
            quote!(dim = 2; afine; sigmoid; logit),
            quote!(dim = 2; coupling(mask = evn); permute(reverse); log),
            quote!(dim = 2; repeat(2) { sigmoid; afine }; logit),
            quote!(pub struct S<const D: usize> { dim = D; afine; shift(1.0); log }),
            quote!(dim = 2; base = unifrom; logit),
            quote!(dim = 2; bsae = uniform; logit),
        ] {
            let m = all_errors(only_the_typo.clone());
            assert_eq!(m.len(), 1, "{only_the_typo}: {m:?}");
        }
    }

    #[test]
    fn supports_flow_through_the_chain() {
        for ok in [
            quote!(dim = 2; sigmoid; logit),
            quote!(dim = 2; exp; log),
            quote!(dim = 2; tanh; atanh),
            quote!(dim = 2; sigmoid; atanh),
            quote!(dim = 2; sigmoid; log),
            quote!(dim = 2; exp; shift(1.0); log),
            quote!(dim = 2; base = uniform; logit),
            quote!(dim = 2; sigmoid; scale(0.5); logit),
            quote!(dim = 3; sigmoid; permute(seed = 3); logit),
        ] {
            assert!(run(ok.clone()).is_ok(), "{ok}: {:?}", run(ok.clone()).err());
        }
        for bad in [
            quote!(dim = 2; affine; logit),
            quote!(dim = 2; tanh; logit),
            quote!(dim = 2; softplus; logit),
            quote!(dim = 2; exp; log; log),
            quote!(dim = 2; sigmoid; coupling(mask = even); logit),
            quote!(dim = 2; sigmoid; shift(-1.0); log),
        ] {
            assert!(run(bad.clone()).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn the_support_message_says_rule_and_fix() {
        let m = run(quote!(dim = 2; affine; logit)).unwrap_err();
        assert_eq!(m.len(), 1);
        assert!(m[0].contains("`logit` needs its input in (0, 1)"), "{m:?}");
        assert!(m[0].contains("coming from `affine`"), "{m:?}");
        assert!(m[0].contains("such as `sigmoid`"), "{m:?}");
    }

    #[test]
    fn final_supports_per_coordinate() {
        let c = run(quote!(dim = 3; coupling(mask = [1, 1, 0]); sigmoid; coupling(mask = even)))
            .unwrap();
        use Support::*;
        assert_eq!(
            c.final_support,
            FinalSupport::PerCoordinate(vec![UnitInterval, Real, UnitInterval])
        );
    }

    #[test]
    fn bijection_and_dimension_rules_are_all_reported() {
        let m = run(quote!(dim = 2; leaky_relu(slope = 0.0); scale(0.0); permute([0, 0]); coupling(mask = even, hidden = [0, 8]); permute([2, 0, 1]))).unwrap_err();
        assert_eq!(m.len(), 5, "{m:?}");
        assert!(m[0].contains("not a bijection"));
        assert!(m[1].contains("`scale(0.0)`"));
        assert!(m[2].contains("not a permutation"));
        assert!(m[3].contains("at least 1 unit"));
        assert!(m[4].contains("3 entries but the flow has dim = 2"));
    }

    #[test]
    fn coupling_on_one_coordinate_fails() {
        let m = run(quote!(dim = 1; coupling(mask = even))).unwrap_err();
        assert!(m[0].contains("leaves one side empty"), "{m:?}");
        let m = run(quote!(dim = 0; affine)).unwrap_err();
        assert!(m[0].contains("`dim = 0`"), "{m:?}");
    }

    #[test]
    fn generic_dims_become_const_rules() {
        let c =
            run(quote!(pub struct S<const D: usize> { dim = D; coupling(mask = [1, 0, 1]); tanh }))
                .unwrap();
        assert!(c.dim_rules.iter().any(|r| r.bound == DimBound::Equals(3)));
        assert_eq!(
            c.final_support,
            FinalSupport::AllCoordinates(Support::Symmetric)
        );
        let m = run(quote!(pub struct S<const D: usize> { dim = D; coupling(mask = even); logit }))
            .unwrap_err();
        assert!(m[0].contains("`logit` needs"), "{m:?}");
    }

    #[test]
    fn new_layers_are_accepted_with_their_defaults() {
        let checked = run(quote!(
            dim = 3;
            actnorm;
            spline;
            linear;
            linear(seed = 2);
            linear(orthogonal);
            linear(3);
            autoregressive(hidden = [2]);
            inverse_autoregressive(transform = spline(bins = 4), order = reverse);
            coupling(mask = even, transform = spline(bins = 1, bound = 0.5));
            autoregressive(seed = 7, transform = additive)
        ))
        .unwrap();
        assert_eq!(
            checked.final_support,
            FinalSupport::PerCoordinate(vec![Support::Real; 3])
        );
    }

    #[test]
    fn spline_rules() {
        let e = run(quote!(dim = 2; spline(bins = 0); spline(bound = -1.0); coupling(mask = even, transform = spline(bound = 0.0)))).unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(
            e[0].starts_with("a spline with no bins is not a bijection"),
            "{e:?}"
        );
        assert!(e[1].contains("must be positive, found -1.0"), "{e:?}");
        assert!(e[2].contains("must be positive, found 0.0"), "{e:?}");
    }

    #[test]
    fn linear_must_be_square() {
        let e = run(quote!(dim = 2; linear(3))).unwrap_err();
        assert!(
            e[0].starts_with("`linear(3)` on dim = 2 is not a bijection"),
            "{e:?}"
        );
        let generic = run(quote!(struct S<const D: usize> { dim = D; linear(3) })).unwrap();
        assert!(
            generic
                .dim_rules
                .iter()
                .any(|r| r.bound == DimBound::Equals(3))
        );
    }

    #[test]
    fn made_needs_dim_minus_one_hidden_units() {
        let e = run(
            quote!(dim = 5; autoregressive(hidden = [4, 3]); inverse_autoregressive(hidden = [8])),
        )
        .unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("`autoregressive` on dim = 5 needs every hidden layer to have at least dim − 1 = 4 units"),
            "{e:?}"
        );
        let e = run(quote!(dim = 1; autoregressive(hidden = [0]))).unwrap_err();
        assert!(
            e[0].starts_with("a hidden layer needs at least 1 unit"),
            "{e:?}"
        );
        let generic =
            run(quote!(struct S<const D: usize> { dim = D; autoregressive(hidden = [16]) }))
                .unwrap();
        assert!(
            generic
                .dim_rules
                .iter()
                .any(|r| r.bound == DimBound::AtMost(17))
        );
    }

    #[test]
    fn linear_and_autoregressive_layers_widen_supports_to_the_reals() {
        let e = run(quote!(dim = 2; sigmoid; linear; logit)).unwrap_err();
        assert!(e[0].contains("coming from `linear`"), "{e:?}");
        let e = run(quote!(dim = 2; sigmoid; autoregressive; logit)).unwrap_err();
        assert!(e[0].contains("coming from `autoregressive`"), "{e:?}");
        let e = run(quote!(dim = 2; sigmoid; spline; logit)).unwrap_err();
        assert!(e[0].contains("coming from `spline`"), "{e:?}");
        run(quote!(dim = 2; base = student_t(df = 3.0); tanh; atanh)).unwrap();
        let e = run(quote!(dim = 2; base = logistic; logit)).unwrap_err();
        assert!(e[0].contains("the logistic base"), "{e:?}");
    }
}
