//! The IRC connector as the runtime sees it: its identity and third-party protocol description, alias and ghost
//! resolution, and the routing of each Matrix event kind to the network a portal belongs to.

use std::{
    collections::BTreeMap,
    sync::{Arc, OnceLock},
};

use lattice_bridge_core::{
    BridgeHandle, Connector, ConnectorError,
    connector::{
        Capabilities, ConnectorInfo, ConnectorResult, GhostSpec, InPortal, MembershipChange, PortalSpec, Sent,
    },
    event::{MatrixEvent, Message, Relation},
    store::Portal,
};
use serde_json::{Value, json};

use crate::{
    config::{EdgeMode, IrcSection},
    edge::{EdgeCommand, EdgeLink},
    ident::IdentRegistry,
    ids::PortalKind,
    network::Network,
};

/// The IRC connector.
#[derive(Clone)]
pub struct IrcConnector {
    section: IrcSection,
    networks: Arc<OnceLock<BTreeMap<String, Arc<Network>>>>,
    /// How to reach (or start) the edge that holds the connections, when they live there.
    edge: Option<EdgeCommand>,
}

impl std::fmt::Debug for IrcConnector {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("IrcConnector").field("networks", &self.section.networks.keys()).finish()
    }
}

impl IrcConnector {
    /// A connector for the configured networks.
    pub fn new(section: IrcSection) -> Self {
        Self { section, networks: Arc::new(OnceLock::new()), edge: None }
    }

    /// Holds the IRC connections in an edge process started from this program (`lattice-irc edge`), unless the
    /// config's `edge.mode` is `off`: what `lattice-irc run` does.
    #[must_use]
    pub fn with_edge_binary<B>(mut self, config: &lattice_config::Config<B>) -> Self {
        if self.section.edge.mode == EdgeMode::Off {
            return self;
        }
        let Ok(binary) = std::env::current_exe() else { return self };
        let socket = match &self.section.edge.socket {
            Some(socket) => socket.into(),
            None => crate::edge::default_socket(&config.appservice.registration, &config.appservice.id),
        };
        let ident = &self.section.ident;
        self.edge = Some(EdgeCommand {
            socket,
            binary,
            linger_secs: self.section.edge.linger_secs,
            ident_bind: ident.enabled.then(|| ident.bind.clone()),
            log_filter: Some(config.logging.filter.clone()),
        });
        self
    }

    pub(crate) fn networks(&self) -> ConnectorResult<&BTreeMap<String, Arc<Network>>> {
        self.networks.get().ok_or_else(|| ConnectorError::transient("the IRC networks are still starting"))
    }

    /// The network a portal key belongs to.
    pub(crate) fn network_of(&self, key: &str) -> ConnectorResult<Option<Arc<Network>>> {
        let Some(kind) = PortalKind::parse(key) else { return Ok(None) };
        Ok(self.networks()?.get(kind.network()).cloned())
    }

    /// Who the connector is, without an instance (for the bridge-info state that commands set).
    pub(crate) const fn info_static() -> ConnectorInfo {
        ConnectorInfo { protocol_id: "irc", protocol_name: "IRC", command_prefix: "!irc" }
    }

    /// Closes every IRC connection (QUIT), for a clean shutdown.
    pub fn shutdown(&self) {
        for network in self.networks.get().into_iter().flat_map(BTreeMap::values) {
            network.shutdown();
        }
    }
}

impl Connector for IrcConnector {
    fn info(&self) -> ConnectorInfo {
        Self::info_static()
    }

    async fn start(&self, bridge: BridgeHandle) -> ConnectorResult<()> {
        let ident = IdentRegistry::default();
        let edge = match &self.edge {
            // Without networks there is nothing to hold.
            Some(_) if self.section.networks.is_empty() => None,
            Some(command) => Some(
                EdgeLink::start(command.clone()).await.map_err(|error| ConnectorError::transient(error.to_string()))?,
            ),
            None if self.section.edge.mode == EdgeMode::On => {
                return Err(ConnectorError::permanent(
                    "edge.mode is on, but this program cannot start the IRC edge (run lattice-irc)",
                ));
            }
            None => None,
        };
        // The edge answers ident queries about its own connections.
        if self.section.ident.enabled && edge.is_none() {
            let bind = &self.section.ident.bind;
            let listener = tokio::net::TcpListener::bind(bind.as_str()).await.map_err(|error| {
                ConnectorError::permanent(format!(
                    "cannot listen for ident queries on {bind} (bridge.ident.bind): {error}"
                ))
            })?;
            tracing::info!(%bind, "ident server listening");
            tokio::spawn(crate::ident::serve(listener, ident.clone()));
        }
        let mut networks = BTreeMap::new();
        for (id, config) in &self.section.networks {
            tracing::info!(network = %id, name = %config.name, servers = config.servers.len(), "starting IRC network");
            networks.insert(
                id.clone(),
                Network::start(id, config, &self.section, bridge.clone(), ident.clone(), edge.clone()).await?,
            );
        }
        if self.networks.set(networks).is_err() {
            return Err(ConnectorError::permanent("the IRC connector was started twice"));
        }
        Ok(())
    }

