//! Group commit: small writes from many tasks share one database transaction.
//!
//! A write either waits for the commit that carries it ([`Store::grouped`]: queue pushes, which must be on disk
//! before the pusher hears back) or is only handed over ([`Store::defer`]: bookkeeping such as marking a queue item
//! handled or recording a message mapping, which a per-room worker would otherwise wait for once per event). Handed
//! over writes are committed by a background flusher, in the order they were made; [`Store::settle`] waits until
//! every write handed over so far is committed, and every read of what they write settles first, so the store never
//! answers with less than it was told.

use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::Connection;
use tokio::sync::{Notify, oneshot};

use super::{Backend, Error, MessageMapping, QueueKind, QueuedItem, Result, Store, now_ms, queue::insert_statement};

/// A write waiting for the next group commit.
pub(crate) struct PendingWrite {
    operation: Operation,
    /// Gets the write's outcome (a push's new sequence number); `None` for a handed-over write.
    done: Option<oneshot::Sender<Result<i64>>>,
    /// A push's item goes here once written, before the commit.
    taker: Option<Taker>,
}

impl std::fmt::Debug for PendingWrite {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PendingWrite")
            .field("operation", &self.operation)
            .field("waited_for", &self.done.is_some())
            .field("handed_over", &self.taker.is_some())
            .finish()
    }
}

/// Takes a pushed item once its group has written it (see [`Queue::push_handing_over`](super::Queue)).
pub(crate) type Taker = Box<dyn FnOnce(QueuedItem) + Send + Sync>;

/// What a grouped write does.
#[derive(Debug)]
pub(crate) enum Operation {
    /// Appends a queue item; the group is flushed to disk before the pusher hears back.
    Push {
        /// The queue.
        kind: QueueKind,
        /// The ordering key.
        key: String,
        /// The item.
        payload: String,
    },
    /// Removes a handled queue item; losing it to a power cut only means handing the item over again.
    Complete {
        /// The queue.
        kind: QueueKind,
        /// The item's sequence number.
        seq: i64,
    },
    /// Records a Matrix event ⇄ remote message mapping (a second record of the same pair is a no-op).
    MapMessage {
        /// The mapping.
        mapping: MessageMapping,
        /// When it was handed over, in milliseconds since the Unix epoch: the latest of several mappings of one
        /// remote ID wins, so the time is the caller's, not the commit's.
        recorded_at: i64,
    },
    /// Records another name of a remote message (the first record of a name stays).
    AliasRemote {
        /// The portal the message belongs to.
        portal_key: String,
        /// The other name.
        alias: String,
        /// The remote ID the message is mapped under.
        remote_id: String,
    },
    /// Writes nothing: committed once every write before it is.
    Barrier,
}

/// Writes waiting for a group commit, and the flusher that commits handed-over ones.
#[derive(Debug, Default)]
pub(crate) struct GroupCommit {
    pending: std::sync::Mutex<Vec<PendingWrite>>,
    /// Taken by whoever commits the pending group, so concurrent writes share one commit on either backend.
    turn: tokio::sync::Mutex<()>,
    /// Handed-over writes not yet committed.
    uncommitted: AtomicUsize,
    /// Wakes the flusher.
    flush: Notify,
}

impl GroupCommit {
    fn enqueue(&self, write: PendingWrite) {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(write);
    }

    fn take(&self) -> Vec<PendingWrite> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Puts handed-over writes of a group that failed back in front of what arrived meanwhile, so order holds, and
    /// has the flusher retry them (whichever writer's commit failed).
    fn put_back(&self, mut group: Vec<PendingWrite>) {
        {
            let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            group.append(&mut pending);
            *pending = group;
        }
        self.flush.notify_one();
    }

    /// Wakes the flusher, e.g. to notice that the store closed.
    pub(crate) fn wake_flusher(&self) {
        self.flush.notify_one();
    }

    /// Holds the commit turn; queue inserts outside the group commit take it too, so sequence numbers become
    /// visible in order on PostgreSQL as well (a per-room worker reads on from the last number it handled).
    pub(crate) async fn turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.turn.lock().await
    }
}

