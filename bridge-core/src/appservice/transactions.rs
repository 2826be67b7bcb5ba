//! `PUT /_matrix/app/v1/transactions/{txnId}`: events (and MSC2409 ephemeral events) pushed by the homeserver.
//!
//! Events stay raw JSON ([`Raw`]) and only the fields needed to queue them are peeked at, so one malformed event is
//! logged and skipped without failing the rest. The transaction ID and every queued event are committed to the store
//! *before* `200 {}` is returned; they are handed to their rooms' workers in memory as soon as the store numbers
//! them, while they are written and flushed, so delivery waits neither for the disk nor for a commit under way (a
//! failed commit is not acknowledged and the homeserver sends the transaction again: at-least-once). A transaction ID seen before (also before a restart) is acknowledged again
//! without queuing anything. Echoes of the bridge's own users are dropped here, except membership events, which keep the
//! membership caches true.
//!
//! A transaction that cannot be taken — a body over [`TRANSACTION_BODY_LIMIT`], not JSON, or a store that fails — is
//! an `error` in the log naming the transaction and why, and counts in `lattice_appservice_transactions_total` under
//! its outcome (`refused_too_large`, `refused_unreadable`, `refused_not_json`, `store_failed`): the homeserver
//! retries such a transaction unchanged, holding back every later one, so it must not go unnoticed.

use std::{sync::Arc, time::Instant};

use axum::{
    Json,
    body::Body,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use ruma::serde::Raw;
use serde::Deserialize;
use serde_json::{json, value::RawValue};

use super::{
    body::{BodyError, read_limited},
    errors::matrix_error,
    txn_key,
};
use crate::{
    connector::Connector,
    metrics::Metrics,
    runtime::Runtime,
    store::{self, QueueKind, QueuedItem, TransactionOutcome},
};

/// The largest events in a transaction: Synapse refuses to create an event (PDU) over 64 KiB.
const EVENT_SIZE_LIMIT: usize = 64 * 1024;

/// The most a homeserver puts in one transaction, as Synapse sends them: 100 room events (PDUs), each up to
/// [`EVENT_SIZE_LIMIT`] and, for a state event, as much again in `unsigned.prev_content`; 100 ephemeral events
/// (MSC2409) and 100 to-device messages, counted at up to [`EVENT_SIZE_LIMIT`] each.
const LARGEST_TRANSACTION: usize = 100 * 2 * EVENT_SIZE_LIMIT + 100 * EVENT_SIZE_LIMIT + 100 * EVENT_SIZE_LIMIT;

/// The body limit of `PUT /transactions/{txnId}`: [`LARGEST_TRANSACTION`] (25 MiB) rounded up to 32 MiB, which leaves
/// room for the JSON around the events and for the device lists and key counts of MSC3202. A homeserver resends a
/// refused transaction unchanged, forever, so every transaction it may send must fit. The other routes keep axum's
/// default of 2 MB.
pub const TRANSACTION_BODY_LIMIT: usize = 32 * 1024 * 1024;
const _: () = assert!(LARGEST_TRANSACTION < TRANSACTION_BODY_LIMIT);

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
    body: Body,
) -> Response {
    let started = Instant::now();
    let core = runtime.handle.core();
    // An authenticated transaction proves the homeserver reaches us, also where it has no ping endpoint.
    core.homeserver_reachable.store(true, std::sync::atomic::Ordering::Relaxed);
    let metrics = &core.metrics;
    let body = match read_limited(body, TRANSACTION_BODY_LIMIT).await {
        Ok(body) => body,
        Err(error) => return refuse(metrics, &txn_id, Refusal::Body(error)),
    };
    let raw_body = body;
    let body: TransactionBody = match serde_json::from_slice(&raw_body) {
        Ok(body) => body,
        Err(error) => return refuse(metrics, &txn_id, Refusal::NotJson(error)),
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
    let key = txn_key::dedup_key(&txn_id, body.events.iter().map(Raw::json), &raw_body);
    match core.store.persist_transaction(&key, &queued, hand_over).await {
        Ok(TransactionOutcome::Persisted { queued }) => {
            metrics.transactions.with_label_values(&["persisted"]).inc();
            metrics.events.with_label_values(&[QueueKind::Matrix.label(), "queued"]).inc_by(queued as u64);
            metrics.queue_depth.with_label_values(&[QueueKind::Matrix.label()]).add(queued as i64);
        }
        Ok(TransactionOutcome::AlreadyProcessed) => {
            metrics.transactions.with_label_values(&["duplicate"]).inc();
            tracing::debug!(%txn_id, "transaction seen before; acknowledged again");
        }
        Err(error) => return refuse(metrics, &txn_id, Refusal::Store(error)),
    }
    metrics.transaction_seconds.observe(started.elapsed().as_secs_f64());
    Json(json!({})).into_response()
}

/// Why a transaction was not taken.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error(transparent)]
    Body(BodyError),
    #[error("the body is not a valid transaction: {0}")]
    NotJson(serde_json::Error),
    #[error("cannot persist it: {0}")]
    Store(store::Error),
}

impl Refusal {
    /// The outcome label of `lattice_appservice_transactions_total`.
    fn outcome(&self) -> &'static str {
        match self {
            Self::Body(BodyError::TooLarge { .. }) => "refused_too_large",
            Self::Body(BodyError::Read(_)) => "refused_unreadable",
            Self::NotJson(_) => "refused_not_json",
            Self::Store(_) => "store_failed",
        }
    }

    fn status_and_errcode(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Body(BodyError::TooLarge { .. }) => (StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"),
            Self::Body(BodyError::Read(_)) => (StatusCode::BAD_REQUEST, "M_UNKNOWN"),
            Self::NotJson(_) => (StatusCode::BAD_REQUEST, "M_NOT_JSON"),
            Self::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN"),
        }
    }
}

/// Answers a transaction that was not taken, loudly: the homeserver will send it again unchanged, and every later
/// transaction waits behind it.
fn refuse(metrics: &Metrics, txn_id: &str, refusal: Refusal) -> Response {
    metrics.transactions.with_label_values(&[refusal.outcome()]).inc();
    tracing::error!(
        %txn_id,
        outcome = refusal.outcome(),
        "homeserver transaction {txn_id} not taken: {refusal}; the homeserver will resend it and hold back later \
         ones until it is taken"
    );
    let (status, errcode) = refusal.status_and_errcode();
    matrix_error(status, errcode, format!("Transaction {txn_id} not taken: {refusal}"))
}

/// Reads a transaction body as [`put_transaction`] does, without a store: the body, each event's queue key, the
/// deduplication key, and each queued event as the runtime parses it (for the fuzz targets).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn peek_transaction(body: &[u8]) {
    let Ok(parsed) = serde_json::from_slice::<TransactionBody>(body) else { return };
    for raw in parsed.events.iter().chain(&parsed.ephemeral).chain(&parsed.ephemeral_unstable) {
        if let Ok(key) = queue_key(raw.json(), |user_id| user_id.starts_with("@_bridge_")) {
            assert!(key.starts_with('!'), "queued under {key:?}, which is no room ID");
            if let Ok(value) = serde_json::from_str(raw.json().get()) {
                let _ = crate::event::MatrixEvent::parse(value);
            }
        }
    }
    let _ = txn_key::dedup_key("fuzz", parsed.events.iter().map(Raw::json), body);
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
