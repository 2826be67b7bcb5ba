//! The homeserver-facing HTTP API ([Application Service API], homeserver → appservice), served with axum, plus the
//! operational endpoints (`/health`, `/metrics`) and the files the bridge publishes (`/_lattice/media`).
//!
//! A connector may add routes of its own on the same listener ([`Connector::http_routes`], e.g. a provisioning API);
//! they authenticate their callers themselves.
//!
//! Every `/_matrix/app/…` route requires the homeserver's `hs_token` ([`auth`]); unknown paths answer
//! `404 M_UNRECOGNIZED`, known paths with the wrong method `405 M_UNRECOGNIZED`. A transaction body may be up to
//! [`TRANSACTION_BODY_LIMIT`] (32 MiB; larger is `413 M_TOO_LARGE`); other bodies up to axum's default of 2 MB.
//! The listener's timeouts and connection cap are in [`listener`].
//!
//! [Application Service API]: https://spec.matrix.org/v1.16/application-service-api/

mod auth;
mod body;
mod errors;
mod listener;
mod media;
mod ops;
mod ping;
mod query;
mod thirdparty;
mod transactions;
mod txn_key;

use std::sync::Arc;

use axum::{
    Router,
    routing::{get, post, put},
};

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use self::transactions::peek_transaction;
pub use self::{errors::ErrorBody, listener::ListenerLimits, transactions::TRANSACTION_BODY_LIMIT};
pub(crate) use self::{listener::serve, txn_key::txn_id_of};
use crate::{connector::Connector, runtime::Runtime};

/// The appservice router over a runtime.
pub(crate) fn router<C: Connector>(runtime: Arc<Runtime<C>>) -> Router {
    let matrix_api = Router::new()
        .route("/_matrix/app/v1/transactions/{txn_id}", put(transactions::put_transaction::<C>))
        .route("/_matrix/app/v1/users/{user_id}", get(query::query_user::<C>))
        .route("/_matrix/app/v1/rooms/{room_alias}", get(query::query_room_alias::<C>))
        .route("/_matrix/app/v1/ping", post(ping::ping))
        .route("/_matrix/app/v1/thirdparty/protocol/{protocol}", get(thirdparty::protocol::<C>))
        .route("/_matrix/app/v1/thirdparty/location/{protocol}", get(thirdparty::locations::<C>))
        .route("/_matrix/app/v1/thirdparty/user/{protocol}", get(thirdparty::users::<C>))
        .route("/_matrix/app/v1/thirdparty/location", get(thirdparty::location_by_alias::<C>))
        .route("/_matrix/app/v1/thirdparty/user", get(thirdparty::user_by_id::<C>))
        // The paths before the spec's v1 prefix, which older homeservers still call.
        .route("/transactions/{txn_id}", put(transactions::put_transaction::<C>))
        .route("/users/{user_id}", get(query::query_user::<C>))
        .route("/rooms/{room_alias}", get(query::query_room_alias::<C>))
        .method_not_allowed_fallback(errors::method_not_allowed)
        .route_layer(axum::middleware::from_fn_with_state(Arc::clone(&runtime), auth::require_hs_token::<C>));
    let extra = runtime.connector.http_routes();
    let router = Router::new()
        .merge(matrix_api)
        .route("/health", get(ops::ready::<C>))
        .route("/health/live", get(ops::live))
        .route("/health/ready", get(ops::ready::<C>))
        .route("/metrics", get(ops::metrics::<C>))
        .route("/_lattice/media/{token}/{filename}", get(media::published::<C>))
        .method_not_allowed_fallback(errors::method_not_allowed)
        .fallback(errors::not_found)
        .with_state(runtime);
    // The connector's routes join after the state is bound: they carry their own.
    let router = match extra {
        Some(extra) => router.merge(extra),
        None => router,
    };
    router.layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(request_span))
}

/// The span of one request: method, path and query, with the value of an `access_token` parameter (the homeserver's
/// token, where a homeserver still sends it that way) left out.
fn request_span<B>(request: &http::Request<B>) -> tracing::Span {
    let uri = request.uri();
    let query = uri.query().map(redacted_query);
    tracing::debug_span!("request", method = %request.method(), path = uri.path(), query, version = ?request.version())
}

/// `query` with the value of every `access_token` parameter replaced by `<redacted>`.
fn redacted_query(query: &str) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        out.append_pair(&name, if name == "access_token" { "<redacted>" } else { &value });
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_shown_in_logs_has_no_access_token() {
        let cases = [
            ("access_token=s3cret", "access_token=%3Credacted%3E"),
            (
                "user_id=%40a%3Ahs&access_token=s3cret&access_token=again",
                "user_id=%40a%3Ahs&access_token=%3Credacted%3E&access_token=%3Credacted%3E",
            ),
            ("access%5Ftoken=s3cret", "access_token=%3Credacted%3E"),
            ("fields=x", "fields=x"),
        ];
        for (query, shown) in cases {
            assert_eq!(redacted_query(query), shown, "{query}");
            assert!(!redacted_query(query).contains("s3cret"));
        }
    }
}
