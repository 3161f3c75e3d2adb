//! The fused code the macro generates equals the unfused per-layer reference
//! (`flowgen::reference`) over `model.layers()`, on batches of 1000 rows (four 256-row
//! blocks, the last one partial), within 1e-12 in f64.

mod common;

use common::*;
use flowgen::ndarray::{Array2, ShapeBuilder, s};
use flowgen::reference;

const ROWS: usize = 1000;
const TOL: f64 = 1e-12;

fn fused_equals_reference<M: Case>() {
    for seed in 0..2 {
        let model = M::perturbed(seed);
        let layers = model.layers();
        let mut rng = rng(50 + seed);
        let z = base_points(&model, ROWS, &mut rng);

        let (x, ld) = model.forward_and_log_det(z.view()).unwrap();
        let (x_ref, ld_ref) = reference::forward_and_log_det(&layers, z.view());
        assert_eq!(x.dim(), (ROWS, model.dim()));
        let (ex, el) = (max_rel_diff(&x, &x_ref), max_rel_diff(&ld, &ld_ref));
        assert!(
            ex < TOL && el < TOL,
            "{} forward: values {ex:e}, log-dets {el:e}",
            M::NAME
        );

        let (zb, ldi) = model.inverse_and_log_det(x.view()).unwrap();
        let (z_ref, ldi_ref) = reference::inverse_and_log_det(&layers, x.view());
        let (ez, el) = (max_rel_diff(&zb, &z_ref), max_rel_diff(&ldi, &ldi_ref));
        assert!(
            ez < TOL && el < TOL,
            "{} inverse: values {ez:e}, log-dets {el:e}",
            M::NAME
        );

        // Row blocks are independent: the first 300 rows alone give the same results.
        let (x_head, ld_head) = model.forward_and_log_det(z.slice(s![..300, ..])).unwrap();
        assert!(max_rel_diff(&x_head, x.slice(s![..300, ..])) < TOL);
        assert!(max_rel_diff(&ld_head, ld.slice(s![..300])) < TOL);
    }
}
case_tests!(fused_equals_reference);

/// Column-major and strided inputs give the same results as row-major ones.
fn layout_does_not_matter<M: Case>() {
    let model = M::perturbed(7);
    let mut rng = rng(60);
    let z = base_points(&model, ROWS, &mut rng);
    let (x, ld) = model.forward_and_log_det(z.view()).unwrap();

    let mut fortran = Array2::<f64>::zeros((ROWS, model.dim()).f());
    fortran.assign(&z);
    let (xf, ldf) = model.forward_and_log_det(fortran.view()).unwrap();
    assert_eq!(xf, x, "{}: column-major input", M::NAME);
    assert_eq!(ldf, ld);

    // Every other row of a twice-as-long array.
    let mut tall = Array2::<f64>::zeros((2 * ROWS, model.dim()));
    tall.slice_mut(s![..;2, ..]).assign(&z);
    let (xs, lds) = model.forward_and_log_det(tall.slice(s![..;2, ..])).unwrap();
    assert_eq!(xs, x, "{}: strided input", M::NAME);
    assert_eq!(lds, ld);

    let lp = model.log_prob(x.view()).unwrap();
    let mut xf = Array2::<f64>::zeros((ROWS, model.dim()).f());
    xf.assign(&x);
    assert_eq!(
        model.log_prob(xf.view()).unwrap(),
        lp,
        "{}: log_prob column-major",
        M::NAME
    );
}
case_tests!(layout_does_not_matter);

/// `log_prob` (which has its own block loop) equals the reference: the reference inverse
/// plus the base log-density, on 1000 rows.
fn log_prob_equals_reference<M: Case>() {
    let model = M::perturbed(8);
    let layers = model.layers();
    let mut rng = rng(70);
    let x = data_points(&model, ROWS, &mut rng);
    let lp = model.log_prob(x.view()).unwrap();
    let (z, ld) = reference::inverse_and_log_det(&layers, x.view());
    for r in 0..ROWS {
        let zr = z.row(r).to_vec();
        let expected = flowgen::BaseDistribution::<f64>::log_prob_point(model.base(), &zr) + ld[r];
        assert!(
            close(lp[r], expected, TOL),
            "{} row {r}: {} vs {expected}",
            M::NAME,
            lp[r]
        );
    }
}
case_tests!(log_prob_equals_reference);
