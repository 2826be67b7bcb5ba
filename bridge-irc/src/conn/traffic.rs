//! What a network's IRC connections exchanged with their servers: lines read, lines written, and reconnects. The
//! connection code adds to the counts wherever the connections live (in the bridge, or on the edge, which sends
//! what it counted to the bridge every second); the bridge takes them into its metrics at each scrape.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use serde::{Deserialize, Serialize};

/// Counts shared by a network's connections. Cloning shares them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Traffic(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    read: AtomicU64,
    written: AtomicU64,
    reconnects: AtomicU64,
}

/// What was counted since the counts were last taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TrafficDelta {
    /// Lines read from the servers.
    pub(crate) read: u64,
    /// Lines written to the servers.
    pub(crate) written: u64,
    /// Connection attempts after a connection dropped or failed.
    pub(crate) reconnects: u64,
}

impl TrafficDelta {
    /// Whether nothing was counted.
    pub(crate) fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl Traffic {
    /// A line was read.
    pub(crate) fn read_one(&self) {
        self.0.read.fetch_add(1, Ordering::Relaxed);
    }

    /// `lines` lines were written.
    pub(crate) fn wrote(&self, lines: u64) {
        self.0.written.fetch_add(lines, Ordering::Relaxed);
    }

    /// A connection is about to be attempted again after it dropped or failed.
    pub(crate) fn reconnecting(&self) {
        self.0.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds counts made elsewhere (by the edge).
    pub(crate) fn add(&self, delta: TrafficDelta) {
        self.0.read.fetch_add(delta.read, Ordering::Relaxed);
        self.0.written.fetch_add(delta.written, Ordering::Relaxed);
        self.0.reconnects.fetch_add(delta.reconnects, Ordering::Relaxed);
    }

    /// What was counted since the last take; the counts start again from zero.
    pub(crate) fn take(&self) -> TrafficDelta {
        TrafficDelta {
            read: self.0.read.swap(0, Ordering::Relaxed),
            written: self.0.written.swap(0, Ordering::Relaxed),
            reconnects: self.0.reconnects.swap(0, Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_shared_and_taken_once() {
        let traffic = Traffic::default();
        let clone = traffic.clone();
        traffic.read_one();
        clone.read_one();
        clone.wrote(3);
        traffic.reconnecting();
        traffic.add(TrafficDelta { read: 10, written: 1, reconnects: 0 });
        assert_eq!(traffic.take(), TrafficDelta { read: 12, written: 4, reconnects: 1 });
        assert!(clone.take().is_empty(), "taken already");
    }
}
