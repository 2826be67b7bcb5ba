//! Files published to the bridged network: an unguessable token ⇄ a Matrix `mxc://` URI. Matrix media needs
//! authentication to fetch, so people on IRC or XMPP open such files through the bridge's own endpoint
//! (`GET /_lattice/media/{token}/{filename}`).

use sqlx::Row;

use super::{Result, Store, now_ms};

/// A published file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedMedia {
    /// The `mxc://` URI on the homeserver.
    pub mxc: String,
    /// The file name to offer.
    pub filename: String,
    /// The MIME type, when known.
    pub mimetype: Option<String>,
}

impl Store {
    /// Records a published file under `token`.
    pub async fn publish_media(&self, token: &str, media: &PublishedMedia) -> Result<()> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO published_media (token, mxc, filename, mimetype, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token)
        .bind(media.mxc.as_str())
        .bind(media.filename.as_str())
        .bind(media.mimetype.as_deref())
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The file published under `token`.
    pub async fn published_media(&self, token: &str) -> Result<Option<PublishedMedia>> {
        let row = sqlx::query("SELECT mxc, filename, mimetype FROM published_media WHERE token = $1")
            .bind(token)
            .fetch_optional(self.pool())
            .await?;
        row.map(|row| Ok(PublishedMedia { mxc: row.try_get(0)?, filename: row.try_get(1)?, mimetype: row.try_get(2)? }))
            .transpose()
    }
}
