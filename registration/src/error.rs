//! Errors raised while reading, writing or validating a registration file.

use std::{io, path::PathBuf};

/// A registration file could not be read, parsed, validated or written.
///
/// Every variant names the file; `Display` starts with it, followed by the line and column or the
/// field where that is known, so the message can be shown to an operator as is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file (or its directory, when writing) could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file that was being read or written.
        path: PathBuf,
        /// The operating-system error.
        #[source]
        source: io::Error,
    },

    /// The file is not a YAML registration document.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse {
        /// The file being parsed.
        path: PathBuf,
        /// 1-based line of the problem (1 when the YAML parser gave no position).
        line: usize,
        /// 1-based column of the problem (1 when the YAML parser gave no position).
        column: usize,
        /// What is wrong, starting with the field path when known.
        message: String,
    },

    /// The document parsed, but a field holds a value the homeserver or the bridge would reject.
    #[error("{}: field {field}: {message}", path.display())]
    Invalid {
        /// The file being validated.
        path: PathBuf,
        /// Dotted path of the offending field, e.g. `namespaces.users[1].regex`.
        field: String,
        /// What is wrong and what is expected instead.
        message: String,
    },

    /// The registration could not be serialized to YAML.
    #[error("{}: cannot serialize the registration as YAML: {source}", path.display())]
    Serialize {
        /// The file that was about to be written.
        path: PathBuf,
        /// The serializer's error.
        #[source]
        source: serde_yaml::Error,
    },
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
