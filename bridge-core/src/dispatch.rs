//! Ordered per-key dispatch over a durable [`Queue`]: one worker task per key (a room or a portal) handles that
//! key's items strictly in order; different keys run concurrently.
//!
//! Workers are started on demand by [`Dispatcher::notify`] and end after a quiet spell. At most one worker runs per
//! key: a worker only leaves the map when no notification arrived since its last look at the queue, and that check
//! and the notifier's mark happen under the same map shard lock.
//!
//! A worker does not wait for each handled item's removal to be committed: it hands the removal to the store's
//! group commit and reads on after the item's sequence number, so a room's events cost one store read per batch
//! rather than a write round trip each. Before it ends, a worker waits for its removals to land, so the next worker
//! for the key (which reads from the start) never sees them again.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use dashmap::DashMap;
use tokio::sync::{Notify, watch};

use crate::{
    matrix::RetryPolicy,
    metrics::Metrics,
    store::{Queue, QueuedItem},
};

/// Items read from the store per round trip.
const BATCH: i64 = 64;
/// How long an idle worker waits for more before it ends.
const IDLE: Duration = Duration::from_secs(30);
/// The longest pause between two attempts at a failing item.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// What handling one item came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Handled; the item leaves the queue.
    Done,
    /// Not now; try the same item again (everything after it waits, so order holds).
    Retry {
        /// When, if the failure said.
        after: Option<Duration>,
        /// Why, for logs.
        reason: String,
    },
    /// Never; the item is dead-lettered and the queue moves on.
    GiveUp {
        /// Why, kept with the dead letter.
        reason: String,
    },
}

/// Handles the items of one queue.
pub(crate) trait Handler: Send + Sync + 'static {
    /// Handles one item. Called for one key at a time, in queue order.
    fn handle(&self, item: &QueuedItem) -> impl Future<Output = Outcome> + Send;
}

struct Worker {
    notify: Notify,
    dirty: AtomicBool,
}

struct Inner<H> {
    queue: Queue,
    handler: H,
    workers: DashMap<String, Arc<Worker>>,
    metrics: Metrics,
    shutdown: watch::Receiver<bool>,
}

/// Runs per-key workers over one queue.
pub(crate) struct Dispatcher<H> {
    inner: Arc<Inner<H>>,
}

impl<H> Clone for Dispatcher<H> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

/// The pause before the next attempt at an item that failed `attempts` times: full-jitter exponential backoff from
/// the same policy the Matrix client uses, with a longer cap because a queue may wait out a long network outage.
pub(crate) fn retry_delay(attempts: i64) -> Duration {
    let policy = RetryPolicy { cap: MAX_RETRY_DELAY, ..RetryPolicy::default() };
    policy.backoff(u32::try_from(attempts.max(1)).unwrap_or(u32::MAX), rand::random())
}

impl<H: Handler> Dispatcher<H> {
    /// A dispatcher over `queue`; workers stop when `shutdown` turns true.
    pub(crate) fn new(queue: Queue, handler: H, metrics: Metrics, shutdown: watch::Receiver<bool>) -> Self {
        Self { inner: Arc::new(Inner { queue, handler, workers: DashMap::new(), metrics, shutdown }) }
    }

    /// The queue this dispatcher drains.
    pub(crate) fn queue(&self) -> &Queue {
        &self.inner.queue
    }

    /// Tells the worker for `key` that items are waiting, starting one if none runs.
    pub(crate) fn notify(&self, key: &str) {
        let worker = self.inner.workers.entry(key.to_owned()).or_insert_with(|| {
            let worker = Arc::new(Worker { notify: Notify::new(), dirty: AtomicBool::new(true) });
            tokio::spawn(run_worker(Arc::clone(&self.inner), key.to_owned(), Arc::clone(&worker)));
            worker
        });
        // Marked while the shard lock is held, so a worker deciding to end sees it (see the module docs).
        worker.dirty.store(true, Ordering::SeqCst);
        worker.notify.notify_one();
    }

