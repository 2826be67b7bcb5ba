//! One connection the edge holds: its lines from the bridge go out in order on their own task (a connection held
//! back by flood control never holds up the others), its state goes to the bridge whenever it changes, and a new
//! bridge that opens it again hears what it needs to go on.

use std::sync::{Arc, Weak};

use tokio::sync::mpsc;

use super::{
    keys::Seen,
    server::{Edge, lock},
    wire::{ConnKey, ToBridge},
};
use crate::{
    conn::{ConnEvent, Forward, LocalConnection},
    line::Line,
};

/// Lines for the connection, as the bridge sent them.
#[derive(Debug)]
pub(super) struct SendJob {
    pub(super) lines: Vec<String>,
    pub(super) receipt: Option<u64>,
    pub(super) key: Option<String>,
}

/// A held connection. Cheap to clone.
#[derive(Clone)]
pub(super) struct Held {
    pub(super) connection: LocalConnection,
    key: ConnKey,
    forward: Forward,
    jobs: mpsc::UnboundedSender<SendJob>,
}

impl Held {
    /// Holds `connection`: starts its sender and the watch on its state.
    pub(super) fn start(connection: LocalConnection, key: ConnKey, forward: Forward, edge: &Arc<Edge>) -> Self {
        let (jobs, receiver) = mpsc::unbounded_channel();
        tokio::spawn(send_jobs(connection.clone(), receiver, Arc::downgrade(edge)));
        tokio::spawn(watch_state(connection.clone(), key.clone(), Arc::downgrade(edge)));
        Self { connection, key, forward, jobs }
    }

    /// Queues lines from the bridge.
    pub(super) fn queue(&self, job: SendJob) {
        let _ = self.jobs.send(job);
    }

    /// A new bridge opened the connection again: if registered, it hears so again (as the first bridge did), and
    /// the bot's connection asks for the members of its channels, which the new bridge does not know.
    pub(super) fn resume(&self, edge: &Edge) {
        let Some(nick) = self.connection.nick() else { return };
        edge.replay(&self.key, &ConnEvent::Registered { owner: self.key.owner.clone(), nick });
        if self.forward == Forward::All {
            for channel in self.connection.joined_channels() {
                if let Ok(line) = Line::new("NAMES", &[&channel], None) {
                    self.queue(SendJob {
                        lines: vec![String::from_utf8_lossy(line.as_bytes()).into_owned()],
                        receipt: None,
                        key: None,
                    });
                }
            }
        }
    }
}

/// Sends a connection's lines in order, each job once its lines are queued on the connection.
async fn send_jobs(connection: LocalConnection, mut jobs: mpsc::UnboundedReceiver<SendJob>, edge: Weak<Edge>) {
    while let Some(job) = jobs.recv().await {
        let Some(edge) = edge.upgrade() else { return };
        send_job(&connection, job, &edge).await;
    }
}

async fn send_job(connection: &LocalConnection, job: SendJob, edge: &Arc<Edge>) {
    let SendJob { lines, receipt, key } = job;
    let lost = |receipt: Option<u64>| receipt.map(|receipt| ToBridge::Lost { receipt });
    let lines: Result<Vec<Line>, _> = lines.into_iter().map(Line::decoded).collect();
    let lines = match lines {
        Ok(lines) => lines,
        Err(error) => {
            tracing::warn!(%error, "the bridge sent a line that is not one IRC command; it is not sent");
            return edge.tell(lost(receipt));
        }
    };
    if let Some(key) = &key {
        match lock(&edge.sent).sending(key, receipt) {
            Seen::New => {}
            Seen::Waiting => return,
            Seen::Read => return edge.tell(receipt.map(|receipt| ToBridge::Earlier { receipt })),
        }
    }
    if receipt.is_none() && key.is_none() {
        for line in lines {
            // Not registered: the line is dropped, as it would be in the bridge (which checked a moment ago).
            let _ = connection.send(line).await;
        }
        return;
    }
    let read = connection.send_with_receipt(lines).await;
    let edge = Arc::clone(edge);
    tokio::spawn(async move {
        let was_read = match read {
            Ok(read) => read.await.is_ok(),
            Err(_) => false,
        };
        let waiters = match (&key, was_read) {
            (Some(key), true) => lock(&edge.sent).read(key),
            (Some(key), false) => lock(&edge.sent).lost(key),
            (None, _) => Vec::new(),
        };
        for waiter in waiters {
            edge.tell(Some(if was_read {
                ToBridge::Earlier { receipt: waiter }
            } else {
                ToBridge::Lost { receipt: waiter }
            }));
        }
        if let Some(receipt) = receipt {
            edge.tell(Some(if was_read { ToBridge::Read { receipt } } else { ToBridge::Lost { receipt } }));
        }
    });
}

/// Tells the bridge the connection's state each time it changes, until the connection is no longer held.
async fn watch_state(connection: LocalConnection, key: ConnKey, edge: Weak<Edge>) {
    let mut changes = connection.state_changes();
    loop {
        if changes.changed().await.is_err() {
            return;
        }
        let Some(edge) = edge.upgrade() else { return };
        if !edge.holds(&key) {
            return;
        }
        edge.tell(Some(ToBridge::State { conn: key.clone(), state: connection.state() }));
    }
}
