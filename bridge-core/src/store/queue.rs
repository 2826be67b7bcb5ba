//! Durable, ordered per-key queues, and the record of processed homeserver transactions.
//!
//! Two queues exist: [`QueueKind::Matrix`] holds events the homeserver pushed (`PUT /_matrix/app/v1/transactions`),
//! keyed by room ID; [`QueueKind::Remote`] holds events a connector pushed from its network, keyed by portal. An item
//! leaves its queue only when it has been handled ([`Queue::complete`]) or given up on ([`Queue::dead_letter`]), so
//! a crash at any point replays the unfinished tail in order.

use std::sync::atomic::Ordering;

use sqlx::{AssertSqlSafe, Connection, Row};

use super::{
    Backend, Result, Store,
    group::Operation,
    now_ms,
    seen_transactions::{SeenTransactions, Verdict},
};

/// Which of the two queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueKind {
    /// Events from the homeserver, keyed by room ID, on their way to a connector.
    Matrix,
    /// Events from a remote network, keyed by portal, on their way to the homeserver.
    Remote,
}

impl QueueKind {
    /// `template` with `{table}` replaced by this queue's table. The table name comes from this closed enum, never
    /// from input, which is what makes the dynamic SQL safe.
    pub(super) fn sql(self, template: &str) -> AssertSqlSafe<String> {
        AssertSqlSafe(template.replace("{table}", self.table()))
    }

    /// This queue's place in per-queue arrays.
    pub(super) fn index(self) -> usize {
        match self {
            Self::Matrix => 0,
            Self::Remote => 1,
        }
    }

    fn table(self) -> &'static str {
        match self {
            Self::Matrix => "matrix_queue",
            Self::Remote => "remote_queue",
        }
    }

    /// A short label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Matrix => "matrix",
            Self::Remote => "remote",
        }
    }
}

/// One queued item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedItem {
    /// Position in the queue; increases with every push.
    pub seq: i64,
    /// The ordering key: a room ID or a portal key.
    pub key: String,
    /// The item itself, as JSON text.
    pub payload: String,
    /// How many times handling it has failed so far.
    pub attempts: i64,
    /// When it was queued, in milliseconds since the Unix epoch.
    pub enqueued_at: i64,
}

impl QueuedItem {
    /// An item just written under `seq`, not yet tried, as the store holds it.
    pub(super) fn written(seq: i64, key: &str, payload: &str, enqueued_at: i64) -> Self {
        Self { seq, key: key.to_owned(), payload: payload.to_owned(), attempts: 0, enqueued_at }
    }
}

/// What persisting a homeserver transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransactionOutcome {
    /// The transaction is new; its events were queued (and handed over).
    Persisted {
        /// How many events were queued.
        queued: usize,
    },
    /// The transaction ID was seen before; nothing was queued again.
    AlreadyProcessed,
}

/// A handle on one of the store's queues.
#[derive(Debug, Clone)]
pub struct Queue {
    store: Store,
    kind: QueueKind,
}

/// A multi-row INSERT template for [`QueueKind::sql`], binding each row's number, key, payload and time.
pub(super) fn insert_statement(backend: Backend, rows: usize) -> String {
    let mut sql = String::from("INSERT INTO {table} (seq, queue_key, payload, enqueued_at) VALUES ");
    for row in 0..rows {
        let first = row * 4 + 1;
        if row > 0 {
            sql.push(',');
        }
        let [seq, key, payload, at] = [first, first + 1, first + 2, first + 3].map(|n| backend.parameter(n));
        sql.push_str(&format!("({seq}, {key}, {payload}, {at})"));
    }
    sql
}

impl Store {
    /// A handle on one of the queues.
    pub fn queue(&self, kind: QueueKind) -> Queue {
        Queue { store: self.clone(), kind }
    }

