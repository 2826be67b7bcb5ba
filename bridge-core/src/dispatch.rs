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
            tokio::spawn(run_worker(Arc::clone(&self.inner), key.to_owned(), Arc::clone(&worker)));
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
    // Whether items after the cursor may be in the store only; a new worker knows nothing of what is there.
    let mut reading_store = true;
    // Items handled in this batch that wait for their confirmation, oldest first.
    let mut unconfirmed = VecDeque::new();
    loop {
        if *shutdown.borrow() {
            return;
        }
        // Each batch starts with every earlier item settled, so reads from the store never meet one still running.
        if !confirm(&inner, &mut unconfirmed, 0, &mut shutdown).await {
            return;
        }
        worker.dirty.store(false, Ordering::SeqCst);
        let (missed, dropped) = {
            let mut handed = worker.handed();
            (std::mem::take(&mut handed.missed), std::mem::take(&mut handed.dropped))
        };
        if dropped && let Err(error) = inner.queue.await_commits().await {
            // Items whose write failed were refused to their senders, who send them again; the read finds the rest.
            tracing::debug!(queue = label, %key, %error, "a write of handed-over items failed");
        }
        if missed == Missed::FromStart {
            // Removals of items before the cursor must land first, or reading from the start would redo them.
            if let Err(error) = inner.queue.settle().await {
                tracing::warn!(queue = label, %key, %error, "handled items are not yet marked done; retrying");
                worker.handed().miss(Missed::FromStart);
                if pause(&mut shutdown, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
            cursor = 0;
        }
        reading_store |= missed != Missed::Nothing;
        let batch = if reading_store {
            match inner.queue.peek_after(&key, cursor, BATCH).await {
                Ok(batch) if batch.is_empty() => {
                    // Everything committed so far is handled; what commits later is handed over, or notified.
                    reading_store = false;
                    continue;
                }
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(queue = label, %key, %error, "cannot read the queue; retrying");
                    if pause(&mut shutdown, Duration::from_secs(1)).await {
                        return;
                    }
                    continue;
                }
            }
        } else {
            // Taken only now: items handed while the store was read may not have been committed yet, so that read
            // could not see them.
            let handed = std::mem::take(&mut worker.handed().items);
            handed.into_iter().filter(|item| item.seq > cursor).collect()
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
            let keep = match unconfirmed.is_empty() || inner.handler.may_run_ahead(&item) {
                true => MAX_UNCONFIRMED - 1,
                false => 0,
            };
            if !confirm(&inner, &mut unconfirmed, keep, &mut shutdown).await {
                return;
            }
            let outcome = inner.handler.handle(&item).await;
            if !settle(&inner, &item, outcome, &mut shutdown, Some(&mut unconfirmed)).await {
                return;
            }
            cursor = item.seq;
        }
    }
}

/// Settles unconfirmed items, oldest first, until at most `keep` are left; items whose confirmation has arrived
/// are settled anyway. Returns false when shutdown interrupted it (what is unsettled stays queued).
async fn confirm<H: Handler>(
    inner: &Inner<H>,
    unconfirmed: &mut VecDeque<Unconfirmed>,
    keep: usize,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    while let Some(oldest) = unconfirmed.front() {
        if unconfirmed.len() <= keep && !oldest.confirmation.is_finished() {
            break;
        }
        let Some(Unconfirmed { item, confirmation }) = unconfirmed.pop_front() else { break };
        let outcome = confirmation.await.unwrap_or_else(|error| Outcome::Retry {
            after: None,
            reason: format!("the confirmation did not finish: {error}"),
        });
        if !settle(inner, &item, outcome, shutdown, None).await {
            return false;
        }
    }
    true
}

