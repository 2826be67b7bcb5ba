//! Operational endpoints: `/health/live` (the process answers), `/health/ready` and `/health` (the store answers;
//! the body also says whether the homeserver's ping got through), and `/metrics` (Prometheus text).

use std::sync::Arc;

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::errors::matrix_error;
use crate::{connector::Connector, runtime::Runtime};

pub(super) async fn live() -> Json<serde_json::Value> {
    Json(json!({"status": "live"}))
}

pub(super) async fn ready<C: Connector>(State(runtime): State<Arc<Runtime<C>>>) -> Response {
    let handle = &runtime.handle;
    let body = |status: &str| {
        json!({
            "status": status,
            "homeserver_reachable": handle.homeserver_reachable(),
            "active_portal_workers": runtime.inbound.active_workers(),
        })
    };
    match handle.store().ping().await {
        Ok(()) => Json(body("ready")).into_response(),
        Err(error) => {
            tracing::warn!(%error, "readiness check: the store does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, Json(body("store unavailable"))).into_response()
        }
    }
}

pub(super) async fn metrics<C: Connector>(State(runtime): State<Arc<Runtime<C>>>) -> Response {
    if !runtime.metrics_enabled {
        return matrix_error(StatusCode::NOT_FOUND, "M_UNRECOGNIZED", "Metrics are disabled (metrics.enabled)");
    }
    let metrics = &runtime.handle.core().metrics;
    metrics.refresh_queue_ages(runtime.handle.store()).await;
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], metrics.render()).into_response()
}
