//! The edge process, `lattice-irc edge`: it holds the IRC connections (the same [`LocalConnection`]s the bridge
//! would hold itself), answers their PINGs, keeps what they hear until a bridge has handled it, and serves one
//! attached bridge at a time over its Unix socket (see [`super::wire`]). A bridge that goes away — stopped,
//! killed, upgraded — leaves the connections as they are; the next one attaches and goes on where it stopped.
//! With no bridge attached for the linger time the edge quits its connections and exits.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::{SinkExt as _, StreamExt as _};
use tokio::{
    net::{UnixListener, UnixStream},
    sync::{Semaphore, mpsc},
};

mod upgrade;

use super::{
    held::{Held, SendJob},
    keys::SentKeys,
    log::EventLog,
    wire::{ConnKey, Link, READS_TRAFFIC, ToBridge, ToEdge, VERSION, WireEvent},
};
use crate::{
    conn::{ConnEvent, LocalConnection, Settings, Traffic, TrafficDelta},
    ident::IdentRegistry,
};

/// How the edge runs.
#[derive(Debug, Clone)]
pub(crate) struct EdgeOptions {
    /// Take the connections over from the edge on the socket (a new binary replacing an old one).
    pub(crate) take_over: bool,
    /// Its Unix socket.
    pub(crate) socket: PathBuf,
    /// How long it keeps its connections with no bridge attached.
    pub(crate) linger: Duration,
    /// Where its ident server listens, if it runs one.
    pub(crate) ident_bind: Option<String>,
}

/// One network's connections' shared parts.
struct NetworkHold {
    connecting: Arc<Semaphore>,
    events: mpsc::Sender<ConnEvent>,
    log: EventLog,
    /// The lines the network's connections read and wrote and their reconnects, not yet reported to a bridge.
    traffic: Traffic,
}

/// The bridge attached now.
struct Attached {
    generation: u64,
    sender: mpsc::UnboundedSender<ToBridge>,
    networks: HashSet<String>,
    /// It said it reads [`ToBridge::Traffic`].
    reads_traffic: bool,
}

/// The edge's state.
pub(crate) struct Edge {
    held: Mutex<HashMap<ConnKey, Held>>,
    networks: Mutex<HashMap<String, NetworkHold>>,
    attached: Mutex<Option<Attached>>,
    pub(super) sent: Mutex<SentKeys>,
    ident: IdentRegistry,
    generations: AtomicU64,
    /// Names this edge apart from earlier and later ones (its start, in microseconds since the epoch).
    id: u64,
    /// No bridge has been welcomed yet.
    fresh: AtomicBool,
    /// Notified once the connections went to a successor.
    handed_over: tokio::sync::Notify,
    /// A successor is taking the connections: no bridge is served any more.
    handing_over: AtomicBool,
}

fn now_micros() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or_default()
}