impl Store {
    /// Adds `operation` to the pending group and waits until a group commit carried it: this call's own, or
    /// another's that took it along.
    pub(crate) async fn grouped(&self, operation: Operation, taker: Option<Taker>) -> Result<i64> {
        let (done, mut committed) = oneshot::channel();
        self.group.enqueue(PendingWrite { operation, done: Some(done), taker });
        loop {
            tokio::select! {
                // Another write's commit took this one along: no turn needed.
                result = &mut committed => {
                    return result.unwrap_or_else(|_| {
                        Err(Error::GroupCommit { message: "the committing write was cancelled".into(), transient: true })
                    });
                }
                _turn = self.group.turn() => {
                    let group = self.group.take();
                    if !group.is_empty() {
                        self.commit_group(group).await;
                    }
                }
            }
        }
    }

    /// Hands `operation` over to be committed soon, without waiting. Reads of what it writes [`settle`] first.
    ///
    /// [`settle`]: Store::settle
    pub(crate) fn defer(&self, operation: Operation) {
        self.group.uncommitted.fetch_add(1, Ordering::SeqCst);
        self.group.enqueue(PendingWrite { operation, done: None, taker: None });
        self.group.flush.notify_one();
    }

    /// Waits until every write handed over before this call is committed.
    pub(crate) async fn settle(&self) -> Result<()> {
        if self.group.uncommitted.load(Ordering::SeqCst) == 0 {
            return Ok(());
        }
        self.grouped(Operation::Barrier, None).await.map(drop)
    }

    /// Commits handed-over writes in the background until the store closes; a failed group is put back and retried
    /// after a pause, in order, so nothing handed over is lost while the process lives.
    pub(crate) async fn flush_deferred(self) {
        loop {
            self.group.flush.notified().await;
            if self.pool().is_closed() {
                return;
            }
            let failed = {
                let _turn = self.group.turn().await;
                let writes = self.group.take();
                !writes.is_empty() && !self.commit_group(writes).await
            };
            if failed {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }

    /// Writes a group in one transaction, flushed to disk when it holds a push, and tells each waiting writer its
    /// outcome. A group that fails keeps its handed-over writes for the next try; returns whether it committed.
    async fn commit_group(&self, mut group: Vec<PendingWrite>) -> bool {
        let durable = group.iter().any(|write| matches!(write.operation, Operation::Push { .. }));
        let takers: Vec<Option<Taker>> = group.iter_mut().map(|write| write.taker.take()).collect();
        let written = async {
            let _turn = self.write_turn().await;
            let mut connection = if durable { self.durable_connection().await? } else { self.pool().acquire().await? };
            let mut transaction = connection.begin().await?;
            for kind in [QueueKind::Matrix, QueueKind::Remote] {
                if group.iter().any(|write| matches!(write.operation, Operation::Push { kind: of, .. } if of == kind)) {
                    self.raise_seq(kind, &mut transaction).await?;
                }
            }
            // One time for the pushes' rows and the items handed over, so both say the same.
            let now = now_ms();
            let outcomes = apply(self.backend, &group, now, &mut transaction).await?;
            let handed = hand_over_pushes(&group, &outcomes, now, takers);
            if let Err(error) = transaction.commit().await {
                for (kind, seq) in handed {
                    self.note_uncommitted_seq(kind, seq);
                }
                return Err(error.into());
            }
            Ok::<_, Error>(outcomes)
        }
        .await;
        match written {
            Ok(outcomes) => {
                let handed_over = group.iter().filter(|write| write.done.is_none()).count();
                for (write, outcome) in group.into_iter().zip(outcomes) {
                    if let Some(done) = write.done {
                        let _ = done.send(Ok(outcome));
                    }
                }
                self.group.uncommitted.fetch_sub(handed_over, Ordering::SeqCst);
                true
            }
            Err(error) => {
                let (message, transient) = (error.to_string(), error.is_transient());
                tracing::warn!(%message, "a group commit failed");
                let mut kept = Vec::new();
                for write in group {
                    match write.done {
                        Some(done) => {
                            let _ = done.send(Err(Error::GroupCommit { message: message.clone(), transient }));
                        }
                        None => kept.push(write),
                    }
                }
                if !kept.is_empty() {
                    self.group.put_back(kept);
                }
                false
            }
        }
    }
}

/// Gives each written push with a taker its item, in the group's (and so sequence) order; returns the queues and
/// sequence numbers handed over.
fn hand_over_pushes(
    group: &[PendingWrite],
    seqs: &[i64],
    enqueued_at: i64,
    takers: Vec<Option<Taker>>,
) -> Vec<(QueueKind, i64)> {
    let mut handed = Vec::new();
    for ((write, seq), taker) in group.iter().zip(seqs).zip(takers) {
        if let (Operation::Push { kind, key, payload }, Some(take)) = (&write.operation, taker) {
            take(QueuedItem::written(*seq, key, payload, enqueued_at));
            handed.push((*kind, *seq));
        }
    }
    handed
}

/// Inserts `rows` into `target` (`table (columns…)`, `columns` of them) with multi-row statements, skipping rows
/// that collide on `unique`; `bind` binds one row's values in column order.
async fn insert_rows<'q, T>(
    backend: Backend,
    transaction: &mut sqlx::Transaction<'_, sqlx::Any>,
    target: &str,
    columns: usize,
    unique: &str,
    rows: &'q [T],
    bind: impl Fn(AnyQuery<'q>, &'q T) -> AnyQuery<'q>,
) -> Result<()> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let values: Vec<String> = (0..chunk.len())
            .map(|row| {
                let placeholders: Vec<String> =
                    (1..=columns).map(|column| backend.parameter(row * columns + column)).collect();
                format!("({})", placeholders.join(", "))
            })
            .collect();
        let sql = format!("INSERT INTO {target} VALUES {} ON CONFLICT {unique} DO NOTHING", values.join(","));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for row in chunk {
            query = bind(query, row);
        }
        query.execute(&mut **transaction).await?;
    }
    Ok(())
}

