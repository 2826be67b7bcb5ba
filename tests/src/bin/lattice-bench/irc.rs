//! Raw IRC clients for measuring: they read everything promptly (ngircd drops a client whose unread output passes
//! 32 KiB), answer PINGs, and count or time-stamp the channel lines they see. Unlike the test client they keep no
//! backlog, so a run of a hundred thousand lines costs them nothing.

use std::{
    collections::{HashMap, HashSet},
    io,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader, ReadBuf},
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::{Mutex as AsyncMutex, Notify},
};

/// What one client saw.
#[derive(Default)]
pub(crate) struct Tally {
    registered: AtomicUsize,
    /// End-of-NAMES replies (366): channels joined.
    joined: AtomicUsize,
    /// PRIVMSG lines whose text starts with the marker.
    messages: AtomicUsize,
    /// JOIN lines of nicks starting with the join prefix.
    joins: AtomicUsize,
    /// From the last LUSERS: users on the server (251) and channels formed (254).
    users: AtomicUsize,
    channels: AtomicUsize,
    /// The most connections any LUSERS answer counted as not registered yet (253).
    peak_unregistered: AtomicUsize,
    /// Nicks starting with the join prefix that a WHOIS answer showed in a channel (319).
    in_a_channel: Mutex<HashSet<String>>,
    /// When the last counted PRIVMSG arrived.
    last_message: Mutex<Option<Instant>>,
    /// Arrival times by message text, when recording.
    arrivals: Option<Mutex<HashMap<String, Instant>>>,
    marker: String,
    join_prefix: String,
    changed: Notify,
}

impl Tally {
    /// Counts PRIVMSGs whose text starts with `marker` and JOINs of nicks starting with `join_prefix`; with `record`,
    /// remembers when each message text arrived.
    pub(crate) fn new(marker: &str, join_prefix: &str, record: bool) -> Arc<Self> {
        Arc::new(Self {
            marker: marker.to_owned(),
            join_prefix: join_prefix.to_owned(),
            arrivals: record.then(Mutex::default),
            ..Self::default()
        })
    }

    /// A tally that counts nothing but registration and joins.
    pub(crate) fn quiet() -> Arc<Self> {
        Self::new("\u{0}", "\u{0}", false)
    }

    fn see(&self, line: &str, now: Instant) {
        let mut words = line.splitn(4, ' ');
        let (prefix, command) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
        match command {
            "001" => {
                self.registered.fetch_add(1, Ordering::Relaxed);
            }
            "366" => {
                self.joined.fetch_add(1, Ordering::Relaxed);
            }
            // `:server 251 nick :There are N users and M services on K servers`
            "251" => {
                let count = line.split(" :There are ").nth(1).and_then(|rest| rest.split(' ').next());
                self.users.store(count.and_then(|n| n.parse().ok()).unwrap_or(0), Ordering::Relaxed);
            }
            // `:server 254 nick N :channels formed`
            "254" => {
                let count = words.nth(1).and_then(|rest| rest.split(' ').next()).and_then(|n| n.parse().ok());
                self.channels.store(count.unwrap_or(0), Ordering::Relaxed);
            }
            // `:server 253 nick N :unknown connection(s)` (ngircd leaves it out when there are none)
            "253" => {
                let count = words.nth(1).and_then(|rest| rest.split(' ').next()).and_then(|n| n.parse().ok());
                self.peak_unregistered.fetch_max(count.unwrap_or(0), Ordering::Relaxed);
            }
            // `:server 319 nick target :#channel …`
            "319" => {
                let mut rest = words.nth(1).unwrap_or_default().splitn(2, " :");
                let (target, channels) = (rest.next().unwrap_or_default(), rest.next().unwrap_or_default());
                if target.starts_with(&self.join_prefix) && !channels.trim().is_empty() {
                    self.in_a_channel.lock().unwrap_or_else(|p| p.into_inner()).insert(target.to_owned());
                }
            }
            "PRIVMSG" => {
                let text = words.nth(1).unwrap_or_default().strip_prefix(':').unwrap_or_default();
                if !text.starts_with(&self.marker) {
                    return;
                }
                *self.last_message.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
                if let Some(arrivals) = &self.arrivals {
                    arrivals.lock().unwrap_or_else(|p| p.into_inner()).insert(text.to_owned(), now);
                }
                self.messages.fetch_add(1, Ordering::Relaxed);
            }
            "JOIN" => {
                if prefix.strip_prefix(':').is_some_and(|nick| nick.starts_with(&self.join_prefix)) {
                    self.joins.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => return,
        }
        self.changed.notify_waiters();
    }

    /// Counted messages so far.
    pub(crate) fn messages(&self) -> usize {
        self.messages.load(Ordering::Relaxed)
    }

    /// Counted joins so far.
    pub(crate) fn joins(&self) -> usize {
        self.joins.load(Ordering::Relaxed)
    }

    /// Users on the server, by the last LUSERS answer.
    pub(crate) fn users(&self) -> usize {
        self.users.load(Ordering::Relaxed)
    }

    /// Channels formed on the server, by the last LUSERS answer.
    pub(crate) fn channels(&self) -> usize {
        self.channels.load(Ordering::Relaxed)
    }

    /// The most connections a LUSERS answer counted as still registering.
    pub(crate) fn peak_unregistered(&self) -> usize {
        self.peak_unregistered.load(Ordering::Relaxed)
    }

    /// Whether a WHOIS answer showed `nick` (starting with the join prefix) in a channel.
    pub(crate) fn in_a_channel(&self, nick: &str) -> bool {
        self.in_a_channel.lock().unwrap_or_else(|p| p.into_inner()).contains(nick)
    }

    /// When the last counted message arrived.
    pub(crate) fn last_message(&self) -> Option<Instant> {
        *self.last_message.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When the message `text` arrived, if it has.
    pub(crate) fn arrival(&self, text: &str) -> Option<Instant> {
        self.arrivals.as_ref()?.lock().unwrap_or_else(|p| p.into_inner()).get(text).copied()
    }

    /// Waits until `done` holds, or fails after `timeout` naming `what`.
    pub(crate) async fn wait(&self, timeout: Duration, what: &str, done: impl Fn(&Self) -> bool) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            if done(self) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                if done(self) {
                    return Ok(());
                }
                bail!("{what}: not within {timeout:?} (messages {}, joins {})", self.messages(), self.joins());
            }
        }
    }
}

