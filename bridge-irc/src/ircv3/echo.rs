//! Delivery confirmation through `echo-message` (<https://ircv3.net/specs/extensions/echo-message>) and
//! `labeled-response` (<https://ircv3.net/specs/extensions/labeled-response>).
//!
//! A line a puppet sends for a Matrix message is delivered when the server echoes it back: the echo carries the
//! line's `label` (with `labeled-response`) or, without labels, the same target and text, and its `msgid`, which the
//! bridge then records in the message map. An error reply with the label (`404 ERR_CANNOTSENDTOCHAN`, a `FAIL`), or
//! no echo within the timeout, means the line did not arrive: the Matrix sender is told. The timeout counts from
//! when the line can leave the connection's flood throttle (each line waiting ahead of it from the same puppet
//! adds one throttle interval), so a burst of messages is not reported late. A Matrix message's queue item waits
//! for what its lines came to ([`Echoes::confirmation`]): it leaves the queue only once the server echoed them all,
//! refused one, or let the timeout pass. [`Echoes`] holds the waiting lines, free of I/O.

use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};

use tokio::{sync::oneshot, time::Instant};

/// The Matrix message a line belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outgoing {
    /// The Matrix event.
    pub(crate) event_id: String,
    /// Its room.
    pub(crate) room_id: String,
    /// The portal's remote key.
    pub(crate) portal_key: String,
    /// Who sent it on Matrix.
    pub(crate) matrix_user: String,
}

#[derive(Debug)]
struct Waiting {
    sent: Outgoing,
    /// The puppet's owner.
    owner: String,
    /// When the line is late.
    deadline: Instant,
}

/// What a Matrix message's lines came to on IRC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Echoed {
    /// Every line came back: the server took them.
    Delivered,
    /// The server refused a line, saying why; the sender has been told.
    Refused(String),
    /// A line never came back within the timeout; the sender has been told.
    Missing,
}

/// Lines waiting for their echo, across a network's puppets.
#[derive(Debug)]
pub(crate) struct Echoes {
    timeout: Duration,
    next_label: u64,
    /// By label.
    labelled: HashMap<String, Waiting>,
    /// Without labels: (target, text), oldest first.
    unlabelled: VecDeque<(String, String, Waiting)>,
    /// Who waits for what each Matrix message's lines came to, by event ID.
    waiters: HashMap<String, oneshot::Sender<Echoed>>,
    /// How many lines of each Matrix message are still waiting, by event ID (counted, not found by a scan: every
    /// echo asks).
    outstanding: HashMap<String, usize>,
}

