//! What a homeserver transaction is recognised by when it comes again: its ID together with the IDs of the events
//! it carries.
//!
//! The application service API says a homeserver retries a transaction under the same ID (`PUT
//! /_matrix/app/v1/transactions/{txnId}`), but not that it never uses an ID again: Synapse on SQLite numbers
//! transactions from the highest one still unsent, so after a restart with nothing pending it starts again at 1. A
//! record of IDs alone would then take new events for old ones and drop them. A retry carries the same events (the
//! events' JSON may differ: `unsigned.age` grows), so the key is the ID and a digest of the event IDs; a transaction
//! of ephemeral data only is keyed by its whole body.

use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest as _, Sha256};

/// The key to record `txn_id` under, for a transaction whose `events` are given raw, and whose whole body is `body`.
pub(super) fn dedup_key<'a>(txn_id: &str, events: impl IntoIterator<Item = &'a RawValue>, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Peek<'a> {
        #[serde(borrow)]
        event_id: Option<std::borrow::Cow<'a, str>>,
    }
    let mut digest = Sha256::new();
    let mut any = false;
    for event in events {
        any = true;
        let peek: Option<Peek<'_>> = serde_json::from_str(event.get()).ok();
        let event_id = peek.and_then(|peek| peek.event_id);
        // An event without an ID (malformed) still counts, by position.
        digest.update(event_id.as_deref().unwrap_or("?").as_bytes());
        digest.update([0]);
    }
    if !any {
        digest.update(body);
    }
    let hash = digest.finalize();
    let short: String = hash.iter().take(8).map(|byte| format!("{byte:02x}")).collect();
    format!("{txn_id}#{short}")
}

/// The homeserver's own transaction ID in a key made by [`dedup_key`].
pub(crate) fn txn_id_of(key: &str) -> &str {
    key.rsplit_once('#').map_or(key, |(txn_id, _)| txn_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    #[test]
    fn a_retry_keeps_its_key_and_a_reused_id_with_other_events_gets_another() {
        let first = [raw(r#"{"event_id":"$a","unsigned":{"age":10}}"#), raw(r#"{"event_id":"$b"}"#)];
        let retried = [raw(r#"{"event_id":"$a","unsigned":{"age":5000}}"#), raw(r#"{"event_id":"$b"}"#)];
        let other = [raw(r#"{"event_id":"$c"}"#)];
        let key = dedup_key("1", first.iter().map(AsRef::as_ref), b"first body");
        assert_eq!(key, dedup_key("1", retried.iter().map(AsRef::as_ref), b"retried body"));
        assert_ne!(key, dedup_key("1", other.iter().map(AsRef::as_ref), b"other"));
        assert_ne!(key, dedup_key("2", first.iter().map(AsRef::as_ref), b"first body"));
        assert_eq!(txn_id_of(&key), "1");
    }

    #[test]
    fn ephemeral_only_transactions_are_keyed_by_their_body() {
        let none: [&RawValue; 0] = [];
        let typing = dedup_key("7", none, br#"{"ephemeral":[{"type":"m.typing"}]}"#);
        assert_eq!(typing, dedup_key("7", none, br#"{"ephemeral":[{"type":"m.typing"}]}"#));
        assert_ne!(typing, dedup_key("7", none, br#"{"ephemeral":[{"type":"m.receipt"}]}"#));
        assert_eq!(txn_id_of("no-hash"), "no-hash");
    }
}
