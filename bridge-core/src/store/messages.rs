//! The message map: Matrix event ID ⇄ remote message ID, both ways, so edits, replies, reactions and redactions on
//! either side can name their target on the other.

use sqlx::Row;

use super::{Result, Store, group::Operation, now_ms};

/// One Matrix event ⇄ one remote message. A long Matrix message split into several remote lines maps to several
/// remote IDs; several remote messages never share one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMapping {
    /// The Matrix event.
    pub event_id: String,
    /// The room the event is in.
    pub room_id: String,
    /// The portal the remote message belongs to.
    pub portal_key: String,
    /// The remote network's ID for the message.
    pub remote_id: String,
}

impl Store {
    /// Records a mapping; recording the same pair again is a no-op. Handed to the group commit without waiting
    /// (one write per bridged message would otherwise hold up its room); every read of the map sees it.
    pub fn map_message(&self, mapping: MessageMapping) {
        self.defer(Operation::MapMessage { mapping, recorded_at: now_ms() });
    }

    /// Records the mapping of a Matrix event the network confirmed it has, and waits until it is durable: a replay
    /// of the event after a crash then finds it delivered ([`Store::was_delivered`]) instead of sending it again.
    pub async fn record_delivery(&self, mapping: MessageMapping) -> Result<()> {
        self.grouped(Operation::MapMessage { mapping, recorded_at: now_ms() }).await
    }

    /// Whether a Matrix event reached the network in an earlier run of the bridge: a mapping of it was committed.
    /// Reads only what is committed (what a replay looks for was committed by the run before, or never).
    pub async fn was_delivered(&self, event_id: &str) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM message_map WHERE event_id = $1 LIMIT 1")
            .bind(event_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(found.is_some())
    }

    /// The Matrix event a remote message became; the latest one when the remote ID was used again (a reaction
    /// withdrawn and given again).
    pub async fn event_for_remote(&self, portal_key: &str, remote_id: &str) -> Result<Option<String>> {
        self.settle().await?;
        Ok(sqlx::query_scalar(
            "SELECT event_id FROM message_map WHERE portal_key = $1 AND remote_id = $2 \
             ORDER BY created_at DESC LIMIT 1",
        )
        .bind(portal_key)
        .bind(remote_id)
        .fetch_optional(self.pool())
        .await?)
    }

    /// The remote ID in a portal that ends with `suffix`, for networks whose own references name a message by
    /// only part of the ID the connector records (the most recent such message if several do).
    pub async fn remote_id_by_suffix(&self, portal_key: &str, suffix: &str) -> Result<Option<String>> {
        self.settle().await?;
        Ok(sqlx::query_scalar(
            "SELECT remote_id FROM message_map WHERE portal_key = $1 AND length(remote_id) >= length($2) \
             AND substr(remote_id, length(remote_id) - length($2) + 1) = $2 ORDER BY created_at DESC LIMIT 1",
        )
        .bind(portal_key)
        .bind(suffix)
        .fetch_optional(self.pool())
        .await?)
    }

    /// The remote messages a Matrix event became, in the order they were recorded.
    pub async fn remotes_for_event(&self, event_id: &str) -> Result<Vec<MessageMapping>> {
        self.settle().await?;
        let rows = sqlx::query(
            "SELECT event_id, room_id, portal_key, remote_id FROM message_map WHERE event_id = $1 \
             ORDER BY created_at, remote_id",
        )
        .bind(event_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(MessageMapping {
                    event_id: row.try_get(0)?,
                    room_id: row.try_get(1)?,
                    portal_key: row.try_get(2)?,
                    remote_id: row.try_get(3)?,
                })
            })
            .collect()
    }

    /// Records that the network also calls a message `alias` (e.g. the sender's own ID of a message the server
    /// stamped with its own ID); the first record of an alias stays. Handed to the group commit like
    /// [`Store::map_message`]; every read of the aliases sees it.
    pub fn alias_remote(&self, portal_key: &str, alias: &str, remote_id: &str) {
        if alias != remote_id {
            self.defer(Operation::AliasRemote {
                portal_key: portal_key.to_owned(),
                alias: alias.to_owned(),
                remote_id: remote_id.to_owned(),
            });
        }
    }

    /// The remote ID a message is mapped under, given any of its names: the alias's target, or the name itself.
    pub async fn resolve_remote(&self, portal_key: &str, name: &str) -> Result<String> {
        self.settle().await?;
        let found: Option<String> =
            sqlx::query_scalar("SELECT remote_id FROM remote_aliases WHERE portal_key = $1 AND alias = $2")
                .bind(portal_key)
                .bind(name)
                .fetch_optional(self.pool())
                .await?;
        Ok(found.unwrap_or_else(|| name.to_owned()))
    }

    /// The other names of a remote message, in no particular order.
    pub async fn remote_aliases(&self, portal_key: &str, remote_id: &str) -> Result<Vec<String>> {
        self.settle().await?;
        Ok(sqlx::query_scalar("SELECT alias FROM remote_aliases WHERE portal_key = $1 AND remote_id = $2")
            .bind(portal_key)
            .bind(remote_id)
            .fetch_all(self.pool())
            .await?)
    }
}
