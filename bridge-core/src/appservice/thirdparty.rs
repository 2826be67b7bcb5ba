//! Third-party network lookups (`GET /_matrix/app/v1/thirdparty/…`): protocol metadata, locations (portals) and
//! users on the bridged network, answered by the connector. No results is `404 M_NOT_FOUND`, as the spec says.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};

use super::errors::{internal, matrix_error};
use crate::connector::{Connector, ConnectorResult};
use crate::runtime::Runtime;

fn unknown_protocol(protocol: &str) -> Response {
    matrix_error(StatusCode::NOT_FOUND, "M_NOT_FOUND", format!("The bridge does not serve the protocol `{protocol}`"))
}

fn results(found: ConnectorResult<Vec<serde_json::Value>>) -> Response {
    match found {
        Ok(found) if found.is_empty() => matrix_error(StatusCode::NOT_FOUND, "M_NOT_FOUND", "No results"),
        Ok(found) => Json(found).into_response(),
        Err(error) => internal(error),
    }
}

pub(super) async fn protocol<C: Connector>(
    State(runtime): State<Arc<Runtime<C>>>,
    Path(protocol): Path<String>,
) -> Response {
    match runtime.connector.thirdparty_protocol() {
        Some(metadata) if protocol == runtime.handle.core().info.protocol_id => Json(metadata).into_response(),
        _ => unknown_protocol(&protocol),
    }
}

/// Which lookup a request asks for.
#[derive(Clone, Copy)]
enum Lookup {
    Locations,
    Users,
}

/// Runs a lookup for `protocol` (when the path names one; the reverse lookups by alias or user ID do not).
async fn lookup<C: Connector>(
    runtime: &Runtime<C>,
    protocol: Option<&str>,
    lookup: Lookup,
    fields: &BTreeMap<String, String>,
) -> Response {
    if let Some(protocol) = protocol
        && protocol != runtime.handle.core().info.protocol_id
    {
        return unknown_protocol(protocol);
    }
    results(match lookup {
        Lookup::Locations => runtime.connector.thirdparty_locations(fields).await,
        Lookup::Users => runtime.connector.thirdparty_users(fields).await,
    })
}

pub(super) async fn locations<C: Connector>(
    State(runtime): State<Arc<Runtime<C>>>,
    Path(protocol): Path<String>,
    Query(fields): Query<BTreeMap<String, String>>,
) -> Response {
    lookup(&runtime, Some(&protocol), Lookup::Locations, &fields).await
}

pub(super) async fn users<C: Connector>(
    State(runtime): State<Arc<Runtime<C>>>,
    Path(protocol): Path<String>,
    Query(fields): Query<BTreeMap<String, String>>,
) -> Response {
    lookup(&runtime, Some(&protocol), Lookup::Users, &fields).await
}

/// `GET /_matrix/app/v1/thirdparty/location?alias=…`: the connector sees the `alias` as a field.
pub(super) async fn location_by_alias<C: Connector>(
    State(runtime): State<Arc<Runtime<C>>>,
    Query(fields): Query<BTreeMap<String, String>>,
) -> Response {
    lookup(&runtime, None, Lookup::Locations, &fields).await
}

/// `GET /_matrix/app/v1/thirdparty/user?userid=…`: the connector sees the `userid` as a field.
pub(super) async fn user_by_id<C: Connector>(
    State(runtime): State<Arc<Runtime<C>>>,
    Query(fields): Query<BTreeMap<String, String>>,
) -> Response {
    lookup(&runtime, None, Lookup::Users, &fields).await
}
