//! Ghosts: the Matrix virtual users that stand for remote people, with the profile last set on the homeserver.

use sqlx::{Row, any::AnyRow};

use super::{Result, Store, now_ms};

/// A remote person's Matrix identity.
#[derive(Debug, Clone, PartialEq)]
pub struct Ghost {
    /// The ghost's Matrix user ID.
    pub user_id: String,
    /// The connector's stable ID for the remote person (survives nick changes where the network allows).
    pub remote_id: String,
    /// Display name last set on the homeserver.
    pub displayname: Option<String>,
    /// Avatar (mxc URI) last set on the homeserver.
    pub avatar_url: Option<String>,
    /// Connector-specific data (JSON).
    pub metadata: serde_json::Value,
}

/// A `SELECT` of every ghost column followed by `$tail`, as a `'static` query string.
macro_rules! select_ghosts {
    ($tail:literal) => {
        concat!("SELECT user_id, remote_id, displayname, avatar_url, metadata FROM ghosts ", $tail)
    };
}

fn from_row(row: &AnyRow) -> Result<Ghost> {
    let metadata: String = row.try_get(4)?;
    Ok(Ghost {
        user_id: row.try_get(0)?,
        remote_id: row.try_get(1)?,
        displayname: row.try_get(2)?,
        avatar_url: row.try_get(3)?,
        metadata: serde_json::from_str(&metadata)?,
    })
}

impl Store {
    /// Inserts or replaces a ghost. A remote ID that moves to another user ID (a renamed account) moves its row.
    pub async fn upsert_ghost(&self, ghost: &Ghost) -> Result<()> {
        let _turn = self.write_turn().await;
        sqlx::query("DELETE FROM ghosts WHERE remote_id = $1 AND user_id <> $2")
            .bind(ghost.remote_id.as_str())
            .bind(ghost.user_id.as_str())
            .execute(self.pool())
            .await?;
        sqlx::query(
            "INSERT INTO ghosts (user_id, remote_id, displayname, avatar_url, metadata, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id) DO UPDATE SET remote_id = excluded.remote_id, \
             displayname = excluded.displayname, avatar_url = excluded.avatar_url, metadata = excluded.metadata, \
             updated_at = excluded.updated_at",
        )
        .bind(ghost.user_id.as_str())
        .bind(ghost.remote_id.as_str())
        .bind(ghost.displayname.as_deref())
        .bind(ghost.avatar_url.as_deref())
        .bind(ghost.metadata.to_string())
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        // The row itself, and any other user's row the remote ID moved away from.
        self.caches
            .ghosts_by_user
            .invalidate(|user_id, known| user_id == ghost.user_id || known.remote_id == ghost.remote_id);
        Ok(())
    }

    /// The ghost with this Matrix user ID.
    pub async fn ghost_by_user(&self, user_id: &str) -> Result<Option<Ghost>> {
        let load = async {
            sqlx::query(select_ghosts!("WHERE user_id = $1"))
                .bind(user_id)
                .fetch_optional(self.pool())
                .await?
                .as_ref()
                .map(from_row)
                .transpose()
        };
        self.caches.ghosts_by_user.get_or_load(user_id, load).await
    }

    /// The ghost standing for this remote person.
    pub async fn ghost_by_remote(&self, remote_id: &str) -> Result<Option<Ghost>> {
        sqlx::query(select_ghosts!("WHERE remote_id = $1"))
            .bind(remote_id)
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(from_row)
            .transpose()
    }
}
