//! Matrix → XMPP delivery confirmation for the stanzas the bridge writes to the XMPP server itself (1:1 chats and
//! gateway MUCs; a MUC portal's message is confirmed by the MUC's reflection instead, see [`crate::muc`]).
//!
//! Components have no stream management (XEP-0198 is for client streams), but a server handles a stream's stanzas
//! in order: once it answers an IQ ping ([XEP-0199](https://xmpp.org/extensions/xep-0199.html)) written after a
//! message, it has routed the message. The Matrix event's queue item stays in the runtime's durable queue until then,
//! and its remote ID is recorded durably before the item is settled, so a replay after a crash finds it delivered.

use std::sync::Arc;

use lattice_bridge_core::{
    connector::{ConnectorError, ConnectorResult, confirm_later},
    store::MessageMapping,
};
use tokio_xmpp::parsers::{iq::Iq, jid::Jid, ping::Ping};

use crate::muc::Gateway;

/// Stanzas a Matrix event became, written to the server but not yet confirmed.
#[derive(Debug)]
pub struct Written {
    /// The remote ID to record once the server has them (messages; other events are not looked up by their ID).
    pub record: Option<MessageMapping>,
}

/// Leaves the event's queue item until the server has read what it became (`written`, if anything was written).
/// Outside the runtime's handling, waits for it here.
pub(crate) async fn confirm(gateway: Arc<Gateway>, written: Option<Written>) -> ConnectorResult<()> {
    let Some(Written { record }) = written else { return Ok(()) };
    let confirmation = async move {
        gateway.server_has_read().await?;
        if let Some(mapping) = record {
            gateway.record_delivery(mapping).await?;
        }
        Ok(())
    };
    match confirm_later(confirmation) {
        Ok(()) => Ok(()),
        Err(confirmation) => confirmation.await,
    }
}

impl Gateway {
    /// Waits until the server answers a ping written after everything the gateway wrote so far.
    pub(crate) async fn server_has_read(&self) -> ConnectorResult<()> {
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

    /// Records durably what a delivered Matrix event became on XMPP.
    pub(crate) async fn record_delivery(&self, mapping: MessageMapping) -> ConnectorResult<()> {
        self.bridge.store().record_delivery(mapping).await.map_err(ConnectorError::from)
    }
}
