//! A worker's rounds: it settles the items that ran ahead, reads the store or takes the items handed over, handles
//! them in order and settles each by what handling it came to (done, confirmed later, retried, given up).

use std::{
    collections::VecDeque,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::sync::watch;

use super::{BATCH, Handler, IDLE, Inner, MAX_UNCONFIRMED, Missed, Outcome, Unconfirmed, Worker, retry_delay};
use crate::store::QueuedItem;

/// Sleeps for `delay`, or less if shutdown starts; returns whether shutdown started.
async fn pause(shutdown: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => *shutdown.borrow(),
        _ = shutdown.changed() => true,
    }
}

/// What a worker does after a round.
enum Flow {
    /// Goes on with the next round.
    Again,
    /// Ends: shutdown started, or the worker left the map after a quiet spell.
    Stop,
}

/// One worker's state between rounds.
struct Run<H> {
    inner: Arc<Inner<H>>,
    key: String,
    worker: Arc<Worker>,
    shutdown: watch::Receiver<bool>,
    label: &'static str,
    /// The last item this worker settled; later reads start after it.
    cursor: i64,
    /// Whether items after the cursor may be in the store only; a new worker knows nothing of what is there.
    reading_store: bool,
    /// Items handled in this batch that wait for their confirmation, oldest first.
    unconfirmed: VecDeque<Unconfirmed>,
}

/// The worker of one key: rounds until shutdown, or until it ends after a quiet spell.
pub(super) async fn run_worker<H: Handler>(inner: Arc<Inner<H>>, key: String, worker: Arc<Worker>) {
    let mut run = Run {
        shutdown: inner.shutdown.clone(),
        label: inner.queue.kind().label(),
        inner,
        key,
        worker,
        cursor: 0,
        reading_store: true,
        unconfirmed: VecDeque::new(),
    };
    while let Flow::Again = run.round().await {}
}

impl<H: Handler> Run<H> {
    /// One round: settles what ran ahead, catches up with what the hand-over missed, then handles the next batch
    /// or idles.
    async fn round(&mut self) -> Flow {
        if *self.shutdown.borrow() {
            return Flow::Stop;
        }
        // Each batch starts with every earlier item settled, so reads from the store never meet one still running.
        if !confirm(&self.inner, &mut self.unconfirmed, 0, &mut self.shutdown).await {
            return Flow::Stop;
        }
        self.worker.dirty.store(false, Ordering::SeqCst);
        if let Some(flow) = self.catch_up().await {
            return flow;
        }
        let batch = match self.next_batch().await {
            Ok(batch) => batch,
            Err(flow) => return flow,
        };
        if batch.is_empty() {
            return self.idle().await;
        }
        self.handle(batch).await
    }

    /// Takes in what the hand-over may have missed; `Some` ends the round early.
    async fn catch_up(&mut self) -> Option<Flow> {
        let (missed, dropped) = {
            let mut handed = self.worker.handed();
            (std::mem::take(&mut handed.missed), std::mem::take(&mut handed.dropped))
        };
        let (label, key) = (self.label, &self.key);
        if dropped && let Err(error) = self.inner.queue.await_commits().await {
            // Items whose write failed were refused to their senders, who send them again; the read finds the rest.
            tracing::debug!(queue = label, %key, %error, "a write of handed-over items failed");
        }
        if missed == Missed::FromStart {
            // Removals of items before the cursor must land first, or reading from the start would redo them.
            if let Err(error) = self.inner.queue.settle().await {
                tracing::warn!(queue = label, %key, %error, "handled items are not yet marked done; retrying");
                self.worker.handed().miss(Missed::FromStart);
                return Some(self.pause_then_again(Duration::from_secs(1)).await);
            }
            self.cursor = 0;
        }
        self.reading_store |= missed != Missed::Nothing;
        None
    }

    /// The next items after the cursor: from the store while it may hold items the hand-over lacks, else those
    /// handed over. `Err` ends the round early.
    async fn next_batch(&mut self) -> Result<Vec<QueuedItem>, Flow> {
        if !self.reading_store {
            // Taken only now: items handed while the store was read may not have been committed yet, so that read
            // could not see them.
            let handed = std::mem::take(&mut self.worker.handed().items);
            return Ok(handed.into_iter().filter(|item| item.seq > self.cursor).collect());
        }
        match self.inner.queue.peek_after(&self.key, self.cursor, BATCH).await {
            Ok(batch) if batch.is_empty() => {
                // Everything committed so far is handled; what commits later is handed over, or notified.
                self.reading_store = false;
                Err(Flow::Again)
            }
            Ok(batch) => Ok(batch),
            Err(error) => {
                tracing::warn!(queue = self.label, key = %self.key, %error, "cannot read the queue; retrying");
                Err(self.pause_then_again(Duration::from_secs(1)).await)
            }
        }
    }

    /// Nothing to handle: waits for more, and ends the worker after a quiet spell unless it was woken meanwhile.
    async fn idle(&mut self) -> Flow {
        tokio::select! {
            _ = self.worker.notify.notified() => return Flow::Again,
            _ = tokio::time::sleep(IDLE) => {}
            _ = self.shutdown.changed() => return Flow::Stop,
        }
        if let Err(error) = self.inner.queue.settle().await {
            tracing::warn!(queue = self.label, key = %self.key, %error, "handled items are not yet marked done; staying on");
            return Flow::Again;
        }
        let worker = &self.worker;
        let ended = self
            .inner
            .workers
            .remove_if(&self.key, |_, current| Arc::ptr_eq(current, worker) && !current.dirty.load(Ordering::SeqCst));
        if ended.is_some() { Flow::Stop } else { Flow::Again }
    }

    /// Handles a batch in order; new messages may run ahead of earlier items' confirmations.
    async fn handle(&mut self, batch: Vec<QueuedItem>) -> Flow {
        for item in batch {
            let keep = match self.unconfirmed.is_empty() || self.inner.handler.may_run_ahead(&item) {
                true => MAX_UNCONFIRMED - 1,
                false => 0,
            };
            if !confirm(&self.inner, &mut self.unconfirmed, keep, &mut self.shutdown).await {
                return Flow::Stop;
            }
            let outcome = self.inner.handler.handle(&item).await;
            if !settle(&self.inner, &item, outcome, &mut self.shutdown, Some(&mut self.unconfirmed)).await {
                return Flow::Stop;
            }
            self.cursor = item.seq;
        }
        Flow::Again
    }

    /// Pauses before the next round; stops if shutdown starts meanwhile.
    async fn pause_then_again(&mut self, delay: Duration) -> Flow {
        if pause(&mut self.shutdown, delay).await { Flow::Stop } else { Flow::Again }
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
