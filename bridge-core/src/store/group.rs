//! Group commit: small writes from many tasks share one database transaction.
//!
//! A write either waits for the commit that carries it ([`Store::grouped`]: homeserver transactions and queue
//! pushes, which must be on disk before the sender hears back) or is only handed over ([`Store::defer`]:
//! bookkeeping such as marking a queue item handled or recording a message mapping, which a per-room worker would
//! otherwise wait for once per event). Handed over writes are committed by a background flusher, in the order they
//! were made, gathered for a moment so each commit carries many; a commit someone waits for leaves them to it unless
//! it is a settle's. [`Store::settle`] waits until every write handed over so far is committed, and every read of
//! what they write settles first, so the store never answers with less than it was told.
//!
//! Queue items are numbered in memory as their write joins the pending group, under the lock that orders the group,
//! and are handed to their workers at that moment, before any database work: an event's delivery waits neither for
//! the disk nor for a commit under way. Numbers are given out in the order the writes are committed, so a worker
//! never sees a number from the store that an earlier hand-over skipped, and a handled item's removal always joins
//! the group of its own insert or a later one.

use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::Connection;
use tokio::sync::{Notify, oneshot};

use super::{Backend, Error, MessageMapping, QueueKind, QueuedItem, Result, Store, queue::insert_statement};

/// A write waiting for the next group commit.
#[derive(Debug)]
pub(crate) struct PendingWrite {
    operation: Operation,
    /// Gets the write's outcome; `None` for a handed-over write.
    done: Option<oneshot::Sender<Result<()>>>,
}

/// What a grouped write does.
#[derive(Debug)]
pub(crate) enum Operation {
    /// Appends a queue item; the group is flushed to disk before the pusher hears back.
    Push {
        /// The queue.
        kind: QueueKind,
        /// The item, numbered.
        item: QueuedItem,
    },
    /// Records a homeserver transaction as processed and queues its events; flushed to disk like a push.
    Transaction {
        /// The homeserver's transaction ID.
        txn_id: String,
        /// The events, numbered, for the Matrix queue.
        items: Vec<QueuedItem>,
    },
    /// Removes a handled queue item.
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
    pending: std::sync::Mutex<Pending>,
    /// Taken by whoever commits the pending group, so concurrent writes share one commit on either backend.
    turn: tokio::sync::Mutex<()>,
    /// Handed-over writes not yet committed.
    uncommitted: AtomicUsize,
    /// Wakes the flusher.
    flush: Notify,
}

/// The pending writes, each kind in the order it was made. Kept apart because a commit someone waits for takes only
/// the awaited ones, while the flusher gathers thousands of handed-over ones.
#[derive(Debug, Default)]
struct Pending {
    awaited: Vec<PendingWrite>,
    handed_over: Vec<PendingWrite>,
}

impl Pending {
    /// Every pending write, handed-over ones first, so a barrier comes after the writes it waits for.
    fn take_all(&mut self) -> Vec<PendingWrite> {
        let mut all = std::mem::take(&mut self.handed_over);
        all.append(&mut self.awaited);
        all
    }
}

impl GroupCommit {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds the write `build` makes while holding the lock that orders the group, so queue numbers given out inside
    /// `build` follow the order of the writes carrying them.
    fn enqueue(&self, build: impl FnOnce() -> PendingWrite) {
        let mut pending = self.pending();
        let write = build();
        match write.done {
            Some(_) => pending.awaited.push(write),
            None => pending.handed_over.push(write),
        }
    }

    fn take(&self) -> Vec<PendingWrite> {
        self.pending().take_all()
    }

    /// Takes the writes someone waits for, leaving handed-over ones to the flusher; all of them when a barrier waits
    /// for those before it.
    fn take_awaited(&self) -> Vec<PendingWrite> {
        let mut pending = self.pending();
        if pending.awaited.iter().any(|write| matches!(write.operation, Operation::Barrier)) {
            return pending.take_all();
        }
        std::mem::take(&mut pending.awaited)
    }

    /// Puts handed-over writes of a group that failed back in front of what arrived meanwhile, so order holds, and
    /// has the flusher retry them (whichever writer's commit failed).
    fn put_back(&self, mut group: Vec<PendingWrite>) {
        {
            let mut pending = self.pending();
            group.append(&mut pending.handed_over);
            pending.handed_over = group;
        }
        self.flush.notify_one();
    }

    /// Wakes the flusher, e.g. to notice that the store closed.
    pub(crate) fn wake_flusher(&self) {
        self.flush.notify_one();
    }

