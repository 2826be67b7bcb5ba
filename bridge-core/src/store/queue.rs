//! Durable, ordered per-key queues, and the record of processed homeserver transactions.
//!
//! Two queues exist: [`QueueKind::Matrix`] holds events the homeserver pushed (`PUT /_matrix/app/v1/transactions`),
//! keyed by room ID; [`QueueKind::Remote`] holds events a connector pushed from its network, keyed by portal. An item
//! leaves its queue only when it has been handled ([`Queue::complete`]) or given up on ([`Queue::dead_letter`]), so
//! a crash at any point replays the unfinished tail in order.

use std::sync::atomic::Ordering;

use sqlx::{AssertSqlSafe, Connection, Row};

use super::{Backend, Result, Store, group::Operation, now_ms};

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

/// Rows per multi-row INSERT; keeps statements well under both backends' parameter limits.
const INSERT_CHUNK: usize = 200;

/// A multi-row INSERT template for [`QueueKind::sql`].
pub(super) fn insert_statement(backend: Backend, rows: usize) -> String {
    let mut sql = String::from("INSERT INTO {table} (queue_key, payload, enqueued_at) VALUES ");
    for row in 0..rows {
        let first = row * 3 + 1;
        if row > 0 {
            sql.push(',');
        }
        let [key, payload, at] = [first, first + 1, first + 2].map(|n| backend.parameter(n));
        sql.push_str(&format!("({key}, {payload}, {at})"));
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
    /// `hand_over` receives the queued items, in order, once they are written and *before* the commit, so their
    /// delivery overlaps the commit's flush to disk; call it in no other way than handing them to their workers.
    /// When this returns `Persisted`, the events are durable and the transaction may be acknowledged. When it fails,
    /// the transaction is not acknowledged and the homeserver sends it again, so its events may be delivered twice
    /// but are never lost: the delivery guarantee is at least once, as for a crash between handling and removal. A
    /// transaction ID seen before returns `AlreadyProcessed`, queues nothing and hands nothing over, across restarts
    /// too.
    pub async fn persist_transaction(
        &self,
        txn_id: &str,
        events: &[(String, String)],
        hand_over: impl FnOnce(Vec<QueuedItem>),
    ) -> Result<TransactionOutcome> {
        let _group_turn = self.group.turn().await;
        let _turn = self.write_turn().await;
        let mut connection = self.durable_connection().await?;
        let mut transaction = connection.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO processed_transactions (txn_id, event_count, received_at) VALUES ($1, $2, $3) \
             ON CONFLICT (txn_id) DO NOTHING",
        )
        .bind(txn_id)
        .bind(i64::try_from(events.len()).unwrap_or(i64::MAX))
        .bind(now_ms())
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        if inserted == 0 {
            transaction.rollback().await?;
            return Ok(TransactionOutcome::AlreadyProcessed);
        }
        self.raise_seq(QueueKind::Matrix, &mut transaction).await?;
        let now = now_ms();
        let mut items = Vec::with_capacity(events.len());
        for chunk in events.chunks(INSERT_CHUNK) {
            let sql = format!("{} RETURNING seq", insert_statement(self.backend, chunk.len()));
            let mut query = sqlx::query_scalar(QueueKind::Matrix.sql(&sql));
            for (key, payload) in chunk {
                query = query.bind(key.as_str()).bind(payload.as_str()).bind(now);
            }
            // RETURNING promises no row order; the numbers themselves rise in VALUES order on both backends.
            let mut seqs: Vec<i64> = query.fetch_all(&mut *transaction).await?;
            seqs.sort_unstable();
            items.extend(
                chunk.iter().zip(seqs).map(|((key, payload), seq)| QueuedItem::written(seq, key, payload, now)),
            );
        }
        let (queued, last_seq) = (items.len(), items.last().map(|item| item.seq));
        hand_over(items);
        if let Err(error) = transaction.commit().await {
            if let Some(last_seq) = last_seq {
                self.note_uncommitted_seq(QueueKind::Matrix, last_seq);
            }
            return Err(error.into());
        }
        Ok(TransactionOutcome::Persisted { queued })
    }

    /// After a failed commit of items already handed over, makes SQLite number the queue's next items above them:
    /// its AUTOINCREMENT counter rolls back with the transaction and would give their numbers out again, and a late
    /// removal of a handed-over item must never hit a newer one. PostgreSQL's sequences never roll back.
    pub(super) async fn raise_seq(
        &self,
        kind: QueueKind,
        transaction: &mut sqlx::Transaction<'_, sqlx::Any>,
    ) -> Result<()> {
        let floor = self.seq_floors[kind.index()].load(Ordering::SeqCst);
        if floor == 0 || self.backend != Backend::Sqlite {
            return Ok(());
        }
        let raised = sqlx::query("UPDATE sqlite_sequence SET seq = MAX(seq, $1) WHERE name = $2")
            .bind(floor)
            .bind(kind.table())
            .execute(&mut **transaction)
            .await?
            .rows_affected();
        if raised == 0 {
            sqlx::query("INSERT INTO sqlite_sequence (name, seq) VALUES ($1, $2)")
                .bind(kind.table())
                .bind(floor)
                .execute(&mut **transaction)
                .await?;
        }
        Ok(())
    }

    /// Notes that items up to `seq` were handed over by a commit that failed (see [`Store::raise_seq`]).
    pub(super) fn note_uncommitted_seq(&self, kind: QueueKind, seq: i64) {
        self.seq_floors[kind.index()].fetch_max(seq, Ordering::SeqCst);
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
        let operation = Operation::Push { kind: self.kind, key: key.to_owned(), payload: payload.to_owned() };
        self.store.grouped(operation, None).await
    }

    /// Appends an item as [`Queue::push`] does, and gives it to `take` as soon as its group commit has written it,
    /// before the commit is flushed, so its handling overlaps the flush. If that commit then fails, this returns the
    /// error and the item may already have been handled: at least once, never lost while the pusher hears of it.
    pub async fn push_handing_over(
        &self,
        key: &str,
        payload: &str,
        take: impl FnOnce(QueuedItem) + Send + Sync + 'static,
    ) -> Result<i64> {
        let operation = Operation::Push { kind: self.kind, key: key.to_owned(), payload: payload.to_owned() };
        self.store.grouped(operation, Some(Box::new(take))).await
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

    /// Waits for a transaction being committed now to finish, so a read after this sees items that were handed over
    /// before their commit (see [`Store::persist_transaction`]).
    pub async fn await_commits(&self) {
        drop(self.store.group.turn().await);
    }

    /// Waits until the removals made so far are committed.
    pub async fn settle(&self) -> Result<()> {
        self.store.settle().await
    }

    /// Counts one more failed attempt at an item; returns the new count.
    pub async fn record_failure(&self, seq: i64) -> Result<i64> {
        let _turn = self.store.write_turn().await;
        let sql = self.kind.sql("UPDATE {table} SET attempts = attempts + 1 WHERE seq = $1 RETURNING attempts");
        Ok(sqlx::query_scalar(sql).bind(seq).fetch_one(self.store.pool()).await?)
    }

    /// Moves an item that can never succeed to the dead-letter table, keeping it for inspection.
    pub async fn dead_letter(&self, item: &QueuedItem, error: &str) -> Result<()> {
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

    /// How many items wait in the whole queue.
    pub async fn depth(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(self.kind.sql("SELECT COUNT(*) FROM {table}")).fetch_one(self.store.pool()).await?)
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

    #[tokio::test]
    async fn after_a_failed_commit_sqlite_numbers_items_above_those_handed_over() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("queue.db").display());
        let store = Store::connect(&url, 2, Cipher::random()).await.unwrap();
        let events = |payload: &str| vec![("!r".to_owned(), payload.to_owned())];
        let mut first = Vec::new();
        store.persist_transaction("first", &events("1"), |items| first = items).await.unwrap();
        // As a failed commit leaves it: numbers up to 1,000 were handed over, and SQLite's counter rolled back.
        store.note_uncommitted_seq(QueueKind::Matrix, first[0].seq + 1_000);
        let mut second = Vec::new();
        store.persist_transaction("second", &events("2"), |items| second = items).await.unwrap();
        assert!(second[0].seq > first[0].seq + 1_000, "{second:?}");
        let stored = store.queue(QueueKind::Matrix).peek_after("!r", first[0].seq, 10).await.unwrap();
        assert_eq!(stored, second);
    }

    #[test]
    fn insert_statement_numbers_placeholders_in_order() {
        assert_eq!(
            insert_statement(Backend::Postgres, 2),
            "INSERT INTO {table} (queue_key, payload, enqueued_at) VALUES ($1, $2, $3),($4, $5, $6)"
        );
        assert_eq!(
            insert_statement(Backend::Sqlite, 2),
            "INSERT INTO {table} (queue_key, payload, enqueued_at) VALUES (?, ?, ?),(?, ?, ?)"
        );
    }
}
