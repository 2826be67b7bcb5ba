//! The runtime's error type.

use crate::{connector::ConnectorError, matrix::MatrixError, store};

/// Errors from the bridge runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The homeserver refused a request or could not be reached.
    #[error("homeserver: {0}")]
    Matrix(#[from] MatrixError),
    /// The connector failed.
    #[error("connector: {0}")]
    Connector(#[from] ConnectorError),
    /// The registration file is missing or invalid.
    #[error(transparent)]
    Registration(#[from] lattice_registration::Error),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] lattice_config::ConfigError),
    /// A secret named in the configuration (an environment variable, a file) cannot be read.
    #[error(transparent)]
    Secret(#[from] lattice_config::SecretError),
    /// A permission pattern in the configuration is invalid.
    #[error("permissions: {0}")]
    Permissions(#[from] lattice_config::FieldError),
    /// A Matrix identifier is malformed.
    #[error("invalid {kind} `{value}`")]
    InvalidId {
        /// What it should have been: `user ID`, `room ID`, …
        kind: &'static str,
        /// The offending value.
        value: String,
    },
    /// A JSON value could not be encoded or decoded.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Binding or serving the appservice listener failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// What the system said.
        source: std::io::Error,
    },
}

impl Error {
    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store(error) => error.is_transient(),
            Self::Matrix(error) => error.is_transient(),
            Self::Connector(error) => error.is_transient(),
            _ => false,
        }
    }

    /// How long to wait before retrying, when the failure said.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Matrix(error) => error.retry_after(),
            Self::Connector(ConnectorError::Transient { retry_after, .. }) => *retry_after,
            _ => None,
        }
    }
}

/// The runtime's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Parses a Matrix identifier into its ruma type, naming the kind in the error.
pub(crate) fn parse_id<T>(kind: &'static str, value: &str) -> Result<T>
where
    T: TryFrom<String>,
{
    T::try_from(value.to_owned()).map_err(|_| Error::InvalidId { kind, value: value.to_owned() })
}
