//! Supports: the set of values one coordinate can take at some point of a flow.

/// The support of one coordinate. The `flow!` macro tracks it from the base through the
/// chain; a generated flow exposes its final support as `SUPPORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Support {
    /// The whole real line.
    Real,
    /// The open unit interval (0, 1).
    UnitInterval,
    /// The open interval (−1, 1).
    Symmetric,
    /// The positive half-line (0, ∞).
    Positive,
}

impl Support {
    /// Whether `x` lies in this support.
    #[inline]
    pub fn contains(self, x: f64) -> bool {
        match self {
            Support::Real => x.is_finite(),
            Support::UnitInterval => x > 0.0 && x < 1.0,
            Support::Symmetric => x > -1.0 && x < 1.0,
            Support::Positive => x > 0.0 && x.is_finite(),
        }
    }
}
