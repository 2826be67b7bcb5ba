//! Durable, ordered per-key queues, and the record of processed homeserver transactions.
//!
//! Two queues exist: [`QueueKind::Matrix`] holds events the homeserver pushed (`PUT /_matrix/app/v1/transactions`),
//! keyed by room ID; [`QueueKind::Remote`] holds events a connector pushed from its network, keyed by portal. An item
//! leaves its queue only when it has been handled ([`Queue::complete`]) or given up on ([`Queue::dead_letter`]), so
//! a crash at any point replays the unfinished tail in order.

use sqlx::{AssertSqlSafe, Connection, Row};

use super::{Result, Store, group::Operation, now_ms};

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

/// What persisting a homeserver transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransactionOutcome {
    /// The transaction is new; its events were queued under these keys (deduplicated, in first-seen order).
    Persisted {
        /// The queue keys that received events.
        keys: Vec<String>,
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
pub(super) fn insert_statement(rows: usize) -> String {
    let mut sql = String::from("INSERT INTO {table} (queue_key, payload, enqueued_at) VALUES ");
    for row in 0..rows {
        let first = row * 3 + 1;
        if row > 0 {
            sql.push(',');
        }
        sql.push_str(&format!("(${first}, ${}, ${})", first + 1, first + 2));
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
    /// When this returns `Persisted`, the events are durable and the transaction may be acknowledged. A transaction
    /// ID seen before returns `AlreadyProcessed` and queues nothing, across restarts too.
    pub async fn persist_transaction(&self, txn_id: &str, events: &[(String, String)]) -> Result<TransactionOutcome> {
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
            self.release_durable(connection).await?;
            return Ok(TransactionOutcome::AlreadyProcessed);
        }
        let now = now_ms();
        for chunk in events.chunks(INSERT_CHUNK) {
            let mut query = sqlx::query(QueueKind::Matrix.sql(&insert_statement(chunk.len())));
            for (key, payload) in chunk {
                query = query.bind(key.as_str()).bind(payload.as_str()).bind(now);
            }
            query.execute(&mut *transaction).await?;
        }
        transaction.commit().await?;
        self.release_durable(connection).await?;

        let mut keys: Vec<String> = Vec::new();
        for (key, _) in events {
            if !keys.contains(key) {
                keys.push(key.clone());
            }
        }
        Ok(TransactionOutcome::Persisted { keys })
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
        self.store.grouped(operation).await
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

    #[test]
    fn insert_statement_numbers_placeholders_in_order() {
        assert_eq!(
            insert_statement(2),
            "INSERT INTO {table} (queue_key, payload, enqueued_at) VALUES ($1, $2, $3),($4, $5, $6)"
        );
    }
}
