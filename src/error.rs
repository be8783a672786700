//! The one error type of the public API.

use std::path::PathBuf;

/// Everything that can go wrong in qkernels. Bad input is always an `Err`, never a panic.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A shape, length, quantization parameter or option is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Valid, but not supported here (e.g. an ISA this CPU lacks).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Reading or writing a file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A model or data file is malformed (names the tensor or field at fault).
    #[error("format error: {0}")]
    Format(String),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shorthand for `Err(Error::InvalidArgument(format!(...)))`.
#[macro_export]
#[doc(hidden)]
macro_rules! invalid {
    ($($t:tt)*) => {
        Err($crate::Error::InvalidArgument(format!($($t)*)))
    };
}
