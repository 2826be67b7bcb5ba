//! `PUT /_matrix/app/v1/transactions/{txnId}`: events (and MSC2409 ephemeral events) pushed by the homeserver.
//!
//! Events stay raw JSON ([`Raw`]) and only the fields needed to queue them are peeked at, so one malformed event is
//! logged and skipped without failing the rest. The transaction ID and every queued event are committed to the store
//! *before* `200 {}` is returned; they are handed to their rooms' workers in memory as soon as the store numbers
//! them, while they are written and flushed, so delivery waits neither for the disk nor for a commit under way (a
//! failed commit is not acknowledged and the homeserver sends the transaction again: at-least-once). A transaction ID seen before (also before a restart) is acknowledged again
//! without queuing anything. Echoes of the bridge's own users are dropped here, except membership events, which keep the
//! membership caches true.

use std::{sync::Arc, time::Instant};

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use ruma::serde::Raw;
use serde::Deserialize;
use serde_json::{json, value::RawValue};

use super::errors::{internal, matrix_error};
use crate::{
    connector::Connector,
    runtime::Runtime,
    store::{QueueKind, QueuedItem, TransactionOutcome},
};

/// The transaction body; each event kept raw until its turn comes.
#[derive(Deserialize)]
struct TransactionBody {
    #[serde(default)]
    events: Vec<Raw<serde_json::Value>>,
    #[serde(default)]
    ephemeral: Vec<Raw<serde_json::Value>>,
    /// The unstable name of `ephemeral`, still sent by homeservers that predate its stabilisation.
    #[serde(default, rename = "de.sorunome.msc2409.ephemeral")]
    ephemeral_unstable: Vec<Raw<serde_json::Value>>,
}

/// Why an event was not queued.
#[derive(Debug, PartialEq, Eq)]
enum Skip {
    Malformed(&'static str),
    Echo,
}

/// The queue key (room ID) of one raw event, or why it is skipped.
fn queue_key(raw: &RawValue, is_bridge_user: impl Fn(&str) -> bool) -> Result<String, Skip> {
    #[derive(Deserialize)]
    struct Peek<'a> {
        #[serde(rename = "type", borrow)]
        event_type: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        room_id: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        sender: Option<std::borrow::Cow<'a, str>>,
    }
    let peek: Peek<'_> = serde_json::from_str(raw.get()).map_err(|_| Skip::Malformed("not a JSON object"))?;
    let event_type = peek.event_type.ok_or(Skip::Malformed("no type"))?;
    let room_id = peek.room_id.ok_or(Skip::Malformed("no room_id"))?;
    if !room_id.starts_with('!') {
        return Err(Skip::Malformed("room_id is not a room ID"));
    }
    if let Some(sender) = peek.sender
        && event_type != "m.room.member"
        && is_bridge_user(&sender)
    {
        return Err(Skip::Echo);
    }
    Ok(room_id.into_owned())
}