    fn capabilities(&self, _portal: &Portal) -> Capabilities {
        Capabilities {
            max_text_length: 4096,
            formatting: true,
            edits: true,
            replies: true,
            // IRCv3 +draft/react and +typing, on connections that negotiated message-tags.
            reactions: true,
            typing: true,
            ..Capabilities::default()
        }
    }

    async fn matrix_message(&self, at: InPortal<'_>, message: &Message) -> ConnectorResult<Sent> {
        match self.network_of(&at.portal.remote_key)? {
            Some(network) => network.matrix_message(at, message).await,
            None => Ok(Sent::Nothing),
        }
    }

    async fn matrix_edit(&self, at: InPortal<'_>, target: &Relation, new_content: &Message) -> ConnectorResult<Sent> {
        match self.network_of(&at.portal.remote_key)? {
            Some(network) => network.matrix_edit(at, target, new_content).await,
            None => Ok(Sent::Nothing),
        }
    }

    async fn matrix_reaction(&self, at: InPortal<'_>, target: &Relation, key: &str) -> ConnectorResult<Sent> {
        match self.network_of(&at.portal.remote_key)? {
            Some(network) => network.matrix_reaction(at, target, key).await,
            None => Ok(Sent::Nothing),
        }
    }

    async fn matrix_redaction(
        &self,
        at: InPortal<'_>,
        target: &Relation,
        reason: Option<&str>,
    ) -> ConnectorResult<Sent> {
        match self.network_of(&at.portal.remote_key)? {
            Some(network) => network.matrix_redaction(at, target, reason).await,
            None => Ok(Sent::Nothing),
        }
    }

    async fn matrix_membership(&self, at: InPortal<'_>, change: MembershipChange<'_>) -> ConnectorResult<Sent> {
        match self.network_of(&at.portal.remote_key)? {
            Some(network) => network.matrix_membership(at, change).await,
            None => Ok(Sent::Nothing),
        }
    }

    async fn matrix_topic(&self, at: InPortal<'_>, topic: &str) -> ConnectorResult<Sent> {
        match self.network_of(&at.portal.remote_key)? {
            Some(network) => network.matrix_topic(at, topic).await,
            None => Ok(Sent::Nothing),
        }
    }

    /// IRC has no room names of its own: a channel's name is the channel.
    async fn matrix_name(&self, _at: InPortal<'_>, _name: &str) -> ConnectorResult<Sent> {
        Ok(Sent::Nothing)
    }

    async fn matrix_typing(&self, portal: &Portal, event: &MatrixEvent, user_ids: &[String]) -> ConnectorResult<()> {
        if let Some(network) = self.network_of(&portal.remote_key)? {
            network.matrix_typing(portal, &event.room_id, user_ids).await;
        }
        Ok(())
    }

    /// IRC has no read receipts.
    async fn matrix_receipts(
        &self,
        _portal: &Portal,
        _event: &MatrixEvent,
        _receipts: &[(String, String)],
    ) -> ConnectorResult<()> {
        Ok(())
    }

    async fn matrix_direct_invite(&self, event: &MatrixEvent, sender: &str, invitee: &str) -> ConnectorResult<()> {
        // Each network looks at whether the invitee is one of its ghosts.
        for network in self.networks()?.values() {
            network.matrix_direct_invite(event, sender, invitee).await?;
        }
        Ok(())
    }

    async fn resolve_user(&self, user_id: &str) -> ConnectorResult<Option<GhostSpec>> {
        for network in self.networks()?.values() {
            if let Some(ghost) = network.ghost_for_user_id(user_id).await {
                return Ok(Some(ghost));
            }
        }
        Ok(None)
    }

    async fn resolve_alias(&self, alias: &str) -> ConnectorResult<Option<PortalSpec>> {
        Ok(self.networks()?.values().find_map(|network| network.portal_for_alias(alias)))
    }

    async fn portal_created(&self, portal: &Portal) -> ConnectorResult<()> {
        if let Some(network) = self.network_of(&portal.remote_key)?
            && let Some(channel) = PortalKind::parse(&portal.remote_key).and_then(PortalKind::channel)
        {
            network.add_channel(portal, channel);
        }
        Ok(())
    }

    fn http_routes(&self) -> Option<axum::Router> {
        crate::provisioning::router(self.clone(), &self.section.provisioning)
    }

    fn commands(&self) -> Vec<lattice_bridge_core::connector::CommandSpec> {
        crate::commands::SPECS.to_vec()
    }

    async fn run_command(
        &self,
        name: &str,
        context: lattice_bridge_core::connector::CommandContext,
    ) -> ConnectorResult<String> {
        crate::commands::run(self, name, context).await
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
            NetworkConfig::new(
                "Libera.Chat",
                vec![ServerConfig { host: "irc.libera.chat".into(), port: 6697, tls: true, password: None }],
            ),
        );
        let metadata = IrcConnector::new(section).thirdparty_protocol().unwrap();
        assert_eq!(metadata["instances"][0]["network_id"], "libera");
        assert_eq!(metadata["instances"][0]["desc"], "Libera.Chat");
        assert_eq!(metadata["location_fields"], json!(["network", "channel"]));
    }
}
