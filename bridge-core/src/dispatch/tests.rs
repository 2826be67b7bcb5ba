//! Unit tests of the ordered per-key dispatch over real stores.

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
    let store =
        Store::connect(&format!("sqlite://{}", dir.path().join("q.db").display()), 2, Cipher::random()).await.unwrap();
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
