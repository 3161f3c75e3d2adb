//! Round trips `inverse(forward(z)) ≈ z` and `forward(inverse(x)) ≈ x` for the catalogue
//! of flows in `common` (every layer kind, mask, transform and activation), on the batch
//! and the point API, after perturbing every parameter.

mod common;

use common::*;
use flowgen::ndarray::Array2;
use flowgen::prelude::*;
use flowgen::rand::RngExt;

const TOL: f64 = 1e-9;

/// The struct's fields are the ones the catalogue lists, in order, with the layer kinds
/// their names say; and perturbation really changed the flow (couplings start as the
/// identity, so an unperturbed flow would make every other test vacuous).
fn fields_and_perturbation<M: Case>() {
    let model = M::perturbed(1);
    let layers = model.layers();
    assert_eq!(layers.len(), M::FIELDS.len(), "{}: field list", M::NAME);
    for (i, (layer, field)) in layers.iter().zip(M::FIELDS).enumerate() {
        assert_eq!(
            *field,
            format!("{}_{i}", layer.kind()),
            "{}: field {i}",
            M::NAME
        );
    }
    let mut rng = rng(2);
    let z = base_points(&model, 64, &mut rng);
    let fresh = M::fresh(1);
    let (x_fresh, _) = fresh.forward_and_log_det(z.view()).unwrap();
    let (x_pert, _) = model.forward_and_log_det(z.view()).unwrap();
    assert!(
        max_rel_diff(&x_fresh, &x_pert) > 1e-3,
        "{}: perturbation left the flow unchanged",
        M::NAME
    );
    if layers.iter().any(|l| l.kind() == "coupling") {
        // Each coupling on its own is no longer the identity.
        for layer in layers.iter().filter(|l| l.kind() == "coupling") {
            let mut p = row(&z, 0);
            let mut scratch = vec![0.0; layer.point_scratch()];
            // Couplings act on ℝ^D: any point will do.
            for v in &mut p {
                *v = v.clamp(-2.0, 2.0);
            }
            let before = p.clone();
            layer.forward_point(&mut p, &mut scratch);
            assert_ne!(p, before, "{}: a coupling is still the identity", M::NAME);
        }
    }
}
case_tests!(fields_and_perturbation);

/// `inverse(forward(z)) ≈ z` and log-dets of opposite sign, batch (1000 rows) and point.
fn base_round_trip<M: Case>() {
    for seed in 0..3 {
        let model = M::perturbed(seed);
        let mut rng = rng(100 + seed);
        let z = base_points(&model, 1000, &mut rng);
        let (x, ld_f) = model.forward_and_log_det(z.view()).unwrap();
        assert!(
            x.iter().all(|v| v.is_finite()),
            "{}: non-finite forward",
            M::NAME
        );
        for (r, xr) in x.rows().into_iter().enumerate() {
            for (j, &v) in xr.iter().enumerate() {
                assert!(
                    Support::contains(M::support()[j], v),
                    "{}: x[{r}][{j}] = {v} outside {:?}",
                    M::NAME,
                    M::support()[j]
                );
            }
        }
        let (z_back, ld_i) = model.inverse_and_log_det(x.view()).unwrap();
        let err = max_rel_diff(&z_back, &z);
        assert!(
            err < TOL,
            "{} seed {seed}: batch round trip error {err:e}",
            M::NAME
        );
        for r in (0..1000).step_by(37) {
            let (xp, _) = model.fwd(&row(&z, r));
            let (zp, _) = model.inv(&xp);
            let err = max_rel_diff(&zp, &row(&z, r));
            assert!(
                err < TOL,
                "{}: point round trip error {err:e} at row {r}",
                M::NAME
            );
        }
        // Relative to the log-det's size: a sigmoid-ended flow maps some base points within
        // rounding of 0 or 1, and the inverse's conditioners then see inputs that differ in
        // the last bits (observed: 5e-10 absolute on log-dets of ~20).
        let worst = ld_f
            .iter()
            .zip(&ld_i)
            .map(|(f, i)| (f + i).abs() / (1.0 + f.abs()))
            .fold(0.0, f64::max);
        assert!(
            worst < 1e-10,
            "{}: forward + inverse log-det = {worst:e}",
            M::NAME
        );
    }
}
case_tests!(base_round_trip);

/// `forward(inverse(x)) ≈ x` for data points (images of fresh base points).
fn data_round_trip<M: Case>() {
    for seed in 0..3 {
        let model = M::perturbed(seed);
        let mut rng = rng(200 + seed);
        let x = data_points(&model, 1000, &mut rng);
        let z = model.inverse(x.view()).unwrap();
        let x_back = model.forward(z.view()).unwrap();
        let err = max_rel_diff(&x_back, &x);
        assert!(
            err < TOL,
            "{} seed {seed}: batch round trip error {err:e}",
            M::NAME
        );
        for r in (0..1000).step_by(41) {
            let (zp, _) = model.inv(&row(&x, r));
            let (xp, _) = model.fwd(&zp);
            let err = max_rel_diff(&xp, &row(&x, r));
            assert!(
                err < TOL,
                "{}: point round trip error {err:e} at row {r}",
                M::NAME
            );
        }
    }
}
case_tests!(data_round_trip);

/// Flows onto (0, 1)^D: `forward(inverse(x)) ≈ x` for x uniform in the whole support,
/// not only near the images of typical base points.
fn uniform_data_round_trip<M: Case>() {
    assert!(M::support().iter().all(|&s| s == Support::UnitInterval));
    let model = M::perturbed(3);
    let mut rng = rng(300);
    let d = model.dim();
    let x = Array2::from_shape_simple_fn((1000, d), || rng.random_range(1e-6..1.0 - 1e-6));
    let (z, ld) = model.inverse_and_log_det(x.view()).unwrap();
    assert!(z.iter().chain(&ld).all(|v| v.is_finite()));
    let x_back = model.forward(z.view()).unwrap();
    let err = max_rel_diff(&x_back, &x);
    assert!(err < TOL, "{}: round trip error {err:e}", M::NAME);
}

#[test]
fn uniform_data_round_trip_default_sigmoid() {
    uniform_data_round_trip::<DefaultSigmoid>();
}

#[test]
fn uniform_data_round_trip_uniform_base() {
    uniform_data_round_trip::<UniformBase>();
}

/// The catalogue covers every layer kind the DSL has.
#[test]
fn catalogue_covers_every_layer_kind() {
    let mut kinds = std::collections::BTreeSet::new();
    fn add<M: Case>(kinds: &mut std::collections::BTreeSet<&'static str>) {
        for l in M::perturbed(0).layers() {
            kinds.insert(l.kind());
        }
    }
    add::<ElementwiseReal>(&mut kinds);
    add::<Squash>(&mut kinds);
    add::<PositiveChain>(&mut kinds);
    add::<BoundedChain>(&mut kinds);
    add::<Permutations>(&mut kinds);
    add::<RealNvp>(&mut kinds);
    add::<DefaultSigmoid>(&mut kinds);
    add::<UniformBase>(&mut kinds);
    let all = [
        "affine",
        "shift",
        "scale",
        "sigmoid",
        "logit",
        "tanh",
        "atanh",
        "softplus",
        "exp",
        "log",
        "leaky_relu",
        "permute",
        "coupling",
    ];
    for k in all {
        assert!(kinds.contains(k), "no catalogue flow has a `{k}` layer");
    }
    assert_eq!(kinds.len(), all.len());
}
