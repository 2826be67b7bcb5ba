//! What handling a Matrix event came to on the remote network, as a connector reports it to the runtime: nothing
//! sent, delivered now, or written and confirmed later. The runtime records the remote message durably in the
//! message map before it settles the event's queue item, so a replay after a crash finds it delivered.

use std::{fmt, future::Future, pin::Pin};

use super::ConnectorResult;

/// A remote network's ID for a message, as the connector names it in the message map (IRC `nick/msgid`, an XMPP
/// stanza ID). Opaque to the runtime: the connector builds and parses it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteId(String);

impl RemoteId {
    /// A remote ID as the connector spells it.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The ID as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ID as stored, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for RemoteId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl From<String> for RemoteId {
    fn from(id: String) -> Self {
        Self(id)
    }
}

/// The network's confirmation of a written event: resolves once the network has it, to the remote message it
/// became (`None` when it is not looked up later: edits, reactions, or a line the network refused and the connector
/// told the sender about). An error counts as if handling had failed: a transient one sends the event again, after
/// the events that ran ahead; a permanent one tells the sender.
pub type Confirmation = Pin<Box<dyn Future<Output = ConnectorResult<Option<RemoteId>>> + Send>>;

/// What a Matrix event came to on the network.
#[must_use = "the runtime settles the event by what it came to"]
pub enum Sent {
    /// Nothing went to the network (the event means nothing there, or the connector's rules dropped it).
    Nothing,
    /// The network has it now; `Some` is the remote message it became.
    Now(Option<RemoteId>),
    /// Written; the network confirms it later. The runtime goes on with the room's next new messages meanwhile and
    /// holds events that refer to earlier ones (edits, replies, reactions, redactions) until the confirmation came,
    /// so they find what it recorded.
    Later(Confirmation),
}

impl Sent {
    /// Written, confirmed when `confirmation` resolves.
    pub fn later(confirmation: impl Future<Output = ConnectorResult<Option<RemoteId>>> + Send + 'static) -> Self {
        Self::Later(Box::pin(confirmation))
    }
}

impl fmt::Debug for Sent {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Nothing => formatter.write_str("Nothing"),
            Self::Now(id) => formatter.debug_tuple("Now").field(id).finish(),
            Self::Later(_) => formatter.write_str("Later(..)"),
        }
    }
}