/// The ident server, once its address is free (a predecessor edge may hold it for a moment longer).
async fn serve_ident(bind: String, ident: IdentRegistry) {
    for _ in 0..60 {
        match tokio::net::TcpListener::bind(bind.as_str()).await {
            Ok(listener) => return crate::ident::serve(listener, ident).await,
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => {
                tracing::error!(%bind, %error, "cannot listen for ident queries");
                return;
            }
        }
    }
    tracing::error!(%bind, "cannot listen for ident queries: the address stays taken");
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs the edge until it lingers out, is told to stop (SIGTERM, SIGINT) or hands its connections over.
pub(crate) async fn serve(options: EdgeOptions) -> std::io::Result<()> {
    let edge = match options.take_over {
        true => upgrade::take_over(&options.socket).await?,
        false => Edge::new(now_micros(), true),
    };
    let listener = bind(&options.socket)?;
    if let Some(bind) = options.ident_bind.clone() {
        tokio::spawn(serve_ident(bind, edge.ident.clone()));
    }
    // Beside the socket: who to signal to stop the edge (operators, tests).
    let pid_file = options.socket.with_extension("pid");
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))?;
    tracing::info!(socket = %options.socket.display(), linger = ?options.linger, pid = std::process::id(),
        "IRC edge listening");
    let own_uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&options.socket)?);
    let mut idle_since = Some(tokio::time::Instant::now());
    let mut check = tokio::time::interval(Duration::from_secs(1));
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                match stream.peer_cred() {
                    Ok(peer) if peer.uid() == own_uid => {
                        tokio::spawn(Arc::clone(&edge).serve_link(stream));
                    }
                    _ => tracing::warn!("refused a connection to the edge socket from another user"),
                }
            }
            () = edge.handed_over.notified() => {
                // The successor owns the socket's path and the pid file now.
                tracing::info!("the IRC connections are handed over: exiting");
                return Ok(());
            }
            _ = check.tick() => {
                let attached = lock(&edge.attached).is_some();
                match (attached, idle_since) {
                    (true, _) => {
                        idle_since = None;
                        edge.report_traffic();
                    }
                    (false, None) => idle_since = Some(tokio::time::Instant::now()),
                    (false, Some(since)) if since.elapsed() >= options.linger => {
                        tracing::info!("no bridge attached for the linger time: quitting the IRC connections");
                        edge.quit_all("Bridge stopped").await;
                        break;
                    }
                    (false, Some(_)) => {}
                }
            }
            () = &mut stop => {
                tracing::info!("IRC edge stopping: quitting the IRC connections");
                edge.quit_all("Bridge shutting down").await;
                break;
            }
        }
    }
    let _ = std::fs::remove_file(&options.socket);
    let _ = std::fs::remove_file(&pid_file);
    Ok(())
}

/// Binds the socket, only for this user: a stale socket file (no edge behind it) is replaced, a live one is an
/// error (another edge holds it).
fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("an IRC edge already listens on {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(listener)
}

async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut terminate), Ok(mut interrupt)) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

impl Edge {
    /// A link from a bridge, or from a successor edge that takes the connections over.
    async fn serve_link(self: Arc<Self>, stream: UnixStream) {
        let mut link = Link::new(stream);
        match link.next::<ToEdge>().await {
            // The bridge tries again until the successor answers.
            Ok(_) if self.handing_over.load(Ordering::SeqCst) => {}
            Ok(ToEdge::Hello { version, reads }) if version == VERSION => {
                self.serve_bridge(link, reads.iter().any(|read| read == READS_TRAFFIC)).await
            }
            Ok(ToEdge::Handover { version }) if version == VERSION => {
                if let Err(error) = self.hand_over(link).await {
                    tracing::error!(%error, "handing the connections over failed; they go on here");
                }
            }
            Ok(ToEdge::Hello { version, .. } | ToEdge::Handover { version }) => {
                let reason = format!("this edge speaks version {VERSION} of the edge protocol, not {version}");
                let _ = link.send(&ToBridge::Refused { reason }).await;
            }
            _ => {}
        }
    }

    fn new(id: u64, fresh: bool) -> Arc<Self> {
        Arc::new(Self {
            held: Mutex::default(),
            networks: Mutex::default(),
            attached: Mutex::default(),
            sent: Mutex::default(),
            ident: IdentRegistry::default(),
            generations: AtomicU64::new(0),
            id,
            fresh: AtomicBool::new(fresh),
            handed_over: tokio::sync::Notify::new(),
            handing_over: AtomicBool::new(false),
        })
    }

