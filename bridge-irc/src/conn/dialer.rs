//! Where a network's connections are opened: in this process, or on the edge (see [`crate::edge`]). Either way
//! their events reach the network's one event loop, in order; on the edge the loop also reports each event it
//! has handled, so the edge can let go of it.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};

use super::{ConnEvent, Connection, LocalConnection, Settings};
use crate::edge::{Acks, EdgeLink};

/// Opens a network's connections.
pub(crate) enum Dialer {
    /// In this process, at most `connecting` registering at once.
    Local { connecting: Arc<Semaphore>, events: mpsc::Sender<ConnEvent> },
    /// On the edge.
    Edge { link: EdgeLink, acks: Arc<Acks> },
}

impl Dialer {
    /// Where `network`'s connections are opened; their events go to `events`.
    pub(crate) fn new(
        network: &str,
        max_concurrent: usize,
        events: mpsc::Sender<ConnEvent>,
        edge: Option<EdgeLink>,
    ) -> Self {
        match edge {
            Some(link) => {
                let acks = link.attach(network, events);
                Self::Edge { link, acks }
            }
            None => Self::Local { connecting: Arc::new(Semaphore::new(max_concurrent.max(1))), events },
        }
    }

    /// Opens the connection `settings` describe (on the edge: takes the one it holds already, if it does).
    pub(crate) fn open(&self, settings: Settings) -> Connection {
        match self {
            Self::Local { connecting, events } => {
                Connection::Local(LocalConnection::spawn(settings, events.clone(), Arc::clone(connecting)))
            }
            Self::Edge { link, .. } => Connection::Edge(link.open(settings)),
        }
    }

    /// The network's loop has handled the oldest event it was handed.
    pub(crate) fn handled_one(&self) {
        if let Self::Edge { link, acks } = self {
            acks.handled_one(link.generation());
        }
    }

    /// The owners of the network's connections the edge held when the bridge started (none in this process).
    pub(crate) fn held_at_start(&self, network: &str) -> Vec<String> {
        match self {
            Self::Local { .. } => Vec::new(),
            Self::Edge { link, .. } => link.held_at_start(network),
        }
    }
}
