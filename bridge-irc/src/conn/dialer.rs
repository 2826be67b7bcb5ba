//! Where a network's connections are opened: in this process, or on the edge (see [`crate::edge`]). Either way
//! their events reach the network's one event loop, in order; on the edge the loop also reports each event it
//! has handled, so the edge can let go of it. Either way their lines and reconnects are counted in the network's
//! [`Traffic`] (the edge's counts reach it over the link).

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};

use super::{ConnEvent, Connection, LocalConnection, Settings, Traffic};
use crate::edge::{Acks, EdgeLink};

/// Opens a network's connections, and counts what they exchange.
pub(crate) struct Dialer {
    place: Place,
    traffic: Traffic,
}

/// Where a network's connections live.
enum Place {
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
        let traffic = Traffic::default();
        let place = match edge {
            Some(link) => {
                let acks = link.attach(network, events, traffic.clone());
                Place::Edge { link, acks }
            }
            None => Place::Local { connecting: Arc::new(Semaphore::new(max_concurrent.max(1))), events },
        };
        Self { place, traffic }
    }

    /// Opens the connection `settings` describe (on the edge: takes the one it holds already, if it does).
    pub(crate) fn open(&self, mut settings: Settings) -> Connection {
        match &self.place {
            Place::Local { connecting, events } => {
                settings.traffic = self.traffic.clone();
                Connection::Local(LocalConnection::spawn(settings, events.clone(), Arc::clone(connecting)))
            }
            Place::Edge { link, .. } => Connection::Edge(link.open(settings)),
        }
    }

    /// The network's loop has handled the oldest event it was handed.
    pub(crate) fn handled_one(&self) {
        if let Place::Edge { link, acks } = &self.place {
            acks.handled_one(link.generation());
        }
    }

    /// The owners of the network's connections the edge held when the bridge started (none in this process).
    pub(crate) fn held_at_start(&self, network: &str) -> Vec<String> {
        match &self.place {
            Place::Local { .. } => Vec::new(),
            Place::Edge { link, .. } => link.held_at_start(network),
        }
    }

    /// What the network's connections read, wrote and reconnected since the last call.
    pub(crate) fn take_traffic(&self) -> super::TrafficDelta {
        self.traffic.take()
    }
}