    /// Records a homeserver transaction and queues its events (key, JSON) in one database transaction.
    ///
    /// `hand_over` receives the queued items, in order, as soon as they are numbered, *before* they are written, so
    /// their delivery waits neither for the disk nor for a commit under way; call it in no other way than handing
    /// them to their workers. When this returns `Persisted`, the events are durable and the transaction may be
    /// acknowledged. When it fails, the transaction is not acknowledged and the homeserver sends it again, so its
    /// events may be delivered twice but are never lost: the delivery guarantee is at least once, as for a crash
    /// between handling and removal. A transaction ID seen before returns `AlreadyProcessed`, queues nothing and
    /// hands nothing over, across restarts too.
    pub async fn persist_transaction(
        &self,
        txn_id: &str,
        events: &[(String, String)],
        hand_over: impl FnOnce(Vec<QueuedItem>),
    ) -> Result<TransactionOutcome> {
        // One transaction at a time, so an ID found new here is still new when its write commits (a homeserver
        // sends the next transaction only after this one's answer, or the same one again after a timeout).
        let mut seen = self.intake.lock().await;
        let new = match seen.verdict(txn_id) {
            Verdict::Seen => false,
            Verdict::New => true,
            Verdict::Unknown => sqlx::query_scalar::<_, i64>("SELECT 1 FROM processed_transactions WHERE txn_id = $1")
                .bind(txn_id)
                .fetch_optional(self.pool())
                .await?
                .is_none(),
        };
        if !new {
            return Ok(TransactionOutcome::AlreadyProcessed);
        }
        self.grouped_with(|| {
            let first = self.number(QueueKind::Matrix, events.len());
            let now = now_ms();
            let items: Vec<QueuedItem> = (first..)
                .zip(events)
                .map(|(seq, (key, payload))| QueuedItem::written(seq, key, payload, now))
                .collect();
            hand_over(items.clone());
            Operation::Transaction { txn_id: txn_id.to_owned(), items }
        })
        .await?;
        seen.record(txn_id);
        Ok(TransactionOutcome::Persisted { queued: events.len() })
    }

    /// Loads the transaction IDs recorded last, so the next ones are mostly checked without a read.
    pub(super) async fn load_seen_transactions(&self) -> Result<()> {
        let mut latest: Vec<String> =
            sqlx::query_scalar("SELECT txn_id FROM processed_transactions ORDER BY received_at DESC LIMIT $1")
                .bind(i64::try_from(SeenTransactions::CAPACITY).unwrap_or(i64::MAX))
                .fetch_all(self.pool())
                .await?;
        latest.reverse();
        *self.intake.lock().await = SeenTransactions::loaded(latest);
        Ok(())
    }

    /// Gives out `count` sequence numbers of a queue; returns the first. Called under the group's lock, so numbers
    /// follow the order of the commits that write them (see [`group`](super::group)).
    fn number(&self, kind: QueueKind, count: usize) -> i64 {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        self.last_seqs[kind.index()].fetch_add(count, Ordering::SeqCst) + 1
    }

    /// Starts numbering each queue above every number it holds or held: SQLite's counter of an AUTOINCREMENT
    /// table remembers numbers of removed rows as well, and a number is never given out twice.
    pub(super) async fn load_last_seqs(&self) -> Result<()> {
        for kind in [QueueKind::Matrix, QueueKind::Remote] {
            let mut last: i64 = sqlx::query_scalar(kind.sql("SELECT COALESCE(MAX(seq), 0) FROM {table}"))
                .fetch_one(self.pool())
                .await?;
            if self.backend == Backend::Sqlite {
                let counter: Option<i64> = sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = $1")
                    .bind(kind.table())
                    .fetch_optional(self.pool())
                    .await?;
                last = last.max(counter.unwrap_or(0));
            }
            self.last_seqs[kind.index()].store(last, Ordering::SeqCst);
        }
        Ok(())
    }
}

impl Queue {
    /// Which queue this is.
    pub fn kind(&self) -> QueueKind {
        self.kind
    }

    /// Appends an item under `key`; returns its sequence number. Durable (flushed to disk) when this returns.
    ///
    /// Concurrent pushes are committed together (see [`group`](super::group)), so N connectors pushing at once pay
    /// for one flush, not N. Pushes from one task keep their order.
    pub async fn push(&self, key: &str, payload: &str) -> Result<i64> {
        self.push_handing_over(key, payload, drop).await
    }

