//! The one error type of flowgen.

use std::fmt;

/// Everything that can go wrong when a flow is evaluated, trained, saved or loaded.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum FlowError {
    /// The batch has the wrong number of columns.
    WrongDim {
        /// The flow's dimension.
        expected: usize,
        /// The number of columns given.
        found: usize,
    },
    /// An input value is NaN or infinite.
    NonFinite {
        /// Row of the first bad value.
        row: usize,
        /// Column of the first bad value.
        col: usize,
        /// The value itself.
        value: f64,
    },
    /// A buffer passed alongside a batch has the wrong length.
    WrongLength {
        /// What the buffer is.
        what: &'static str,
        /// The length it must have.
        expected: usize,
        /// The length it has.
        found: usize,
    },
    /// A file could not be read or written.
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// What failed, and the operating system's reason.
        message: String,
    },
    /// Bytes that are not a valid flowgen parameter file (not safetensors, truncated,
    /// corrupt, or without flowgen's metadata).
    Format {
        /// What is wrong with them.
        message: String,
    },
    /// A parameter file that does not fit the flow it is loaded into: another
    /// architecture, or a tensor missing, extra, or of the wrong shape or dtype.
    Mismatch {
        /// What differs, naming the tensor or setting.
        message: String,
    },
    /// Training options or data that `fit` cannot work with.
    InvalidOptions {
        /// Which option or input, and why.
        message: String,
    },
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlowError::WrongDim { expected, found } => write!(
                f,
                "wrong number of columns: the flow has dim = {expected}, the batch has {found} columns"
            ),
            FlowError::NonFinite { row, col, value } => write!(
                f,
                "non-finite input {value} at row {row}, column {col}: flows take finite values only"
            ),
            FlowError::WrongLength {
                what,
                expected,
                found,
            } => {
                write!(f, "{what} has length {found}, expected {expected}")
            }
            FlowError::Io { path, message } => write!(f, "{}: {message}", path.display()),
            FlowError::Format { message } => write!(f, "{message}"),
            FlowError::Mismatch { message } => {
                write!(f, "the parameter file does not fit this flow: {message}")
            }
            FlowError::InvalidOptions { message } => write!(f, "invalid training setup: {message}"),
        }
    }
}

impl std::error::Error for FlowError {}
