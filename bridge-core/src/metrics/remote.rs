//! What a connector reports of its own side of the bridge, in words that fit any network: its connections to the
//! network by role and state, how often they reconnected, and the protocol messages it exchanged with the network
//! (an IRC line, an XMPP stanza: one unit of the wire protocol each, whatever it carries).
//!
//! A connector gets a [`RemoteMetrics`] from
//! [`BridgeHandle::remote_metrics`](crate::BridgeHandle::remote_metrics) and names its networks and connection
//! roles itself. Counters it adds to as things happen; the connection gauges it sets from a hook
//! ([`RemoteMetrics::on_scrape`]) that runs before each scrape, so they say how things stand at that moment.

use std::sync::{Arc, Mutex, PoisonError};

use prometheus::{IntCounterVec, IntGaugeVec, Opts};

/// Where a connection to the remote network stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Connected and usable (registered, authenticated, joined the stream).
    Connected,
    /// Wanted but not usable now: connecting, registering, or waiting to reconnect.
    Connecting,
}

impl ConnectionState {
    fn label(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Connecting => "connecting",
        }
    }
}

/// A hook run before each scrape; it returns `false` once it has nothing more to report (what it watched is
/// gone), and is then dropped.
type ScrapeHook = Box<dyn Fn(&RemoteMetrics) -> bool + Send + Sync>;

/// The metrics a connector reports. Cloning shares them.
#[derive(Clone)]
pub struct RemoteMetrics {
    /// Connections to the remote network by network, role (the connector's word: a user's puppet, the bot's own
    /// connection, the component link) and state.
    connections: IntGaugeVec,
    /// Times a connection to the network was attempted again after it dropped or failed, by network.
    reconnects: IntCounterVec,
    /// Protocol messages exchanged with the network, by network and direction (`received`, `sent`).
    protocol_messages: IntCounterVec,
    hooks: Arc<Mutex<Vec<ScrapeHook>>>,
}

impl std::fmt::Debug for RemoteMetrics {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("RemoteMetrics").finish_non_exhaustive()
    }
}

impl RemoteMetrics {
    /// The metrics, not yet registered (see [`RemoteMetrics::collectors`]).
    pub(super) fn new() -> Self {
        let connections = IntGaugeVec::new(
            Opts::new("remote_connections", "Connections to the remote network by network, role and state"),
            &["network", "role", "state"],
        )
        .expect("valid metric");
        let reconnects = IntCounterVec::new(
            Opts::new("remote_reconnects_total", "Connection attempts to the remote network after a drop or failure"),
            &["network"],
        )
        .expect("valid metric");
        let protocol_messages = IntCounterVec::new(
            Opts::new(
                "remote_protocol_messages_total",
                "Protocol messages (IRC lines, XMPP stanzas) exchanged with the remote network, by direction",
            ),
            &["network", "direction"],
        )
        .expect("valid metric");
        Self { connections, reconnects, protocol_messages, hooks: Arc::default() }
    }

    /// What the registry takes.
    pub(super) fn collectors(&self) -> [Box<dyn prometheus::core::Collector>; 3] {
        [
            Box::new(self.connections.clone()),
            Box::new(self.reconnects.clone()),
            Box::new(self.protocol_messages.clone()),
        ]
    }

    /// Says how many of `network`'s connections in `role` are in `state` now.
    pub fn set_connections(&self, network: &str, role: &str, state: ConnectionState, count: usize) {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        self.connections.with_label_values(&[network, role, state.label()]).set(count);
    }

    /// Counts `count` more connection attempts to `network` after a drop or a failure (0 makes the series appear).
    pub fn reconnected(&self, network: &str, count: u64) {
        self.reconnects.with_label_values(&[network]).inc_by(count);
    }

    /// Counts `count` more protocol messages received from `network` (0 makes the series appear).
    pub fn received(&self, network: &str, count: u64) {
        self.protocol_messages.with_label_values(&[network, "received"]).inc_by(count);
    }

    /// Counts `count` more protocol messages sent to `network` (0 makes the series appear).
    pub fn sent(&self, network: &str, count: u64) {
        self.protocol_messages.with_label_values(&[network, "sent"]).inc_by(count);
    }

    /// Runs `hook` before every scrape, to set what is counted best at that moment (connections by state) or to
    /// add what was counted elsewhere meanwhile. The hook runs on the scrape's task: it must be quick, must not
    /// block on I/O, and must not call `on_scrape` itself. It is dropped once it returns `false`.
    pub fn on_scrape(&self, hook: impl Fn(&RemoteMetrics) -> bool + Send + Sync + 'static) {
        self.hooks.lock().unwrap_or_else(PoisonError::into_inner).push(Box::new(hook));
    }

    /// Runs the scrape hooks, dropping those that are done.
    pub(super) fn run_hooks(&self) {
        self.hooks.lock().unwrap_or_else(PoisonError::into_inner).retain(|hook| hook(self));
    }
}
