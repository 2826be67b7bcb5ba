//! The bridge's handle on a connection the edge holds: it answers from the copy of the connection's state the edge
//! keeps up to date, and turns each request into a message on the link (see [`super::wire`]).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{Notify, oneshot};

use super::{
    link::{EdgeLink, Pending},
    wire::{ConnKey, ToEdge},
};
use crate::{
    conn::{ChannelStatus, ConnState, Keyed, Login, NotConnected, Settings},
    ids::casefold,
    line::Line,
};

/// A connection held by the edge. Cheap to clone.
#[derive(Clone)]
pub(crate) struct RemoteConnection {
    shared: Arc<RemoteShared>,
}

impl std::fmt::Debug for RemoteConnection {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("RemoteConnection").field("key", &self.shared.key).finish_non_exhaustive()
    }
}

/// What the bridge keeps of a connection held by the edge.
pub(super) struct RemoteShared {
    pub(super) key: ConnKey,
    link: EdgeLink,
    /// The settings to open it with again (on a new edge); nick and login follow the owner's changes.
    pub(super) settings: Mutex<Settings>,
    /// Casefolded → the channels wanted, as first named.
    pub(super) wanted: Mutex<BTreeMap<String, String>>,
    pub(super) state: Mutex<ConnState>,
    pub(super) changed: Notify,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn encoded(lines: Vec<Line>) -> Vec<String> {
    // Lines are built from Rust strings, so their bytes are UTF-8.
    lines.into_iter().map(|line| String::from_utf8_lossy(line.as_bytes()).into_owned()).collect()
}

impl RemoteShared {
    pub(super) fn new(settings: Settings, link: EdgeLink) -> Self {
        Self {
            key: ConnKey::of(&settings),
            link,
            settings: Mutex::new(settings),
            wanted: Mutex::default(),
            state: Mutex::default(),
            changed: Notify::new(),
        }
    }

    /// The edge reported the connection's state.
    pub(super) fn set_state(&self, state: ConnState) {
        *lock(&self.state) = state;
        self.changed.notify_waiters();
    }
}

impl RemoteConnection {
    pub(super) fn new(shared: Arc<RemoteShared>) -> Self {
        Self { shared }
    }

    fn state<T>(&self, read: impl FnOnce(&ConnState) -> T) -> T {
        read(&lock(&self.shared.state))
    }

    fn tell(&self, message: ToEdge) {
        self.shared.link.send(message);
    }

    fn conn(&self) -> ConnKey {
        self.shared.key.clone()
    }

    pub(crate) fn nick(&self) -> Option<String> {
        self.state(|state| state.nick.clone())
    }

    pub(crate) fn has_cap(&self, cap: &str) -> bool {
        self.state(|state| state.caps.has(cap))
    }

    pub(crate) fn cap_value(&self, cap: &str) -> Option<String> {
        self.state(|state| state.caps.value(cap).map(str::to_owned))
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.state(|state| state.nick.is_some())
    }

    pub(crate) fn prefix_len(&self) -> usize {
        let nick = lock(&self.shared.settings).nick.clone();
        self.state(|state| state.prefix_len_or(&nick))
    }

    fn not_connected(&self) -> NotConnected {
        NotConnected(self.shared.key.owner.clone())
    }

    /// Queues lines without a receipt; fails at once if the connection is not registered.
    pub(crate) fn send(&self, lines: Vec<Line>) -> Result<(), NotConnected> {
        if !self.is_connected() {
            return Err(self.not_connected());
        }
        self.tell(ToEdge::Send { conn: self.conn(), lines: encoded(lines), receipt: None, key: None });
        Ok(())
    }

    /// Queues lines with a receipt (always asked of the edge when there is a key: it is how a key sent before is
    /// told apart), see [`Keyed`].
    pub(crate) fn send_keyed(&self, lines: Vec<Line>, key: Option<&str>, read: bool) -> Result<Keyed, NotConnected> {
        if !self.is_connected() {
            return Err(self.not_connected());
        }
        let (read_tx, read_rx) = if read { Some(oneshot::channel()).unzip() } else { (None, None) };
        let (earlier_tx, earlier_rx) = if key.is_some() { Some(oneshot::channel()).unzip() } else { (None, None) };
        let receipt = self.shared.link.expect(Pending { read: read_tx, earlier: earlier_tx });
        let key = key.map(str::to_owned);
        self.tell(ToEdge::Send { conn: self.conn(), lines: encoded(lines), receipt: Some(receipt), key });
        Ok(Keyed { read: read_rx, earlier: earlier_rx })
    }

    pub(crate) fn want_channel(&self, channel: &str) {
        lock(&self.shared.wanted).insert(casefold(channel), channel.to_owned());
        self.tell(ToEdge::Want { conn: self.conn(), channel: channel.to_owned() });
    }

    pub(crate) fn part(&self, channel: &str, reason: Option<&str>) {
        lock(&self.shared.wanted).remove(&casefold(channel));
        lock(&self.shared.state).channels.remove(&casefold(channel));
        let reason = reason.map(str::to_owned);
        self.tell(ToEdge::Part { conn: self.conn(), channel: channel.to_owned(), reason });
    }

    pub(crate) fn channel_status(&self, channel: &str) -> ChannelStatus {
        let key = casefold(channel);
        if !lock(&self.shared.wanted).contains_key(&key) {
            return ChannelStatus::Unknown;
        }
        self.state(|state| state.channels.get(&key).cloned()).unwrap_or(ChannelStatus::Pending)
    }

    pub(crate) fn channels(&self) -> Vec<String> {
        lock(&self.shared.wanted).values().cloned().collect()
    }

    pub(crate) fn set_nick(&self, nick: &str) {
        lock(&self.shared.settings).nick = nick.to_owned();
        self.tell(ToEdge::Nick { conn: self.conn(), nick: nick.to_owned() });
    }

    pub(crate) fn set_login(&self, login: Option<Login>) {
        lock(&self.shared.settings).login.clone_from(&login);
        self.tell(ToEdge::Login { conn: self.conn(), login: login.map(Box::new) });
    }

    pub(crate) fn reconnect(&self) {
        self.tell(ToEdge::Reconnect { conn: self.conn() });
    }

    pub(crate) async fn changed(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.shared.changed.notified()).await;
    }

    pub(crate) fn quit(&self, reason: &str) {
        self.shared.link.forget(&self.shared.key);
        self.tell(ToEdge::Quit { conn: self.conn(), reason: reason.to_owned() });
    }
}