impl Echoes {
    /// Waits `timeout` for each echo.
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            next_label: 0,
            labelled: HashMap::new(),
            unlabelled: VecDeque::new(),
            waiters: HashMap::new(),
            outstanding: HashMap::new(),
        }
    }

    /// What the lines of the Matrix message `event_id`, noted with [`Echoes::expect`] before, come to. Dropped
    /// unresolved when the message is forgotten (it is sent again as a whole).
    pub(crate) fn confirmation(&mut self, event_id: &str) -> oneshot::Receiver<Echoed> {
        let (settle, confirmation) = oneshot::channel();
        match self.is_waiting_for(event_id) {
            true => {
                self.waiters.insert(event_id.to_owned(), settle);
            }
            false => {
                let _ = settle.send(Echoed::Delivered);
            }
        }
        confirmation
    }

    fn is_waiting_for(&self, event_id: &str) -> bool {
        self.outstanding.contains_key(event_id)
    }

    /// One line of `event_id` is no longer waited for.
    fn line_settled(&mut self, event_id: &str) {
        if let Some(count) = self.outstanding.get_mut(event_id) {
            *count -= 1;
            if *count == 0 {
                self.outstanding.remove(event_id);
            }
        }
    }

    /// Tells the waiter of `event_id`, if any, what its lines came to.
    fn settle(&mut self, event_id: &str, echoed: Echoed) {
        if let Some(waiter) = self.waiters.remove(event_id) {
            let _ = waiter.send(echoed);
        }
    }

    /// Notes a line about to be sent by `owner`'s puppet, whose throttle lets a line out every `interval`;
    /// returns the label to tag it with when `labels` (the connection negotiated `labeled-response`).
    #[allow(clippy::too_many_arguments)] // One line's facts; a struct for them would only be built here.
    pub(crate) fn expect(
        &mut self,
        owner: &str,
        target: &str,
        text: &str,
        sent: Outgoing,
        labels: bool,
        interval: Duration,
        now: Instant,
    ) -> Option<String> {
        let ahead = self.labelled.values().chain(self.unlabelled.iter().map(|(.., waiting)| waiting));
        let ahead = ahead.filter(|waiting| waiting.owner == owner).count();
        let queued = interval.saturating_mul(u32::try_from(ahead).unwrap_or(u32::MAX));
        *self.outstanding.entry(sent.event_id.clone()).or_default() += 1;
        let waiting = Waiting { sent, owner: owner.to_owned(), deadline: now + self.timeout + queued };
        if labels {
            self.next_label += 1;
            let label = format!("lt{}", self.next_label);
            self.labelled.insert(label.clone(), waiting);
            Some(label)
        } else {
            self.unlabelled.push_back((target.to_owned(), text.to_owned(), waiting));
            None
        }
    }

    /// An echo of one of `owner`'s lines arrived: the Matrix message it belonged to, if we were waiting for it.
    pub(crate) fn echoed(&mut self, owner: &str, label: Option<&str>, target: &str, text: &str) -> Option<Outgoing> {
        let sent = match label {
            Some(label) => self.labelled.remove(label).map(|waiting| waiting.sent)?,
            None => {
                let index = self.unlabelled.iter().position(|(to, line, waiting)| {
                    waiting.owner == owner && to.eq_ignore_ascii_case(target) && line == text
                })?;
                self.unlabelled.remove(index).map(|(_, _, waiting)| waiting.sent)?
            }
        };
        self.line_settled(&sent.event_id);
        if !self.is_waiting_for(&sent.event_id) {
            self.settle(&sent.event_id, Echoed::Delivered);
        }
        Some(sent)
    }

    /// An error reply carrying `label` arrived: the Matrix message failed; its other lines are not waited for.
    pub(crate) fn failed(&mut self, label: &str, reason: &str) -> Option<Outgoing> {
        let sent = self.labelled.remove(label)?.sent;
        self.settle(&sent.event_id, Echoed::Refused(reason.to_owned()));
        self.forget(&sent.event_id);
        Some(sent)
    }

    /// Messages with a line not echoed within the timeout, once each.
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<Outgoing> {
        let late = |waiting: &Waiting| now >= waiting.deadline;
        let abandoned: Vec<String> = self
            .waiters
            .iter()
            .filter(|(_, waiter)| waiter.is_closed())
            .map(|(event_id, _)| event_id.clone())
            .collect();
        let mut out: Vec<Outgoing> = self.labelled.values().filter(|w| late(w)).map(|w| w.sent.clone()).collect();
        out.extend(self.unlabelled.iter().filter(|(.., w)| late(w)).map(|(.., w)| w.sent.clone()));
        out.sort_by(|a, b| a.event_id.cmp(&b.event_id));
        out.dedup_by(|a, b| a.event_id == b.event_id);
        for sent in &out {
            self.settle(&sent.event_id, Echoed::Missing);
            self.forget(&sent.event_id);
        }
        // Nobody waits for these any more (the message was settled otherwise, e.g. sent before a restart): late,
        // but nothing to tell.
        out.retain(|sent| !abandoned.contains(&sent.event_id));
        out
    }

    /// Whether nothing is waiting.
    pub(crate) fn is_idle(&self) -> bool {
        self.labelled.is_empty() && self.unlabelled.is_empty()
    }

    /// Stops waiting for a Matrix message's lines (they could not be sent; the message is retried as a whole).
    pub(crate) fn forget(&mut self, event_id: &str) {
        self.labelled.retain(|_, waiting| waiting.sent.event_id != event_id);
        self.unlabelled.retain(|(.., waiting)| waiting.sent.event_id != event_id);
        self.outstanding.remove(event_id);
        self.waiters.remove(event_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(event_id: &str) -> Outgoing {
        Outgoing { event_id: event_id.into(), room_id: "!r".into(), portal_key: "p".into(), matrix_user: "@a:x".into() }
    }

    #[test]
    fn labelled_echoes_and_errors_settle_their_message() {
        let now = Instant::now();
        let mut echoes = Echoes::new(Duration::from_secs(10));
        let first = echoes.expect("@a:x", "#c", "one", sent("$1"), true, Duration::ZERO, now).unwrap();
        let second = echoes.expect("@a:x", "#c", "two", sent("$2"), true, Duration::ZERO, now).unwrap();
        let third = echoes.expect("@a:x", "#c", "two, line 2", sent("$2"), true, Duration::ZERO, now).unwrap();
        assert_ne!(first, second);
        assert_eq!(echoes.echoed("@a:x", Some(&first), "#c", "one"), Some(sent("$1")));
        assert_eq!(echoes.echoed("@a:x", Some(&first), "#c", "one"), None, "settled once");
        assert_eq!(echoes.failed(&second, "no"), Some(sent("$2")));
        assert_eq!(echoes.failed(&third, "no"), None, "the message's other lines are forgotten");
        assert!(echoes.is_idle());
    }

    #[test]
    fn unlabelled_echoes_match_by_target_and_text_and_late_ones_expire() {
        let now = Instant::now();
        let mut echoes = Echoes::new(Duration::from_secs(10));
        assert_eq!(echoes.expect("@a:x", "#c", "hi", sent("$1"), false, Duration::ZERO, now), None);
        echoes.expect("@a:x", "#c", "hi", sent("$2"), false, Duration::ZERO, now);
        echoes.expect("@b:x", "#c", "late", sent("$3"), false, Duration::ZERO, now);
        assert_eq!(echoes.echoed("@a:x", None, "#C", "hi"), Some(sent("$1")), "oldest first");
        assert_eq!(echoes.echoed("@a:x", None, "#c", "other"), None);
        assert!(echoes.expired(now + Duration::from_secs(5)).is_empty());
        assert_eq!(echoes.expired(now + Duration::from_secs(11)), [sent("$2"), sent("$3")]);
        assert!(echoes.is_idle());
    }

    #[test]
    fn lines_queued_behind_others_get_their_throttle_time() {
        let now = Instant::now();
        let mut echoes = Echoes::new(Duration::from_secs(10));
        let interval = Duration::from_secs(1);
        for index in 0..30 {
            echoes.expect("@a:x", "#c", "burst", sent(&format!("${index:02}")), true, interval, now);
        }
        echoes.expect("@b:x", "#c", "other puppet", sent("$b"), true, interval, now);
        // The first line and the other puppet's are late after the timeout; the 30th line only 29 s later.
        assert_eq!(echoes.expired(now + Duration::from_secs(10)), [sent("$00"), sent("$b")]);
        assert_eq!(echoes.expired(now + Duration::from_secs(38)).len(), 28);
        assert_eq!(echoes.expired(now + Duration::from_secs(39)), [sent("$29")]);
    }

    #[test]
    fn a_message_is_confirmed_once_all_its_lines_came_back_or_one_failed() {
        let now = Instant::now();
        let mut echoes = Echoes::new(Duration::from_secs(10));
        let first = echoes.expect("@a:x", "#c", "one", sent("$1"), true, Duration::ZERO, now).unwrap();
        let second = echoes.expect("@a:x", "#c", "one, line 2", sent("$1"), true, Duration::ZERO, now).unwrap();
        let refused = echoes.expect("@a:x", "#c", "two", sent("$2"), true, Duration::ZERO, now).unwrap();
        echoes.expect("@a:x", "#c", "three", sent("$3"), false, Duration::ZERO, now);
        echoes.expect("@a:x", "#c", "four", sent("$4"), false, Duration::ZERO, now);
        let mut one = echoes.confirmation("$1");
        let mut two = echoes.confirmation("$2");
        let mut three = echoes.confirmation("$3");
        let mut four = echoes.confirmation("$4");
        assert_eq!(echoes.confirmation("$none").try_recv(), Ok(Echoed::Delivered), "nothing to wait for");

        echoes.echoed("@a:x", Some(&first), "#c", "one");
        assert!(one.try_recv().is_err(), "a line is still out");
        echoes.echoed("@a:x", Some(&second), "#c", "one, line 2");
        assert_eq!(one.try_recv(), Ok(Echoed::Delivered));
        echoes.failed(&refused, "Cannot send to channel");
        assert_eq!(two.try_recv(), Ok(Echoed::Refused("Cannot send to channel".into())));
        echoes.forget("$3");
        assert_eq!(three.try_recv(), Err(oneshot::error::TryRecvError::Closed), "sent again as a whole");
        echoes.expired(now + Duration::from_secs(11));
        assert_eq!(four.try_recv(), Ok(Echoed::Missing));
    }
}
