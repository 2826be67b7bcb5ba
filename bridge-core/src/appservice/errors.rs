//! Matrix-style error responses: `{"errcode": "M_…", "error": "…"}` with the matching HTTP status.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};

/// A Matrix error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The Matrix error code, e.g. `M_FORBIDDEN`.
    pub errcode: String,
    /// A human-readable explanation.
    pub error: String,
}

/// A status with a Matrix error body.
pub(crate) fn matrix_error(status: StatusCode, errcode: &str, error: impl Into<String>) -> Response {
    (status, Json(ErrorBody { errcode: errcode.into(), error: error.into() })).into_response()
}

pub(super) async fn not_found() -> Response {
    matrix_error(StatusCode::NOT_FOUND, "M_UNRECOGNIZED", "Unrecognized request")
}

pub(super) async fn method_not_allowed() -> Response {
    matrix_error(StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED", "Unrecognized request method")
}

/// An internal failure: the homeserver should retry later.
pub(crate) fn internal(error: impl std::fmt::Display) -> Response {
    tracing::error!(%error, "appservice request failed");
    matrix_error(StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN", error.to_string())
}
