//! The bridge's link to its edge process: found on its Unix socket, or started (in its own process group, so it
//! outlives the bridge) when nobody listens there. Events from the edge go to their network's event loop; what
//! the loop has handled is acknowledged every [`ACK_EVERY`]. If the edge goes away, the bridge's connections are
//! reported disconnected, a new edge is started, and every connection is opened on it again with its channels.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::{SinkExt as _, StreamExt as _};
use tokio::sync::{mpsc, oneshot};

use super::{
    remote::{RemoteConnection, RemoteShared},
    spawn::{EdgeCommand, connect_or_start},
    wire::{ConnKey, Link, READS_TRAFFIC, ToBridge, ToEdge, VERSION, WireError},
};
use crate::conn::{ConnEvent, Settings, Traffic};

/// How often handled events are acknowledged to the edge.
const ACK_EVERY: Duration = Duration::from_millis(50);
/// How long a successor edge may take to listen after the old one said it moves.
const SUCCESSOR_WAIT: Duration = Duration::from_secs(30);

/// What a receipt waits for.
pub(super) struct Pending {
    pub(super) read: Option<oneshot::Sender<()>>,
    /// Told `true` when the lines were sent before under their key, `false` when sent now and read; dropped when
    /// the edge went away first.
    pub(super) earlier: Option<oneshot::Sender<bool>>,
}

/// The numbers of the events a network's loop has been handed and has handled, to acknowledge them.
#[derive(Default)]
pub(crate) struct Acks {
    /// Per event handed to the loop, in order: the link it came on and its number (`None`: made by the bridge).
    handed: Mutex<VecDeque<Option<(u64, u64)>>>,
    /// The last event handled on the current link.
    handled: AtomicU64,
    /// The last acknowledged.
    acked: AtomicU64,
}

impl Acks {
    /// The network's loop has handled the oldest event it was handed.
    pub(crate) fn handled_one(&self, current_link: u64) {
        if let Some(Some((link, seq))) = lock(&self.handed).pop_front()
            && link == current_link
        {
            self.handled.store(seq, Ordering::SeqCst);
        }
    }
}

struct NetworkSink {
    events: mpsc::Sender<ConnEvent>,
    acks: Arc<Acks>,
    /// Where the edge's counts of the network's lines and reconnects go.
    traffic: Traffic,
}

/// The link to the edge. Cheap to clone.
#[derive(Clone)]
pub(crate) struct EdgeLink {
    inner: Arc<Inner>,
}

