//! One IRC connection, kept alive: connects (TCP or TLS), registers (negotiating IRCv3 capabilities with
//! `CAP LS 302` and logging in with SASL before `CAP END`, see [`crate::ircv3::cap`], or with NickServ after),
//! answers PINGs, retries taken nicks, joins its channels and rejoins them after every reconnect, and reconnects
//! with exponential backoff and jitter while a per-network semaphore caps how many connections register at once.
//! What the owner must see is forwarded as [`ConnEvent`]s.

use std::{
    collections::HashMap,
    str::FromStr,
    sync::{Arc, Mutex},
    time::Duration,
};

use irc::proto::{Command, Message, Response};
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    net::TcpStream,
    sync::{Notify, Semaphore, mpsc, oneshot, watch},
};

use crate::{
    config::{AuthMethod, FloodConfig, ReconnectConfig, ServerConfig},
    ident::{IdentEntry, IdentRegistry},
    ids::{casefold, casefolds_to, next_nick},
    ircv3::{
        cap::{CapNegotiation, CapSet, CapStep},
        sasl::{self, Exchange, SaslError},
        tags,
    },
    line::{Line, worst_case_prefix},
    receipt::{Receipt, Receipts},
};

/// How long a connection may stay silent before we PING it, and again before we give up on it.
const READ_IDLE: Duration = Duration::from_secs(90);
/// How long connecting and registering may take.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest line read (IRCv3 tags may take 8 KiB on top of the 512 bytes of the message).
const MAX_READ_LINE: usize = 16 * 1024;
/// The read buffer of a connection. Small on purpose: an idle puppet holds it for as long as it lives, and a bridge
/// holds thousands (tokio's 8 KiB default was 40% of a puppet's memory); longer lines are read in several fills.
const READ_BUFFER: usize = 1024;

/// An account login for a connection.
#[derive(Clone)]
pub(crate) struct Login {
    pub(crate) method: AuthMethod,
    pub(crate) account: String,
    /// The password for SASL PLAIN or NickServ; empty when only a certificate logs in.
    pub(crate) password: String,
    /// A TLS client certificate and its key (PEM) for SASL EXTERNAL (CertFP), see [`crate::ircv3::certfp`].
    pub(crate) certificate: Option<String>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Login")
            .field("method", &self.method)
            .field("account", &self.account)
            .field("certificate", &self.certificate.is_some())
            .finish()
    }
}

/// Which incoming messages the owner wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forward {
    /// Everything (the bridge bot's listener).
    All,
    /// What concerns this connection's own nick only: private messages, kicks, its nick changes (puppets).
    Own,
}

/// What a connection needs to know.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Who owns the connection, in logs and events: `bot` or a Matrix user ID.
    pub(crate) owner: String,
    pub(crate) network: String,
    pub(crate) servers: Vec<ServerConfig>,
    /// Certificates to trust besides the Mozilla roots (PEM file).
    pub(crate) ca_file: Option<String>,
    pub(crate) nick: String,
    pub(crate) max_nick_length: usize,
    pub(crate) username: String,
    pub(crate) realname: String,
    pub(crate) login: Option<Login>,
    pub(crate) flood: FloodConfig,
    pub(crate) reconnect: ReconnectConfig,
    pub(crate) forward: Forward,
    /// Where the connection tells the ident server its username.
    pub(crate) ident: IdentRegistry,
}

/// What a connection tells its owner.
#[derive(Debug, Clone)]
pub(crate) enum ConnEvent {
    /// The connection registered as `nick`.
    Registered { owner: String, nick: String },
    /// A message the owner wants (see [`Forward`]).
    Message { owner: String, nick: String, message: Box<Message> },
    /// The connection is gone; it reconnects unless it was told to quit.
    Disconnected { owner: String, nick: String },
    /// The SASL login to `account` failed (the connection registers without it).
    LoginFailed { owner: String, account: String, reason: String },
}

/// Where a connection stands with a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChannelStatus {
    /// Joined: lines can go there.
    Joined,
    /// Wanted, not joined yet (connecting, or the JOIN is on its way).
    Pending,
    /// The server refused the JOIN; the text says why.
    Refused(String),
    /// Not wanted.
    Unknown,
}

/// Why a line could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the IRC connection of {0} is not registered right now")]
pub(crate) struct NotConnected(pub(crate) String);

#[derive(Debug, Default)]
struct ChannelState {
    name: String,
    joined: bool,
    join_sent: bool,
    refused: Option<String>,
}

/// A line for the flood-controlled queue, with the receipt to settle once the server has read it.
struct Outgoing {
    line: Line,
    receipt: Option<oneshot::Sender<()>>,
}

struct SessionHandle {
    sender: mpsc::Sender<Outgoing>,
    urgent: mpsc::Sender<Line>,
    nick: String,
    prefix_len: usize,
}

struct Shared {
    settings: Mutex<Settings>,
    session: Mutex<Option<SessionHandle>>,
    channels: Mutex<HashMap<String, ChannelState>>,
    /// The IRCv3 capabilities the current connection negotiated.
    caps: Mutex<CapSet>,
    stop: watch::Sender<bool>,
    reconnect_now: Notify,
    /// Wakes whoever waits for the connection's state (registration, joins) to change.
    changed: Notify,
}