    /// One bridge's link, from its `Hello` until it goes away; it replaces the bridge attached before.
    async fn serve_bridge(self: Arc<Self>, mut link: Link, reads_traffic: bool) {
        let connections: Vec<ConnKey> = lock(&self.held).keys().cloned().collect();
        let started_now = self.fresh.swap(false, Ordering::SeqCst);
        if link.send(&ToBridge::Welcome { connections, started_now, edge_id: self.id }).await.is_err() {
            return;
        }
        let (sender, mut outgoing) = mpsc::unbounded_channel();
        // Where each connection stands now: a bridge that moved here from a predecessor keeps its connections
        // without opening them again, and a change while they were frozen was not told to it.
        for (conn, held) in lock(&self.held).iter() {
            let _ = sender.send(ToBridge::State { conn: conn.clone(), state: held.connection.state() });
        }
        let generation = self.generations.fetch_add(1, Ordering::SeqCst) + 1;
        let attached = Attached { generation, sender, networks: HashSet::new(), reads_traffic };
        if lock(&self.attached).replace(attached).is_some() {
            tracing::info!("a new bridge attached; the one before is let go");
        } else {
            tracing::info!("a bridge attached");
        }
        let (mut sink, mut stream) = link.split();
        let writer = tokio::spawn(async move {
            while let Some(message) = outgoing.recv().await {
                let Ok(frame) = serde_json::to_vec(&message) else { continue };
                if sink.feed(frame.into()).await.is_err() {
                    return;
                }
                // Write what has gathered, not frame by frame.
                if outgoing.is_empty() && sink.flush().await.is_err() {
                    return;
                }
            }
        });
        while let Some(Ok(frame)) = stream.next().await {
            if !self.is_attached(generation) {
                // A newer bridge took over: this one is not listened to any more.
                break;
            }
            match serde_json::from_slice::<ToEdge>(&frame) {
                Ok(message) => self.handle(message),
                Err(error) => tracing::warn!(%error, "unreadable message from the bridge"),
            }
        }
        writer.abort();
        let mut attached = lock(&self.attached);
        if attached.as_ref().is_some_and(|attached| attached.generation == generation) {
            *attached = None;
            tracing::info!("the bridge went away; the IRC connections stay");
        }
    }

    fn is_attached(&self, generation: u64) -> bool {
        lock(&self.attached).as_ref().is_some_and(|attached| attached.generation == generation)
    }

    fn handle(self: &Arc<Self>, message: ToEdge) {
        match message {
            ToEdge::Hello { .. } | ToEdge::Handover { .. } | ToEdge::Ready => {}
            ToEdge::Attach { network } => self.attach(network),
            ToEdge::Open { settings } => self.open(*settings),
            ToEdge::Send { conn, lines, receipt, key } => match self.held(&conn) {
                Some(held) => held.queue(SendJob { lines, receipt, key }),
                None => self.tell(receipt.map(|receipt| ToBridge::Lost { receipt })),
            },
            ToEdge::Want { conn, channel } => self.with(&conn, |held| held.connection.want_channel(&channel)),
            ToEdge::Part { conn, channel, reason } => {
                self.with(&conn, |held| held.connection.part(&channel, reason.as_deref()))
            }
            ToEdge::Nick { conn, nick } => self.with(&conn, |held| held.connection.set_nick(&nick)),
            ToEdge::Login { conn, login } => self.with(&conn, |held| held.connection.set_login(login.map(|l| *l))),
            ToEdge::Reconnect { conn } => self.with(&conn, |held| held.connection.reconnect()),
            ToEdge::Quit { conn, reason } => {
                if let Some(held) = lock(&self.held).remove(&conn) {
                    held.connection.quit(&reason);
                }
            }
            ToEdge::Ack { network, seq } => {
                if let Some(hold) = lock(&self.networks).get_mut(&network) {
                    hold.log.ack(seq);
                }
            }
        }
    }

    fn held(&self, conn: &ConnKey) -> Option<Held> {
        lock(&self.held).get(conn).cloned()
    }

    fn with(&self, conn: &ConnKey, action: impl FnOnce(&Held)) {
        if let Some(held) = self.held(conn) {
            action(&held);
        }
    }

    /// Sends `message` to the attached bridge, if any.
    pub(super) fn tell(&self, message: Option<ToBridge>) {
        if let (Some(message), Some(attached)) = (message, lock(&self.attached).as_ref()) {
            let _ = attached.sender.send(message);
        }
    }

    /// The bridge takes `network`'s events: first those it has not acknowledged, then each as it comes.
    fn attach(self: &Arc<Self>, network: String) {
        let mut networks = lock(&self.networks);
        let mut attached = lock(&self.attached);
        let Some(attached) = attached.as_mut() else { return };
        if let Some(hold) = networks.get_mut(&network) {
            if hold.log.len() > 0 {
                tracing::info!(%network, waiting = hold.log.len(), "handing the bridge what it missed");
            }
            for (seq, event) in hold.log.waiting() {
                let event = event.clone();
                let _ = attached.sender.send(ToBridge::Event { network: network.clone(), seq: *seq, event });
            }
        } else {
            networks.insert(network.clone(), self.network_hold(&network, 1));
        }
        attached.networks.insert(network);
    }