    /// Appends an item as [`Queue::push`] does, and gives it to `take` as soon as it is numbered, before it is
    /// written, so its handling overlaps the write. If the write then fails, this returns the error and the item
    /// may already have been handled: at least once, never lost while the pusher hears of it.
    pub async fn push_handing_over(&self, key: &str, payload: &str, take: impl FnOnce(QueuedItem)) -> Result<i64> {
        let mut seq = 0;
        self.store
            .grouped_with(|| {
                seq = self.store.number(self.kind, 1);
                let item = QueuedItem::written(seq, key, payload, now_ms());
                take(item.clone());
                Operation::Push { kind: self.kind, item }
            })
            .await?;
        Ok(seq)
    }

    /// The oldest `limit` items under `key` after sequence number `after` (0: from the start), in order.
    pub async fn peek_after(&self, key: &str, after: i64, limit: i64) -> Result<Vec<QueuedItem>> {
        let sql = self.kind.sql(
            "SELECT seq, queue_key, payload, attempts, enqueued_at FROM {table} WHERE queue_key = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3",
        );
        let rows = sqlx::query(sql).bind(key).bind(after).bind(limit).fetch_all(self.store.pool()).await?;
        rows.iter()
            .map(|row| {
                Ok(QueuedItem {
                    seq: row.try_get(0)?,
                    key: row.try_get(1)?,
                    payload: row.try_get(2)?,
                    attempts: row.try_get(3)?,
                    enqueued_at: row.try_get(4)?,
                })
            })
            .collect()
    }

    /// Removes a handled item, committed with the next group (see [`group`](super::group)). Until then the item
    /// is still in the table: a worker reads on after it ([`Queue::peek_after`]), and a crash before the commit
    /// hands it over again, as a crash between handling and removal always could.
    pub fn complete(&self, seq: i64) {
        self.store.defer(Operation::Complete { kind: self.kind, seq });
    }

    /// Waits until the items handed over so far are committed, or their writes failed (and their senders heard
    /// so), so a read after this sees every item handed over before it that is in the store at all.
    pub async fn await_commits(&self) -> Result<()> {
        self.store.grouped(Operation::Barrier).await
    }

    /// Waits until the removals made so far are committed.
    pub async fn settle(&self) -> Result<()> {
        self.store.settle().await
    }

    /// Counts one more failed attempt at an item; returns the new count.
    pub async fn record_failure(&self, seq: i64) -> Result<i64> {
        // The item may have been handed over before its row was written.
        self.await_commits().await?;
        let _turn = self.store.write_turn().await;
        let sql = self.kind.sql("UPDATE {table} SET attempts = attempts + 1 WHERE seq = $1 RETURNING attempts");
        Ok(sqlx::query_scalar(sql).bind(seq).fetch_one(self.store.pool()).await?)
    }

    /// Moves an item that can never succeed to the dead-letter table, keeping it for inspection.
    pub async fn dead_letter(&self, item: &QueuedItem, error: &str) -> Result<()> {
        // Its row must be written before it is moved, or the move would miss it and the write bring it back.
        self.await_commits().await?;
        let _turn = self.store.write_turn().await;
        let mut connection = self.store.pool().acquire().await?;
        let mut transaction = connection.begin().await?;
        sqlx::query(
            "INSERT INTO dead_letters (queue, queue_key, payload, error, failed_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(self.kind.label())
        .bind(item.key.as_str())
        .bind(item.payload.as_str())
        .bind(error)
        .bind(now_ms())
        .execute(&mut *transaction)
        .await?;
        sqlx::query(self.kind.sql("DELETE FROM {table} WHERE seq = $1"))
            .bind(item.seq)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Every key that has items waiting, so a restart can resume them.
    pub async fn pending_keys(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(self.kind.sql("SELECT DISTINCT queue_key FROM {table}"))
            .fetch_all(self.store.pool())
            .await?)
    }

    /// The highest sequence number of an item waiting now, or 0: at start, items up to it are left from an earlier
    /// run and may have been handled (but not yet removed) before it stopped.
    pub async fn last_seq(&self) -> Result<i64> {
        let last: Option<i64> =
            sqlx::query_scalar(self.kind.sql("SELECT MAX(seq) FROM {table}")).fetch_one(self.store.pool()).await?;
        Ok(last.unwrap_or(0))
    }

    /// How many items wait in the whole queue.
    pub async fn depth(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(self.kind.sql("SELECT COUNT(*) FROM {table}")).fetch_one(self.store.pool()).await?)
    }

