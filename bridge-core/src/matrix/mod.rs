//! The Matrix client side of the appservice (AS → homeserver): the [Client-Server API] called with the appservice's
//! token, acting as its users through the [Application Service API]'s identity assertion and timestamp massaging.
//!
//! [`MatrixClient`] holds the connection pool, the retry policy and the shared caches; an [`Intent`] is one user
//! acting through it. Errors say whether retrying can help ([`MatrixError::is_transient`]); requests are retried by
//! [`RetryPolicy`]; a [`RequestObserver`] lets the metrics record every attempt.
//!
//! [Client-Server API]: https://spec.matrix.org/v1.16/client-server-api/
//! [Application Service API]: https://spec.matrix.org/v1.16/application-service-api/#client-server-api-extensions

pub mod client;
pub mod error;
pub mod intent;
pub mod power_levels;
pub mod retry;
#[cfg(test)]
pub(crate) mod testing;

pub use self::{
    client::{MatrixClient, RequestObserver, Versions},
    error::{MatrixError, Result},
    intent::{CreateRoomOptions, Direction, EventContext, Intent, Member, Messages, MessagesQuery, Profile},
    power_levels::PowerLevels,
    retry::RetryPolicy,
};
