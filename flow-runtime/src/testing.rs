//! Helpers for checking flows numerically: the finite-difference Jacobian and its
//! log-determinant by LU decomposition, in f64. Used by flowgen's own tests and
//! available to users who write layers or want to check a model.

/// The Jacobian `J[i][j] = ∂f_i/∂x_j` at `x` by central differences with step `h`.
pub fn jacobian_fd(f: impl Fn(&[f64]) -> Vec<f64>, x: &[f64], h: f64) -> Vec<Vec<f64>> {
    let n = x.len();
    let mut jac = vec![vec![0.0; n]; n];
    let mut xp = x.to_vec();
    for j in 0..n {
        let step = h * x[j].abs().max(1.0);
        xp[j] = x[j] + step;
        let up = f(&xp);
        xp[j] = x[j] - step;
        let down = f(&xp);
        xp[j] = x[j];
        for i in 0..n {
            jac[i][j] = (up[i] - down[i]) / (2.0 * step);
        }
    }
    jac
}

/// `log|det A|` by LU decomposition with partial pivoting; `-inf` for a singular matrix.
pub fn log_abs_det(a: &[Vec<f64>]) -> f64 {
    let n = a.len();
    let mut m: Vec<Vec<f64>> = a.to_vec();
    let mut log_det = 0.0;
    for k in 0..n {
        let pivot = (k..n)
            .max_by(|&r, &s| m[r][k].abs().total_cmp(&m[s][k].abs()))
            .expect("non-empty range");
        if m[pivot][k] == 0.0 {
            return f64::NEG_INFINITY;
        }
        m.swap(k, pivot);
        log_det += m[k][k].abs().ln();
        let (top, bottom) = m.split_at_mut(k + 1);
        let pivot_row = &top[k];
        for row in bottom {
            let factor = row[k] / pivot_row[k];
            for (x, &p) in row[k..].iter_mut().zip(&pivot_row[k..]) {
                *x -= factor * p;
            }
        }
    }
    log_det
}

/// `log|det ∂f/∂x|` at `x` by central finite differences and LU.
pub fn log_abs_det_fd(f: impl Fn(&[f64]) -> Vec<f64>, x: &[f64]) -> f64 {
    log_abs_det(&jacobian_fd(f, x, 1e-6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_abs_det_of_a_known_matrix() {
        // det [[2, 1], [4, 3]] = 2, and a row swap must not change |det|.
        let a = vec![vec![2.0, 1.0], vec![4.0, 3.0]];
        assert!((log_abs_det(&a) - 2f64.ln()).abs() < 1e-12);
        let singular = vec![vec![1.0, 2.0], vec![2.0, 4.0]];
        assert_eq!(log_abs_det(&singular), f64::NEG_INFINITY);
    }

    #[test]
    fn fd_jacobian_of_a_linear_map_is_exact() {
        let f = |x: &[f64]| vec![3.0 * x[0] + x[1], -x[0] + 2.0 * x[1]];
        let jac = jacobian_fd(f, &[0.3, -0.7], 1e-6);
        let expected = [[3.0, 1.0], [-1.0, 2.0]];
        for i in 0..2 {
            for j in 0..2 {
                assert!((jac[i][j] - expected[i][j]).abs() < 1e-8);
            }
        }
        assert!((log_abs_det_fd(f, &[0.3, -0.7]) - 7f64.ln()).abs() < 1e-8);
    }
}
