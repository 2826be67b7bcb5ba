//! Portals: the mapping between a Matrix room and the connector's key for a remote conversation (a channel, a MUC).

use sqlx::{Row, any::AnyRow};

use super::{Result, Store, now_ms};

/// A bridged room.
#[derive(Debug, Clone, PartialEq)]
pub struct Portal {
    /// The connector's key for the remote conversation, e.g. `libera/#rust`.
    pub remote_key: String,
    /// The Matrix room.
    pub room_id: String,
    /// The room's canonical alias, when the portal was made from one.
    pub alias: Option<String>,
    /// The room name last set by the bridge.
    pub name: Option<String>,
    /// The topic last synced.
    pub topic: Option<String>,
    /// Connector-specific data (JSON), e.g. the network and channel names.
    pub metadata: serde_json::Value,
}

/// A `SELECT` of every portal column followed by `$tail`, as a `'static` query string.
macro_rules! select_portals {
    ($tail:literal) => {
        concat!("SELECT remote_key, room_id, alias, name, topic, metadata FROM portals ", $tail)
    };
}

fn from_row(row: &AnyRow) -> Result<Portal> {
    let metadata: String = row.try_get(5)?;
    Ok(Portal {
        remote_key: row.try_get(0)?,
        room_id: row.try_get(1)?,
        alias: row.try_get(2)?,
        name: row.try_get(3)?,
        topic: row.try_get(4)?,
        metadata: serde_json::from_str(&metadata)?,
    })
}

impl Store {
    /// Inserts or replaces a portal, keyed by its remote key.
    pub async fn upsert_portal(&self, portal: &Portal) -> Result<()> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO portals (remote_key, room_id, alias, name, topic, metadata, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (remote_key) DO UPDATE SET room_id = excluded.room_id, \
             alias = excluded.alias, name = excluded.name, topic = excluded.topic, metadata = excluded.metadata",
        )
        .bind(portal.remote_key.as_str())
        .bind(portal.room_id.as_str())
        .bind(portal.alias.as_deref())
        .bind(portal.name.as_deref())
        .bind(portal.topic.as_deref())
        .bind(portal.metadata.to_string())
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        self.forget_cached_portals();
        Ok(())
    }

    /// The portal for a remote conversation.
    pub async fn portal_by_key(&self, remote_key: &str) -> Result<Option<Portal>> {
        let load = async {
            sqlx::query(select_portals!("WHERE remote_key = $1"))
                .bind(remote_key)
                .fetch_optional(self.pool())
                .await?
                .as_ref()
                .map(from_row)
                .transpose()
        };
        self.caches.portals_by_key.get_or_load(remote_key, load).await
    }

    /// The portal bridged to a Matrix room.
    pub async fn portal_by_room(&self, room_id: &str) -> Result<Option<Portal>> {
        let load = async {
            sqlx::query(select_portals!("WHERE room_id = $1"))
                .bind(room_id)
                .fetch_optional(self.pool())
                .await?
                .as_ref()
                .map(from_row)
                .transpose()
        };
        self.caches.portals_by_room.get_or_load(room_id, load).await
    }

    /// Empties both portal caches: portals change rarely, and a change may move a portal to another room.
    fn forget_cached_portals(&self) {
        self.caches.portals_by_key.invalidate(|_, _| true);
        self.caches.portals_by_room.invalidate(|_, _| true);
    }

    /// Every portal, ordered by remote key.
    pub async fn portals(&self) -> Result<Vec<Portal>> {
        sqlx::query(select_portals!("ORDER BY remote_key")).fetch_all(self.pool()).await?.iter().map(from_row).collect()
    }

    /// Forgets a portal (the room itself stays on the homeserver). Returns whether one existed.
    pub async fn delete_portal(&self, remote_key: &str) -> Result<bool> {
        let _turn = self.write_turn().await;
        let result =
            sqlx::query("DELETE FROM portals WHERE remote_key = $1").bind(remote_key).execute(self.pool()).await?;
        self.forget_cached_portals();
        Ok(result.rows_affected() > 0)
    }

    /// Records a topic change without touching the rest of the portal.
    pub async fn set_portal_topic(&self, remote_key: &str, topic: Option<&str>) -> Result<()> {
        let _turn = self.write_turn().await;
        sqlx::query("UPDATE portals SET topic = $1 WHERE remote_key = $2")
            .bind(topic)
            .bind(remote_key)
            .execute(self.pool())
            .await?;
        self.forget_cached_portals();
        Ok(())
    }
}