/// A query on the `Any` driver.
type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Rows per multi-row statement of a group: well under both backends' parameter limits.
const ROWS_PER_STATEMENT: usize = 100;

/// Applies a group's writes inside one transaction; returns each write's outcome (a push's or removal's sequence
/// number, 0 otherwise). Pushes go one by one, each needing its sequence number back; removals and mappings go as
/// multi-row statements, since every statement is a round trip to the database (the group commits atomically, so
/// their order inside it does not matter).
async fn apply(
    backend: Backend,
    group: &[PendingWrite],
    now: i64,
    transaction: &mut sqlx::Transaction<'_, sqlx::Any>,
) -> Result<Vec<i64>> {
    let mut outcomes = vec![0; group.len()];
    let mut removals: Vec<(QueueKind, i64)> = Vec::new();
    let (mut mappings, mut aliases) = (Vec::new(), Vec::new());
    for (outcome, write) in outcomes.iter_mut().zip(group) {
        match &write.operation {
            Operation::Push { kind, key, payload } => {
                let sql = kind.sql(&format!("{} RETURNING seq", insert_statement(backend, 1)));
                *outcome = sqlx::query_scalar(sql)
                    .bind(key.as_str())
                    .bind(payload.as_str())
                    .bind(now)
                    .fetch_one(&mut **transaction)
                    .await?;
            }
            Operation::Complete { kind, seq } => {
                *outcome = *seq;
                removals.push((*kind, *seq));
            }
            Operation::MapMessage { mapping, recorded_at } => mappings.push((mapping, *recorded_at)),
            Operation::AliasRemote { portal_key, alias, remote_id } => aliases.push((portal_key, alias, remote_id)),
            Operation::Barrier => {}
        }
    }
    for kind in [QueueKind::Matrix, QueueKind::Remote] {
        let seqs: Vec<i64> = removals.iter().filter(|(of, _)| *of == kind).map(|(_, seq)| *seq).collect();
        for chunk in seqs.chunks(ROWS_PER_STATEMENT) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|n| backend.parameter(n)).collect();
            let sql = kind.sql(&format!("DELETE FROM {{table}} WHERE seq IN ({})", placeholders.join(",")));
            let mut query = sqlx::query(sql);
            for seq in chunk {
                query = query.bind(*seq);
            }
            query.execute(&mut **transaction).await?;
        }
    }
    let into_map = "message_map (event_id, room_id, portal_key, remote_id, created_at)";
    insert_rows(
        backend,
        transaction,
        into_map,
        5,
        "(event_id, remote_id)",
        &mappings,
        |query, (mapping, recorded_at)| {
            query
                .bind(mapping.event_id.as_str())
                .bind(mapping.room_id.as_str())
                .bind(mapping.portal_key.as_str())
                .bind(mapping.remote_id.as_str())
                .bind(*recorded_at)
        },
    )
    .await?;
    let into_aliases = "remote_aliases (portal_key, alias, remote_id)";
    insert_rows(
        backend,
        transaction,
        into_aliases,
        3,
        "(portal_key, alias)",
        &aliases,
        |query, (portal_key, alias, remote_id)| {
            query.bind(portal_key.as_str()).bind(alias.as_str()).bind(remote_id.as_str())
        },
    )
    .await?;
    Ok(outcomes)
}
