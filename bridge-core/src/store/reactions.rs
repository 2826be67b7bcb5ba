//! Reaction sets: which keys one Matrix user (a real user or a ghost) has given one remote message.
//!
//! Some networks (XMPP's XEP-0444) send a person's whole set of reactions each time it changes; the stored set is
//! what a new set is compared with, and what a single Matrix reaction is added to before the whole set goes out.

use super::{Result, Store};

/// Keys are stored one per line: a reaction key is one grapheme cluster or a short text, never a line break.
const SEPARATOR: char = '\n';

impl Store {
    /// The reaction keys `user_id` has given the remote message `target` in a portal, in the order first given.
    pub async fn reactions(&self, portal_key: &str, target: &str, user_id: &str) -> Result<Vec<String>> {
        let keys: Option<String> = sqlx::query_scalar(
            "SELECT reaction_keys FROM reactions WHERE portal_key = $1 AND target = $2 AND user_id = $3",
        )
        .bind(portal_key)
        .bind(target)
        .bind(user_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(keys.map(|keys| keys.split(SEPARATOR).map(str::to_owned).collect()).unwrap_or_default())
    }

    /// Replaces the reaction keys `user_id` has given `target`; an empty set removes the record. Keys holding a
    /// line break are dropped (no network sends them as one reaction).
    pub async fn set_reactions(&self, portal_key: &str, target: &str, user_id: &str, keys: &[String]) -> Result<()> {
        let keys: Vec<&str> =
            keys.iter().map(String::as_str).filter(|key| !key.is_empty() && !key.contains(SEPARATOR)).collect();
        let _turn = self.write_turn().await;
        if keys.is_empty() {
            sqlx::query("DELETE FROM reactions WHERE portal_key = $1 AND target = $2 AND user_id = $3")
                .bind(portal_key)
                .bind(target)
                .bind(user_id)
                .execute(self.pool())
                .await?;
        } else {
            sqlx::query(
                "INSERT INTO reactions (portal_key, target, user_id, reaction_keys) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (portal_key, target, user_id) DO UPDATE SET reaction_keys = excluded.reaction_keys",
            )
            .bind(portal_key)
            .bind(target)
            .bind(user_id)
            .bind(keys.join("\n"))
            .execute(self.pool())
            .await?;
        }
        Ok(())
    }
}
