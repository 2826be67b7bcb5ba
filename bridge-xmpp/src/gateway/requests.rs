//! IQ requests the gateway sends and waits for ([RFC 6120 §8.2](https://www.rfc-editor.org/rfc/rfc6120#section-8.2)):
//! each carries a fresh ID, and the server's `result` or `error` with that ID is handed back to the waiting task.
//! Answers arrive on the stanza loop, so a request must never be awaited on it: callers run in their own tasks.

use std::{collections::HashMap, sync::Mutex};

use tokio::sync::oneshot;
use tokio_xmpp::parsers::iq::Iq;

use super::{Gateway, new_id};

/// Requests waiting for their answer, by ID.
#[derive(Debug, Default)]
pub(crate) struct IqRequests {
    pending: Mutex<HashMap<String, oneshot::Sender<Iq>>>,
}

impl IqRequests {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Iq>>> {
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hands an answer to its request; false when the IQ answers none.
    pub(crate) fn finish(&self, iq: &Iq) -> bool {
        let (Iq::Result { id, .. } | Iq::Error { id, .. }) = iq else { return false };
        let Some(waiter) = self.pending().remove(id) else { return false };
        let _ = waiter.send(iq.clone());
        true
    }
}

impl Gateway {
    /// Sends an IQ (its ID replaced by a fresh one) and waits for the answer; `None` when none came in time.
    pub(crate) async fn request(&self, mut iq: Iq) -> Option<Iq> {
        let id = new_id();
        match &mut iq {
            Iq::Get { id: slot, .. }
            | Iq::Set { id: slot, .. }
            | Iq::Result { id: slot, .. }
            | Iq::Error { id: slot, .. } => {
                *slot = id.clone();
            }
        }
        let (sender, answer) = oneshot::channel();
        self.requests.pending().insert(id.clone(), sender);
        let timeout = std::time::Duration::from_secs(self.section.component.response_timeout_secs);
        let answered = match self.send(iq).await {
            Ok(()) => tokio::time::timeout(timeout, answer).await.ok().and_then(Result::ok),
            Err(_) => None,
        };
        if answered.is_none() {
            self.requests.pending().remove(&id);
        }
        answered
    }
}
