//! `POST /_matrix/app/v1/ping`: the homeserver checking that it can reach us (and that our `hs_token` matches),
//! usually because we asked it to via `POST /_matrix/client/v1/appservice/{appserviceId}/ping`.

use axum::{Json, body::Bytes};
use serde_json::{Value, json};

pub(super) async fn ping(body: Bytes) -> Json<Value> {
    let transaction_id =
        serde_json::from_slice::<Value>(&body).ok().and_then(|body| body.get("transaction_id").cloned());
    tracing::debug!(?transaction_id, "ping from the homeserver");
    Json(json!({}))
}
