//! Errors of the Matrix client, and whether retrying can help.
//!
//! The homeserver answers a failed request with a [standard error response] — `{"errcode": "M_…", "error": "…"}` —
//! and, when it rate-limits us, `M_LIMIT_EXCEEDED` with `retry_after_ms` in the body and/or a `Retry-After` header.
//! [`MatrixError::is_transient`] turns that into the one decision the rest of the bridge needs: try again later, or
//! give up and tell someone.
//!
//! [standard error response]: https://spec.matrix.org/v1.16/client-server-api/#standard-error-response

use std::time::Duration;

use serde::Deserialize;

/// `Result` with [`MatrixError`] as the default error.
pub type Result<T, E = MatrixError> = std::result::Result<T, E>;

/// The `errcode` used when the homeserver (or a proxy in front of it) answers without a Matrix error body.
const UNKNOWN_ERRCODE: &str = "M_UNKNOWN";

/// At most this many bytes of a non-JSON error body are kept as the message.
const MAX_MESSAGE_CHARS: usize = 256;

/// A request to the homeserver failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MatrixError {
    /// The homeserver answered with an error status.
    #[error("homeserver answered {status} {errcode}: {message}")]
    Api {
        /// HTTP status code.
        status: u16,
        /// The Matrix `errcode`, e.g. `M_FORBIDDEN`; `M_UNKNOWN` when the body was not a Matrix error.
        errcode: String,
        /// The human-readable `error`, or the start of the body when it was not a Matrix error.
        message: String,
        /// How long the homeserver asked us to wait, from `retry_after_ms` or the `Retry-After` header.
        retry_after: Option<Duration>,
    },
    /// The request did not complete: connection refused or reset, DNS failure, timeout.
    #[error("request to the homeserver failed: {0}")]
    Transport(#[from] reqwest::Error),
    /// The homeserver answered success with a body we could not decode.
    #[error("could not decode the homeserver's answer to `{endpoint}`: {source}")]
    Decode {
        /// The endpoint label, e.g. `send`.
        endpoint: &'static str,
        /// What serde found wrong.
        source: serde_json::Error,
    },
    /// The homeserver answered success, but the answer is unusable (too large, malformed ID, …).
    #[error("invalid answer from the homeserver to `{endpoint}`: {reason}")]
    InvalidResponse {
        /// The endpoint label, e.g. `upload`.
        endpoint: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The caller passed something the request cannot be built from; nothing was sent.
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// What was invalid, e.g. `homeserver URL`.
        what: &'static str,
        /// Why, and what to do about it.
        reason: String,
    },
}

/// The body of a Matrix error response; unknown fields are ignored.
#[derive(Deserialize)]
struct ErrorBody {
    errcode: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    retry_after_ms: Option<u64>,
}

