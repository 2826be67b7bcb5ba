//! One request to the homeserver as the endpoint methods build it: method, percent-encoded path below the base URL
//! (which may carry a path prefix), query with the [identity assertion] (`?user_id=`) and [timestamp massaging]
//! (`?ts=`) parameters, body, and whether it may be sent again.
//!
//! [identity assertion]: https://spec.matrix.org/v1.16/application-service-api/#identity-assertion
//! [timestamp massaging]: https://spec.matrix.org/v1.16/application-service-api/#timestamp-massaging

use std::borrow::Cow;

use bytes::Bytes;
use reqwest::Method;
use ruma::{MilliSecondsSinceUnixEpoch, UserId};
use serde::Serialize;
use url::Url;

use super::MAX_JSON_BODY;
use crate::matrix::error::{MatrixError, Result};

/// Whether a failed request may be sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::matrix) enum Retry {
    /// Sending it twice has the same effect as once (a `PUT` with a transaction ID, a join): retry transient errors.
    Idempotent,
    /// Sending it twice would act twice (creating a room): retry only when the homeserver certainly did not act.
    NotIdempotent,
    /// Send once; the caller decides.
    Never,
}

/// The body of a request; cheap to clone for each attempt.
#[derive(Clone, Debug)]
pub(in crate::matrix) enum Body {
    Empty,
    Json(Bytes),
    Raw { bytes: Bytes, content_type: String },
}

/// Everything needed to send one request to the homeserver, built by the endpoint methods.
#[derive(Debug)]
pub(in crate::matrix) struct Request<'a> {
    pub(super) method: Method,
    /// The low-cardinality metric label.
    pub(super) endpoint: &'static str,
    /// Unencoded path segments, e.g. `["_matrix", "client", "v3", "join", "!room:example.org"]`.
    pub(super) path: &'a [&'a str],
    pub(super) query: Vec<(&'static str, String)>,
    /// Identity assertion: act as this user.
    pub(super) user_id: Option<&'a UserId>,
    /// Timestamp massaging: the event's origin_server_ts.
    pub(super) ts: Option<MilliSecondsSinceUnixEpoch>,
    pub(super) body: Body,
    pub(super) retry: Retry,
    pub(super) max_body: usize,
}

