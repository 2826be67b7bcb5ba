//! Raw XMPP connections for measuring: a client (RFC 6120 c2s, SASL PLAIN without TLS, resource binding) and an
//! XEP-0114 component, both counting the markers they see in the byte stream instead of parsing stanzas, so that
//! counting ten thousand messages costs them next to nothing.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use sha1::{Digest as _, Sha1};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpStream, tcp::OwnedWriteHalf},
    sync::{Mutex as AsyncMutex, Notify},
};

/// Counts of byte patterns seen in a stream, and when the first pattern was last seen.
pub(crate) struct XmlTally {
    patterns: Vec<(String, AtomicUsize)>,
    last_first: Mutex<Option<Instant>>,
    changed: Notify,
}

impl XmlTally {
    /// A tally of `patterns` (e.g. `<body>p6 `).
    pub(crate) fn new(patterns: &[&str]) -> Arc<Self> {
        Arc::new(Self {
            patterns: patterns.iter().map(|p| ((*p).to_owned(), AtomicUsize::new(0))).collect(),
            last_first: Mutex::default(),
            changed: Notify::new(),
        })
    }

    /// How often pattern `index` was seen.
    pub(crate) fn count(&self, index: usize) -> usize {
        self.patterns[index].1.load(Ordering::Relaxed)
    }

    /// When pattern 0 was last seen.
    pub(crate) fn last_first(&self) -> Option<Instant> {
        *self.last_first.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts the patterns that end inside `new` (the text before it is `window`'s carried tail).
    fn see(&self, window: &str, carried: usize) {
        let now = Instant::now();
        for (index, (pattern, count)) in self.patterns.iter().enumerate() {
            // A match ending in the carried tail was counted with the previous chunk.
            let found = window.match_indices(pattern.as_str()).filter(|(at, _)| at + pattern.len() > carried).count();
            if found > 0 {
                count.fetch_add(found, Ordering::Relaxed);
                if index == 0 {
                    *self.last_first.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
                }
            }
        }
        self.changed.notify_waiters();
    }

    /// Waits until pattern `index` was seen `at_least` times.
    pub(crate) async fn wait(
        &self,
        index: usize,
        at_least: usize,
        timeout: Duration,
        what: &str,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            if self.count(index) >= at_least {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() && self.count(index) < at_least {
                bail!("{what}: {} of {at_least} within {timeout:?}", self.count(index));
            }
        }
    }
}

/// A logged-in XMPP stream whose input is counted.
pub(crate) struct RawXmpp {
    writer: AsyncMutex<OwnedWriteHalf>,
    pub(crate) tally: Arc<XmlTally>,
}

/// Reads until `marker` is in `buffer`.
async fn read_until(stream: &mut TcpStream, buffer: &mut String, marker: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut chunk = vec![0; 16384];
    while !buffer.contains(marker) {
        let read = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .with_context(|| format!("waiting for {marker}; got {buffer}"))??;
        if read == 0 {
            bail!("the XMPP server closed the stream waiting for {marker}: {buffer}");
        }
        buffer.push_str(&String::from_utf8_lossy(&chunk[..read]));
    }
    Ok(())
}

impl RawXmpp {
    /// Logs in as `user@localhost/bench` on the c2s port and sends initial presence.
    pub(crate) async fn client(port: u16, user: &str, password: &str, tally: Arc<XmlTally>) -> anyhow::Result<Self> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.context("connecting to c2s")?;
        let open = "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' \
                    xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";
        let mut buffer = String::new();
        stream.write_all(open.as_bytes()).await?;
        read_until(&mut stream, &mut buffer, "</stream:features>").await?;
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        let auth = format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{credentials}</auth>");
        stream.write_all(auth.as_bytes()).await?;
        buffer.clear();
        read_until(&mut stream, &mut buffer, "success").await?;
        buffer.clear();
        stream.write_all(open.as_bytes()).await?;
        read_until(&mut stream, &mut buffer, "</stream:features>").await?;
        buffer.clear();
        let bind = "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>bench</resource>\
                    </bind></iq><presence/>";
        stream.write_all(bind.as_bytes()).await?;
        read_until(&mut stream, &mut buffer, "</iq>").await?;
        Ok(Self::counting(stream, tally))
    }

    /// Connects as the XEP-0114 component `domain` and completes the handshake.
    pub(crate) async fn component(
        address: &str,
        domain: &str,
        secret: &str,
        tally: Arc<XmlTally>,
    ) -> anyhow::Result<Self> {
        let mut stream = TcpStream::connect(address).await.context("connecting to the component port")?;
        let open = format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
             xmlns:stream='http://etherx.jabber.org/streams' to='{domain}'>"
        );
        stream.write_all(open.as_bytes()).await?;
        let mut buffer = String::new();
        read_until(&mut stream, &mut buffer, "id=").await?;
        read_until(&mut stream, &mut buffer, ">").await?;
        let id = ["id='", "id=\""]
            .iter()
            .find_map(|start| {
                let rest = &buffer[buffer.find(start)? + start.len()..];
                Some(rest[..rest.find(['\'', '"'])?].to_owned())
            })
            .context("no stream id from the server")?;
        let digest: String = Sha1::digest(format!("{id}{secret}")).iter().map(|b| format!("{b:02x}")).collect();
        stream.write_all(format!("<handshake>{digest}</handshake>").as_bytes()).await?;
        buffer.clear();
        read_until(&mut stream, &mut buffer, "handshake").await?;
        if buffer.contains("stream:error") {
            bail!("the component handshake failed: {buffer}");
        }
        Ok(Self::counting(stream, tally))
    }

    fn counting(stream: TcpStream, tally: Arc<XmlTally>) -> Self {
        let (mut reader, writer) = stream.into_split();
        let counter = Arc::clone(&tally);
        tokio::spawn(async move {
            let longest = counter.patterns.iter().map(|(p, _)| p.len()).max().unwrap_or(1);
            let mut chunk = vec![0; 65536];
            let mut window = String::new();
            loop {
                let read = match reader.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(read) => read,
                };
                // Carry the tail so a pattern split across reads is still seen.
                let keep = window.len().min(longest.saturating_sub(1));
                let mut cut = window.len() - keep;
                while !window.is_char_boundary(cut) {
                    cut -= 1;
                }
                window.drain(..cut);
                let carried = window.len();
                window.push_str(&String::from_utf8_lossy(&chunk[..read]));
                counter.see(&window, carried);
            }
        });
        Self { writer: AsyncMutex::new(writer), tally }
    }

    /// Writes raw XML.
    pub(crate) async fn send(&self, xml: &str) -> anyhow::Result<()> {
        self.writer.lock().await.write_all(xml.as_bytes()).await.context("writing to the XMPP server")
    }
}
