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
//!
//! Items are also handed to a worker in memory as the store numbers them ([`Dispatcher::hand_over`]), so a
//! homeserver transaction's events and a connector's pushes reach their workers while the store writes them and
//! flushes them to disk, without being read back. The store stays the truth: a worker takes handed items only after
//! a read of the store found nothing more after its cursor, and goes back to the store whenever the hand-over may
//! have missed something — a plain [`Dispatcher::notify`], a full buffer, or items handed out of sequence order
//! (then it settles its removals and reads from the start, so nothing is skipped). A worker that dropped handed
//! items first waits for the writes under way, whose items a read would otherwise not see yet.

use std::{
    collections::VecDeque,
    future::Future,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use dashmap::DashMap;
use tokio::sync::{Notify, watch};

mod worker;

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
/// Items a worker keeps handed over in memory; beyond that it reads them from the store instead.
const MAX_HANDED: usize = 4096;

/// Unconfirmed items a worker lets run ahead per key (see [`Outcome::Confirming`]). A confirmation comes only once
/// the network has read everything before it (a busy IRC puppet reads the whole channel first) and one durable
/// commit followed, so a busy room needs many in flight (P2, one room of 20 puppets without flood control: 3,269–
/// 3,689 lines/s with 256, 12,163 with 4,096). Flood control bounds them well below this: a puppet's send queue
/// holds 64 lines and the worker waits for room in it.
const MAX_UNCONFIRMED: usize = 4096;

/// What handling one item came to.
pub(crate) enum Outcome {
    /// Handled; the item leaves the queue.
    Done,
    /// Handed to the network, which has yet to confirm it (an XMPP MUC reflecting a message): the future says what
    /// the item came to. Meanwhile the key's next items that [`Handler::may_run_ahead`] are handled too; any other
    /// item waits until everything before it is confirmed. The item stays queued until then, so a crash hands it
    /// over again; if its confirmation fails and is retried, it goes out again after items that ran ahead of it.
    Confirming(Confirmation),
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

/// What an item handed to the network came to, once the network confirmed it or failed to.
pub(crate) type Confirmation = std::pin::Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// Handles the items of one queue.
pub(crate) trait Handler: Send + Sync + 'static {
    /// Handles one item. Called for one key at a time, in queue order.
    fn handle(&self, item: &QueuedItem) -> impl Future<Output = Outcome> + Send;

    /// Whether `item` may be handled while items before it wait for their confirmation: it must not depend on
    /// what their confirmation records (their remote IDs, say).
    fn may_run_ahead(&self, item: &QueuedItem) -> bool {
        let _ = item;
        false
    }
}

/// An item handed to the network, waiting for its confirmation.
struct Unconfirmed {
    item: QueuedItem,
    confirmation: tokio::task::JoinHandle<Outcome>,
}

struct Worker {
    notify: Notify,
    dirty: AtomicBool,
    handed: Mutex<Handed>,
}

impl Worker {
    fn handed(&self) -> std::sync::MutexGuard<'_, Handed> {
        // The buffer stays consistent between statements, so a panic elsewhere leaves nothing half-done in it.
        self.handed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Items handed to a worker in memory, and whether the store holds items they lack.
#[derive(Default)]
struct Handed {
    items: VecDeque<QueuedItem>,
    /// The highest sequence number handed over so far.
    last_seq: i64,
    missed: Missed,
    /// Handed items were dropped, perhaps before they were written.
    dropped: bool,
}

/// What the worker must read from the store before it can trust the handed items again.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Missed {
    /// Nothing: every item after the cursor is (or will be) handed over.
    #[default]
    Nothing,
    /// Items after the cursor.
    AfterCursor,
    /// Items before the cursor too: something was handed out of order.
    FromStart,
}

impl Handed {
    fn miss(&mut self, missed: Missed) {
        self.dropped |= !self.items.is_empty();
        self.items.clear();
        self.missed = self.missed.max(missed);
    }
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

    /// Tells the worker for `key` that items are waiting in the store, starting one if none runs.
    pub(crate) fn notify(&self, key: &str) {
        self.wake(key, |handed| handed.miss(Missed::AfterCursor));
    }

    /// Hands the worker for `key` items the store just numbered under that key (written, or about to be written by
    /// its group commit), in sequence order, starting a worker if none runs. Call it in numbering order:
    /// items handed out of order send the worker back to the store.
    pub(crate) fn hand_over(&self, key: &str, items: impl IntoIterator<Item = QueuedItem>) {
        self.wake(key, |handed| {
            for item in items {
                if item.seq <= handed.last_seq {
                    handed.miss(Missed::FromStart);
                }
                handed.last_seq = handed.last_seq.max(item.seq);
                match handed.missed {
                    Missed::Nothing => handed.items.push_back(item),
                    _ => handed.dropped = true,
                }
            }
            if handed.items.len() > MAX_HANDED {
                handed.miss(Missed::AfterCursor);
            }
        });
    }

    fn wake(&self, key: &str, update: impl FnOnce(&mut Handed)) {
        let worker = self.inner.workers.entry(key.to_owned()).or_insert_with(|| {
            let worker = Arc::new(Worker {
                notify: Notify::new(),
                dirty: AtomicBool::new(true),
                handed: Mutex::new(Handed::default()),
            });
            tokio::spawn(worker::run_worker(Arc::clone(&self.inner), key.to_owned(), Arc::clone(&worker)));
            worker
        });
        update(&mut worker.handed());
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

#[cfg(test)]
mod tests;
