//! Per-user state: settings, admin rooms, and network credentials sealed with the store's [`Cipher`](super::Cipher).

use super::{Result, Store, now_ms};

impl Store {
    /// A user's setting.
    pub async fn user_setting(&self, user_id: &str, name: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM user_settings WHERE user_id = $1 AND name = $2")
            .bind(user_id)
            .bind(name)
            .fetch_optional(self.pool())
            .await?)
    }

    /// Sets a user's setting; `None` removes it.
    pub async fn set_user_setting(&self, user_id: &str, name: &str, value: Option<&str>) -> Result<()> {
        let _turn = self.write_turn().await;
        match value {
            Some(value) => {
                sqlx::query(
                    "INSERT INTO user_settings (user_id, name, value) VALUES ($1, $2, $3) \
                     ON CONFLICT (user_id, name) DO UPDATE SET value = excluded.value",
                )
                .bind(user_id)
                .bind(name)
                .bind(value)
                .execute(self.pool())
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM user_settings WHERE user_id = $1 AND name = $2")
                    .bind(user_id)
                    .bind(name)
                    .execute(self.pool())
                    .await?;
            }
        }
        Ok(())
    }

    /// Stores a credential for a user on a network, encrypted at rest.
    pub async fn store_credential(&self, user_id: &str, network: &str, secret: &str) -> Result<()> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO credentials (user_id, network, sealed, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id, network) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
        )
        .bind(user_id)
        .bind(network)
        .bind(self.cipher.seal(secret))
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A user's decrypted credential for a network.
    pub async fn credential(&self, user_id: &str, network: &str) -> Result<Option<String>> {
        let sealed: Option<String> =
            sqlx::query_scalar("SELECT sealed FROM credentials WHERE user_id = $1 AND network = $2")
                .bind(user_id)
                .bind(network)
                .fetch_optional(self.pool())
                .await?;
        Ok(sealed.map(|sealed| self.cipher.open(&sealed)).transpose()?)
    }

    /// Removes a user's credential for a network; returns whether one existed.
    pub async fn delete_credential(&self, user_id: &str, network: &str) -> Result<bool> {
        let _turn = self.write_turn().await;
        let result = sqlx::query("DELETE FROM credentials WHERE user_id = $1 AND network = $2")
            .bind(user_id)
            .bind(network)
            .execute(self.pool())
            .await?;
        Ok(result.rows_affected() > 0)
    }

    /// The user's admin room (their DM with the bridge bot).
    pub async fn admin_room(&self, user_id: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT room_id FROM admin_rooms WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(self.pool())
            .await?)
    }

    /// Whether a room is someone's admin room, and whose.
    pub async fn admin_room_owner(&self, room_id: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT user_id FROM admin_rooms WHERE room_id = $1 LIMIT 1")
            .bind(room_id)
            .fetch_optional(self.pool())
            .await?)
    }

    /// Records a user's admin room, replacing an older one.
    pub async fn set_admin_room(&self, user_id: &str, room_id: &str) -> Result<()> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO admin_rooms (user_id, room_id) VALUES ($1, $2) \
             ON CONFLICT (user_id) DO UPDATE SET room_id = excluded.room_id",
        )
        .bind(user_id)
        .bind(room_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
