//! Files from XMPP ([XEP-0066: Out of Band Data](https://xmpp.org/extensions/xep-0066.html), which
//! [XEP-0363 HTTP upload](https://xmpp.org/extensions/xep-0363.html) clients also send): the linked file is
//! downloaded, within a size cap and never from private or loopback addresses unless configured, and uploaded to
//! Matrix as a file message with its MIME type and name.

use std::net::IpAddr;

use futures::StreamExt as _;
use lattice_bridge_core::event::{MessageType, RemoteEventKind};

use tokio_xmpp::parsers::{minidom::Element, ns, oob::Oob};

use lattice_bridge_core::{ConnectorError, connector::ConnectorResult, event::Media};

use super::Messages;
use crate::{
    config::MediaConfig,
    gateway::{Gateway, find_payload, transient},
};

/// Whether an address is one the bridge must not fetch from by default: loopback, private, link-local, shared
/// (CGNAT), unique-local, unspecified, multicast or documentation ranges.
pub(crate) fn is_private_address(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private_address(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// The Matrix message type for a MIME type.
fn msgtype_of(mimetype: &str) -> MessageType {
    match mimetype.split('/').next() {
        Some("image") => MessageType::Image,
        Some("video") => MessageType::Video,
        Some("audio") => MessageType::Audio,
        _ => MessageType::File,
    }
}

/// The file name at the end of a URL's path, or `file`.
fn filename_of(url: &url::Url) -> String {
    url.path_segments()
        .and_then(|mut segments| segments.next_back().map(str::to_owned))
        .filter(|name| !name.is_empty())
        .and_then(|name| percent_decode(&name))
        .unwrap_or_else(|| "file".to_owned())
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' && index + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A file downloaded from a link.
#[derive(Debug)]
pub(crate) struct Downloaded {
    bytes: Vec<u8>,
    mimetype: String,
    filename: String,
}

/// Downloads a file and uploads it to the homeserver.
pub(crate) async fn fetch(config: &MediaConfig, gateway: &Gateway, link: &str) -> Result<RemoteEventKind, String> {
    let Downloaded { bytes, mimetype, filename } = download(config, link).await?;
    let size = bytes.len() as u64;
    let mxc = gateway
        .bridge
        .matrix()
        .upload_media(bytes::Bytes::from(bytes), &mimetype, Some(&filename))
        .await
        .map_err(|error| format!("uploading to Matrix: {error}"))?;
    Ok(RemoteEventKind::Media {
        msgtype: msgtype_of(&mimetype),
        filename,
        url: mxc.to_string(),
        mimetype: Some(mimetype),
        size: Some(size),
    })
}

/// Downloads the file at `link`: checks the scheme and the target (no private or loopback address unless
/// configured), pins the checked address for the request so a second DNS answer cannot point it elsewhere, follows
/// no redirect, and stops at the size cap and the time limit.
pub(crate) async fn download(config: &MediaConfig, link: &str) -> Result<Downloaded, String> {
    let url = url::Url::parse(link).map_err(|error| format!("not a URL: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{} URLs are not fetched", url.scheme()));
    }
    let host = url.host_str().ok_or("the URL has no host")?.to_owned();
    let port = url.port_or_known_default().ok_or("the URL has no port")?;
    let lookup = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let addresses: Vec<_> =
        tokio::net::lookup_host((lookup.as_str(), port)).await.map_err(|error| format!("{host}: {error}"))?.collect();
    let address = addresses.first().copied().ok_or_else(|| format!("{host} has no address"))?;
    if !config.allow_private_targets && addresses.iter().any(|address| is_private_address(address.ip())) {
        return Err(format!("{host} is a private or loopback address (bridge.media.allow_private_targets)"));
    }
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .resolve(&host, address)
        .timeout(std::time::Duration::from_secs(config.download_timeout_secs))
        .build()
        .map_err(|error| error.to_string())?;
    let failed = |error: reqwest::Error| match error.is_timeout() {
        true => format!("not done within {} s (bridge.media.download_timeout_secs)", config.download_timeout_secs),
        false => error.to_string(),
    };
    let response = client.get(url.clone()).send().await.map_err(failed)?;
    if !response.status().is_success() {
        return Err(format!("the server answered {}", response.status()));
    }
    let cap = config.max_download_bytes;
    if response.content_length().is_some_and(|length| length > cap) {
        return Err(format!("the file is larger than {cap} bytes (bridge.media.max_download_bytes)"));
    }
    let mimetype = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| value.split(';').next().unwrap_or(value).trim().to_owned())
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let mut bytes = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(failed)?;
        if (bytes.len() + chunk.len()) as u64 > cap {
            return Err(format!("the file is larger than {cap} bytes (bridge.media.max_download_bytes)"));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Downloaded { bytes, mimetype, filename: filename_of(&url) })
}

impl Messages<'_> {
    /// The file a message links with XEP-0066, as a Matrix media event; `None` when there is none or it cannot be
    /// fetched (then the message goes to Matrix as its text, which carries the link).
    pub(super) async fn oob_media(&self, payloads: &[Element], body: &str) -> Option<RemoteEventKind> {
        let oob = find_payload::<Oob>(payloads, "x", ns::OOB)?;
        // A client shows an attachment when the body is the URL; any other text is a message with a link.
        if !body.trim().is_empty() && body.trim() != oob.url {
            return None;
        }
        match fetch(&self.section.media, self, &oob.url).await {
            Ok(kind) => Some(kind),
            Err(reason) => {
                tracing::warn!(url = %oob.url, %reason, "not bridging an XMPP file; its link goes to Matrix as text");
                None
            }
        }
    }

    /// Makes a Matrix file reachable from XMPP through the bridge's media endpoint (Matrix media needs
    /// authentication) and returns the XEP-0066 out-of-band payload and the body that carries the same URL.
    pub(super) async fn publish_media(&self, media: &Media) -> ConnectorResult<(String, Oob)> {
        let url = self.bridge.publish_media(&media.url, &media.filename, media.mimetype.as_deref()).await.map_err(
            |error| {
                if error.is_transient() {
                    transient(error.to_string())
                } else {
                    ConnectorError::permanent(format!("cannot publish {}: {error}", media.filename))
                }
            },
        )?;
        Ok((url.clone(), Oob { url, desc: Some(media.filename.clone()) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_targets_are_recognised() {
        for (address, private) in [
            ("127.0.0.1", true),
            ("10.1.2.3", true),
            ("172.16.0.1", true),
            ("192.168.1.1", true),
            ("169.254.169.254", true),
            ("100.64.0.1", true),
            ("0.0.0.0", true),
            ("::1", true),
            ("fd00::1", true),
            ("fe80::1", true),
            ("::ffff:127.0.0.1", true),
            ("93.184.216.34", false),
            ("2606:4700::1111", false),
        ] {
            assert_eq!(is_private_address(address.parse().unwrap()), private, "{address}");
        }
    }

    /// A server on loopback that answers every request with `answer` (or never, when it is `None`), and its URL.
    async fn server(answer: Option<&'static [u8]>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/file.txt", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                    let mut request = [0; 4096];
                    let _ = socket.read(&mut request).await;
                    match answer {
                        Some(answer) => drop(socket.write_all(answer).await),
                        None => std::future::pending::<()>().await,
                    }
                });
            }
        });
        url
    }

    fn config(allow_private_targets: bool) -> MediaConfig {
        MediaConfig { max_download_bytes: 16, allow_private_targets, download_timeout_secs: 1 }
    }

    const SMALL: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 5\r\n\r\nhello";

    #[tokio::test]
    async fn private_and_loopback_targets_are_refused_by_default() {
        let url = server(Some(SMALL)).await;
        let port = url.split(':').nth(2).and_then(|rest| rest.split('/').next()).unwrap().to_owned();
        for link in [
            url.clone(),
            format!("http://localhost:{port}/f"),
            format!("http://[::1]:{port}/f"),
            "http://10.0.0.1/f".into(),
            "http://169.254.169.254/latest/meta-data/".into(),
        ] {
            let error = download(&config(false), &link).await.unwrap_err();
            assert!(error.contains("private or loopback address"), "{link}: {error}");
        }
        let allowed = download(&config(true), &url).await.unwrap();
        assert_eq!(
            (allowed.bytes.as_slice(), allowed.mimetype.as_str(), allowed.filename.as_str()),
            (&b"hello"[..], "text/plain", "file.txt")
        );
    }

    #[tokio::test]
    async fn other_schemes_are_refused() {
        for link in ["file:///etc/passwd", "ftp://example.org/f", "gopher://example.org/", "not a url"] {
            assert!(download(&config(true), link).await.is_err(), "{link}");
        }
    }

    #[tokio::test]
    async fn a_file_over_the_cap_is_refused_declared_or_streamed() {
        let declared = server(Some(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\nxx")).await;
        let error = download(&config(true), &declared).await.unwrap_err();
        assert!(error.contains("larger than 16 bytes"), "{error}");
        let streamed =
            server(Some(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n0123456789abcdefghijklmnopqrstuvwxyz")).await;
        let error = download(&config(true), &streamed).await.unwrap_err();
        assert!(error.contains("larger than 16 bytes"), "{error}");
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let url =
            server(Some(b"HTTP/1.1 302 Found\r\nlocation: http://169.254.169.254/\r\ncontent-length: 0\r\n\r\n")).await;
        let error = download(&config(true), &url).await.unwrap_err();
        assert_eq!(error, "the server answered 302 Found");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_given_up_on() {
        let url = server(None).await;
        let attempt = tokio::time::timeout(std::time::Duration::from_secs(20), download(&config(true), &url)).await;
        let error = attempt.expect("the download's own time limit (1 s) ends it").unwrap_err();
        assert_eq!(error, "not done within 1 s (bridge.media.download_timeout_secs)");
    }

    #[test]
    fn file_names_and_types_come_from_the_url_and_mime_type() {
        let url = url::Url::parse("https://upload.example.org/abc/My%20Photo.png").unwrap();
        assert_eq!(filename_of(&url), "My Photo.png");
        assert_eq!(filename_of(&url::Url::parse("https://x.org/").unwrap()), "file");
        assert_eq!(msgtype_of("image/png"), MessageType::Image);
        assert_eq!(msgtype_of("application/pdf"), MessageType::File);
    }
}
