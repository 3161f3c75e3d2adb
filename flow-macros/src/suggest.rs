//! "Did you mean …?" for unknown names: the closest candidate by edit distance.

/// Words from other libraries and papers, and what flowgen calls them.
const SYNONYMS: &[(&str, &str)] = &[
    ("gaussian", "normal"),
    ("standard_normal", "normal"),
    ("diag_normal", "normal"),
    ("float32", "f32"),
    ("float64", "f64"),
    ("double", "f64"),
    ("reversed", "reverse"),
    ("flip", "reverse"),
    ("leakyrelu", "leaky_relu"),
    ("prelu", "leaky_relu"),
    ("realnvp", "coupling"),
    ("affine_coupling", "coupling"),
    ("sigmoid_inverse", "logit"),
    ("checkerboard", "even"),
    ("swish", "silu"),
    ("translate", "shift"),
    ("loc", "shift"),
];

/// The candidate closest to `word`, if it is close enough to be a likely typo (or a
/// known synonym).
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let candidates: Vec<&'a str> = candidates.into_iter().collect();
    let lower = word.to_lowercase();
    if let Some(&(_, target)) = SYNONYMS.iter().find(|(from, _)| *from == lower)
        && let Some(found) = candidates.iter().find(|c| **c == target)
    {
        return Some(found);
    }
    let limit = (word.chars().count() / 3).max(1) + usize::from(word.len() > 6);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|&(d, c)| {
            d <= limit || (word.len() >= 3 && (c.starts_with(word) || word.starts_with(c)))
        })
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// " (did you mean `x`?)" or "".
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(word, candidates).map_or_else(String::new, |c| format!("; did you mean `{c}`?"))
}

/// Levenshtein distance, with a transposition counting as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_typos() {
        let names = ["affine", "coupling", "sigmoid", "softplus", "permute"];
        assert_eq!(closest("afine", names), Some("affine"));
        assert_eq!(closest("cuopling", names), Some("coupling"));
        assert_eq!(closest("sigmiod", names), Some("sigmoid"));
        assert_eq!(closest("softpuls", names), Some("softplus"));
        assert_eq!(closest("zebra", names), None);
        assert_eq!(closest("realnvp", names), Some("coupling"));
        assert_eq!(closest("gaussian", ["normal", "uniform"]), Some("normal"));
    }

    #[test]
    fn formats_the_hint() {
        assert_eq!(
            did_you_mean("evn", ["even", "odd"]),
            "; did you mean `even`?"
        );
        assert_eq!(did_you_mean("xyz", ["even", "odd"]), "");
    }
}
