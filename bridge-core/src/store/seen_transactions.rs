//! What the store knows of homeserver transaction IDs without a read: the IDs it recorded lately.
//!
//! A homeserver sends a transaction again only while it has no answer for it: after a timeout, or to a restarted
//! bridge, and always before it sends the next one (the application service API's `PUT
//! /_matrix/app/v1/transactions/{txnId}`). So a repeated ID is one of the last few, and Synapse numbers its
//! transactions upwards: an ID that is a number above every number seen is new. Only an ID that is neither needs a
//! read of `processed_transactions`, which keeps the whole record.

use std::collections::{HashSet, VecDeque};

/// IDs recorded lately, the latest last, at most [`SeenTransactions::CAPACITY`] of them.
#[derive(Debug, Default)]
pub(super) struct SeenTransactions {
    ids: HashSet<String>,
    order: VecDeque<String>,
    /// The highest ID that is a number, of those recorded since the store opened and those it was loaded with.
    highest_number: Option<u64>,
}

/// What the recent IDs say of an ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Recorded lately.
    Seen,
    /// A number above every number seen: new.
    New,
    /// Not known either way: ask the store.
    Unknown,
}

impl SeenTransactions {
    /// How many IDs are kept.
    pub(super) const CAPACITY: usize = 1024;

    /// Starts from IDs the store recorded, oldest first.
    pub(super) fn loaded(ids: impl IntoIterator<Item = String>) -> Self {
        let mut seen = Self::default();
        for id in ids {
            seen.record(&id);
        }
        seen
    }

    /// What is known of `id`.
    pub(super) fn verdict(&self, id: &str) -> Verdict {
        if self.ids.contains(id) {
            return Verdict::Seen;
        }
        match (number(id), self.highest_number) {
            (Some(number), Some(highest)) if number > highest => Verdict::New,
            _ => Verdict::Unknown,
        }
    }

    /// Notes that `id` was recorded, forgetting the oldest ID beyond the capacity.
    pub(super) fn record(&mut self, id: &str) {
        if let Some(number) = number(id) {
            self.highest_number = self.highest_number.max(Some(number));
        }
        if self.ids.insert(id.to_owned()) {
            self.order.push_back(id.to_owned());
        }
        while self.order.len() > Self::CAPACITY {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
    }
}

/// An ID that is a plain decimal number, as Synapse's are (before the digest the appservice adds, see
/// `appservice::txn_key`).
fn number(id: &str) -> Option<u64> {
    let id = crate::appservice::txn_id_of(id);
    if id.is_empty() || !id.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    id.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_are_seen_and_higher_numbers_are_new() {
        let mut seen = SeenTransactions::loaded(["7", "8"].map(str::to_owned));
        assert_eq!(seen.verdict("8"), Verdict::Seen);
        assert_eq!(seen.verdict("9"), Verdict::New);
        assert_eq!(seen.verdict("3"), Verdict::Unknown, "below the highest: perhaps recorded long ago");
        assert_eq!(seen.verdict("txn-9"), Verdict::Unknown, "not a number");
        assert_eq!(seen.verdict("+9"), Verdict::Unknown, "not a plain number");
        seen.record("9");
        assert_eq!(seen.verdict("9"), Verdict::Seen);
        assert_eq!(seen.verdict("10"), Verdict::New);
    }

    #[test]
    fn nothing_is_new_before_a_number_was_seen() {
        let seen = SeenTransactions::loaded(["abc".to_owned()]);
        assert_eq!(seen.verdict("1"), Verdict::Unknown);
        assert_eq!(SeenTransactions::default().verdict("1"), Verdict::Unknown);
    }

    #[test]
    fn the_oldest_ids_are_forgotten_beyond_the_capacity() {
        let mut seen = SeenTransactions::default();
        for n in 0..SeenTransactions::CAPACITY + 10 {
            seen.record(&format!("t{n}"));
        }
        assert_eq!(seen.verdict("t9"), Verdict::Unknown);
        assert_eq!(seen.verdict("t10"), Verdict::Seen);
        assert_eq!(seen.ids.len(), SeenTransactions::CAPACITY);
    }
}
