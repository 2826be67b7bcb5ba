//! What can go wrong in a connector, classified the way the runtime acts on it: retry later (transient) or set the
//! event aside and tell its sender (permanent).

use std::time::Duration;

/// A connector's failure to handle something.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectorError {
    /// Worth retrying later: the network is unreachable, a connection is being re-established, a rate limit applies.
    /// The runtime retries with backoff, honouring `retry_after`, and keeps every later event of the portal waiting
    /// so order is never broken.
    #[error("temporarily unable: {message}")]
    Transient {
        /// What went wrong, for logs.
        message: String,
        /// When to try again, if the network said.
        retry_after: Option<Duration>,
    },
    /// Will never succeed: the event is set aside (dead-lettered) and the sender is told why.
    #[error("{message}")]
    Permanent {
        /// What went wrong, in words the Matrix sender can act on.
        message: String,
    },
}

impl ConnectorError {
    /// A transient error without a retry hint.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient { message: message.into(), retry_after: None }
    }

    /// A permanent error.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent { message: message.into() }
    }

    /// Whether retrying may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }
}

impl From<crate::store::Error> for ConnectorError {
    fn from(error: crate::store::Error) -> Self {
        if error.is_transient() { Self::transient(error.to_string()) } else { Self::permanent(error.to_string()) }
    }
}

impl From<crate::matrix::MatrixError> for ConnectorError {
    fn from(error: crate::matrix::MatrixError) -> Self {
        match (error.is_transient(), error.retry_after()) {
            (true, retry_after) => Self::Transient { message: error.to_string(), retry_after },
            (false, _) => Self::permanent(error.to_string()),
        }
    }
}

/// The connector's result type.
pub type ConnectorResult<T> = Result<T, ConnectorError>;

impl From<crate::Error> for ConnectorError {
    /// A runtime error met while handling an event (publishing media, syncing a ghost), transient or not as the
    /// runtime says.
    fn from(error: crate::Error) -> Self {
        if error.is_transient() {
            Self::Transient { message: error.to_string(), retry_after: error.retry_after() }
        } else {
            Self::permanent(error.to_string())
        }
    }
}
