//! When each message body was first seen at one place of measurement (a stub appservice, a `/sync` loop, a tap),
//! and a wait for a body to get there.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::bail;
use tokio::sync::Notify;

/// First arrival times by message body. Cheap to clone: clones share the record.
#[derive(Clone, Default)]
pub(crate) struct Arrivals(Arc<Inner>);

#[derive(Default)]
struct Inner {
    seen: Mutex<HashMap<String, Instant>>,
    changed: Notify,
}

impl Arrivals {
    /// Notes `bodies` as arrived at `at`, each unless it arrived before, and wakes the waiters.
    pub(crate) fn note<'a>(&self, bodies: impl IntoIterator<Item = &'a str>, at: Instant) {
        {
            let mut seen = self.0.seen.lock().unwrap_or_else(|p| p.into_inner());
            for body in bodies {
                seen.entry(body.to_owned()).or_insert(at);
            }
        }
        self.0.changed.notify_waiters();
    }

    /// When `body` arrived, if it did.
    pub(crate) fn get(&self, body: &str) -> Option<Instant> {
        self.0.seen.lock().unwrap_or_else(|p| p.into_inner()).get(body).copied()
    }

    /// When `body` arrived at `place`, waiting up to `timeout`; fails early once `ended` says nothing more will
    /// arrive.
    pub(crate) async fn wait(
        &self,
        body: &str,
        timeout: Duration,
        place: &str,
        ended: impl Fn() -> bool,
    ) -> anyhow::Result<Instant> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.0.changed.notified();
            if let Some(at) = self.get(body) {
                return Ok(at);
            }
            if ended() {
                bail!("{place} stopped before {body:?} arrived");
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                bail!("{body:?} did not reach {place} within {timeout:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_arrival_counts_and_a_wait_ends_when_it_comes() {
        let arrivals = Arrivals::default();
        let (first, later) = (Instant::now(), Instant::now() + Duration::from_secs(1));
        let noting = arrivals.clone();
        tokio::spawn(async move {
            noting.note(["a"], first);
            noting.note(["a", "b"], later);
        });
        let wait = Duration::from_secs(5);
        assert_eq!(arrivals.wait("b", wait, "the test", || false).await.unwrap(), later);
        assert_eq!(arrivals.get("a"), Some(first));
        assert!(arrivals.wait("c", wait, "the test", || true).await.is_err(), "an ended source fails at once");
    }
}
