//! A TCP relay that notes when each marked message body first passes through it, towards the upstream side: put
//! between Synapse and the bridge's appservice endpoint, it timestamps the transactions the bridge receives; put
//! between the bridge and Synapse, it timestamps the bridge's calls to the homeserver. The bridge's own part of a
//! message's latency is then taken at its two edges, with the homeserver's share outside it.

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
    arrivals: Arrivals,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Tap {
    /// Relays connections to `upstream` (`host:port`), noting every body that starts with `marker` and ends at the
    /// next `"` in the bytes going upstream (bodies travel in JSON).
    pub(crate) async fn start(upstream: String, marker: &'static str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding the tap")?;
        let url = format!("http://{}", listener.local_addr()?);
        let arrivals = Arrivals::default();
        let seen = arrivals.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, seen) = (upstream.clone(), seen.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        let _ = relay(client, server, marker, &seen).await;
                    }
                });
            }
        });
        Ok(Self { url, arrivals, task })
    }

    /// When `body` first passed towards the upstream, waiting up to `timeout`.
    pub(crate) async fn arrival(&self, body: &str, timeout: Duration) -> anyhow::Result<Instant> {
        self.arrivals.wait(body, timeout, "the tap", || false).await
    }
}

async fn relay(client: TcpStream, server: TcpStream, marker: &str, seen: &Arrivals) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let back = tokio::spawn(async move { tokio::io::copy(&mut server_read, &mut client_write).await });
    let mut window = String::new();
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = client_read.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        let at = Instant::now();
        server_write.write_all(&buffer[..read]).await?;
        window.push_str(&String::from_utf8_lossy(&buffer[..read]));
        seen.note(bodies(&window, marker), at);
        let keep = window.len().saturating_sub(CARRY);
        let keep = (keep..window.len()).find(|&index| window.is_char_boundary(index)).unwrap_or(window.len());
        window.drain(..keep);
    }
    back.abort();
    Ok(())
}

/// Each complete body in `window`: from `marker` to the next `"`.
fn bodies<'a>(window: &'a str, marker: &'a str) -> impl Iterator<Item = &'a str> {
    window
        .match_indices(marker)
        .filter_map(|(start, _)| window[start..].find('"').map(|length| &window[start..start + length]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_complete_bodies_are_taken() {
        let window = r#"{"body":"p3 x to irc 1"},{"body":"p3 x to irc 2"},{"body":"p3 x to ir"#;
        assert_eq!(bodies(window, "p3 x ").collect::<Vec<_>>(), ["p3 x to irc 1", "p3 x to irc 2"]);
    }
}