pub(super) async fn put_transaction<C: Connector>(
    State(runtime): State<Arc<Runtime<C>>>,
    Path(txn_id): Path<String>,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let core = runtime.handle.core();
    let metrics = &core.metrics;
    let body: TransactionBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(error) => {
            metrics.transactions.with_label_values(&["rejected"]).inc();
            return matrix_error(
                StatusCode::BAD_REQUEST,
                "M_NOT_JSON",
                format!("Transaction body is not valid: {error}"),
            );
        }
    };
    let mut queued = Vec::with_capacity(body.events.len() + body.ephemeral.len());
    for raw in body.events.iter().chain(&body.ephemeral).chain(&body.ephemeral_unstable) {
        match queue_key(raw.json(), |user_id| runtime.handle.is_bridge_user(user_id)) {
            Ok(key) => queued.push((key, raw.json().get().to_owned())),
            Err(Skip::Echo) => metrics.events.with_label_values(&[QueueKind::Matrix.label(), "echo"]).inc(),
            Err(Skip::Malformed(reason)) => {
                metrics.events.with_label_values(&[QueueKind::Matrix.label(), "malformed"]).inc();
                tracing::warn!(%txn_id, reason, event = %truncate(raw.json().get(), 300), "skipping a malformed event");
            }
        }
    }
    let hand_over = |items| {
        for (key, items) in by_key(items) {
            runtime.inbound.hand_over(&key, items);
        }
    };
    match core.store.persist_transaction(&txn_id, &queued, hand_over).await {
        Ok(TransactionOutcome::Persisted { queued }) => {
            metrics.transactions.with_label_values(&["persisted"]).inc();
            metrics.events.with_label_values(&[QueueKind::Matrix.label(), "queued"]).inc_by(queued as u64);
            metrics.queue_depth.with_label_values(&[QueueKind::Matrix.label()]).add(queued as i64);
        }
        Ok(TransactionOutcome::AlreadyProcessed) => {
            metrics.transactions.with_label_values(&["duplicate"]).inc();
            tracing::debug!(%txn_id, "transaction seen before; acknowledged again");
        }
        Err(error) => return internal(format!("cannot persist transaction {txn_id}: {error}")),
    }
    metrics.transaction_seconds.observe(started.elapsed().as_secs_f64());
    Json(json!({})).into_response()
}

/// Items grouped by key, keys in first-seen order, each key's items in their order.
fn by_key(items: Vec<QueuedItem>) -> Vec<(String, Vec<QueuedItem>)> {
    let mut groups: Vec<(String, Vec<QueuedItem>)> = Vec::new();
    for item in items {
        match groups.iter_mut().find(|(key, _)| *key == item.key) {
            Some((_, group)) => group.push(item),
            None => groups.push((item.key.clone(), vec![item])),
        }
    }
    groups
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((index, _)) => &text[..index],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(json: &str) -> Result<String, Skip> {
        let raw = RawValue::from_string(json.to_owned()).unwrap();
        queue_key(&raw, |user| user.starts_with("@_bridge_"))
    }

    #[test]
    fn queue_keys_and_skips() {
        let cases = [
            (r#"{"type":"m.room.message","room_id":"!a:hs","sender":"@u:hs"}"#, Ok("!a:hs".to_owned())),
            (r#"{"type":"m.typing","room_id":"!a","content":{}}"#, Ok("!a".to_owned())),
            (r#"{"type":"m.room.message","room_id":"!a:hs","sender":"@_bridge_x:hs"}"#, Err(Skip::Echo)),
            (r#"{"type":"m.room.member","room_id":"!a:hs","sender":"@_bridge_x:hs"}"#, Ok("!a:hs".to_owned())),
            (r#"{"type":"m.presence","sender":"@u:hs"}"#, Err(Skip::Malformed("no room_id"))),
            (r#"{"room_id":"!a:hs"}"#, Err(Skip::Malformed("no type"))),
            (r##"{"type":"m.room.message","room_id":"#alias:hs"}"##, Err(Skip::Malformed("room_id is not a room ID"))),
            (r#"42"#, Err(Skip::Malformed("not a JSON object"))),
            (r#"{"type":1,"room_id":"!a"}"#, Err(Skip::Malformed("not a JSON object"))),
        ];
        for (json, expected) in cases {
            assert_eq!(key(json), expected, "{json}");
        }
    }

    #[test]
    fn items_are_grouped_by_key_in_order() {
        let item = |seq, key: &str| QueuedItem {
            seq,
            key: key.to_owned(),
            payload: String::new(),
            attempts: 0,
            enqueued_at: 0,
        };
        let groups = by_key(vec![item(1, "!a"), item(2, "!b"), item(3, "!a")]);
        let seqs: Vec<(&str, Vec<i64>)> =
            groups.iter().map(|(key, items)| (key.as_str(), items.iter().map(|item| item.seq).collect())).collect();
        assert_eq!(seqs, [("!a", vec![1, 3]), ("!b", vec![2])]);
    }

    #[test]
    fn truncate_respects_characters() {
        assert_eq!(truncate("héllo", 2), "hé");
        assert_eq!(truncate("hi", 10), "hi");
    }
}
