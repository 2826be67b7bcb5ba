//! `GET /_matrix/app/v1/users/{userId}` and `GET /_matrix/app/v1/rooms/{roomAlias}`: the homeserver asking whether
//! a user or alias in our namespace exists. The connector decides; the runtime registers the ghost or creates the
//! portal room before answering `200 {}`. The homeserver holds transactions behind these queries, so they do only
//! what the answer needs.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::errors::{internal, matrix_error};
use crate::{connector::Connector, runtime::Runtime};

fn not_found(what: &str) -> Response {
    matrix_error(StatusCode::NOT_FOUND, "M_NOT_FOUND", format!("{what} does not exist on the bridged network"))
}

pub(super) async fn query_user<C: Connector>(
    State(runtime): State<Arc<Runtime<C>>>,
    Path(user_id): Path<String>,
) -> Response {
    let handle = &runtime.handle;
    if !handle.core().registration.is_user_in_namespace(&user_id) {
        return not_found(&user_id);
    }
    match runtime.connector.resolve_user(&user_id).await {
        Ok(Some(ghost)) => match handle.sync_ghost(&ghost).await {
            Ok(_) => Json(json!({})).into_response(),
            Err(error) => internal(format!("cannot register {user_id}: {error}")),
        },
        Ok(None) => not_found(&user_id),
        Err(error) => internal(format!("cannot resolve {user_id}: {error}")),
    }
}

pub(super) async fn query_room_alias<C: Connector>(
    State(runtime): State<Arc<Runtime<C>>>,
    Path(alias): Path<String>,
) -> Response {
    let handle = &runtime.handle;
    if !handle.core().registration.is_alias_in_namespace(&alias) {
        return not_found(&alias);
    }
    let spec = match runtime.connector.resolve_alias(&alias).await {
        Ok(Some(spec)) => spec,
        Ok(None) => return not_found(&alias),
        Err(error) => return internal(format!("cannot resolve {alias}: {error}")),
    };
    let portal = match handle.ensure_portal(&spec).await {
        Ok(portal) => portal,
        Err(error) => return internal(format!("cannot create the room for {alias}: {error}")),
    };
    if let Err(error) = runtime.connector.portal_created(&portal).await {
        tracing::warn!(%error, %alias, "the connector could not set up a new portal; it will retry on traffic");
    }
    Json(json!({})).into_response()
}