impl MatrixError {
    /// Builds the error for a non-success response from its status, `Retry-After` header and body.
    ///
    /// A body that is not a Matrix error (an HTML page from a reverse proxy, say) becomes `M_UNKNOWN` with the start
    /// of the body as the message. `retry_after_ms` in the body wins over the header, which only has whole seconds;
    /// the header's HTTP-date form is not understood and ignored.
    pub fn from_response(status: u16, retry_after_header: Option<&str>, body: &[u8]) -> Self {
        let header_delay =
            retry_after_header.and_then(|value| value.trim().parse::<u64>().ok()).map(Duration::from_secs);
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(parsed) => Self::Api {
                status,
                errcode: parsed.errcode,
                message: parsed.error.unwrap_or_default(),
                retry_after: parsed.retry_after_ms.map(Duration::from_millis).or(header_delay),
            },
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                let message = if text.is_empty() {
                    reqwest::StatusCode::from_u16(status)
                        .ok()
                        .and_then(|s| s.canonical_reason())
                        .unwrap_or("no body")
                        .to_owned()
                } else {
                    text.chars().take(MAX_MESSAGE_CHARS).collect()
                };
                Self::Api { status, errcode: UNKNOWN_ERRCODE.to_owned(), message, retry_after: header_delay }
            }
        }
    }

    /// Whether trying the same request again later can succeed.
    ///
    /// Transient: `M_LIMIT_EXCEEDED`, 429, 408, 5xx other than 501, and transport failures (refused, reset, timed
    /// out). Permanent: everything else, notably `M_FORBIDDEN`, `M_UNKNOWN_TOKEN`, `M_NOT_FOUND`, `M_EXCLUSIVE`, other
    /// 4xx, 501 Not Implemented, bodies we cannot decode and invalid input.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Api { status, errcode, .. } => {
                errcode == "M_LIMIT_EXCEEDED" || matches!(status, 408 | 429) || (*status >= 500 && *status != 501)
            }
            // A builder error is our bug and a redirect loop will loop again; the rest is the network.
            Self::Transport(err) => !(err.is_builder() || err.is_redirect()),
            Self::Decode { .. } | Self::InvalidResponse { .. } | Self::InvalidInput { .. } => false,
        }
    }

    /// How long the homeserver asked us to wait before retrying, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The Matrix `errcode` (`M_FORBIDDEN`, …) of an [`Api`](Self::Api) error.
    pub fn errcode(&self) -> Option<&str> {
        match self {
            Self::Api { errcode, .. } => Some(errcode),
            _ => None,
        }
    }

    /// The HTTP status of an [`Api`](Self::Api) error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether this is an [`Api`](Self::Api) error with the given `errcode`.
    pub fn is_errcode(&self, errcode: &str) -> bool {
        self.errcode() == Some(errcode)
    }

    /// Whether the homeserver did not find the thing asked for (`M_NOT_FOUND`).
    ///
    /// A bare 404 without that `errcode` is not "not found": `M_UNRECOGNIZED` means the homeserver does not know the
    /// endpoint, and a proxy's 404 page means the homeserver URL is wrong — both are errors to report.
    pub fn is_not_found(&self) -> bool {
        self.is_errcode("M_NOT_FOUND")
    }

    /// Whether the homeserver does not know the endpoint at all: `M_UNRECOGNIZED` (404 or 405, as the spec says for
    /// an unknown endpoint or method). A homeserver older than the spec version that brought the endpoint answers
    /// so; the caller falls back or says what the operator must do.
    pub fn is_unrecognized_endpoint(&self) -> bool {
        matches!(self, Self::Api { status: 404 | 405, errcode, .. } if errcode == "M_UNRECOGNIZED")
    }

    /// Whether the failure shows the homeserver did not act on the request, so that even a request that is not
    /// idempotent (creating a room) can be sent again: the connection was never made, or we were rate-limited.
    pub(crate) fn request_not_processed(&self) -> bool {
        match self {
            Self::Transport(err) => err.is_connect(),
            Self::Api { status, errcode, .. } => *status == 429 || errcode == "M_LIMIT_EXCEEDED",
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_of_real_shaped_error_bodies() {
        // (status, Retry-After header, body, errcode, transient, retry_after)
        type Case = (u16, Option<&'static str>, &'static str, &'static str, bool, Option<Duration>);
        let cases: &[Case] = &[
            (
                429,
                None,
                r#"{"errcode":"M_LIMIT_EXCEEDED","error":"Too many requests","retry_after_ms":2000}"#,
                "M_LIMIT_EXCEEDED",
                true,
                Some(Duration::from_millis(2000)),
            ),
            (
                429,
                Some("3"),
                r#"{"errcode":"M_LIMIT_EXCEEDED","error":"Too many requests"}"#,
                "M_LIMIT_EXCEEDED",
                true,
                Some(Duration::from_secs(3)),
            ),
            // The body's milliseconds win over the header's whole seconds.
            (
                429,
                Some("2"),
                r#"{"errcode":"M_LIMIT_EXCEEDED","error":"Too many requests","retry_after_ms":1500}"#,
                "M_LIMIT_EXCEEDED",
                true,
                Some(Duration::from_millis(1500)),
            ),
            // An HTTP-date Retry-After is not understood.
            (
                429,
                Some("Wed, 21 Oct 2015 07:28:00 GMT"),
                r#"{"errcode":"M_LIMIT_EXCEEDED"}"#,
                "M_LIMIT_EXCEEDED",
                true,
                None,
            ),
            (
                403,
                None,
                r#"{"errcode":"M_FORBIDDEN","error":"User @_irc_bob:localhost not in room !abc:localhost"}"#,
                "M_FORBIDDEN",
                false,
                None,
            ),
            (
                401,
                None,
                r#"{"errcode":"M_UNKNOWN_TOKEN","error":"Unrecognised access token","soft_logout":false}"#,
                "M_UNKNOWN_TOKEN",
                false,
                None,
            ),
            (
                404,
                None,
                r#"{"errcode":"M_NOT_FOUND","error":"Room alias #x:localhost not found"}"#,
                "M_NOT_FOUND",
                false,
                None,
            ),
            (
                400,
                None,
                r#"{"errcode":"M_USER_IN_USE","error":"User ID already taken."}"#,
                "M_USER_IN_USE",
                false,
                None,
            ),
            (
                400,
                None,
                r#"{"errcode":"M_EXCLUSIVE","error":"Invalid user localpart for this application service."}"#,
                "M_EXCLUSIVE",
                false,
                None,
            ),
            (
                403,
                None,
                r#"{"errcode":"M_RESOURCE_LIMIT_EXCEEDED","error":"MAU limit","limit_type":"monthly_active_user"}"#,
                "M_RESOURCE_LIMIT_EXCEEDED",
                false,
                None,
            ),
            (500, None, r#"{"errcode":"M_UNKNOWN","error":"Internal server error"}"#, "M_UNKNOWN", true, None),
            (
                502,
                None,
                r#"{"errcode":"M_CONNECTION_FAILED","error":"Connection refused"}"#,
                "M_CONNECTION_FAILED",
                true,
                None,
            ),
            (
                503,
                Some("5"),
                "<html><body>503 Service Unavailable</body></html>",
                "M_UNKNOWN",
                true,
                Some(Duration::from_secs(5)),
            ),
            (504, None, "", "M_UNKNOWN", true, None),
            (
                501,
                None,
                r#"{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}"#,
                "M_UNRECOGNIZED",
                false,
                None,
            ),
            (
                405,
                None,
                r#"{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}"#,
                "M_UNRECOGNIZED",
                false,
                None,
            ),
            (408, None, "", "M_UNKNOWN", true, None),
            (
                413,
                None,
                r#"{"errcode":"M_TOO_LARGE","error":"Upload request body is too large"}"#,
                "M_TOO_LARGE",
                false,
                None,
            ),
        ];
        for &(status, header, body, errcode, transient, retry_after) in cases {
            let err = MatrixError::from_response(status, header, body.as_bytes());
            assert_eq!(err.errcode(), Some(errcode), "{status} {body}");
            assert_eq!(err.status(), Some(status), "{status} {body}");
            assert_eq!(err.is_transient(), transient, "{status} {body}");
            assert_eq!(err.retry_after(), retry_after, "{status} {body}");
        }
    }

    #[test]
    fn messages_come_from_the_body() {
        let err = MatrixError::from_response(403, None, br#"{"errcode":"M_FORBIDDEN","error":"You are not invited"}"#);
        assert_eq!(err.to_string(), "homeserver answered 403 M_FORBIDDEN: You are not invited");

        let err = MatrixError::from_response(502, None, b"");
        assert_eq!(err.to_string(), "homeserver answered 502 M_UNKNOWN: Bad Gateway");

        let long = "x".repeat(10_000);
        let MatrixError::Api { message, .. } = MatrixError::from_response(502, None, long.as_bytes()) else {
            panic!("expected an Api error");
        };
        assert_eq!(message.len(), MAX_MESSAGE_CHARS);
    }

    #[test]
    fn only_unprocessed_requests_may_be_resent_blindly() {
        let limited = MatrixError::from_response(429, None, br#"{"errcode":"M_LIMIT_EXCEEDED"}"#);
        assert!(limited.request_not_processed());
        let server_error = MatrixError::from_response(500, None, br#"{"errcode":"M_UNKNOWN"}"#);
        assert!(server_error.is_transient());
        assert!(!server_error.request_not_processed());
    }

    #[test]
    fn local_errors_are_permanent() {
        let err = MatrixError::InvalidInput { what: "user ID", reason: "not on this server".into() };
        assert!(!err.is_transient());
        assert_eq!(err.errcode(), None);
        let source = serde_json::from_str::<u32>("\"x\"").unwrap_err();
        assert!(!MatrixError::Decode { endpoint: "send", source }.is_transient());
    }

    #[test]
    fn not_found_is_recognised() {
        assert!(MatrixError::from_response(404, None, br#"{"errcode":"M_NOT_FOUND"}"#).is_not_found());
        assert!(!MatrixError::from_response(404, None, b"Not Found").is_not_found());
        assert!(!MatrixError::from_response(404, None, br#"{"errcode":"M_UNRECOGNIZED"}"#).is_not_found());
        assert!(!MatrixError::from_response(403, None, br#"{"errcode":"M_FORBIDDEN"}"#).is_not_found());
    }

    #[tokio::test]
    async fn transport_failures_are_transient_and_builder_errors_are_not() {
        // A port nobody listens on: bind, note the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let refused = reqwest::Client::new().get(format!("http://127.0.0.1:{port}/")).send().await.unwrap_err();
        let refused = MatrixError::from(refused);
        assert!(refused.is_transient());
        assert!(refused.request_not_processed());
        assert_eq!(refused.status(), None);

        let builder = reqwest::Client::new().get("not a url").send().await.unwrap_err();
        assert!(!MatrixError::from(builder).is_transient());
    }
}