    /// Holds the commit turn: one group commits at a time, so groups commit in the order they were taken and
    /// sequence numbers become visible in order on PostgreSQL as well (a per-room worker reads on from the last
    /// number it handled).
    async fn turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.turn.lock().await
    }
}

/// How long handed-over writes are gathered before the flusher commits them.
const GATHER_DEFERRED: std::time::Duration = std::time::Duration::from_millis(250);

impl Store {
    /// Adds `operation` to the pending group and waits until a group commit carried it: this call's own, or
    /// another's that took it along.
    pub(crate) async fn grouped(&self, operation: Operation) -> Result<()> {
        self.grouped_with(|| operation).await
    }

    /// As [`Store::grouped`], with the operation made by `build` under the lock that orders the group (see
    /// [`GroupCommit::enqueue`]).
    pub(crate) async fn grouped_with(&self, build: impl FnOnce() -> Operation) -> Result<()> {
        let (done, mut committed) = oneshot::channel();
        self.group.enqueue(|| PendingWrite { operation: build(), done: Some(done) });
        loop {
            tokio::select! {
                // Another write's commit took this one along: no turn needed.
                result = &mut committed => {
                    return result.unwrap_or_else(|_| {
                        Err(Error::GroupCommit { message: "the committing write was cancelled".into(), transient: true })
                    });
                }
                _turn = self.group.turn() => {
                    // Handed-over writes stay for the flusher: a flushed-to-disk commit then carries only what
                    // must be durable, and an acknowledgement does not wait for pages of bookkeeping (P2: 13,000 →
                    // 17,000–18,600 lines/s together with the flusher's gathering).
                    let group = self.group.take_awaited();
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
        self.group.enqueue(|| PendingWrite { operation, done: None });
        self.group.flush.notify_one();
    }

    /// Waits until every write handed over before this call is committed.
    pub(crate) async fn settle(&self) -> Result<()> {
        if self.group.uncommitted.load(Ordering::SeqCst) == 0 {
            return Ok(());
        }
        self.grouped(Operation::Barrier).await
    }

    /// Commits handed-over writes in the background until the store closes; a failed group is put back and retried
    /// after a pause, in order, so nothing handed over is lost while the process lives.
    pub(crate) async fn flush_deferred(self) {
        loop {
            self.group.flush.notified().await;
            if self.pool().is_closed() {
                return;
            }
            // Every commit writes each page it touched to the log in whole, so writes committed a few at a time
            // write the same pages over and over: gather them first. Nothing waits on these writes but reads of what
            // they write, which settle at once.
            tokio::time::sleep(GATHER_DEFERRED).await;
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

    /// Writes a group in one transaction, flushed to disk, and tells each waiting writer its outcome. A group that
    /// fails keeps its handed-over writes for the next try; returns whether it committed.
    async fn commit_group(&self, group: Vec<PendingWrite>) -> bool {
        let written = async {
            let _turn = self.write_turn().await;
            // Every group goes through the one connection of durable commits, handed-over writes too (an fsync per
            // gathering of them): SQLite drops a connection's whole page cache when another connection wrote since
            // its last transaction, and pool connections taking turns re-read every page a commit touched (9% of
            // the bridge's CPU in a P2 profile).
            let mut connection = self.durable_connection().await?;
            let mut transaction = connection.begin().await?;
            apply(self.backend, &group, &mut transaction).await?;
            transaction.commit().await?;
            Ok::<_, Error>(())
        }
        .await;
        match written {
            Ok(()) => {
                let handed_over = group.iter().filter(|write| write.done.is_none()).count();
                for write in group {
                    if let Some(done) = write.done {
                        let _ = done.send(Ok(()));
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

/// Rows per multi-row statement of a group: well under both backends' parameter limits (2,500 of SQLite's 32,766 and
/// PostgreSQL's 65,535 for the widest rows). Each statement is a round trip to the connection (on SQLite, to its
/// thread and back): the flusher's groups hold thousands of rows (P2 with 500 rather than 100: 6–18% more lines/s
/// in six runs beside each other).
const ROWS_PER_STATEMENT: usize = 500;

/// Applies a group's writes inside one transaction. Each kind of write goes as multi-row statements, since every
/// statement is a round trip to the database (the group commits atomically, so their order inside it does not
/// matter, except that a queue item is inserted before a removal of it in the same group is applied).
async fn apply(
    backend: Backend,
    group: &[PendingWrite],
    transaction: &mut sqlx::Transaction<'_, sqlx::Any>,
) -> Result<()> {
    let mut inserts: Vec<(QueueKind, &QueuedItem)> = Vec::new();
    let mut removals: Vec<(QueueKind, i64)> = Vec::new();
    let (mut processed, mut mappings, mut aliases) = (Vec::new(), Vec::new(), Vec::new());
    for write in group {
        match &write.operation {
            Operation::Push { kind, item } => inserts.push((*kind, item)),
            Operation::Transaction { txn_id, items } => {
                processed.push((txn_id, i64::try_from(items.len()).unwrap_or(i64::MAX)));
                inserts.extend(items.iter().map(|item| (QueueKind::Matrix, item)));
            }
            Operation::Complete { kind, seq } => removals.push((*kind, *seq)),
            Operation::MapMessage { mapping, recorded_at } => mappings.push((mapping, *recorded_at)),
            Operation::AliasRemote { portal_key, alias, remote_id } => aliases.push((portal_key, alias, remote_id)),
            Operation::Barrier => {}
        }
    }
    // A transaction ID is new when its write joins a group (see `Store::persist_transaction`), unless an earlier
    // attempt at it was abandoned while its write was pending: then its events are queued twice (at least once), and
    // the group does not fail over it.
    for (txn_id, event_count) in &processed {
        sqlx::query(
            "INSERT INTO processed_transactions (txn_id, event_count, received_at) VALUES ($1, $2, $3) \
             ON CONFLICT (txn_id) DO NOTHING",
        )
        .bind(txn_id.as_str())
        .bind(*event_count)
        .bind(super::now_ms())
        .execute(&mut **transaction)
        .await?;
    }
    for kind in [QueueKind::Matrix, QueueKind::Remote] {
        let items: Vec<&QueuedItem> = inserts.iter().filter(|(of, _)| *of == kind).map(|(_, item)| *item).collect();
        let seqs: Vec<i64> = removals.iter().filter(|(of, _)| *of == kind).map(|(_, seq)| *seq).collect();
        apply_queue(backend, kind, &items, &seqs, transaction).await?;
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
    Ok(())
}

/// Inserts `items` into one queue, then removes the items numbered `seqs`, as multi-row statements.
async fn apply_queue(
    backend: Backend,
    kind: QueueKind,
    items: &[&QueuedItem],
    seqs: &[i64],
    transaction: &mut sqlx::Transaction<'_, sqlx::Any>,
) -> Result<()> {
    for chunk in items.chunks(ROWS_PER_STATEMENT) {
        let mut query = sqlx::query(kind.sql(&insert_statement(backend, chunk.len())));
        for item in chunk {
            query = query.bind(item.seq).bind(item.key.as_str()).bind(item.payload.as_str()).bind(item.enqueued_at);
        }
        query.execute(&mut **transaction).await?;
    }
    for chunk in seqs.chunks(ROWS_PER_STATEMENT) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|n| backend.parameter(n)).collect();
        let sql = kind.sql(&format!("DELETE FROM {{table}} WHERE seq IN ({})", placeholders.join(",")));
        let mut query = sqlx::query(sql);
        for seq in chunk {
            query = query.bind(*seq);
        }
        query.execute(&mut **transaction).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(operation: Operation, awaited: bool) -> PendingWrite {
        PendingWrite { operation, done: awaited.then(|| oneshot::channel().0) }
    }

    fn complete(seq: i64) -> Operation {
        Operation::Complete { kind: QueueKind::Matrix, seq }
    }

    fn described(writes: &[PendingWrite]) -> Vec<String> {
        writes.iter().map(|write| format!("{:?}", write.operation)).collect()
    }

    #[test]
    fn awaited_writes_leave_handed_over_ones_in_order_unless_a_barrier_waits() {
        let group = GroupCommit::default();
        group.enqueue(|| write(complete(1), false));
        group.enqueue(|| write(Operation::Transaction { txn_id: "t1".into(), items: vec![] }, true));
        group.enqueue(|| write(complete(2), false));
        assert_eq!(described(&group.take_awaited()), [r#"Transaction { txn_id: "t1", items: [] }"#]);

        group.enqueue(|| write(complete(3), false));
        group.enqueue(|| write(Operation::Barrier, true));
        let all = group.take_awaited();
        let expected = [complete(1), complete(2), complete(3), Operation::Barrier].map(|op| format!("{op:?}"));
        assert_eq!(described(&all), expected);
        assert!(group.take().is_empty());
    }
}