    /// Starts workers for every key with items left from before a restart.
    pub(crate) async fn resume(&self) -> crate::store::Result<usize> {
        let keys = self.inner.queue.pending_keys().await?;
        for key in &keys {
            self.notify(key);
        }
        let depth = self.inner.queue.depth().await?;
        self.inner.metrics.queue_depth.with_label_values(&[self.inner.queue.kind().label()]).set(depth);
        Ok(keys.len())
    }

    /// How many keys have a worker running now.
    pub(crate) fn active_workers(&self) -> usize {
        self.inner.workers.len()
    }
}

/// Sleeps for `delay`, or less if shutdown starts; returns whether shutdown started.
async fn pause(shutdown: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => *shutdown.borrow(),
        _ = shutdown.changed() => true,
    }
}

async fn run_worker<H: Handler>(inner: Arc<Inner<H>>, key: String, worker: Arc<Worker>) {
    let mut shutdown = inner.shutdown.clone();
    let label = inner.queue.kind().label();
    // The last item this worker settled; later reads start after it.
    let mut cursor = 0;
    loop {
        if *shutdown.borrow() {
            return;
        }
        worker.dirty.store(false, Ordering::SeqCst);
        let batch = match inner.queue.peek_after(&key, cursor, BATCH).await {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(queue = label, %key, %error, "cannot read the queue; retrying");
                if pause(&mut shutdown, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
        };
        if batch.is_empty() {
            tokio::select! {
                _ = worker.notify.notified() => continue,
                _ = tokio::time::sleep(IDLE) => {}
                _ = shutdown.changed() => return,
            }
            if let Err(error) = inner.queue.settle().await {
                tracing::warn!(queue = label, %key, %error, "handled items are not yet marked done; staying on");
                continue;
            }
            let ended = inner
                .workers
                .remove_if(&key, |_, current| Arc::ptr_eq(current, &worker) && !current.dirty.load(Ordering::SeqCst));
            if ended.is_some() {
                return;
            }
            continue;
        }
        for item in batch {
            if !handle_until_settled(&inner, &item, &mut shutdown).await {
                return;
            }
            cursor = item.seq;
        }
    }
}

/// Handles one item until it is done or given up; returns false when shutdown interrupted it (it stays queued).
async fn handle_until_settled<H: Handler>(
    inner: &Inner<H>,
    item: &QueuedItem,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let label = inner.queue.kind().label();
    let mut attempts = item.attempts;
    let result = loop {
        match inner.handler.handle(item).await {
            Outcome::Done => break "handled",
            Outcome::GiveUp { reason } => {
                tracing::warn!(queue = label, key = %item.key, seq = item.seq, %reason, "giving up on a queued item");
                while let Err(error) = inner.queue.dead_letter(item, &reason).await {
                    tracing::warn!(queue = label, seq = item.seq, %error, "cannot dead-letter a queued item");
                    if pause(shutdown, Duration::from_secs(1)).await {
                        return false;
                    }
                }
                break "dead_lettered";
            }
            Outcome::Retry { after, reason } => {
                attempts = inner.queue.record_failure(item.seq).await.unwrap_or(attempts + 1);
                let delay = after.unwrap_or_else(|| retry_delay(attempts));
                tracing::info!(queue = label, key = %item.key, seq = item.seq, attempts, ?delay, %reason,
                    "will retry a queued item");
                inner.metrics.events.with_label_values(&[label, "retried"]).inc();
                if pause(shutdown, delay).await {
                    return false;
                }
            }
        }
    };
    if result == "handled" {
        // The group commit retries the removal until it lands; the handler's work is done and must not run twice.
        inner.queue.complete(item.seq);
    }
    inner.metrics.events.with_label_values(&[label, result]).inc();
    inner.metrics.queue_depth.with_label_values(&[label]).dec();
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_is_capped_even_after_many_attempts() {
        for attempts in [0, 1, 5, 20, 1_000, i64::MAX] {
            assert!(retry_delay(attempts) <= MAX_RETRY_DELAY, "attempts {attempts}");
        }
    }
}
