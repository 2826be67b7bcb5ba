//! What a Matrix event became on XMPP, and when XMPP has it ([`Sent`]).
//!
//! A MUC portal's message is confirmed by the MUC's reflection ([`super::muc`]). For the stanzas the bridge writes
//! to the XMPP server itself (1:1 chats and gateway MUCs): components have no stream management (XEP-0198 is for
//! client streams), but a server handles a stream's stanzas in order, so once it answers an IQ ping
//! ([XEP-0199](https://xmpp.org/extensions/xep-0199.html)) written after a message, it has routed the message. The
//! Matrix event's queue item stays in the runtime's durable queue until then, and its remote ID is recorded durably
//! before the item is settled, so a replay after a crash finds it delivered.

use std::{future::Future, pin::Pin};

use lattice_bridge_core::{
    connector::{ConnectorError, ConnectorResult},
    store::MessageMapping,
};
use tokio_xmpp::parsers::{iq::Iq, jid::Jid, ping::Ping};

use super::Gateway;

/// Resolves once XMPP has what a Matrix event became, to the message mapping to record for it, if any.
pub(crate) type Confirmation = Pin<Box<dyn Future<Output = ConnectorResult<Option<MessageMapping>>> + Send>>;

/// What handling a Matrix event wrote to XMPP.
pub(crate) enum Sent {
    /// Nothing that needs confirming.
    Nothing,
    /// Stanzas XMPP has once the confirmation resolves.
    Later(Confirmation),
}

impl std::fmt::Debug for Sent {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Self::Nothing => "Nothing",
            Self::Later(_) => "Later",
        })
    }
}

impl Gateway {
    /// Stanzas the gateway wrote to the server itself: confirmed once the server has read them, then `record` is
    /// the mapping to keep.
    pub(crate) fn written(&self, record: Option<MessageMapping>) -> Sent {
        let gateway = self.arc();
        Sent::Later(Box::pin(async move {
            gateway.server_has_read().await?;
            Ok(record)
        }))
    }

    /// Waits until the server answers a ping written after everything the gateway wrote so far.
    async fn server_has_read(&self) -> ConnectorResult<()> {
        let server = self.section.component.domain.split_once('.').map_or("", |(_, parent)| parent);
        let server = if server.is_empty() { self.section.component.domain.as_str() } else { server };
        let to = Jid::new(server).map_err(|error| ConnectorError::permanent(error.to_string()))?;
        let ping = Iq::from_get(String::new(), Ping).with_from(self.gateway_jid()).with_to(to);
        match self.request(ping).await {
            // Any answer, even an error, comes after the server handled what was written before the ping.
            Some(_) => Ok(()),
            None => Err(ConnectorError::transient("the XMPP server did not confirm the message in time")),
        }
    }
}
