//! The XMPP connector as far as the runtime is concerned: its identity and third-party protocol description. The
//! component connection, MUCs and gateway rooms build on this.

use lattice_bridge_core::{
    BridgeHandle, Connector,
    connector::{ConnectorInfo, ConnectorResult},
    event::MatrixEvent,
    store::Portal,
};
use serde_json::{Value, json};

use crate::config::XmppSection;

/// The XMPP connector.
#[derive(Debug, Clone)]
pub struct XmppConnector {
    section: XmppSection,
}

impl XmppConnector {
    /// A connector for the configured component.
    pub fn new(section: XmppSection) -> Self {
        Self { section }
    }
}

impl Connector for XmppConnector {
    fn info(&self) -> ConnectorInfo {
        ConnectorInfo { protocol_id: "xmpp", protocol_name: "XMPP", command_prefix: "!xmpp" }
    }

    async fn start(&self, _bridge: BridgeHandle) -> ConnectorResult<()> {
        tracing::info!(domain = %self.section.component.domain, server = %self.section.component.server,
            "XMPP component configured");
        Ok(())
    }

    async fn handle_matrix_event(&self, portal: Option<&Portal>, event: &MatrixEvent) -> ConnectorResult<()> {
        tracing::debug!(portal = ?portal.map(|portal| &portal.remote_key), event_type = %event.event_type,
            "no XMPP session carries this room yet");
        Ok(())
    }

    /// `m.protocol` per the spec's third-party networks section: the gateway is one instance.
    fn thirdparty_protocol(&self) -> Option<Value> {
        let domain = &self.section.component.domain;
        Some(json!({
            "user_fields": ["jid"],
            "location_fields": ["room"],
            "icon": "",
            "field_types": {
                "jid": {"regexp": "[^@/\\s]+@[^@/\\s]+", "placeholder": "alice@example.org"},
                "room": {"regexp": "[^@/\\s]+@[^@/\\s]+", "placeholder": "room@conference.example.org"}
            },
            "instances": [{"network_id": domain, "desc": format!("XMPP via {domain}"), "fields": {}}],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_metadata_names_the_gateway() {
        let metadata = XmppConnector::new(XmppSection::default()).thirdparty_protocol().unwrap();
        assert_eq!(metadata["instances"][0]["network_id"], "bridge.localhost");
        assert_eq!(metadata["user_fields"], json!(["jid"]));
    }
}
