//! The provisioning HTTP API (`/_matrix/provision/…`) through which integration managers link Matrix rooms to IRC
//! channels, compatible with matrix-appservice-irc's request and response bodies where they make sense: `link`,
//! `unlink`, `listlinks/{roomId}`, `querylink`, `querynetworks` and `limits`. Links still need a channel
//! operator's approval ([`crate::plumbing`]).
//!
//! Every route but the OpenAPI document wants `Authorization: Bearer <shared secret>` (or `?access_token=`): missing
//! → `401 M_UNAUTHORIZED`, wrong → `403 M_FORBIDDEN`, compared in constant time. Errors are Matrix-style
//! `{"errcode", "error"}` bodies, with matrix-appservice-irc's `IRC_…` codes where it has one. The routes are listed
//! once, in [`ROUTES`]; the OpenAPI 3 document `openapi.yaml` beside this file describes them and is served at
//! `GET /_matrix/provision/openapi.yaml`. A test holds the two to each other.

mod handlers;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Request, State},
    http::{Method, StatusCode, header::AUTHORIZATION},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::{MethodFilter, MethodRouter, on},
};
use lattice_bridge_core::appservice::ErrorBody;
use lattice_config::Secret;
use subtle::ConstantTimeEq;

use crate::{IrcConnector, config::ProvisioningConfig, plumbing::PlumbingError};

/// The OpenAPI 3 document of this API, as kept in the repository.
pub(crate) const OPENAPI: &str = include_str!("openapi.yaml");

/// One endpoint of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Link,
    Unlink,
    ListLinks,
    QueryLink,
    QueryNetworks,
    Limits,
    OpenApi,
}

/// A route: method, path (axum and OpenAPI spell parameters alike, `{roomId}`), and endpoint.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Route {
    pub(crate) method: &'static str,
    pub(crate) path: &'static str,
    pub(crate) endpoint: Endpoint,
}

const fn route(method: &'static str, path: &'static str, endpoint: Endpoint) -> Route {
    Route { method, path, endpoint }
}

/// Every route the API serves; the router is built from this list alone.
pub(crate) const ROUTES: &[Route] = &[
    route("POST", "/_matrix/provision/link", Endpoint::Link),
    route("POST", "/_matrix/provision/unlink", Endpoint::Unlink),
    route("GET", "/_matrix/provision/listlinks/{roomId}", Endpoint::ListLinks),
    route("POST", "/_matrix/provision/querylink", Endpoint::QueryLink),
    route("GET", "/_matrix/provision/querynetworks", Endpoint::QueryNetworks),
    route("GET", "/_matrix/provision/limits", Endpoint::Limits),
    route("GET", "/_matrix/provision/openapi.yaml", Endpoint::OpenApi),
];

/// What the handlers share.
pub(crate) struct Provisioning {
    pub(crate) connector: IrcConnector,
    secret: String,
    pub(crate) max_links: usize,
}

type Shared = Arc<Provisioning>;

/// The API's routes over `connector`, or `None` when it is off or its secret cannot be read (logged).
pub(crate) fn router(connector: IrcConnector, config: &ProvisioningConfig) -> Option<Router> {
    if !config.enabled {
        return None;
    }
    let secret = match config.shared_secret.as_ref().map(Secret::resolve) {
        Some(Ok(secret)) if !secret.is_empty() => secret,
        Some(Err(error)) => {
            tracing::error!(%error, "the provisioning API is off: cannot read bridge.provisioning.shared_secret");
            return None;
        }
        _ => {
            tracing::error!("the provisioning API is off: bridge.provisioning.shared_secret is empty");
            return None;
        }
    };
    Some(build(Arc::new(Provisioning { connector, secret, max_links: config.max_links })))
}

fn build(shared: Shared) -> Router {
    let (mut private, mut public) = (Router::new(), Router::new());
    for route in ROUTES {
        let handler = method_router(route);
        if route.endpoint == Endpoint::OpenApi {
            public = public.route(route.path, handler);
        } else {
            private = private.route(route.path, handler);
        }
    }
    let private = private.route_layer(axum::middleware::from_fn_with_state(Arc::clone(&shared), require_secret));
    private.merge(public).method_not_allowed_fallback(method_not_allowed).with_state(shared)
}

fn method_router(route: &Route) -> MethodRouter<Shared> {
    let method = Method::from_bytes(route.method.as_bytes()).expect("the route table names valid methods");
    let filter = MethodFilter::try_from(method).expect("the route table names routable methods");
    match route.endpoint {
        Endpoint::Link => on(filter, handlers::link),
        Endpoint::Unlink => on(filter, handlers::unlink),
        Endpoint::ListLinks => on(filter, handlers::list_links),
        Endpoint::QueryLink => on(filter, handlers::query_link),
        Endpoint::QueryNetworks => on(filter, handlers::query_networks),
        Endpoint::Limits => on(filter, handlers::limits),
        Endpoint::OpenApi => on(filter, handlers::openapi),
    }
}

/// A failed request: status and Matrix-style body.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    errcode: &'static str,
    error: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, errcode: &'static str, error: impl Into<String>) -> Self {
        Self { status, errcode, error: error.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { errcode: self.errcode.into(), error: self.error };
        (self.status, Json(body)).into_response()
    }
}