struct Inner {
    command: EdgeCommand,
    out: Mutex<Option<mpsc::UnboundedSender<ToEdge>>>,
    /// The number of the current link (a new one after the edge went away).
    generation: AtomicU64,
    /// The current edge's ID (see [`super::wire::EDGE_ID_TAG`]).
    edge_id: AtomicU64,
    remotes: Mutex<HashMap<ConnKey, Arc<RemoteShared>>>,
    networks: Mutex<HashMap<String, NetworkSink>>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_receipt: AtomicU64,
    /// What the edge held when the bridge first attached.
    held_at_start: Vec<ConnKey>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The link could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EdgeError {
    #[error("cannot reach or start the IRC edge at {socket}: {source}")]
    Unreachable { socket: PathBuf, source: std::io::Error },
    #[error("the IRC edge refused the bridge: {0}")]
    Refused(String),
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// The edge's answer to hello.
struct Welcome {
    connections: Vec<ConnKey>,
    started_now: bool,
    edge_id: u64,
}

/// Says hello on a new link; the edge's welcome.
async fn hello(link: &mut Link) -> Result<Welcome, EdgeError> {
    link.send(&ToEdge::Hello { version: VERSION, reads: vec![READS_TRAFFIC.to_owned()] }).await?;
    match link.next::<ToBridge>().await? {
        ToBridge::Welcome { connections, started_now, edge_id } => Ok(Welcome { connections, started_now, edge_id }),
        ToBridge::Refused { reason } => Err(EdgeError::Refused(reason)),
        other => Err(EdgeError::Refused(format!("unexpected first message {other:?}"))),
    }
}

impl EdgeLink {
    /// Links to the edge `command` names, starting it if nobody listens on its socket.
    pub(crate) async fn start(command: EdgeCommand) -> Result<Self, EdgeError> {
        let mut link = connect_or_start(&command).await?;
        let Welcome { connections: held_at_start, started_now, edge_id } = hello(&mut link).await?;
        tracing::info!(socket = %command.socket.display(), held = held_at_start.len(), started_now,
            "linked to the IRC edge");
        let inner = Arc::new(Inner {
            command,
            out: Mutex::default(),
            generation: AtomicU64::new(1),
            edge_id: AtomicU64::new(edge_id),
            remotes: Mutex::default(),
            networks: Mutex::default(),
            pending: Mutex::default(),
            // Receipt numbers are unique across bridge processes, so an answer meant for an earlier one is ignored.
            next_receipt: AtomicU64::new(now_micros()),
            held_at_start,
        });
        let (out, outgoing) = mpsc::unbounded_channel();
        *lock(&inner.out) = Some(out);
        tokio::spawn(Arc::clone(&inner).run(link, outgoing));
        Ok(Self { inner })
    }

    /// The owners of `network`'s connections the edge held when the bridge linked to it.
    pub(crate) fn held_at_start(&self, network: &str) -> Vec<String> {
        let held = self.inner.held_at_start.iter().filter(|key| key.network == network);
        held.map(|key| key.owner.clone()).collect()
    }

    /// Takes `network`'s events into `events`; its loop reports what it handled to the returned [`Acks`].
    pub(crate) fn attach(&self, network: &str, events: mpsc::Sender<ConnEvent>, traffic: Traffic) -> Arc<Acks> {
        let acks = Arc::new(Acks::default());
        let sink = NetworkSink { events, acks: Arc::clone(&acks), traffic };
        lock(&self.inner.networks).insert(network.to_owned(), sink);
        self.send(ToEdge::Attach { network: network.to_owned() });
        acks
    }

    /// The number of the current link, for [`Acks::handled_one`].
    pub(crate) fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::SeqCst)
    }

    /// Opens the connection `settings` describe on the edge (which keeps the one it holds already).
    pub(crate) fn open(&self, settings: Settings) -> RemoteConnection {
        let shared = Arc::new(RemoteShared::new(settings.clone(), self.clone()));
        lock(&self.inner.remotes).insert(shared.key.clone(), Arc::clone(&shared));
        self.send(ToEdge::Open { settings: Box::new(settings) });
        RemoteConnection::new(shared)
    }

    pub(super) fn send(&self, message: ToEdge) {
        let receipt = match &message {
            ToEdge::Send { receipt, .. } => *receipt,
            _ => None,
        };
        let out = lock(&self.inner.out).clone();
        if out.is_none_or(|out| out.send(message).is_err())
            && let Some(receipt) = receipt
        {
            // No edge to send it to: its receipt fails now, and the event is sent again later.
            lock(&self.inner.pending).remove(&receipt);
        }
    }

    /// A receipt number for what `pending` waits for.
    pub(super) fn expect(&self, pending: Pending) -> u64 {
        let receipt = self.inner.next_receipt.fetch_add(1, Ordering::SeqCst);
        lock(&self.inner.pending).insert(receipt, pending);
        receipt
    }

    /// The connection was quit: it is not opened again on a new edge.
    pub(super) fn forget(&self, key: &ConnKey) {
        lock(&self.inner.remotes).remove(key);
    }
}

fn now_micros() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX / 2)
}

