//! One IRC connection, kept alive: connects (TCP or TLS), registers (negotiating IRCv3 capabilities with
//! `CAP LS 302` and logging in with SASL before `CAP END`, see [`crate::ircv3::cap`], or with NickServ after),
//! answers PINGs, retries taken nicks, joins its channels and rejoins them after every reconnect, and reconnects
//! with exponential backoff and jitter while a per-network semaphore caps how many connections register at once.
//! What the owner must see is forwarded as [`ConnEvent`]s.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use irc::proto::Message;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot, watch};

mod dialer;
mod forward;
mod handle;
mod handover;
mod session;
mod state;
mod traffic;
mod transport;
mod writer;

pub(crate) use self::{
    dialer::Dialer,
    handle::{Connection, Keyed},
    handover::{Frozen, FrozenState},
    state::ConnState,
    traffic::{Traffic, TrafficDelta},
};

use self::session::session;
use crate::{
    config::{AuthMethod, FloodConfig, ReconnectConfig, ServerConfig},
    ident::IdentRegistry,
    ids::casefold,
    ircv3::cap::CapSet,
    line::{Line, worst_case_prefix},
    receipt::Receipt,
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
#[derive(Clone, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Forward {
    /// Everything (the bridge bot's listener).
    All,
    /// What concerns this connection's own nick only: private messages, kicks, its nick changes (puppets).
    Own,
}

/// What a connection needs to know.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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
    /// Where the connection tells the ident server its username (the process holding the connection has its own).
    #[serde(skip)]
    pub(crate) ident: IdentRegistry,
    /// Where the connection counts the lines it reads and writes and its reconnects (the network's counts in the
    /// process holding the connection).
    #[serde(skip)]
    pub(crate) traffic: Traffic,
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// Counts the changes of that state, for whoever mirrors it elsewhere (the edge process, see [`state`]).
    version: watch::Sender<u64>,
    /// Set to stop the connection between two lines and hand it over (see [`handover`]).
    freeze: watch::Sender<bool>,
    /// Who takes the frozen connection.
    handed: Mutex<Option<oneshot::Sender<Frozen>>>,
}

impl Shared {
    /// The connection's state (registration, nick, channels, capabilities) changed.
    fn touch(&self) {
        self.changed.notify_waiters();
        self.version.send_modify(|version| *version += 1);
    }
}

/// A handle on a kept-alive IRC connection held in this process. Cheap to clone; the connection lives until
/// [`LocalConnection::quit`].
#[derive(Clone)]
pub(crate) struct LocalConnection {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LocalConnection {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Connection").field("nick", &self.nick()).finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LocalConnection {
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
            version: watch::channel(0).0,
            freeze: watch::channel(false).0,
            handed: Mutex::new(None),
        });
        tokio::spawn(supervise(Arc::clone(&shared), events, connecting, None));
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

async fn supervise(
    shared: Arc<Shared>,
    events: mpsc::Sender<ConnEvent>,
    connecting: Arc<Semaphore>,
    mut resumed: Option<(FrozenState, tokio::net::TcpStream)>,
) {
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
            result = async {
                match resumed.take() {
                    Some((frozen, stream)) => session::resumed_session(&shared, &settings, &events, frozen, stream).await,
                    None => session(&shared, &settings, &server, &events, &connecting).await,
                }
            } => result,
            _ = stop.wait_for(|stopped| *stopped) => Ok(true),
        };
        if *shared.freeze.borrow() {
            // Handed over: the connection lives on in another process.
            return;
        }
        let nick = lock(&shared.session).take().map(|session| session.nick).unwrap_or_default();
        *lock(&shared.caps) = CapSet::default();
        for state in lock(&shared.channels).values_mut() {
            state.joined = false;
            state.join_sent = false;
        }
        shared.touch();
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
        settings.traffic.reconnecting();
        let delay = backoff(&settings.reconnect, attempt);
        tracing::info!(network = %settings.network, owner = %settings.owner, ?delay, attempt, "reconnecting");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shared.reconnect_now.notified() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

#[cfg(test)]
impl Settings {
    /// A puppet `Me` of `@me:hs` on network `test`, on a server at 127.0.0.1:`port`.
    pub(crate) fn for_test(port: u16) -> Self {
        Self {
            owner: "@me:hs".into(),
            network: "test".into(),
            servers: vec![ServerConfig { host: "127.0.0.1".into(), port, tls: false, password: None }],
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
            traffic: Traffic::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use irc::proto::Command;

    /// Lines reach the owner whole however the server's writes cut them: many to a read (past the read buffer, in
    /// which whole lines are taken without waiting), one cut across two writes, one longer than the buffer.
    #[tokio::test]
    async fn lines_are_read_whole_however_writes_cut_them() {
        use tokio::io::AsyncWriteExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let settings = Settings::for_test(listener.local_addr().unwrap().port());
        let traffic = settings.traffic.clone();
        let (events, mut received) = mpsc::channel(64);
        let connection = LocalConnection::spawn(settings, events, Arc::new(Semaphore::new(1)));
        let (mut peer, _) = listener.accept().await.unwrap();
        // The registration first: written (and counted) before the server answers.
        let mut registration = Vec::new();
        while !String::from_utf8_lossy(&registration).contains("USER ") {
            let mut chunk = [0; 512];
            let read = tokio::io::AsyncReadExt::read(&mut peer, &mut chunk).await.unwrap();
            assert!(read > 0, "the connection closed: {}", String::from_utf8_lossy(&registration));
            registration.extend_from_slice(&chunk[..read]);
        }

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
        // Every line read is counted, others' chatter too: the welcome, 40 + 1, 1, 40 + 1. Written: registration.
        let counted = traffic.take();
        assert_eq!((counted.read, counted.reconnects), (84, 0), "{counted:?}");
        assert!(counted.written >= 2, "NICK and USER at least: {counted:?}");
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
}