impl From<PlumbingError> for ApiError {
    fn from(error: PlumbingError) -> Self {
        let (status, errcode) = match &error {
            PlumbingError::UnknownNetwork(_) => (StatusCode::NOT_FOUND, "IRC_UNKNOWN_NETWORK"),
            PlumbingError::NotLinked(_) => (StatusCode::NOT_FOUND, "IRC_UNKNOWN_CHANNEL"),
            PlumbingError::DoubleBridge(_) => (StatusCode::CONFLICT, "IRC_DOUBLE_BRIDGE"),
            PlumbingError::ExistingRequest { .. } => (StatusCode::CONFLICT, "IRC_EXISTING_REQUEST"),
            PlumbingError::NotEnoughPower(_) => (StatusCode::FORBIDDEN, "IRC_NOT_ENOUGH_POWER"),
            PlumbingError::BadOperator(_) => (StatusCode::BAD_REQUEST, "IRC_BAD_OPERATOR_TARGET"),
            PlumbingError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "M_UNKNOWN"),
            PlumbingError::Invalid(_) => (StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        };
        Self::new(status, errcode, error.to_string())
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED", "Unrecognized request method")
}

/// The caller's token: the bearer header, else the `access_token` query parameter.
fn presented_token(request: &Request) -> Option<String> {
    let header = request.headers().get(AUTHORIZATION).and_then(|value| value.to_str().ok());
    if let Some(token) = header.and_then(|value| value.strip_prefix("Bearer ")) {
        return Some(token.trim().to_owned());
    }
    url::form_urlencoded::parse(request.uri().query()?.as_bytes())
        .find(|(name, _)| name == "access_token")
        .map(|(_, value)| value.into_owned())
}

async fn require_secret(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    match presented_token(&request) {
        None => ApiError::new(StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED", "Missing provisioning token").into_response(),
        Some(token) if bool::from(token.as_bytes().ct_eq(shared.secret.as_bytes())) => next.run(request).await,
        Some(_) => ApiError::new(StatusCode::FORBIDDEN, "M_FORBIDDEN", "Bad provisioning token").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::body::Body;
    use tower::ServiceExt as _;

    use super::*;
    use crate::IrcSection;

    /// `(METHOD, path)` of every operation in the OpenAPI document.
    fn documented() -> BTreeSet<(String, String)> {
        let document: serde_yaml::Value = serde_yaml::from_str(OPENAPI).expect("openapi.yaml is YAML");
        assert!(document["openapi"].as_str().is_some_and(|version| version.starts_with("3.")), "an OpenAPI 3 document");
        let paths = document["paths"].as_mapping().expect("openapi.yaml has paths");
        let mut operations = BTreeSet::new();
        for (path, item) in paths {
            let path = path.as_str().expect("paths are strings");
            for (method, _) in item.as_mapping().expect("a path item is a mapping") {
                let method = method.as_str().expect("methods are strings");
                if ["get", "put", "post", "delete", "patch", "head", "options"].contains(&method) {
                    operations.insert((method.to_ascii_uppercase(), path.to_owned()));
                }
            }
        }
        operations
    }

    fn test_router() -> Router {
        let connector = IrcConnector::new(IrcSection::default());
        build(Arc::new(Provisioning { connector, secret: "s3cret".into(), max_links: 0 }))
    }

    async fn status(router: &Router, method: &str, path: &str, token: Option<&str>) -> StatusCode {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Body::from("{}")).expect("a valid request");
        router.clone().oneshot(request).await.expect("the router is infallible").status()
    }

    #[test]
    fn every_route_is_documented_and_every_documented_operation_is_a_route() {
        let routed: BTreeSet<(String, String)> =
            ROUTES.iter().map(|route| (route.method.to_owned(), route.path.to_owned())).collect();
        let documented = documented();
        assert_eq!(
            routed.difference(&documented).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "undocumented routes"
        );
        assert_eq!(
            documented.difference(&routed).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "documented but not routed"
        );
    }

    #[tokio::test]
    async fn the_router_answers_every_documented_operation_and_nothing_else() {
        let router = test_router();
        for (method, path) in documented() {
            let concrete = path.replace("{roomId}", "!room:example.org");
            let answer = status(&router, &method, &concrete, Some("s3cret")).await;
            assert!(
                answer != StatusCode::NOT_FOUND && answer != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is documented but answered {answer}"
            );
        }
        assert_eq!(status(&router, "GET", "/_matrix/provision/nothing", Some("s3cret")).await, StatusCode::NOT_FOUND);
        assert_eq!(
            status(&router, "DELETE", "/_matrix/provision/link", Some("s3cret")).await,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[tokio::test]
    async fn a_missing_token_is_401_and_a_wrong_one_403_but_the_document_is_public() {
        let router = test_router();
        assert_eq!(status(&router, "GET", "/_matrix/provision/limits", None).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(&router, "GET", "/_matrix/provision/limits", Some("wrong")).await, StatusCode::FORBIDDEN);
        assert_eq!(status(&router, "GET", "/_matrix/provision/openapi.yaml", None).await, StatusCode::OK);
    }
}