/// A raw IRC client.
#[derive(Clone)]
pub(crate) struct RawIrc {
    writer: Arc<AsyncMutex<OwnedWriteHalf>>,
    pub(crate) tally: Arc<Tally>,
}

impl RawIrc {
    /// Connects as `nick`, waits for the welcome, and joins `channels` (waiting for each names list).
    pub(crate) async fn connect(port: u16, nick: &str, channels: &[&str], tally: Arc<Tally>) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.context("connecting to the IRC server")?;
        stream.set_nodelay(true)?;
        let (reader, writer) = stream.into_split();
        let client = Self { writer: Arc::new(AsyncMutex::new(writer)), tally };
        let (writer, tally) = (Arc::clone(&client.writer), Arc::clone(&client.tally));
        tokio::spawn(async move {
            let mut lines = BufReader::with_capacity(64 * 1024, QuickAck(reader)).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(token) = line.strip_prefix("PING ") {
                    let _ = writer.lock().await.write_all(format!("PONG {token}\r\n").as_bytes()).await;
                    continue;
                }
                tally.see(&line, Instant::now());
            }
        });
        client.send_raw(format!("NICK {nick}\r\nUSER {nick} 0 * :lattice-bench\r\n").as_bytes()).await?;
        let wait = Duration::from_secs(60);
        client.tally.wait(wait, &format!("{nick} registering"), |t| t.registered.load(Ordering::Relaxed) > 0).await?;
        for (index, channel) in channels.iter().enumerate() {
            client.send_raw(format!("JOIN {channel}\r\n").as_bytes()).await?;
            client
                .tally
                .wait(wait, &format!("{nick} joining {channel}"), |t| t.joined.load(Ordering::Relaxed) > index)
                .await?;
        }
        Ok(client)
    }

    /// Writes bytes as they are (whole lines with CR LF).
    pub(crate) async fn send_raw(&self, bytes: &[u8]) -> anyhow::Result<()> {
        self.writer.lock().await.write_all(bytes).await.context("writing to IRC")
    }
}

/// A read half that acknowledges what it reads at once. Linux delays an ACK (up to 40 ms) and leaves quick-ACK mode by
/// itself, so the mode is set again after every read: ngircd does not turn Nagle's algorithm off, and a line it has
/// for a client while that client's ACK of the line before is delayed would wait for it, a delay of the measuring
/// client, not of the bridge that sent the line.
struct QuickAck(OwnedReadHalf);

impl AsyncRead for QuickAck {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let filled = buf.filled().len();
        let polled = Pin::new(&mut self.0).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > filled {
            // Best effort: a socket that refuses the option only loses the quick ACK.
            let _ = socket2::SockRef::from(self.0.as_ref()).set_tcp_quickack(true);
        }
        polled
    }
}

/// Connects `count` clients `{prefix}{i}` at once (each joining `channels`), at most 50 registering at a time.
pub(crate) async fn connect_many(
    port: u16,
    prefix: &str,
    count: usize,
    channels: &[&str],
) -> anyhow::Result<Vec<RawIrc>> {
    let limit = Arc::new(tokio::sync::Semaphore::new(50));
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let (nick, limit) = (format!("{prefix}{i}"), Arc::clone(&limit));
            let channels: Vec<String> = channels.iter().map(|c| (*c).to_owned()).collect();
            tokio::spawn(async move {
                let _permit = limit.acquire().await?;
                let channels: Vec<&str> = channels.iter().map(String::as_str).collect();
                RawIrc::connect(port, &nick, &channels, Tally::quiet()).await
            })
        })
        .collect();
    let mut clients = Vec::with_capacity(count);
    for task in tasks {
        clients.push(task.await??);
    }
    Ok(clients)
}