/// Takes an item from what handling it came to until it is done or given up, handling it again while that says
/// retry; an item waiting for its confirmation joins `unconfirmed` when given (else the confirmation is awaited).
/// Returns false when shutdown interrupted it (it stays queued).
async fn settle<H: Handler>(
    inner: &Inner<H>,
    item: &QueuedItem,
    mut outcome: Outcome,
    shutdown: &mut watch::Receiver<bool>,
    mut unconfirmed: Option<&mut VecDeque<Unconfirmed>>,
) -> bool {
    let label = inner.queue.kind().label();
    let mut attempts = item.attempts;
    let result = loop {
        match outcome {
            Outcome::Done => break "handled",
            Outcome::Confirming(confirmation) => {
                if let Some(unconfirmed) = &mut unconfirmed {
                    unconfirmed.push_back(Unconfirmed { item: item.clone(), confirmation: tokio::spawn(confirmation) });
                    return true;
                }
                outcome = confirmation.await;
                continue;
            }
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
                outcome = inner.handler.handle(item).await;
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
    use crate::store::{Cipher, QueueKind, Store, TransactionOutcome};

    /// Notes each payload it handles.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<String>>>);

    impl Handler for Recorder {
        async fn handle(&self, item: &QueuedItem) -> Outcome {
            self.0.lock().unwrap().push(item.payload.clone());
            Outcome::Done
        }
    }

    impl Recorder {
        async fn wait_for(&self, count: usize) -> Vec<String> {
            for _ in 0..500 {
                if self.0.lock().unwrap().len() >= count {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // A little longer, so anything handled twice shows.
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.0.lock().unwrap().clone()
        }
    }

    struct Rig {
        store: Store,
        dispatcher: Dispatcher<Recorder>,
        recorder: Recorder,
        _dir: tempfile::TempDir,
        _shutdown: watch::Sender<bool>,
    }

    impl Rig {
        async fn start() -> Self {
            Self::start_on(QueueKind::Matrix).await
        }

        async fn start_on(kind: QueueKind) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("queue.db").display());
            let store = Store::connect(&url, 2, Cipher::random()).await.unwrap();
            let (shutdown_sender, shutdown) = watch::channel(false);
            let recorder = Recorder::default();
            let queue = store.queue(kind);
            let dispatcher = Dispatcher::new(queue, recorder.clone(), Metrics::new(), shutdown);
            Self { store, dispatcher, recorder, _dir: dir, _shutdown: shutdown_sender }
        }

        /// A rig whose worker for `!r` has handled item "0" and takes what is handed over from memory now.
        async fn handling_from_memory() -> Self {
            let rig = Self::start().await;
            let first = rig.persist("first", texts(0..1)).await;
            rig.dispatcher.hand_over("!r", first);
            rig.recorder.wait_for(1).await;
            rig
        }

        /// Persists a transaction of `payloads` in room `!r` and returns its items, not yet handed over.
        async fn persist(&self, txn_id: &str, payloads: impl IntoIterator<Item = String>) -> Vec<QueuedItem> {
            let events: Vec<(String, String)> = payloads.into_iter().map(|p| ("!r".to_owned(), p)).collect();
            let mut handed = Vec::new();
            let outcome = self.store.persist_transaction(txn_id, &events, |items| handed = items).await.unwrap();
            assert_eq!(outcome, TransactionOutcome::Persisted { queued: events.len() }, "{txn_id} is new");
            handed
        }
    }

    fn texts(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|n| n.to_string()).collect()
    }

    #[tokio::test]
    async fn handed_items_arrive_in_order_across_transactions() {
        let rig = Rig::start().await;
        for (txn, range) in [("a", 0..3), ("b", 3..7), ("c", 7..8)] {
            let items = rig.persist(txn, texts(range)).await;
            rig.dispatcher.hand_over("!r", items);
        }
        assert_eq!(rig.recorder.wait_for(8).await, texts(0..8));
    }

    #[tokio::test]
    async fn items_handed_out_of_order_are_each_handled_once() {
        let rig = Rig::handling_from_memory().await;
        // Two transactions committed, then handed over newest first: the worker has taken the newer ones from memory
        // before it learns of the older ones, which only the store then has.
        let older = rig.persist("older", texts(1..3)).await;
        let newer = rig.persist("newer", texts(3..5)).await;
        rig.dispatcher.hand_over("!r", newer);
        rig.recorder.wait_for(3).await;
        rig.dispatcher.hand_over("!r", older);
        let mut seen = rig.recorder.wait_for(5).await;
        seen.sort();
        assert_eq!(seen, texts(0..5));
        rig.store.settle().await.unwrap();
        assert_eq!(rig.store.queue(QueueKind::Matrix).depth().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn concurrent_pushes_are_handed_over_each_once_in_each_pushers_order() {
        let rig = Rig::start_on(QueueKind::Remote).await;
        let pushers: Vec<_> = (0..4)
            .map(|pusher| {
                let dispatcher = rig.dispatcher.clone();
                tokio::spawn(async move {
                    for n in 0..25 {
                        let worker = dispatcher.clone();
                        let take = move |item: QueuedItem| worker.hand_over(&item.key.clone(), [item]);
                        dispatcher.queue().push_handing_over("!r", &format!("{pusher}:{n:02}"), take).await.unwrap();
                    }
                })
            })
            .collect();
        for pusher in pushers {
            pusher.await.unwrap();
        }
        let seen = rig.recorder.wait_for(100).await;
        assert_eq!(seen.len(), 100, "each item once: {seen:?}");
        for pusher in 0..4 {
            let own: Vec<&String> = seen.iter().filter(|item| item.starts_with(&format!("{pusher}:"))).collect();
            let expected: Vec<String> = (0..25).map(|n| format!("{pusher}:{n:02}")).collect();
            assert_eq!(own, expected.iter().collect::<Vec<_>>(), "pusher {pusher}'s order");
        }
        rig.store.settle().await.unwrap();
        assert_eq!(rig.store.queue(QueueKind::Remote).depth().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn more_than_a_buffer_of_items_is_read_from_the_store_in_order() {
        let rig = Rig::handling_from_memory().await;
        let total = MAX_HANDED + 500;
        let items = rig.persist("big", texts(1..total)).await;
        rig.dispatcher.hand_over("!r", items);
        assert_eq!(rig.recorder.wait_for(total).await, texts(0..total));
    }

    /// Hands items to "the network" and lets the test confirm each (payloads starting with `a` may run ahead).
    #[derive(Clone, Default)]
    struct Confirmer {
        log: Arc<Mutex<Vec<String>>>,
        pending: Arc<Mutex<std::collections::HashMap<String, tokio::sync::oneshot::Sender<Outcome>>>>,
    }

    impl Handler for Confirmer {
        async fn handle(&self, item: &QueuedItem) -> Outcome {
            self.log.lock().unwrap().push(format!("sent {}", item.payload));
            let (confirm, confirmed) = tokio::sync::oneshot::channel();
            self.pending.lock().unwrap().insert(item.payload.clone(), confirm);
            Outcome::Confirming(Box::pin(async move { confirmed.await.unwrap_or(Outcome::Done) }))
        }

        fn may_run_ahead(&self, item: &QueuedItem) -> bool {
            item.payload.starts_with('a')
        }
    }

    impl Confirmer {
        /// Waits until `payload` is waiting for its confirmation, then settles it with `outcome`.
        async fn confirm(&self, payload: &str, outcome: Outcome) {
            for _ in 0..500 {
                if let Some(confirm) = self.pending.lock().unwrap().remove(payload) {
                    let _ = confirm.send(outcome);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            panic!("{payload} was never sent; log: {:?}", self.log.lock().unwrap());
        }

        fn log(&self) -> Vec<String> {
            self.log.lock().unwrap().clone()
        }
    }

    async fn confirming_rig(payloads: &[&str]) -> (Confirmer, Store, tempfile::TempDir, watch::Sender<bool>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}", dir.path().join("q.db").display()), 2, Cipher::random())
            .await
            .unwrap();
        let (shutdown_sender, shutdown) = watch::channel(false);
        let confirmer = Confirmer::default();
        let dispatcher = Dispatcher::new(store.queue(QueueKind::Matrix), confirmer.clone(), Metrics::new(), shutdown);
        let events: Vec<(String, String)> = payloads.iter().map(|p| ("!r".to_owned(), (*p).to_owned())).collect();
        store.persist_transaction("t", &events, |items| dispatcher.hand_over("!r", items)).await.unwrap();
        (confirmer, store, dir, shutdown_sender)
    }

    async fn wait_until_empty(store: &Store) {
        for _ in 0..500 {
            store.settle().await.unwrap();
            if store.queue(QueueKind::Matrix).depth().await.unwrap() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("items left in the queue");
    }

    #[tokio::test]
    async fn plain_items_run_ahead_of_confirmations_and_the_rest_wait_for_them() {
        let (confirmer, store, _dir, _shutdown) = confirming_rig(&["a1", "a2", "x3", "a4"]).await;
        // a2 is sent before a1 is confirmed; x3 may not run ahead, so it waits for both.
        confirmer.confirm("a2", Outcome::Done).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(confirmer.log(), ["sent a1", "sent a2"]);
        assert_eq!(store.queue(QueueKind::Matrix).depth().await.unwrap(), 4, "nothing settles before a1");
        confirmer.confirm("a1", Outcome::Done).await;
        confirmer.confirm("x3", Outcome::Done).await;
        confirmer.confirm("a4", Outcome::Done).await;
        assert_eq!(confirmer.log(), ["sent a1", "sent a2", "sent x3", "sent a4"]);
        wait_until_empty(&store).await;
    }

    #[tokio::test]
    async fn an_item_whose_confirmation_fails_is_sent_again_and_stays_queued_until_confirmed() {
        let (confirmer, store, _dir, _shutdown) = confirming_rig(&["a1", "a2"]).await;
        confirmer.confirm("a2", Outcome::Done).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        store.settle().await.unwrap();
        assert_eq!(store.queue(QueueKind::Matrix).depth().await.unwrap(), 2, "settled oldest first");
        let retry = Outcome::Retry { after: Some(Duration::from_millis(10)), reason: "no reflection".into() };
        confirmer.confirm("a1", retry).await;
        confirmer.confirm("a1", Outcome::Done).await;
        assert_eq!(confirmer.log(), ["sent a1", "sent a2", "sent a1"]);
        wait_until_empty(&store).await;
    }

    #[test]
    fn retry_delay_is_capped_even_after_many_attempts() {
        for attempts in [0, 1, 5, 20, 1_000, i64::MAX] {
            assert!(retry_delay(attempts) <= MAX_RETRY_DELAY, "attempts {attempts}");
        }
    }
}