impl Inner {
    /// Serves links one after the other: when the edge goes away, a new one is started and everything reopened.
    async fn run(self: Arc<Self>, mut link: Link, mut outgoing: mpsc::UnboundedReceiver<ToEdge>) {
        loop {
            let error = self.serve(link, &mut outgoing).await;
            let moved = matches!(error, WireError::Moved);
            if moved {
                tracing::info!("the IRC edge hands its connections to a successor: attaching to it");
                // What the old edge had not confirmed is sent again (the successor knows what was read).
                *lock(&self.out) = None;
                lock(&self.pending).clear();
            } else {
                tracing::warn!(%error, "lost the IRC edge: starting a new one; the IRC connections reconnect");
                self.lost().await;
            }
            let (link_now, held) = loop {
                match self.relink(moved).await {
                    Ok(linked) => break linked,
                    Err(error) => {
                        tracing::error!(%error, "cannot reach the IRC edge; trying again");
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }
            };
            link = link_now;
            let (out, receiver) = mpsc::unbounded_channel();
            outgoing = receiver;
            *lock(&self.out) = Some(out);
            // After a move the successor holds the connections as they were: only what it lacks is opened.
            self.reopen(if moved { held } else { HashSet::new() });
        }
    }

    /// A link to the edge again, with the connections the edge holds: after a move, to the successor once it
    /// listens (it may take a few seconds to freeze and receive the connections), else to whichever edge listens
    /// or a new one.
    async fn relink(&self, moved: bool) -> Result<(Link, HashSet<ConnKey>), EdgeError> {
        if moved {
            let deadline = tokio::time::Instant::now() + SUCCESSOR_WAIT;
            while let Some(mut link) = super::spawn::connect_waiting(&self.command, deadline).await {
                // The old edge, while it hands over, closes links at once: the successor welcomes.
                if let Ok(welcome) = hello(&mut link).await {
                    self.edge_id.store(welcome.edge_id, Ordering::SeqCst);
                    return Ok((link, welcome.connections.into_iter().collect()));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let mut link = connect_or_start(&self.command).await?;
        let welcome = hello(&mut link).await?;
        self.edge_id.store(welcome.edge_id, Ordering::SeqCst);
        Ok((link, welcome.connections.into_iter().collect()))
    }

    /// On a new link: the networks' events, then every connection with its nick, login and channels, but those
    /// in `kept` (held by a successor as they were), which are only told their channels.
    fn reopen(&self, kept: HashSet<ConnKey>) {
        let networks: Vec<String> = lock(&self.networks).keys().cloned().collect();
        let remotes: Vec<Arc<RemoteShared>> = lock(&self.remotes).values().cloned().collect();
        let out = lock(&self.out).clone();
        let Some(out) = out else { return };
        for network in networks {
            let _ = out.send(ToEdge::Attach { network });
        }
        for remote in remotes {
            // A kept connection hears its channels again all the same, in case a `Want` reached the old edge
            // after it stopped listening (for a channel joined already, it is nothing).
            if !kept.contains(&remote.key) {
                let settings = lock(&remote.settings).clone();
                let _ = out.send(ToEdge::Open { settings: Box::new(settings) });
            }
            for channel in lock(&remote.wanted).values() {
                let _ = out.send(ToEdge::Want { conn: remote.key.clone(), channel: channel.clone() });
            }
        }
    }

    /// The edge went away: receipts fail (the events are sent again), connections are down.
    async fn lost(&self) {
        *lock(&self.out) = None;
        self.generation.fetch_add(1, Ordering::SeqCst);
        lock(&self.pending).clear();
        // The next edge numbers its events from 1 again.
        for sink in lock(&self.networks).values() {
            sink.acks.handled.store(0, Ordering::SeqCst);
            sink.acks.acked.store(0, Ordering::SeqCst);
        }
        let remotes: Vec<Arc<RemoteShared>> = lock(&self.remotes).values().cloned().collect();
        for remote in remotes {
            let nick = lock(&remote.state).nick.clone();
            remote.set_state(Default::default());
            let Some(nick) = nick else { continue };
            let event = ConnEvent::Disconnected { owner: remote.key.owner.clone(), nick };
            self.hand(&remote.key.network, None, event).await;
        }
    }

    /// Hands an event to its network's loop.
    async fn hand(&self, network: &str, seq: Option<u64>, event: ConnEvent) {
        let generation = self.generation.load(Ordering::SeqCst);
        let sink = lock(&self.networks).get(network).map(|sink| (sink.events.clone(), Arc::clone(&sink.acks)));
        let Some((events, acks)) = sink else { return };
        lock(&acks.handed).push_back(seq.map(|seq| (generation, seq)));
        let _ = events.send(event).await;
    }

    /// One link, until it fails.
    async fn serve(&self, link: Link, outgoing: &mut mpsc::UnboundedReceiver<ToEdge>) -> WireError {
        let (mut sink, mut stream) = link.split();
        let mut ack_tick = tokio::time::interval(ACK_EVERY);
        loop {
            tokio::select! {
                message = outgoing.recv() => {
                    let Some(message) = message else { return WireError::Closed };
                    let Ok(frame) = serde_json::to_vec(&message) else { continue };
                    if let Err(error) = sink.feed(frame.into()).await {
                        return error.into();
                    }
                    if outgoing.is_empty() && let Err(error) = sink.flush().await {
                        return error.into();
                    }
                }
                _ = ack_tick.tick() => {
                    for ack in self.due_acks() {
                        let Ok(frame) = serde_json::to_vec(&ack) else { continue };
                        if let Err(error) = sink.send(frame.into()).await {
                            return error.into();
                        }
                    }
                }
                frame = stream.next() => {
                    let frame = match frame {
                        None => return WireError::Closed,
                        Some(Err(error)) => return error.into(),
                        Some(Ok(frame)) => frame,
                    };
                    match serde_json::from_slice::<ToBridge>(&frame) {
                        Ok(ToBridge::Moving) => return WireError::Moved,
                        Ok(message) => self.received(message).await,
                        Err(error) => tracing::warn!(%error, "unreadable message from the IRC edge"),
                    }
                }
            }
        }
    }

    fn due_acks(&self) -> Vec<ToEdge> {
        let networks = lock(&self.networks);
        let mut due = Vec::new();
        for (network, sink) in networks.iter() {
            let handled = sink.acks.handled.load(Ordering::SeqCst);
            if sink.acks.acked.swap(handled, Ordering::SeqCst) != handled {
                due.push(ToEdge::Ack { network: network.clone(), seq: handled });
            }
        }
        due
    }

    async fn received(&self, message: ToBridge) {
        match message {
            ToBridge::Event { network, seq, event } => {
                let stamp = format!("{:x}.{seq}", self.edge_id.load(Ordering::SeqCst));
                if let Some(event) = event.into_event(&stamp) {
                    self.hand(&network, Some(seq), event).await;
                }
            }
            ToBridge::State { conn, state } => {
                let remote = lock(&self.remotes).get(&conn).cloned();
                if let Some(remote) = remote {
                    remote.set_state(state);
                }
            }
            ToBridge::Read { receipt } => {
                if let Some(pending) = lock(&self.pending).remove(&receipt) {
                    pending.earlier.map(|earlier| earlier.send(false));
                    pending.read.map(|read| read.send(()));
                }
            }
            ToBridge::Earlier { receipt } => {
                if let Some(pending) = lock(&self.pending).remove(&receipt) {
                    pending.earlier.map(|earlier| earlier.send(true));
                    pending.read.map(|read| read.send(()));
                }
            }
            ToBridge::Lost { receipt } => {
                lock(&self.pending).remove(&receipt);
            }
            ToBridge::Traffic { network, delta } => {
                if let Some(sink) = lock(&self.networks).get(&network) {
                    sink.traffic.add(delta);
                }
            }
            ToBridge::Welcome { .. } | ToBridge::Refused { .. } | ToBridge::Moving | ToBridge::Handing(_) => {}
        }
    }
}
