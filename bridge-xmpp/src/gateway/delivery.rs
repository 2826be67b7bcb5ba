//! When XMPP has what a Matrix event became: the confirmation behind a [`Sent::Later`].
//!
//! A MUC portal's message is confirmed by the MUC's reflection ([`super::muc`]). For the stanzas the bridge writes
//! to the XMPP server itself (1:1 chats and gateway MUCs): components have no stream management (XEP-0198 is for
//! client streams), but a server handles a stream's stanzas in order, so once it answers an IQ ping
//! ([XEP-0199](https://xmpp.org/extensions/xep-0199.html)) written after a message, it has routed the message. The
//! Matrix event's queue item stays in the runtime's durable queue until then, and its remote ID is recorded durably
//! before the item is settled, so a replay after a crash finds it delivered.

use lattice_bridge_core::connector::{ConnectorError, ConnectorResult, RemoteId, Sent};
use tokio_xmpp::parsers::{iq::Iq, jid::Jid, ping::Ping};

use super::Gateway;

impl Gateway {
    /// Stanzas the gateway wrote to the server itself: confirmed once the server has read them, then
    /// `remote_id` is the remote message they became.
    pub(crate) fn written(&self, remote_id: Option<RemoteId>) -> Sent {
        let gateway = self.arc();
        Sent::later(async move {
            gateway.server_has_read().await?;
            Ok(remote_id)
        })
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
