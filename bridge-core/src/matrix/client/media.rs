//! Media through the homeserver's content repository: uploads, and downloads that prefer the authenticated media
//! API (Matrix v1.11) and fall back to the deprecated unauthenticated one on older homeservers.
//!
//! - [`POST /_matrix/media/v3/upload`](https://spec.matrix.org/v1.16/client-server-api/#post_matrixmediav3upload)
//! - [`GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1mediadownloadservernamemediaid),
//!   falling back to `GET /_matrix/media/v3/download/{serverName}/{mediaId}`

use bytes::Bytes;
use ruma::{MxcUri, OwnedMxcUri};
use serde::Deserialize;

use super::{MatrixClient, Request};
use crate::matrix::error::{MatrixError, Result};

impl MatrixClient {
    /// Uploads media and returns its `mxc://` URI.
    pub async fn upload_media(&self, bytes: Bytes, content_type: &str, filename: Option<&str>) -> Result<OwnedMxcUri> {
        #[derive(Deserialize)]
        struct Answer {
            content_uri: OwnedMxcUri,
        }
        let path = ["_matrix", "media", "v3", "upload"];
        let mut request = Request::post("upload", &path).raw(bytes, content_type);
        if let Some(filename) = filename {
            request = request.query("filename", filename);
        }
        let answer: Answer = self.send_json(request).await?;
        if !answer.content_uri.is_valid() {
            return Err(MatrixError::InvalidResponse {
                endpoint: "upload",
                reason: format!("`{}` is not an mxc:// URI", answer.content_uri),
            });
        }
        Ok(answer.content_uri)
    }

    /// Downloads media through the authenticated media API; returns the bytes and their `Content-Type`.
    ///
    /// Media larger than the limit set by [`with_max_download_size`](Self::with_max_download_size) is refused with
    /// [`MatrixError::InvalidResponse`] without being held in memory.
    pub async fn download_media(&self, mxc: &MxcUri) -> Result<(Bytes, Option<String>)> {
        let (server_name, media_id) = mxc
            .parts()
            .map_err(|err| MatrixError::InvalidInput { what: "mxc URI", reason: format!("`{mxc}`: {err}") })?;
        let path = ["_matrix", "client", "v1", "media", "download", server_name.as_str(), media_id];
        let request = Request::get("download", &path).query("allow_redirect", "true").max_body(self.max_download_bytes);
        let answer = match self.send_raw(request).await {
            Err(err) if err.is_unrecognized_endpoint() => {
                // A homeserver older than Matrix v1.11 has no authenticated media; its unauthenticated path works.
                tracing::debug!(%mxc, "no authenticated media on the homeserver; downloading from /_matrix/media/v3");
                let path = ["_matrix", "media", "v3", "download", server_name.as_str(), media_id];
                let request =
                    Request::get("download", &path).query("allow_redirect", "true").max_body(self.max_download_bytes);
                self.send_raw(request).await?
            }
            answer => answer?,
        };
        Ok((answer.body, answer.content_type))
    }
}