    /// A network's shared parts, with the task that numbers its events and passes them on.
    fn network_hold(self: &Arc<Self>, network: &str, max_concurrent: usize) -> NetworkHold {
        let (events, mut receiver) = mpsc::channel::<ConnEvent>(1024);
        let edge = Arc::downgrade(self);
        let name = network.to_owned();
        tokio::spawn(async move {
            while let Some(event) = receiver.recv().await {
                let Some(edge) = edge.upgrade() else { return };
                edge.heard(&name, WireEvent::from(&event));
            }
        });
        NetworkHold {
            connecting: Arc::new(Semaphore::new(max_concurrent.max(1))),
            events,
            log: EventLog::default(),
            traffic: Traffic::default(),
        }
    }

    /// Tells the attached bridge what each network's connections read, wrote and reconnected since the last time.
    fn report_traffic(&self) {
        if !lock(&self.attached).as_ref().is_some_and(|attached| attached.reads_traffic) {
            return;
        }
        let counted: Vec<(String, TrafficDelta)> = lock(&self.networks)
            .iter()
            .map(|(network, hold)| (network.clone(), hold.traffic.take()))
            .filter(|(_, delta)| !delta.is_empty())
            .collect();
        for (network, delta) in counted {
            self.tell(Some(ToBridge::Traffic { network, delta }));
        }
    }

    /// Records an event of `network` and passes it to the bridge if it takes the network's events.
    fn heard(&self, network: &str, event: WireEvent) {
        let mut networks = lock(&self.networks);
        let Some(hold) = networks.get_mut(network) else { return };
        let seq = hold.log.push(event.clone());
        if let Some(attached) = lock(&self.attached).as_ref().filter(|attached| attached.networks.contains(network)) {
            let _ = attached.sender.send(ToBridge::Event { network: network.to_owned(), seq, event });
        }
    }

    /// Opens the connection `settings` describe, or — held already — tells the bridge where it stands.
    fn open(self: &Arc<Self>, mut settings: Settings) {
        let key = ConnKey::of(&settings);
        if let Some(held) = self.held(&key) {
            self.tell(Some(ToBridge::State { conn: key.clone(), state: held.connection.state() }));
            held.resume(self);
            return;
        }
        settings.ident = self.ident.clone();
        let forward = settings.forward;
        let (events, connecting) = {
            let mut networks = lock(&self.networks);
            let hold = networks
                .entry(key.network.clone())
                .or_insert_with(|| self.network_hold(&key.network, settings.reconnect.max_concurrent));
            if hold.connecting.available_permits() == 1 && settings.reconnect.max_concurrent > 1 {
                // Made by an Attach before any Open knew the network's cap.
                hold.connecting.add_permits(settings.reconnect.max_concurrent - 1);
            }
            settings.traffic = hold.traffic.clone();
            (hold.events.clone(), Arc::clone(&hold.connecting))
        };
        tracing::info!(network = %key.network, owner = %key.owner, nick = %settings.nick, "opening an IRC connection");
        let connection = LocalConnection::spawn(settings, events, connecting);
        let held = Held::start(connection, key.clone(), forward, self);
        lock(&self.held).insert(key, held);
    }

    /// Whether `key` is still held (a quit connection's tasks end).
    pub(super) fn holds(&self, key: &ConnKey) -> bool {
        lock(&self.held).contains_key(key)
    }

    /// Records `event` for `key`'s network as if its connection had said it (a connection resumed by a new bridge
    /// says again that it is registered).
    pub(super) fn replay(&self, key: &ConnKey, event: &ConnEvent) {
        self.heard(&key.network, WireEvent::from(event));
    }

    async fn quit_all(&self, reason: &str) {
        let held: Vec<Held> = lock(&self.held).drain().map(|(_, held)| held).collect();
        for held in &held {
            held.connection.quit(reason);
        }
        // The QUITs go out on the connections' own tasks: give them a moment to be written.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
