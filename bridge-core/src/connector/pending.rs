//! The older way of confirming a delivery later, through a task-local slot: [`confirm_later`] called while the
//! runtime handles an event through [`Connector::handle_matrix_event`](super::Connector::handle_matrix_event).
//! Connectors that implement the per-kind methods return [`Sent::Later`](super::Sent::Later) instead.

use std::future::Future;

use super::ConnectorResult;

/// A Matrix event's delivery that the remote network has yet to confirm (see [`confirm_later`]).
pub type PendingConfirmation = std::pin::Pin<Box<dyn Future<Output = ConnectorResult<()>> + Send>>;

tokio::task_local! {
    /// Where [`confirm_later`] leaves its confirmation for the runtime, while a Matrix event is being handled.
    pub(crate) static CONFIRMATION: std::sync::Arc<std::sync::Mutex<Option<PendingConfirmation>>>;
}

/// Lets the runtime go on with the room's next messages while the network confirms this event's delivery (an XMPP
/// MUC reflecting a message), instead of waiting for it in [`Connector::handle_matrix_event`](super::Connector::handle_matrix_event). Call it as the last
/// step of handling the event, once it is sent. The event stays queued until `confirmation` resolves: `Ok` settles
/// it; an error counts as if `handle_matrix_event` had returned it (a transient one sends the event again, after the
/// messages that ran ahead; a permanent one tells the sender). Events that refer to earlier ones (edits, replies,
/// reactions, redactions, receipts) wait until everything before them is confirmed, so the confirmation may record
/// what they look up. Outside the runtime's handling there is no one to hand it to: `confirmation` comes back, to
/// be awaited by the caller.
pub fn confirm_later(
    confirmation: impl Future<Output = ConnectorResult<()>> + Send + 'static,
) -> Result<(), PendingConfirmation> {
    let confirmation: PendingConfirmation = Box::pin(confirmation);
    match CONFIRMATION.try_with(std::sync::Arc::clone) {
        Ok(slot) => {
            *slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(confirmation);
            Ok(())
        }
        Err(_) => Err(confirmation),
    }
}