    /// When the oldest item still in the queue was queued (milliseconds since the Unix epoch), or `None` when the
    /// queue is empty. Items are numbered in the order they are queued, so this reads one row by the primary key
    /// however long the queue is. A handled item counts until its removal is committed (the next group commit,
    /// a quarter of a second at most while the store answers).
    pub async fn oldest_enqueued_at(&self) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(self.kind.sql("SELECT enqueued_at FROM {table} ORDER BY seq LIMIT 1"))
            .fetch_optional(self.store.pool())
            .await?)
    }

    /// Items given up on, newest first: (queue key, payload, error).
    pub async fn dead_letters(&self, limit: i64) -> Result<Vec<(String, String, String)>> {
        let rows = sqlx::query(
            "SELECT queue_key, payload, error FROM dead_letters WHERE queue = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(self.kind.label())
        .bind(limit)
        .fetch_all(self.store.pool())
        .await?;
        rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Cipher;

    async fn file_store(dir: &tempfile::TempDir) -> Store {
        let url = format!("sqlite://{}", dir.path().join("queue.db").display());
        Store::connect(&url, 2, Cipher::random()).await.unwrap()
    }

    #[tokio::test]
    async fn numbers_are_never_given_out_twice_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = file_store(&dir).await;
        let events = |payload: &str| vec![("!r".to_owned(), payload.to_owned()), ("!s".to_owned(), payload.to_owned())];
        let mut first = Vec::new();
        store.persist_transaction("first", &events("1"), |items| first = items).await.unwrap();
        let queue = store.queue(QueueKind::Matrix);
        for item in &first {
            queue.complete(item.seq);
        }
        store.settle().await.unwrap();
        assert_eq!(queue.depth().await.unwrap(), 0);
        store.close().await;

        // The table is empty now; the numbers its removed rows had are not given out again.
        let store = file_store(&dir).await;
        let mut second = Vec::new();
        store.persist_transaction("second", &events("2"), |items| second = items).await.unwrap();
        assert!(second[0].seq > first[1].seq, "{first:?} then {second:?}");
        let queue = store.queue(QueueKind::Matrix);
        let stored = [queue.peek_after("!r", 0, 10).await.unwrap(), queue.peek_after("!s", 0, 10).await.unwrap()];
        assert_eq!(stored.concat(), second, "what was handed over is what was written");
        let pushed = store.queue(QueueKind::Remote).push("portal", "3").await.unwrap();
        assert_eq!(store.queue(QueueKind::Remote).peek_after("portal", 0, 1).await.unwrap()[0].seq, pushed);
    }

    #[tokio::test]
    async fn a_transaction_id_is_known_again_after_a_restart_and_beyond_the_recent_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = file_store(&dir).await;
        let events = vec![("!r".to_owned(), "{}".to_owned())];
        let persist = |store: Store, txn_id: &'static str| {
            let events = events.clone();
            async move { store.persist_transaction(txn_id, &events, drop).await.unwrap() }
        };
        assert_eq!(persist(store.clone(), "41").await, TransactionOutcome::Persisted { queued: 1 });
        assert_eq!(persist(store.clone(), "old-style").await, TransactionOutcome::Persisted { queued: 1 });
        store.close().await;

        let store = file_store(&dir).await;
        assert_eq!(persist(store.clone(), "41").await, TransactionOutcome::AlreadyProcessed, "loaded as recent");
        // As if a thousand transactions had come since: the record in the table still answers.
        *store.intake.lock().await = SeenTransactions::default();
        assert_eq!(persist(store.clone(), "old-style").await, TransactionOutcome::AlreadyProcessed);
        assert_eq!(persist(store.clone(), "41").await, TransactionOutcome::AlreadyProcessed);
        assert_eq!(persist(store.clone(), "42").await, TransactionOutcome::Persisted { queued: 1 });
        assert_eq!(persist(store.clone(), "42").await, TransactionOutcome::AlreadyProcessed, "recorded as recent");
        assert_eq!(store.queue(QueueKind::Matrix).depth().await.unwrap(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_item_handled_before_it_is_written_is_still_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = file_store(&dir).await;
        let queue = store.queue(QueueKind::Remote);
        // Concurrent pushers, so removals often share a group with the inserts of their items.
        let pushers: Vec<_> = (0..8)
            .map(|pusher| {
                let queue = queue.clone();
                tokio::spawn(async move {
                    for n in 0..50 {
                        // As a worker does: handles the item the moment it is handed over, racing its write.
                        let worker = queue.clone();
                        let take = move |item: QueuedItem| {
                            tokio::spawn(async move { worker.complete(item.seq) });
                        };
                        queue.push_handing_over(&format!("portal{pusher}"), &n.to_string(), take).await.unwrap();
                    }
                })
            })
            .collect();
        for pusher in pushers {
            pusher.await.unwrap();
        }
        // A removal applied before its item's insert would leave the item behind.
        for _ in 0..100 {
            store.settle().await.unwrap();
            if queue.depth().await.unwrap() == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("items left: {:?}", queue.depth().await);
    }

    #[tokio::test]
    async fn the_oldest_item_is_the_first_still_queued_also_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = file_store(&dir).await;
        let queue = store.queue(QueueKind::Remote);
        assert_eq!(queue.oldest_enqueued_at().await.unwrap(), None, "an empty queue has no oldest item");
        let before = now_ms();
        let first = queue.push("portal-a", "1").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let second = queue.push("portal-b", "2").await.unwrap();
        queue.push("portal-a", "3").await.unwrap();
        let stored = |key: &'static str| {
            let queue = queue.clone();
            async move { queue.peek_after(key, 0, 10).await.unwrap() }
        };
        let (first_at, second_at) = (stored("portal-a").await[0].enqueued_at, stored("portal-b").await[0].enqueued_at);
        assert!(first_at >= before && second_at > first_at, "{before} {first_at} {second_at}");
        assert_eq!(queue.oldest_enqueued_at().await.unwrap(), Some(first_at));
        // The Matrix queue is apart.
        assert_eq!(store.queue(QueueKind::Matrix).oldest_enqueued_at().await.unwrap(), None);

        // Handled: the next one still waiting is the oldest, in another key.
        queue.complete(first);
        queue.settle().await.unwrap();
        assert_eq!(queue.oldest_enqueued_at().await.unwrap(), Some(second_at));
        store.close().await;

        // Left in the store across a restart: still there, with the time it was first queued.
        let store = file_store(&dir).await;
        let queue = store.queue(QueueKind::Remote);
        assert_eq!(queue.oldest_enqueued_at().await.unwrap(), Some(second_at));
        queue.complete(second);
        queue.settle().await.unwrap();
        let third_at = queue.peek_after("portal-a", 0, 1).await.unwrap()[0].enqueued_at;
        assert_eq!(queue.oldest_enqueued_at().await.unwrap(), Some(third_at));
    }

    #[test]
    fn insert_statement_numbers_placeholders_in_order() {
        assert_eq!(
            insert_statement(Backend::Postgres, 2),
            "INSERT INTO {table} (seq, queue_key, payload, enqueued_at) VALUES ($1, $2, $3, $4),($5, $6, $7, $8)"
        );
        assert_eq!(
            insert_statement(Backend::Sqlite, 2),
            "INSERT INTO {table} (seq, queue_key, payload, enqueued_at) VALUES (?, ?, ?, ?),(?, ?, ?, ?)"
        );
    }
}
