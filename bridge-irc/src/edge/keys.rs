//! The keys (Matrix event IDs) of lines the edge has sent, so that a bridge process that restarts and sends a
//! Matrix event again — it never heard whether the server had it — does not put it on IRC twice: while a key's
//! lines wait or are on their way its new sender waits with them, once the server has read them it hears so at
//! once, and if their connection ended first the key is forgotten and the lines go out again.

use std::collections::{HashMap, VecDeque};

/// How many keys are remembered; the oldest settled ones are forgotten first. A restarted bridge sends again
/// what it had in flight, a few thousand events at most.
const REMEMBERED: usize = 100_000;

/// Where the lines of a key stand.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Never sent (or forgotten): send them, and note the key.
    New,
    /// Sent and not yet read by the server: the new sender waits with the first.
    Waiting,
    /// Read by the server.
    Read,
}

#[derive(Debug, Default)]
struct KeyState {
    read: bool,
    /// Receipts of later senders of the same key.
    waiters: Vec<u64>,
}

/// The keys sent, in the order they were first sent.
#[derive(Debug, Default)]
pub(crate) struct SentKeys {
    keys: HashMap<String, KeyState>,
    order: VecDeque<String>,
}

impl SentKeys {
    /// Notes that `key` is being sent, or says how it stands; a later sender's `receipt` waits for the first.
    pub(crate) fn sending(&mut self, key: &str, receipt: Option<u64>) -> Seen {
        if let Some(state) = self.keys.get_mut(key) {
            if state.read {
                return Seen::Read;
            }
            state.waiters.extend(receipt);
            return Seen::Waiting;
        }
        self.keys.insert(key.to_owned(), KeyState::default());
        self.order.push_back(key.to_owned());
        self.forget_oldest();
        Seen::New
    }

    /// The server read the lines of `key`: returns the receipts of later senders to answer.
    pub(crate) fn read(&mut self, key: &str) -> Vec<u64> {
        self.keys
            .get_mut(key)
            .map(|state| {
                state.read = true;
                std::mem::take(&mut state.waiters)
            })
            .unwrap_or_default()
    }

    /// The connection ended before the server confirmed `key`: it is forgotten, so it is sent again; returns the
    /// receipts of later senders, who hear that it was lost.
    pub(crate) fn lost(&mut self, key: &str) -> Vec<u64> {
        self.keys.remove(key).map(|state| state.waiters).unwrap_or_default()
    }

    /// The keys whose lines the server has read, oldest first (for a successor edge).
    pub(crate) fn read_keys(&self) -> Vec<String> {
        self.order.iter().filter(|key| self.keys.get(*key).is_some_and(|state| state.read)).cloned().collect()
    }

    /// Keys handed over by a predecessor edge, as read.
    pub(crate) fn import(keys: Vec<String>) -> Self {
        let mut sent = Self::default();
        for key in keys {
            sent.sending(&key, None);
            sent.read(&key);
        }
        sent
    }

    fn forget_oldest(&mut self) {
        while self.order.len() > REMEMBERED {
            let Some(oldest) = self.order.pop_front() else { return };
            // A key removed as lost may come back later under the same name: only forget what is still there.
            if self.keys.get(&oldest).is_some_and(|state| state.waiters.is_empty()) {
                self.keys.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_sent_once_and_later_senders_hear_how_it_went() {
        let mut keys = SentKeys::default();
        assert_eq!(keys.sending("$a", Some(1)), Seen::New);
        assert_eq!(keys.sending("$a", Some(2)), Seen::Waiting);
        assert_eq!(keys.sending("$a", Some(3)), Seen::Waiting);
        assert_eq!(keys.read("$a"), [2, 3]);
        assert_eq!(keys.sending("$a", Some(4)), Seen::Read);
        // Lost before the server confirmed it: the next sender sends it again.
        assert_eq!(keys.sending("$b", None), Seen::New);
        assert_eq!(keys.sending("$b", Some(5)), Seen::Waiting);
        assert_eq!(keys.lost("$b"), [5]);
        assert_eq!(keys.sending("$b", Some(6)), Seen::New);
    }

    #[test]
    fn only_so_many_keys_are_remembered() {
        let mut keys = SentKeys::default();
        for n in 0..REMEMBERED + 10 {
            keys.sending(&format!("$e{n}"), None);
            keys.read(&format!("$e{n}"));
        }
        assert_eq!(keys.keys.len(), REMEMBERED);
        assert_eq!(keys.sending("$e0", None), Seen::New);
        assert_eq!(keys.sending(&format!("$e{}", REMEMBERED + 9), None), Seen::Read);
    }
}
