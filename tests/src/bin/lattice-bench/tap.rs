//! A TCP relay that notes when each marked message body first passes through it, towards the upstream side: put
//! between Synapse and the bridge's appservice endpoint, it timestamps the transactions the bridge receives; put
//! between the bridge and Synapse, it timestamps the bridge's calls to the homeserver. The bridge's own part of a
//! message's latency is then taken at its two edges, with the homeserver's share outside it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::Notify,
};

/// Bytes of a chunk carried into the next, so a body split between two reads is still seen whole.
const CARRY: usize = 256;

type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

/// A relay to one upstream address, noting bodies that start with its marker.
pub(crate) struct Tap {
    /// `http://127.0.0.1:PORT` of the relay.
    pub(crate) url: String,
    arrivals: Arrivals,
    changed: Arc<Notify>,
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
        let (arrivals, changed) = (Arrivals::default(), Arc::<Notify>::default());
        let (seen, notify) = (Arc::clone(&arrivals), Arc::clone(&changed));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, seen, notify) = (upstream.clone(), Arc::clone(&seen), Arc::clone(&notify));
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        let _ = relay(client, server, marker, &seen, &notify).await;
                    }
                });
            }
        });
        Ok(Self { url, arrivals, changed, task })
    }

    /// When `body` first passed towards the upstream, waiting up to `timeout`.
    pub(crate) async fn arrival(&self, body: &str, timeout: Duration) -> anyhow::Result<Instant> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            if let Some(at) = self.arrivals.lock().unwrap_or_else(|p| p.into_inner()).get(body) {
                return Ok(*at);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                bail!("{body:?} did not pass the tap within {timeout:?}");
            }
        }
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    marker: &str,
    seen: &Arrivals,
    notify: &Notify,
) -> std::io::Result<()> {
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
        note_bodies(&window, marker, at, seen);
        notify.notify_waiters();
        let keep = window.len().saturating_sub(CARRY);
        let keep = (keep..window.len()).find(|&index| window.is_char_boundary(index)).unwrap_or(window.len());
        window.drain(..keep);
    }
    back.abort();
    Ok(())
}

/// Notes, at `at`, each complete body in `window` not seen before.
fn note_bodies(window: &str, marker: &str, at: Instant, seen: &Arrivals) {
    let mut arrivals = seen.lock().unwrap_or_else(|p| p.into_inner());
    for (start, _) in window.match_indices(marker) {
        if let Some(length) = window[start..].find('"') {
            arrivals.entry(window[start..start + length].to_owned()).or_insert(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_noted_once_and_only_when_complete() {
        let seen = Arrivals::default();
        let (first, later) = (Instant::now(), Instant::now() + Duration::from_secs(1));
        note_bodies(r#"{"body":"p3 x to irc 1"},{"body":"p3 x to ir"#, "p3 x ", first, &seen);
        note_bodies(r#"{"body":"p3 x to irc 1"},{"body":"p3 x to irc 2"}"#, "p3 x ", later, &seen);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen["p3 x to irc 1"], first);
        assert_eq!(seen["p3 x to irc 2"], later);
    }
}
