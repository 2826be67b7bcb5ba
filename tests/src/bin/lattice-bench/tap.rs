//! A TCP relay that notes when each marked message body first passes through it, each way: put between Synapse and
//! the bridge's appservice endpoint, it timestamps the transactions the bridge receives; put between the bridge and
//! Synapse, it timestamps the bridge's calls to the homeserver; put between the bridge and the IRC server, the lines
//! the bridge writes and reads. The bridge's own part of a message's latency is then taken at its two edges, with the
//! servers' shares outside it.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use crate::arrivals::Arrivals;

/// Bytes of a chunk carried into the next, so a body split between two reads is still seen whole.
const CARRY: usize = 256;

/// A relay to one upstream address, noting bodies that start with its marker.
pub(crate) struct Tap {
    /// `http://127.0.0.1:PORT` of the relay.
    pub(crate) url: String,
    /// The relay's port.
    pub(crate) port: u16,
    upstream: Arrivals,
    downstream: Arrivals,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Tap {
    /// Relays connections to `upstream` (`host:port`), noting every body that starts with `marker` and ends at the
    /// next `"` (bodies in JSON) or line end (IRC lines).
    pub(crate) async fn start(upstream: String, marker: &'static str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding the tap")?;
        let port = listener.local_addr()?.port();
        let url = format!("http://127.0.0.1:{port}");
        let (towards_server, towards_client) = (Arrivals::default(), Arrivals::default());
        let seen = (towards_server.clone(), towards_client.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, (towards_server, towards_client)) = (upstream.clone(), seen.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else { return };
                    if client.set_nodelay(true).and(server.set_nodelay(true)).is_err() {
                        return;
                    }
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let back = tokio::spawn(pipe(server_read, client_write, marker, towards_client));
                    let _ = pipe(client_read, server_write, marker, towards_server).await;
                    back.abort();
                });
            }
        });
        Ok(Self { url, port, upstream: towards_server, downstream: towards_client, task })
    }

    /// When `body` first passed towards the upstream, waiting up to `timeout`.
    pub(crate) async fn arrival(&self, body: &str, timeout: Duration) -> anyhow::Result<Instant> {
        self.upstream.wait(body, timeout, "the tap", || false).await
    }

    /// When `body` first passed back from the upstream, waiting up to `timeout`.
    pub(crate) async fn return_arrival(&self, body: &str, timeout: Duration) -> anyhow::Result<Instant> {
        self.downstream.wait(body, timeout, "the tap (back from upstream)", || false).await
    }
}

/// Copies `from` to `to`, noting the marked bodies that pass, each when the bytes carrying it were read.
async fn pipe(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    marker: &str,
    seen: Arrivals,
) -> std::io::Result<()> {
    let mut window = String::new();
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = from.read(&mut buffer).await?;
        if read == 0 {
            return Ok(());
        }
        let at = Instant::now();
        to.write_all(&buffer[..read]).await?;
        window.push_str(&String::from_utf8_lossy(&buffer[..read]));
        seen.note(bodies(&window, marker), at);
        let keep = window.len().saturating_sub(CARRY);
        let keep = (keep..window.len()).find(|&index| window.is_char_boundary(index)).unwrap_or(window.len());
        window.drain(..keep);
    }
}

/// Each complete body in `window`: from `marker` to the next `"` or line end.
fn bodies<'a>(window: &'a str, marker: &'a str) -> impl Iterator<Item = &'a str> {
    window
        .match_indices(marker)
        .filter_map(|(start, _)| window[start..].find(['"', '\r', '\n']).map(|length| &window[start..start + length]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_complete_bodies_are_taken() {
        let window = r#"{"body":"p3 x to irc 1"},{"body":"p3 x to irc 2"},{"body":"p3 x to ir"#;
        assert_eq!(bodies(window, "p3 x ").collect::<Vec<_>>(), ["p3 x to irc 1", "p3 x to irc 2"]);
        let lines = "PRIVMSG #c :p3 x to irc 3\r\nPRIVMSG #c :p3 x to irc 4\r\nPRIVMSG #c :p3 x to";
        assert_eq!(bodies(lines, "p3 x ").collect::<Vec<_>>(), ["p3 x to irc 3", "p3 x to irc 4"]);
    }
}