impl<'a> Request<'a> {
    fn new(method: Method, endpoint: &'static str, path: &'a [&'a str]) -> Self {
        Self {
            method,
            endpoint,
            path,
            query: Vec::new(),
            user_id: None,
            ts: None,
            body: Body::Empty,
            retry: Retry::Idempotent,
            max_body: MAX_JSON_BODY,
        }
    }

    pub(in crate::matrix) fn get(endpoint: &'static str, path: &'a [&'a str]) -> Self {
        Self::new(Method::GET, endpoint, path)
    }

    pub(in crate::matrix) fn post(endpoint: &'static str, path: &'a [&'a str]) -> Self {
        Self::new(Method::POST, endpoint, path)
    }

    pub(in crate::matrix) fn put(endpoint: &'static str, path: &'a [&'a str]) -> Self {
        Self::new(Method::PUT, endpoint, path)
    }

    pub(in crate::matrix) fn query(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.query.push((key, value.into()));
        self
    }

    /// Acts as `user_id` through identity assertion (`None`: as the appservice's own user).
    pub(in crate::matrix) fn user_id(mut self, user_id: Option<&'a UserId>) -> Self {
        self.user_id = user_id;
        self
    }

    /// Sets the event's timestamp (only honoured on the send and state endpoints).
    pub(in crate::matrix) fn ts(mut self, ts: Option<MilliSecondsSinceUnixEpoch>) -> Self {
        self.ts = ts;
        self
    }

    pub(in crate::matrix) fn json(mut self, body: &impl Serialize) -> Result<Self> {
        let bytes = serde_json::to_vec(body).map_err(|err| MatrixError::InvalidInput {
            what: "request body",
            reason: format!("it cannot be serialised as JSON: {err}"),
        })?;
        self.body = Body::Json(bytes.into());
        Ok(self)
    }

    pub(in crate::matrix) fn raw(mut self, bytes: Bytes, content_type: &str) -> Self {
        self.body = Body::Raw { bytes, content_type: content_type.to_owned() };
        self
    }

    pub(in crate::matrix) fn not_idempotent(mut self) -> Self {
        self.retry = Retry::NotIdempotent;
        self
    }

    pub(in crate::matrix) fn no_retry(mut self) -> Self {
        self.retry = Retry::Never;
        self
    }

    pub(in crate::matrix) fn max_body(mut self, max_body: usize) -> Self {
        self.max_body = max_body;
        self
    }
}

/// The full URL of `request` below the homeserver's base URL (which may have a path prefix).
pub(super) fn build_url(base: &Url, request: &Request<'_>) -> Result<Url> {
    let mut path = base.path().trim_end_matches('/').to_owned();
    for segment in request.path {
        // URL parsers drop `.` and `..` segments, even percent-encoded: no encoding can send them.
        if matches!(*segment, "." | "..") {
            return Err(MatrixError::InvalidInput {
                what: "path segment",
                reason: format!("`{segment}` cannot be sent in a URL path ({} request)", request.endpoint),
            });
        }
        path.push('/');
        path.push_str(&encode_path_segment(segment));
    }
    let mut url = base.clone();
    url.set_path(&path);
    url.set_query(None);
    {
        let mut pairs = url.query_pairs_mut();
        for (key, value) in &request.query {
            pairs.append_pair(key, value);
        }
        if let Some(user_id) = request.user_id {
            pairs.append_pair("user_id", user_id.as_str());
        }
        if let Some(ts) = request.ts {
            pairs.append_pair("ts", &ts.get().to_string());
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    Ok(url)
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so `!`, `#`, `:`, `@`, `/`, `?` and `%` in IDs,
/// event types and transaction IDs stay inside their segment.
fn encode_path_segment(segment: &str) -> Cow<'_, str> {
    fn unreserved(byte: u8) -> bool {
        byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
    }
    if segment.bytes().all(unreserved) {
        return Cow::Borrowed(segment);
    }
    let mut encoded = String::with_capacity(segment.len() * 3);
    for byte in segment.bytes() {
        if unreserved(byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    Cow::Owned(encoded)
}

#[cfg(test)]
mod tests {
    use ruma::{UInt, user_id};
    use serde_json::json;

    use super::*;

    fn base() -> Url {
        Url::parse("http://127.0.0.1:8008").unwrap()
    }

    fn url(request: &Request<'_>) -> String {
        build_url(&base(), request).unwrap().to_string()
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        // (segment, encoded)
        let cases = [
            ("!abc:example.org", "%21abc%3Aexample.org"),
            ("#room:example.org", "%23room%3Aexample.org"),
            ("@u:example.org", "%40u%3Aexample.org"),
            ("$ev/ent+id=", "%24ev%2Fent%2Bid%3D"),
            ("m.room.message", "m.room.message"),
            ("org.example.custom_type~1", "org.example.custom_type~1"),
            ("lattice:/irc/#chan", "lattice%3A%2Firc%2F%23chan"),
            ("a b?c%d", "a%20b%3Fc%25d"),
            ("ünï", "%C3%BCn%C3%AF"),
            ("", ""),
        ];
        for (segment, encoded) in cases {
            assert_eq!(encode_path_segment(segment), encoded, "{segment}");
        }
    }

    #[test]
    fn urls_of_matrix_ids_are_built_correctly() {
        let room = "!abc:example.org";
        let path = ["_matrix", "client", "v3", "rooms", room, "send", "m.room.message", "lattice.1/2"];
        assert_eq!(
            url(&Request::put("send", &path)),
            "http://127.0.0.1:8008/_matrix/client/v3/rooms/%21abc%3Aexample.org/send/m.room.message/lattice.1%2F2"
        );

        let path = ["_matrix", "client", "v3", "directory", "room", "#room:example.org"];
        assert_eq!(
            url(&Request::get("resolve_alias", &path)),
            "http://127.0.0.1:8008/_matrix/client/v3/directory/room/%23room%3Aexample.org"
        );

        let path = ["_matrix", "client", "v3", "profile", "@u:example.org", "displayname"];
        assert_eq!(
            url(&Request::put("profile", &path)),
            "http://127.0.0.1:8008/_matrix/client/v3/profile/%40u%3Aexample.org/displayname"
        );

        // A room ID of room version 12 has no server part.
        let path = ["_matrix", "client", "v3", "join", "!Opaque+ID/abc"];
        assert_eq!(
            url(&Request::post("join", &path)),
            "http://127.0.0.1:8008/_matrix/client/v3/join/%21Opaque%2BID%2Fabc"
        );
    }

    #[test]
    fn an_empty_state_key_leaves_a_trailing_slash() {
        let path = ["_matrix", "client", "v3", "rooms", "!a:b", "state", "m.room.name", ""];
        assert_eq!(
            url(&Request::put("state", &path)),
            "http://127.0.0.1:8008/_matrix/client/v3/rooms/%21a%3Ab/state/m.room.name/"
        );
    }

    #[test]
    fn dot_segments_are_refused() {
        for segment in [".", ".."] {
            let path = ["_matrix", "client", "v3", "rooms", "!a:b", "state", "m.room.name", segment];
            let err = build_url(&base(), &Request::put("state", &path)).unwrap_err();
            assert!(matches!(err, MatrixError::InvalidInput { .. }), "{segment}");
        }
    }

    #[test]
    fn a_base_path_prefix_is_kept() {
        for base in ["https://matrix.example.org/synapse", "https://matrix.example.org/synapse/"] {
            let base = Url::parse(base).unwrap();
            let url = build_url(&base, &Request::get("versions", &["_matrix", "client", "versions"])).unwrap();
            assert_eq!(url.as_str(), "https://matrix.example.org/synapse/_matrix/client/versions");
        }
    }

    #[test]
    fn identity_assertion_and_timestamp_massaging_are_query_parameters() {
        let path = ["_matrix", "client", "v3", "rooms", "!abc:example.org", "send", "m.room.message", "t1"];
        let ts = MilliSecondsSinceUnixEpoch(UInt::new(1_700_000_000_123).unwrap());
        let request = Request::put("send", &path).user_id(Some(user_id!("@_irc_bob:example.org"))).ts(Some(ts));
        assert_eq!(
            url(&request),
            "http://127.0.0.1:8008/_matrix/client/v3/rooms/%21abc%3Aexample.org/send/m.room.message/t1\
             ?user_id=%40_irc_bob%3Aexample.org&ts=1700000000123"
        );
        let parsed = build_url(&base(), &request).unwrap();
        let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
        assert_eq!(
            pairs,
            [("user_id".to_owned(), "@_irc_bob:example.org".to_owned()), ("ts".to_owned(), "1700000000123".to_owned())]
        );
    }

    #[test]
    fn no_query_means_no_question_mark() {
        let url = build_url(&base(), &Request::get("versions", &["_matrix", "client", "versions"])).unwrap();
        assert_eq!(url.query(), None);
        assert!(!url.as_str().contains('?'));
    }

    #[test]
    fn other_query_parameters_are_form_encoded() {
        let path = ["_matrix", "media", "v3", "upload"];
        let request = Request::post("upload", &path).query("filename", "my cat & me.png");
        assert_eq!(url(&request), "http://127.0.0.1:8008/_matrix/media/v3/upload?filename=my+cat+%26+me.png");
    }

    #[test]
    fn json_bodies_are_serialised_once() {
        let request = Request::post("join", &[]).json(&json!({"reason": "bridged"})).unwrap();
        let Body::Json(bytes) = &request.body else { panic!("expected a JSON body") };
        assert_eq!(&bytes[..], br#"{"reason":"bridged"}"#);
        assert_eq!(request.retry, Retry::Idempotent);
        assert_eq!(request.not_idempotent().retry, Retry::NotIdempotent);
    }
}
