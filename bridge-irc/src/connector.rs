//! The IRC connector as far as the runtime is concerned: its identity, its third-party protocol description and
//! its namespaces. IRC connections, portals and puppets build on this.

use lattice_bridge_core::{
    BridgeHandle, Connector,
    connector::{ConnectorInfo, ConnectorResult},
    event::MatrixEvent,
    store::Portal,
};
use serde_json::{Value, json};

use crate::config::IrcSection;

/// The IRC connector.
#[derive(Debug, Clone)]
pub struct IrcConnector {
    section: IrcSection,
}

impl IrcConnector {
    /// A connector for the configured networks.
    pub fn new(section: IrcSection) -> Self {
        Self { section }
    }
}

impl Connector for IrcConnector {
    fn info(&self) -> ConnectorInfo {
        ConnectorInfo { protocol_id: "irc", protocol_name: "IRC", command_prefix: "!irc" }
    }

    async fn start(&self, _bridge: BridgeHandle) -> ConnectorResult<()> {
        for (id, network) in &self.section.networks {
            tracing::info!(network = %id, name = %network.name, servers = network.servers.len(), "IRC network configured");
        }
        Ok(())
    }

    async fn handle_matrix_event(&self, portal: Option<&Portal>, event: &MatrixEvent) -> ConnectorResult<()> {
        tracing::debug!(portal = ?portal.map(|portal| &portal.remote_key), event_type = %event.event_type,
            "no IRC connection carries this room yet");
        Ok(())
    }

    /// `m.protocol` per the spec's third-party networks section: one instance per configured network.
    fn thirdparty_protocol(&self) -> Option<Value> {
        let instances: Vec<Value> = self
            .section
            .networks
            .iter()
            .map(|(id, network)| json!({"network_id": id, "desc": network.name, "fields": {"network": id}}))
            .collect();
        Some(json!({
            "user_fields": ["network", "nickname"],
            "location_fields": ["network", "channel"],
            "icon": "",
            "field_types": {
                "network": {"regexp": "[a-z0-9-]+", "placeholder": "libera"},
                "nickname": {"regexp": "[^\\s#]+", "placeholder": "alice"},
                "channel": {"regexp": "[#&][^\\s,]+", "placeholder": "#channel"}
            },
            "instances": instances,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{NetworkConfig, ServerConfig};

    #[test]
    fn protocol_metadata_lists_each_network() {
        let mut section = IrcSection::default();
        section.networks.insert(
            "libera".into(),
            NetworkConfig {
                name: "Libera.Chat".into(),
                servers: vec![ServerConfig { host: "irc.libera.chat".into(), port: 6697, tls: true }],
            },
        );
        let metadata = IrcConnector::new(section).thirdparty_protocol().unwrap();
        assert_eq!(metadata["instances"][0]["network_id"], "libera");
        assert_eq!(metadata["instances"][0]["desc"], "Libera.Chat");
        assert_eq!(metadata["location_fields"], json!(["network", "channel"]));
    }
}
