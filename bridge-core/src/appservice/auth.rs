//! Homeserver authentication: `Authorization: Bearer <hs_token>`, or the deprecated `access_token` query parameter
//! ([spec](https://spec.matrix.org/v1.16/application-service-api/#authorization)). When both are given they must
//! agree. Missing → `401 M_UNAUTHORIZED`; wrong → `403 M_FORBIDDEN`. Tokens are compared in constant time.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{StatusCode, header::AUTHORIZATION},
    middleware::Next,
    response::Response,
};
use subtle::ConstantTimeEq;

use super::errors::matrix_error;
use crate::{connector::Connector, runtime::Runtime};

/// What the request's credentials come to.
#[derive(Debug, PartialEq, Eq)]
enum Credentials<'a> {
    Missing,
    Conflicting,
    Token(&'a str),
}

fn credentials<'a>(header: Option<&'a str>, query_token: Option<&'a str>) -> Credentials<'a> {
    let bearer = header.and_then(|value| value.strip_prefix("Bearer ")).map(str::trim);
    match (bearer, query_token) {
        (None, None) => Credentials::Missing,
        (Some(token), None) | (None, Some(token)) => Credentials::Token(token),
        (Some(bearer), Some(query)) if bearer == query => Credentials::Token(bearer),
        (Some(_), Some(_)) => Credentials::Conflicting,
    }
}

fn query_access_token(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(name, _)| name == "access_token")
        .map(|(_, value)| value.into_owned())
}

pub(super) async fn require_hs_token<C: Connector>(
    State(runtime): State<Arc<Runtime<C>>>,
    request: Request,
    next: Next,
) -> Response {
    let header = request.headers().get(AUTHORIZATION).and_then(|value| value.to_str().ok());
    let query_token = query_access_token(request.uri().query());
    let expected = runtime.handle.core().registration.registration().hs_token.as_bytes();
    match credentials(header, query_token.as_deref()) {
        Credentials::Missing => matrix_error(StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED", "Missing hs_token"),
        Credentials::Conflicting => matrix_error(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            "The Authorization header and the access_token parameter disagree",
        ),
        Credentials::Token(token) if bool::from(token.as_bytes().ct_eq(expected)) => next.run(request).await,
        Credentials::Token(_) => matrix_error(StatusCode::FORBIDDEN, "M_FORBIDDEN", "Invalid hs_token"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_cover_every_combination() {
        let cases = [
            (None, None, Credentials::Missing),
            (Some("Bearer abc"), None, Credentials::Token("abc")),
            (None, Some("abc"), Credentials::Token("abc")),
            (Some("Bearer abc"), Some("abc"), Credentials::Token("abc")),
            (Some("Bearer abc"), Some("xyz"), Credentials::Conflicting),
            (Some("Basic abc"), None, Credentials::Missing),
        ];
        for (header, query, expected) in cases {
            assert_eq!(credentials(header, query), expected, "{header:?} {query:?}");
        }
    }

    #[test]
    fn access_token_is_read_from_the_query_string() {
        assert_eq!(query_access_token(Some("a=1&access_token=t%2Bk")), Some("t+k".to_owned()));
        assert_eq!(query_access_token(Some("a=1")), None);
        assert_eq!(query_access_token(None), None);
    }
}
