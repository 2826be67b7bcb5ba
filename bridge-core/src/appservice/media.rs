//! `GET /_lattice/media/{token}/{filename}`: files the bridge published to the network (long messages, Matrix
//! media), fetched from the homeserver with the bridge's credentials. The token is the only secret: 128 random bits.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::{
        HeaderValue, StatusCode,
        header::{CONTENT_DISPOSITION, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS},
    },
    response::{IntoResponse, Response},
};
use ruma::OwnedMxcUri;

use super::errors::{internal, matrix_error};
use crate::{connector::Connector, runtime::Runtime};

pub(super) async fn published<C: Connector>(
    State(runtime): State<Arc<Runtime<C>>>,
    Path((token, _filename)): Path<(String, String)>,
) -> Response {
    let core = runtime.handle.core();
    let media = match core.store.published_media(&token).await {
        Ok(Some(media)) => media,
        Ok(None) => return matrix_error(StatusCode::NOT_FOUND, "M_NOT_FOUND", "No such file"),
        Err(error) => return internal(error),
    };
    let mxc: OwnedMxcUri = media.mxc.as_str().into();
    let (bytes, homeserver_type) = match core.matrix.download_media(&mxc).await {
        Ok(download) => download,
        Err(error) if error.status() == Some(404) => {
            return matrix_error(StatusCode::NOT_FOUND, "M_NOT_FOUND", "The file is gone from the homeserver");
        }
        Err(error) => return internal(error),
    };
    let content_type = media.mimetype.or(homeserver_type).unwrap_or_else(|| "application/octet-stream".into());
    let disposition = format!("inline; filename=\"{}\"", media.filename.replace(['"', '\\', '\r', '\n'], "_"));
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (CONTENT_TYPE, content_type.as_str()),
        (CONTENT_DISPOSITION, disposition.as_str()),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // Published files are shown, never run: no scripts even if someone uploaded HTML.
        (CONTENT_SECURITY_POLICY, "sandbox; default-src 'none'"),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    response
}