/// A handle on a kept-alive IRC connection. Cheap to clone; the connection lives until [`Connection::quit`].
#[derive(Clone)]
pub(crate) struct Connection {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Connection").field("nick", &self.nick()).finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Connection {
    /// Starts the connection's task.
    pub(crate) fn spawn(settings: Settings, events: mpsc::Sender<ConnEvent>, connecting: Arc<Semaphore>) -> Self {
        let (stop, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            settings: Mutex::new(settings),
            session: Mutex::new(None),
            channels: Mutex::new(HashMap::new()),
            caps: Mutex::new(CapSet::default()),
            stop,
            reconnect_now: Notify::new(),
            changed: Notify::new(),
        });
        tokio::spawn(supervise(Arc::clone(&shared), events, connecting));
        Self { shared }
    }

    /// The nick the connection is registered as, while it is.
    pub(crate) fn nick(&self) -> Option<String> {
        lock(&self.shared.session).as_ref().map(|session| session.nick.clone())
    }

    /// Whether the current connection negotiated the IRCv3 capability `cap`.
    pub(crate) fn has_cap(&self, cap: &str) -> bool {
        lock(&self.shared.caps).has(cap)
    }

    /// The value the current connection's server offered an enabled capability with.
    pub(crate) fn cap_value(&self, cap: &str) -> Option<String> {
        lock(&self.shared.caps).value(cap).map(str::to_owned)
    }

    /// Whether the connection is registered.
    pub(crate) fn is_connected(&self) -> bool {
        lock(&self.shared.session).is_some()
    }

    /// The room the server's prefix takes on lines we send (see [`worst_case_prefix`]).
    pub(crate) fn prefix_len(&self) -> usize {
        lock(&self.shared.session)
            .as_ref()
            .map_or_else(|| worst_case_prefix(&lock(&self.shared.settings).nick), |session| session.prefix_len)
    }

    /// Queues a line; fails at once if the connection is not registered (the caller retries later).
    pub(crate) async fn send(&self, line: Line) -> Result<(), NotConnected> {
        self.queue(Outgoing { line, receipt: None }).await
    }

    /// Queues lines, in order, and returns a receipt that resolves once the server has read the last of them (see
    /// [`crate::receipt`]); fails at once if the connection is not registered. The receipt fails if the connection
    /// ends first: whether the server read them is then unknown.
    pub(crate) async fn send_with_receipt(&self, lines: Vec<Line>) -> Result<Receipt, NotConnected> {
        let (settle, receipt) = oneshot::channel();
        let count = lines.len();
        let mut settle = Some(settle);
        for (index, line) in lines.into_iter().enumerate() {
            let receipt = if index + 1 == count { settle.take() } else { None };
            self.queue(Outgoing { line, receipt }).await?;
        }
        // No lines: nothing for the server to read.
        if let Some(settle) = settle {
            let _ = settle.send(());
        }
        Ok(receipt)
    }

    async fn queue(&self, outgoing: Outgoing) -> Result<(), NotConnected> {
        let sender = lock(&self.shared.session).as_ref().map(|session| session.sender.clone());
        let owner = || lock(&self.shared.settings).owner.clone();
        match sender {
            Some(sender) => sender.send(outgoing).await.map_err(|_| NotConnected(owner())),
            None => Err(NotConnected(owner())),
        }
    }

    /// Wants the connection in `channel`: joins now if registered, and after every reconnect.
    pub(crate) fn want_channel(&self, channel: &str) {
        let key = casefold(channel);
        let send_join = {
            let mut channels = lock(&self.shared.channels);
            let state =
                channels.entry(key).or_insert_with(|| ChannelState { name: channel.to_owned(), ..Default::default() });
            let connected = lock(&self.shared.session).is_some();
            let send = connected && !state.joined && !state.join_sent;
            if send {
                state.join_sent = true;
                state.refused = None;
            }
            send
        };
        if send_join && let Ok(line) = Line::new("JOIN", &[channel], None) {
            self.send_join(line);
        }
    }

    /// Queues a JOIN without ever dropping it: a bridge starting with thousands of portals wants their channels
    /// faster than the urgent queue drains, and a JOIN marked as sent but dropped would never be sent again.
    fn send_join(&self, line: Line) {
        let Some(sender) = lock(&self.shared.session).as_ref().map(|session| session.urgent.clone()) else { return };
        if let Err(mpsc::error::TrySendError::Full(line)) = sender.try_send(line) {
            tokio::spawn(async move { sender.send(line).await });
        }
    }

    /// Leaves `channel` and stops wanting it.
    pub(crate) fn part(&self, channel: &str, reason: Option<&str>) {
        let was = lock(&self.shared.channels).remove(&casefold(channel));
        if was.is_some_and(|state| state.joined || state.join_sent)
            && let Ok(line) = Line::new("PART", &[channel], reason)
        {
            self.send_urgent(line);
        }
    }

    /// Where the connection stands with `channel`.
    pub(crate) fn channel_status(&self, channel: &str) -> ChannelStatus {
        match lock(&self.shared.channels).get(&casefold(channel)) {
            None => ChannelStatus::Unknown,
            Some(state) if state.joined => ChannelStatus::Joined,
            Some(ChannelState { refused: Some(reason), .. }) => ChannelStatus::Refused(reason.clone()),
            Some(_) => ChannelStatus::Pending,
        }
    }

    /// The channels the connection wants, as first named.
    pub(crate) fn channels(&self) -> Vec<String> {
        lock(&self.shared.channels).values().map(|state| state.name.clone()).collect()
    }

    /// Asks for a new nick now (if registered) and after every reconnect.
    pub(crate) fn set_nick(&self, nick: &str) {
        lock(&self.shared.settings).nick = nick.to_owned();
        if let Ok(line) = Line::new("NICK", &[nick], None) {
            self.send_urgent(line);
        }
    }

    /// Uses `login` from the next connection on.
    pub(crate) fn set_login(&self, login: Option<Login>) {
        lock(&self.shared.settings).login = login;
    }

    /// Drops the current connection and connects again at once.
    pub(crate) fn reconnect(&self) {
        self.shared.reconnect_now.notify_one();
    }

    /// Waits until the connection changes state (registers, joins, drops) or `timeout` passes.
    pub(crate) async fn changed(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.shared.changed.notified()).await;
    }

    /// Sends QUIT and ends the connection for good.
    pub(crate) fn quit(&self, reason: &str) {
        if let Ok(line) = Line::new("QUIT", &[], Some(reason)) {
            self.send_urgent(line);
        }
        self.shared.stop.send_replace(true);
    }

    fn send_urgent(&self, line: Line) {
        if let Some(session) = lock(&self.shared.session).as_ref() {
            let _ = session.urgent.try_send(line);
        }
    }
}

