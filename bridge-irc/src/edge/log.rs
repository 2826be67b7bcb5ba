//! The edge's record of what a network's connections heard and the bridge has not yet handled: numbered in
//! order, kept until the bridge acknowledges them, handed again in order to the next bridge that attaches.

use std::collections::VecDeque;

use super::wire::WireEvent;

/// At most this many events wait for a bridge per network (a few hours of a busy network's chatter); older ones
/// are dropped, counted and logged, so an edge left without its bridge cannot grow without bound.
const MAX_WAITING: usize = 500_000;

/// One network's unacknowledged events.
#[derive(Debug, Default)]
pub(crate) struct EventLog {
    next_seq: u64,
    waiting: VecDeque<(u64, WireEvent)>,
    dropped: u64,
}

impl EventLog {
    /// Numbers and keeps `event`; returns its number.
    pub(crate) fn push(&mut self, event: WireEvent) -> u64 {
        self.next_seq += 1;
        if self.waiting.len() >= MAX_WAITING {
            self.waiting.pop_front();
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                tracing::warn!(dropped = self.dropped, "no bridge took the IRC events in time: the oldest are dropped");
            }
        }
        self.waiting.push_back((self.next_seq, event));
        self.next_seq
    }

    /// The bridge has handled everything up to `seq`.
    pub(crate) fn ack(&mut self, seq: u64) {
        while self.waiting.front().is_some_and(|(waiting, _)| *waiting <= seq) {
            self.waiting.pop_front();
        }
    }

    /// The events not acknowledged yet, in order.
    pub(crate) fn waiting(&self) -> impl Iterator<Item = &(u64, WireEvent)> {
        self.waiting.iter()
    }

    /// The number of the last event, and the events waiting (for a successor edge).
    pub(crate) fn export(&self) -> (u64, Vec<(u64, WireEvent)>) {
        (self.next_seq, self.waiting.iter().cloned().collect())
    }

    /// A log handed over by a predecessor edge.
    pub(crate) fn import(next_seq: u64, waiting: Vec<(u64, WireEvent)>) -> Self {
        Self { next_seq, waiting: waiting.into(), dropped: 0 }
    }

    /// How many events wait.
    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize) -> WireEvent {
        WireEvent::Message { owner: "bot".into(), nick: "me".into(), line: format!("PRIVMSG #c :{n}\r\n") }
    }

    #[test]
    fn events_wait_in_order_until_acknowledged() {
        let mut log = EventLog::default();
        let seqs: Vec<u64> = (0..5).map(|n| log.push(event(n))).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        log.ack(3);
        assert_eq!(log.waiting().map(|(seq, _)| *seq).collect::<Vec<_>>(), [4, 5]);
        // An acknowledgement from before (a bridge that attached again) changes nothing.
        log.ack(2);
        assert_eq!(log.len(), 2);
        log.ack(5);
        assert_eq!(log.len(), 0);
        assert_eq!(log.push(event(6)), 6);
    }
}