/// Full-jitter exponential backoff: a random delay between half and all of `initial · 2^(attempt-1)`, capped.
pub(crate) fn backoff(config: &ReconnectConfig, attempt: u32) -> Duration {
    let cap = Duration::from_secs(config.max_delay_secs.max(1));
    let base = Duration::from_millis(config.initial_delay_ms).saturating_mul(1 << attempt.saturating_sub(1).min(20));
    let base = base.min(cap);
    base / 2 + base.mul_f64(rand::random::<f64>() / 2.0)
}

async fn supervise(shared: Arc<Shared>, events: mpsc::Sender<ConnEvent>, connecting: Arc<Semaphore>) {
    let mut stop = shared.stop.subscribe();
    let mut attempt = 0u32;
    let mut server_index = 0usize;
    loop {
        if *stop.borrow() {
            return;
        }
        let settings = lock(&shared.settings).clone();
        let Some(server) = settings.servers.get(server_index % settings.servers.len().max(1)).cloned() else {
            tracing::error!(network = %settings.network, "no servers configured");
            return;
        };
        let result = tokio::select! {
            result = session(&shared, &settings, &server, &events, &connecting) => result,
            _ = stop.wait_for(|stopped| *stopped) => Ok(true),
        };
        let nick = lock(&shared.session).take().map(|session| session.nick).unwrap_or_default();
        *lock(&shared.caps) = CapSet::default();
        for state in lock(&shared.channels).values_mut() {
            state.joined = false;
            state.join_sent = false;
        }
        shared.changed.notify_waiters();
        let _ = events.send(ConnEvent::Disconnected { owner: settings.owner.clone(), nick }).await;
        if *stop.borrow() {
            tracing::info!(network = %settings.network, owner = %settings.owner, "IRC connection closed");
            return;
        }
        match result {
            Ok(true) => attempt = 1,
            Ok(false) => attempt += 1,
            Err(error) => {
                attempt += 1;
                tracing::warn!(network = %settings.network, owner = %settings.owner, server = %server.host, %error,
                    "IRC connection failed");
            }
        }
        server_index += 1;
        let delay = backoff(&settings.reconnect, attempt);
        tracing::info!(network = %settings.network, owner = %settings.owner, ?delay, attempt, "reconnecting");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shared.reconnect_now.notified() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn connect(server: &ServerConfig, settings: &Settings) -> std::io::Result<(Box<dyn Stream>, IdentEntry)> {
    let tcp = TcpStream::connect((server.host.as_str(), server.port)).await?;
    tcp.set_nodelay(true)?;
    let ident = settings.ident.register(tcp.local_addr()?, tcp.peer_addr()?, &settings.username);
    if !server.tls {
        return Ok((Box::new(tcp), ident));
    }
    use tokio_rustls::rustls::pki_types::{CertificateDer, pem::PemObject as _};
    use tokio_rustls::rustls::{self, pki_types::ServerName};
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = &settings.ca_file {
        let pem = tokio::fs::read(path).await?;
        for certificate in CertificateDer::pem_slice_iter(&pem) {
            roots.add(certificate.map_err(std::io::Error::other)?).map_err(std::io::Error::other)?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_root_certificates(roots);
    // CertFP: the login's certificate is presented in the handshake, and SASL EXTERNAL names it.
    let config = match settings.login.as_ref().and_then(|login| login.certificate.as_deref()) {
        Some(pem) => {
            let (chain, key) = crate::ircv3::certfp::parse(pem).map_err(std::io::Error::other)?;
            builder.with_client_auth_cert(chain, key).map_err(std::io::Error::other)?
        }
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from(server.host.clone()).map_err(std::io::Error::other)?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await?;
    Ok((Box::new(tls), ident))
}

/// A token bucket: `burst` lines at once, then `rate` per second.
struct Throttle {
    tokens: f64,
    burst: f64,
    rate: f64,
    last: tokio::time::Instant,
}

impl Throttle {
    fn new(config: &FloodConfig) -> Self {
        let burst = f64::from(config.burst.max(1));
        Self { tokens: burst, burst, rate: config.lines_per_second.max(0.01), last: tokio::time::Instant::now() }
    }

    /// Refills the bucket for the time since the last look.
    fn refill(&mut self) {
        let now = tokio::time::Instant::now();
        self.tokens = (self.tokens + (now - self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes a token if one is there now.
    fn try_take(&mut self) -> bool {
        self.refill();
        let available = self.tokens >= 1.0;
        if available {
            self.tokens -= 1.0;
        }
        available
    }

    async fn take(&mut self) {
        self.refill();
        if self.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.rate);
            tokio::time::sleep(wait).await;
            self.tokens = 1.0;
            self.last = tokio::time::Instant::now();
        }
        self.tokens -= 1.0;
    }
}

async fn write_lines(
    mut writer: tokio::io::WriteHalf<Box<dyn Stream>>,
    mut urgent: mpsc::Receiver<Line>,
    mut normal: mpsc::Receiver<Outgoing>,
    flood: FloodConfig,
    receipts: Arc<Mutex<Receipts>>,
) -> std::io::Result<()> {
    let mut throttle = Throttle::new(&flood);
    let mut written = Vec::new();
    loop {
        let line = tokio::select! {
            biased;
            line = urgent.recv() => line.map(|line| Outgoing { line, receipt: None }),
            line = normal.recv() => {
                throttle.take().await;
                line
            }
        };
        let Some(Outgoing { line, receipt }) = line else { return Ok(()) };
        written.extend(receipt);
        tracing::trace!(?line, "→ IRC");
        match waiting_line(&mut urgent, &mut normal, &mut throttle) {
            None => writer.write_all(line.as_bytes()).await?,
            Some(next) => {
                // Lines already waiting go out in one write (a backlog would otherwise cost a system call per
                // line). The buffer lives only as long as the backlog and grows with it, so an idle connection
                // holds none and a connection's first lines (registration) do not each claim a full chunk.
                let mut buffer = Vec::with_capacity(line.as_bytes().len() + next.line.as_bytes().len());
                buffer.extend_from_slice(line.as_bytes());
                let mut next = Some(next);
                while let Some(Outgoing { line, receipt }) = next.take() {
                    tracing::trace!(?line, "→ IRC");
                    buffer.extend_from_slice(line.as_bytes());
                    written.extend(receipt);
                    if buffer.len() < WRITE_CHUNK {
                        next = waiting_line(&mut urgent, &mut normal, &mut throttle);
                    }
                }
                writer.write_all(&buffer).await?;
            }
        }
        if written.is_empty() {
            continue;
        }
        let ping = lock(&receipts).written(written.drain(..));
        if let Some(token) = ping
            && let Ok(line) = Line::new("PING", &[&token], None)
        {
            writer.write_all(line.as_bytes()).await?;
        }
    }
}

/// Bytes gathered into one write at most.
const WRITE_CHUNK: usize = 16 * 1024;

/// A line that can go out now without waiting: an urgent one, or a normal one the flood bucket has a token for.
fn waiting_line(
    urgent: &mut mpsc::Receiver<Line>,
    normal: &mut mpsc::Receiver<Outgoing>,
    throttle: &mut Throttle,
) -> Option<Outgoing> {
    if let Ok(line) = urgent.try_recv() {
        return Some(Outgoing { line, receipt: None });
    }
    if normal.is_empty() || !throttle.try_take() {
        return None;
    }
    normal.try_recv().ok()
}

/// Registration progress of one connection attempt.
struct Registration {
    nick: String,
    attempt: u32,
    max_nick_length: usize,
}

/// One connection, from connect to close. `Ok(true)` if it registered before it ended.
async fn session(
    shared: &Arc<Shared>,
    settings: &Settings,
    server: &ServerConfig,
    events: &mpsc::Sender<ConnEvent>,
    connecting: &Arc<Semaphore>,
) -> std::io::Result<bool> {
    let permit = connecting.clone().acquire_owned().await.map_err(std::io::Error::other)?;
    let mut permit = Some(permit);
    let (stream, _ident) = tokio::time::timeout(REGISTER_TIMEOUT, connect(server, settings))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let (reader, writer) = tokio::io::split(stream);
    let (urgent_tx, urgent_rx) = mpsc::channel::<Line>(256);
    let (normal_tx, normal_rx) = mpsc::channel::<Outgoing>(64);
    let receipts = Arc::new(Mutex::new(Receipts::default()));
    let mut writer_task =
        tokio::spawn(write_lines(writer, urgent_rx, normal_rx, settings.flood, Arc::clone(&receipts)));
    let urgent = |line: Result<Line, crate::line::LineError>| {
        if let Ok(line) = line {
            let _ = urgent_tx.try_send(line);
        }
    };

    if let Some(password) = &server.password {
        urgent(Line::new("PASS", &[], Some(password)));
    }
    let sasl_login = settings.login.as_ref().filter(|login| login.method == AuthMethod::Sasl);
    // Every connection asks for capabilities; a server without CAP ignores the line and registers us plainly.
    let has_certificate = server.tls && sasl_login.is_some_and(|login| login.certificate.is_some());
    let has_password = sasl_login.is_some_and(|login| !login.password.is_empty());
    let mut caps = CapNegotiation::new(sasl::mechanisms(has_certificate, has_password));
    let mut exchange: Option<Exchange> = None;
    urgent(Line::new("CAP", &["LS", "302"], None));
    let mut registration =
        Registration { nick: settings.nick.clone(), attempt: 0, max_nick_length: settings.max_nick_length };
    urgent(Line::new("NICK", &[&registration.nick], None));
    urgent(Line::new("USER", &[&settings.username, "0", "*"], Some(&settings.realname)));

    let mut reader = BufReader::with_capacity(READ_BUFFER, reader);
    let mut buffer = Vec::with_capacity(1024);
    let mut registered = false;
    let mut pinged = false;
    // Why we ended a SASL exchange ourselves (a wrong SCRAM signature), reported with the server's answer.
    let mut failure: Option<SaslError> = None;
    let register_deadline = tokio::time::Instant::now() + REGISTER_TIMEOUT;
    // Our nick and its casefolded form, for telling our own lines from others'; folded again only when it changes.
    let mut folded_nick = (String::new(), String::new());
    loop {
        // A line already in the read buffer is taken as it is, without a timer or a wake-up: a puppet in a busy
        // channel receives every line said there, many to a read.
        let buffered = reader.buffer();
        let whole_line = memchr::memchr(b'\n', buffered).filter(|end| buffer.len() + end < MAX_READ_LINE);
        if let Some(end) = whole_line {
            buffer.extend_from_slice(&buffered[..=end]);
            std::pin::Pin::new(&mut reader).consume(end + 1);
        } else {
            let idle = if registered { READ_IDLE } else { register_deadline - tokio::time::Instant::now() };
            let mut limited = (&mut reader).take(MAX_READ_LINE as u64);
            let read = tokio::select! {
                read = tokio::time::timeout(idle, limited.read_until(b'\n', &mut buffer)) => read,
                _ = &mut writer_task => return Err(std::io::Error::other("the connection's writer stopped")),
                _ = shared.reconnect_now.notified() => {
                    urgent(Line::new("QUIT", &[], Some("Reconnecting")));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    return Ok(registered);
                }
            };
            match read {
                Err(_) if !registered => {
                    return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "registration timed out"));
                }
                Err(_) if pinged => return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "ping timeout")),
                Err(_) => {
                    pinged = true;
                    urgent(Line::new("PING", &["lattice"], None));
                    continue;
                }
                Ok(Err(error)) => return Err(error),
                Ok(Ok(0)) => {
                    return if buffer.is_empty() {
                        Ok(registered)
                    } else {
                        Err(std::io::Error::other("line too long"))
                    };
                }
                Ok(Ok(_)) if !buffer.ends_with(b"\n") && buffer.len() < MAX_READ_LINE => continue,
                Ok(Ok(_)) => {}
            }
        }
        pinged = false;
        {
            let session = lock(&shared.session);
            let own_nick = session.as_ref().map_or(&registration.nick, |session| &session.nick);
            if folded_nick.0 != *own_nick {
                folded_nick = (own_nick.clone(), casefold(own_nick));
            }
        }
        if settings.forward == Forward::Own {
            let line = std::str::from_utf8(&buffer).map(|line| line.trim_end_matches(['\r', '\n']));
            if line.is_ok_and(|line| is_others_channel_chatter(line, &folded_nick.1)) {
                buffer.clear();
                continue;
            }
        }
        let text = String::from_utf8_lossy(&buffer).trim_end_matches(['\r', '\n']).to_owned();
        buffer.clear();
        if text.is_empty() {
            continue;
        }
        let (own_nick, own_nick_folded) = (folded_nick.0.as_str(), folded_nick.1.as_str());
        let message = match Message::from_str(&text) {
            Ok(message) => message,
            Err(error) => {
                tracing::debug!(%error, line = %text, "unreadable IRC line");
                continue;
            }
        };
        tracing::trace!(owner = %settings.owner, line = %text, "← IRC");
        let from_self = message.source_nickname().is_some_and(|nick| casefolds_to(nick, own_nick_folded));
        match &message.command {
            Command::PING(token, _) => urgent(Line::new("PONG", &[], Some(token))),
            Command::PONG(first, second) => {
                let token = second.as_deref().unwrap_or(first);
                let next = lock(&receipts).ponged(token);
                if let Some(next) = next {
                    urgent(Line::new("PING", &[&next], None));
                }
            }
            Command::Response(Response::RPL_WELCOME, params) => {
                registered = true;
                caps.registered();
                permit.take();
                let nick = params.first().cloned().unwrap_or_else(|| registration.nick.clone());
                // The owner hears of the nick before any JOIN goes out, so it never mistakes our own lines for
                // someone else's.
                let _ = events.send(ConnEvent::Registered { owner: settings.owner.clone(), nick: nick.clone() }).await;
                *lock(&shared.session) = Some(SessionHandle {
                    sender: normal_tx.clone(),
                    urgent: urgent_tx.clone(),
                    nick: nick.clone(),
                    prefix_len: worst_case_prefix(&nick),
                });
                tracing::info!(network = %settings.network, owner = %settings.owner, %nick, server = %server.host,
                    caps = %caps.enabled().list(), "IRC connection registered");
                if let Some(login) = settings.login.as_ref().filter(|login| login.method == AuthMethod::Nickserv) {
                    urgent(Line::new(
                        "PRIVMSG",
                        &["NickServ"],
                        Some(&format!("IDENTIFY {} {}", login.account, login.password)),
                    ));
                }
                let joins: Vec<String> = {
                    let mut channels = lock(&shared.channels);
                    channels
                        .values_mut()
                        .map(|state| {
                            state.join_sent = true;
                            state.refused = None;
                            state.name.clone()
                        })
                        .collect()
                };
                for line in join_lines(&joins) {
                    // Awaited, not try_send: a bridge with thousands of portals has more JOINs than the urgent queue
                    // holds, and a JOIN dropped here would never be sent again.
                    if urgent_tx.send(line).await.is_err() {
                        break;
                    }
                }
                shared.changed.notify_waiters();
                continue;
            }
            Command::Response(Response::RPL_ISUPPORT, params) => {
                for token in params {
                    if let Some(length) = token.strip_prefix("NICKLEN=").and_then(|n| n.parse().ok()) {
                        registration.max_nick_length = length;
                    }
                }
            }
            Command::Response(
                Response::ERR_NICKNAMEINUSE | Response::ERR_ERRONEOUSNICKNAME | Response::ERR_NICKCOLLISION,
                _,
            ) if !registered => {
                registration.attempt += 1;
                if registration.attempt > 20 {
                    return Err(std::io::Error::other("no free nick after 20 attempts"));
                }
                let refused = registration.nick.clone();
                registration.nick = if registration.nick.len() > registration.max_nick_length {
                    registration.nick[..registration.max_nick_length].to_owned()
                } else if matches!(message.command, Command::Response(Response::ERR_ERRONEOUSNICKNAME, _)) {
                    // Invalid even at a fitting length: fall back to a nick every server takes.
                    format!("matrix{}", registration.attempt).chars().take(registration.max_nick_length).collect()
                } else {
                    next_nick(&registration.nick, registration.attempt, registration.max_nick_length)
                };
                tracing::debug!(%refused, next = %registration.nick, "nick refused, trying another");
                urgent(Line::new("NICK", &[&registration.nick], None));
            }
            Command::CAP(_, subcommand, first, second) => {
                let params: Vec<&str> = [first, second].into_iter().flatten().map(String::as_str).collect();
                let steps = caps.on_cap(subcommand.to_str(), &params);
                *lock(&shared.caps) = caps.enabled().clone();
                for step in steps {
                    match step {
                        CapStep::Request(list) => urgent(Line::new("CAP", &["REQ"], Some(&list))),
                        CapStep::Authenticate(mechanism) => {
                            exchange = sasl_login
                                .zip(caps.mechanism())
                                .map(|(login, chosen)| Exchange::new(chosen, &login.account, &login.password));
                            urgent(Line::new("AUTHENTICATE", &[&mechanism], None));
                        }
                        CapStep::End => {
                            if sasl_login.is_some() && caps.mechanism().is_none() {
                                tracing::warn!(network = %settings.network, owner = %settings.owner,
                                    "the server offers no SASL mechanism the login can use");
                            }
                            urgent(Line::new("CAP", &["END"], None));
                        }
                    }
                }
            }
            Command::AUTHENTICATE(argument) => {
                let Some(login) = exchange.as_mut() else { continue };
                match login.on_server(argument) {
                    Ok(answer) => {
                        for chunk in answer {
                            urgent(Line::new("AUTHENTICATE", &[&chunk], None));
                        }
                    }
                    Err(error) => {
                        // The server's 906 (aborted) reports it below, with this reason.
                        urgent(Line::new("AUTHENTICATE", &["*"], None));
                        failure = Some(error);
                    }
                }
            }
            Command::Response(Response::RPL_SASLSUCCESS, _) => {
                let verified = exchange.take().map_or(Ok(()), |login| login.succeeded());
                match verified {
                    Ok(()) => tracing::info!(network = %settings.network, owner = %settings.owner,
                        mechanism = ?caps.mechanism(), "SASL login succeeded"),
                    Err(error) => login_failed(settings, events, error).await,
                }
                if caps.sasl_done().contains(&CapStep::End) {
                    urgent(Line::new("CAP", &["END"], None));
                }
            }
            Command::Response(
                Response::ERR_SASLFAIL | Response::ERR_SASLTOOLONG | Response::ERR_SASLABORT | Response::ERR_NICKLOCKED,
                params,
            ) => {
                exchange = None;
                let said = params.last().cloned().unwrap_or_default();
                login_failed(settings, events, failure.take().unwrap_or(SaslError::Refused(said))).await;
                if caps.sasl_done().contains(&CapStep::End) {
                    urgent(Line::new("CAP", &["END"], None));
                }
            }
            Command::JOIN(channel, _, _) if from_self => {
                if let Some(state) = lock(&shared.channels).get_mut(&casefold(channel)) {
                    state.joined = true;
                    state.refused = None;
                }
                if let Some(irc::proto::Prefix::Nickname(nick, user, host)) = &message.prefix
                    && let Some(session) = lock(&shared.session).as_mut()
                {
                    session.prefix_len = 1 + nick.len() + 1 + user.len() + 1 + host.len() + 1;
                }
                shared.changed.notify_waiters();
            }
            Command::PART(channel, _) if from_self => {
                lock(&shared.channels).remove(&casefold(channel));
            }
            Command::KICK(channel, kicked, _) if casefolds_to(kicked, own_nick_folded) => {
                lock(&shared.channels).remove(&casefold(channel));
                shared.changed.notify_waiters();
            }
            Command::NICK(new) if from_self => {
                if let Some(session) = lock(&shared.session).as_mut() {
                    session.nick = new.clone();
                }
                lock(&shared.settings).nick = new.clone();
                registration.nick = new.clone();
            }
            Command::Response(
                Response::ERR_CHANNELISFULL
                | Response::ERR_INVITEONLYCHAN
                | Response::ERR_BANNEDFROMCHAN
                | Response::ERR_BADCHANNELKEY
                | Response::ERR_NOSUCHCHANNEL
                | Response::ERR_TOOMANYCHANNELS,
                params,
            ) => {
                if let Some(channel) = params.get(1)
                    && let Some(state) = lock(&shared.channels).get_mut(&casefold(channel))
                {
                    state.join_sent = false;
                    state.refused = Some(params.last().cloned().unwrap_or_else(|| "refused".into()));
                }
                shared.changed.notify_waiters();
            }
            Command::ERROR(reason) => {
                tracing::warn!(network = %settings.network, owner = %settings.owner, %reason, "the server closed the connection");
            }
            _ => {}
        }
        if wants(settings.forward, &message, own_nick_folded) {
            let event = ConnEvent::Message {
                owner: settings.owner.clone(),
                nick: own_nick.to_owned(),
                message: Box::new(message),
            };
            if events.send(event).await.is_err() {
                return Ok(registered);
            }
        }
    }
}

/// Reports a failed SASL login: in the log, and to the owner (who tells the Matrix user).
async fn login_failed(settings: &Settings, events: &mpsc::Sender<ConnEvent>, error: SaslError) {
    let account = settings.login.as_ref().map(|login| login.account.clone()).unwrap_or_default();
    tracing::warn!(network = %settings.network, owner = %settings.owner, %account, %error, "SASL login failed");
    let event = ConnEvent::LoginFailed { owner: settings.owner.clone(), account, reason: error.to_string() };
    let _ = events.send(event).await;
}

/// Whether the owner asked for `message` (see [`Forward`]); `own` is the owner's nick casefolded.
fn wants(forward: Forward, message: &Message, own: &str) -> bool {
    // Answers to what the owner sent — echoes (`echo-message`) and replies carrying a `label` — and what the owner
    // did, such as a nick change.
    let from_self = message.source_nickname().is_some_and(|nick| casefolds_to(nick, own));
    if forward == Forward::Own && (tags::get(message, "label").is_some() || from_self) {
        return !matches!(message.command, Command::JOIN(..) | Command::PART(..) | Command::QUIT(..));
    }
    match forward {
        Forward::All => true,
        Forward::Own => match &message.command {
            Command::Raw(command, _) if command == "FAIL" => true,
            Command::PRIVMSG(target, _) | Command::NOTICE(target, _) => casefolds_to(target, own),
            // Client tags sent to the puppet alone (IRCv3 typing in a DM).
            Command::Raw(command, params) if command == "TAGMSG" => {
                params.first().is_some_and(|target| casefolds_to(target, own))
            }
            Command::KICK(_, kicked, _) => casefolds_to(kicked, own),
            // Why the server closed the connection (a K-line, a ban), for the user's removal notice.
            Command::ERROR(_) => true,
            Command::Response(response, _) => matches!(
                response,
                Response::RPL_WHOISUSER
                    | Response::RPL_WHOISSERVER
                    | Response::RPL_WHOISCHANNELS
                    | Response::RPL_WHOISIDLE
                    | Response::RPL_ENDOFWHOIS
                    | Response::ERR_NOSUCHNICK
                    | Response::ERR_CANNOTSENDTOCHAN
                    | Response::ERR_NICKNAMEINUSE
                    | Response::ERR_ERRONEOUSNICKNAME
            ),
            _ => false,
        },
    }
}

/// Whether a raw line is someone else's message to a channel: most of what a puppet's connection receives, and
/// nothing it acts on (the network's listener bridges channel traffic), so such lines are dropped before parsing.
/// Lines carrying a `label` (answers to what the owner sent) and anything unusual are parsed as usual.
fn is_others_channel_chatter(line: &str, own_nick_folded: &str) -> bool {
    let mut rest = line;
    if let Some(tagged) = rest.strip_prefix('@') {
        let Some((tags, after)) = tagged.split_once(' ') else { return false };
        if tags.split(';').any(|tag| tag == "label" || tag.starts_with("label=")) {
            return false;
        }
        rest = after;
    }
    let Some((prefix, after)) = rest.strip_prefix(':').and_then(|prefixed| prefixed.split_once(' ')) else {
        return false;
    };
    let nick = prefix.split(['!', '@']).next().unwrap_or_default();
    let mut words = after.splitn(3, ' ');
    let (Some(command), Some(target)) = (words.next(), words.next()) else { return false };
    matches!(command, "PRIVMSG" | "NOTICE" | "TAGMSG")
        && target.starts_with(['#', '&'])
        && !casefolds_to(nick, own_nick_folded)
}

/// Channel lists per JOIN line: the longest list of channel names, in bytes, one `JOIN` carries (RFC 2812 3.2.1
/// allows a comma-separated list; a line must stay within 512 bytes with the server's prefix on it).
const JOIN_LIST_BYTES: usize = 400;

/// `JOIN` lines for `channels`, several channels to a line, so rejoining thousands of channels takes a few hundred
/// lines rather than thousands.
fn join_lines(channels: &[String]) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut list = String::new();
    for channel in channels {
        if !list.is_empty() && list.len() + 1 + channel.len() > JOIN_LIST_BYTES {
            lines.extend(Line::new("JOIN", &[&list], None));
            list.clear();
        }
        if !list.is_empty() {
            list.push(',');
        }
        list.push_str(channel);
    }
    if !list.is_empty() {
        lines.extend(Line::new("JOIN", &[&list], None));
    }
    lines
}

#[cfg(test)]
mod tests {
    #[test]
    fn rejoins_go_several_channels_to_a_line() {
        let text = |lines: Vec<Line>| -> Vec<String> {
            lines.iter().map(|line| String::from_utf8_lossy(line.as_bytes()).into_owned()).collect()
        };
        assert!(join_lines(&[]).is_empty());
        assert_eq!(text(join_lines(&["#a".into(), "#b".into()])), ["JOIN #a,#b\r\n"]);
        let many: Vec<String> = (0..1000).map(|i| format!("#channel{i}")).collect();
        let lines = text(join_lines(&many));
        assert!(lines.len() < 40, "{} lines", lines.len());
        assert!(lines.iter().all(|line| line.len() <= JOIN_LIST_BYTES + 7));
        let joined: Vec<&str> =
            lines.iter().flat_map(|line| line.trim_end().trim_start_matches("JOIN ").split(',')).collect();
        assert_eq!(joined, many.iter().map(String::as_str).collect::<Vec<_>>());
    }
    use super::*;

    #[test]
    fn only_others_channel_messages_are_dropped_unparsed() {
        let cases = [
            (":alice!a@h PRIVMSG #chan :hello", true),
            ("@time=2026-01-01T00:00:00Z;msgid=x :alice!a@h NOTICE &local :hi", true),
            ("@+typing=active :alice!a@h TAGMSG #chan", true),
            // Our own echo, labelled answers, private messages and everything else are parsed.
            (":Me!m@h PRIVMSG #chan :echo", false),
            ("@label=7 :alice!a@h PRIVMSG #chan :answer", false),
            (":alice!a@h PRIVMSG me :private", false),
            (":alice!a@h PRIVMSG @#chan :ops only", false),
            (":alice!a@h JOIN #chan", false),
            ("PING :x", false),
            ("@broken", false),
            (":alice!a@h PRIVMSG", false),
        ];
        for (line, dropped) in cases {
            assert_eq!(is_others_channel_chatter(line, "me"), dropped, "{line}");
        }
    }

    /// Lines reach the owner whole however the server's writes cut them: many to a read (past the read buffer, in
    /// which whole lines are taken without waiting), one cut across two writes, one longer than the buffer.
    #[tokio::test]
    async fn lines_are_read_whole_however_writes_cut_them() {
        use tokio::io::AsyncWriteExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = ServerConfig {
            host: "127.0.0.1".into(),
            port: listener.local_addr().unwrap().port(),
            tls: false,
            password: None,
        };
        let settings = Settings {
            owner: "@me:hs".into(),
            network: "test".into(),
            servers: vec![server],
            ca_file: None,
            nick: "Me".into(),
            max_nick_length: 30,
            username: "me".into(),
            realname: "me".into(),
            login: None,
            flood: FloodConfig::default(),
            reconnect: ReconnectConfig::default(),
            forward: Forward::Own,
            ident: IdentRegistry::default(),
        };
        let (events, mut received) = mpsc::channel(64);
        let connection = Connection::spawn(settings, events, Arc::new(Semaphore::new(1)));
        let (mut peer, _) = listener.accept().await.unwrap();

        let chatter: String = (0..40).map(|n| format!(":bob!b@h PRIVMSG #chan :chatter {n}\r\n")).collect();
        assert!(chatter.len() > READ_BUFFER);
        let burst = format!(":srv 001 Me :Welcome\r\n{chatter}:bob!b@h PRIVMSG Me :first\r\n");
        peer.write_all(burst.as_bytes()).await.unwrap();
        peer.write_all(b":bob!b@h PRIVMSG Me :cut in ").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        peer.write_all(b"two\r\n").await.unwrap();
        let long = "y".repeat(3 * READ_BUFFER);
        peer.write_all(format!("{chatter}:bob!b@h PRIVMSG Me :{long}\r\n").as_bytes()).await.unwrap();

        let mut texts = Vec::new();
        while texts.len() < 3 {
            let event = tokio::time::timeout(Duration::from_secs(10), received.recv()).await.unwrap().unwrap();
            match event {
                ConnEvent::Registered { nick, .. } => assert_eq!(nick, "Me"),
                ConnEvent::Message { message, .. } => match message.command {
                    Command::PRIVMSG(target, text) => {
                        assert_eq!(target, "Me");
                        texts.push(text);
                    }
                    other => panic!("unexpected {other:?}"),
                },
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(texts, ["first".to_owned(), "cut in two".to_owned(), long]);
        connection.quit("done");
    }

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        let config = ReconnectConfig { initial_delay_ms: 1000, max_delay_secs: 10, max_concurrent: 1 };
        for _ in 0..50 {
            let first = backoff(&config, 1);
            assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1), "{first:?}");
            let third = backoff(&config, 3);
            assert!(third >= Duration::from_secs(2) && third <= Duration::from_secs(4), "{third:?}");
            assert!(backoff(&config, 40) <= Duration::from_secs(10));
        }
    }

    #[test]
    fn puppets_only_hear_what_concerns_them() {
        let parse = |line: &str| Message::from_str(line).unwrap();
        assert!(wants(Forward::Own, &parse(":bob!b@h PRIVMSG Alice :hi"), "alice"));
        assert!(!wants(Forward::Own, &parse(":bob!b@h PRIVMSG #chan :hi"), "alice"));
        assert!(wants(Forward::Own, &parse("@+typing=active :bob!b@h TAGMSG Alice"), "alice"));
        assert!(!wants(Forward::Own, &parse("@+typing=active :bob!b@h TAGMSG #chan"), "alice"));
        assert!(wants(Forward::Own, &parse(":op!o@h KICK #chan alice :bye"), "alice"));
        assert!(!wants(Forward::Own, &parse(":op!o@h KICK #chan bob :bye"), "alice"));
        assert!(wants(Forward::Own, &parse(":alice!a@h NICK alice2"), "alice"));
        assert!(wants(Forward::Own, &parse("ERROR :Closing link: (alice@h) [K-Lined: spam]"), "alice"));
        assert!(wants(Forward::All, &parse(":bob!b@h PRIVMSG #chan :hi"), "alice"));
    }
}
