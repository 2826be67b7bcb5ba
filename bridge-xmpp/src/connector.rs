//! The XMPP connector: what the runtime calls. It starts the supervised component connection ([`component`]),
//! feeds the server's stanzas to the MUC gateway ([`muc`]) one at a time, rejoins every MUC on each new connection,
//! and turns Matrix events in portals into MUC traffic.

use std::sync::{Arc, Mutex};

use lattice_bridge_core::{
    BridgeHandle, Connector, ConnectorError,
    connector::{Capabilities, ConnectorInfo, ConnectorResult, GhostSpec, PortalSpec},
    event::{MatrixEvent, MatrixEventKind},
    store::{MessageMapping, Portal},
};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use xmpp_parsers::jid::BareJid;

use crate::{
    addressing::Addressing,
    component,
    config::XmppSection,
    delivery::{self, Written},
    direct, hosted,
    lanes::Lanes,
    messages::Outgoing,
    muc::{self, Gateway},
};

/// How many stanzas from the server may wait for the bridge before the connection stops being read.
const INBOUND_CAPACITY: usize = 1024;

/// The gateway while the connector runs, and the tasks that feed it. Stopping drops both, which drops the last
/// handle on the component link, so the supervisor closes the connection.
#[derive(Debug, Default)]
struct Running {
    started: bool,
    gateway: Option<Arc<Gateway>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The XMPP connector.
#[derive(Debug, Clone)]
pub struct XmppConnector {
    section: XmppSection,
    appservice_token: Option<String>,
    running: Arc<Mutex<Running>>,
}

impl XmppConnector {
    /// A connector for the configured component.
    pub fn new(section: XmppSection) -> Self {
        Self { section, appservice_token: None, running: Arc::default() }
    }

    /// Gives the connector the appservice token (`as_token`), with which it reads a Matrix room's history and
    /// members' names for XMPP users joining it as a gateway MUC. Without it they get the members' user IDs and
    /// no history.
    pub fn with_appservice_token(mut self, token: impl Into<String>) -> Self {
        self.appservice_token = Some(token.into());
        self
    }

    fn running(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn try_gateway(&self) -> Option<Arc<Gateway>> {
        self.running().gateway.clone()
    }

    fn gateway(&self) -> ConnectorResult<Arc<Gateway>> {
        self.try_gateway().ok_or_else(|| ConnectorError::transient("the XMPP connector is not running"))
    }

    fn addressing(&self, server_name: &str) -> Addressing {
        Addressing::new(&self.section, server_name)
    }

    /// A Matrix event in a direct-chat portal: the DM's Matrix user's messages go to the XMPP account.
    async fn handle_direct_event(
        &self,
        portal: &Portal,
        jid: &BareJid,
        user: &str,
        sender: &str,
        event: &MatrixEvent,
    ) -> ConnectorResult<()> {
        if sender != user {
            return Ok(());
        }
        let gateway = self.gateway()?;
        let Some(Outgoing::Message { body, payloads, map_as }) = gateway.outgoing(portal, sender, event, false).await?
        else {
            return Ok(());
        };
        let id = gateway.send_chat(jid, sender, body, payloads).await?;
        let record = event.event_id.as_ref().map(|event_id| MessageMapping {
            event_id: event_id.clone(),
            room_id: portal.room_id.clone(),
            portal_key: portal.remote_key.clone(),
            remote_id: map_as.unwrap_or(id),
        });
        delivery::confirm(gateway, Some(Written { record })).await
    }
}

impl Connector for XmppConnector {
    fn info(&self) -> ConnectorInfo {
        ConnectorInfo { protocol_id: "xmpp", protocol_name: "XMPP", command_prefix: "!xmpp" }
    }

    async fn start(&self, bridge: BridgeHandle) -> ConnectorResult<()> {
        let secret = self
            .section
            .component
            .secret
            .resolve()
            .map_err(|error| ConnectorError::permanent(format!("bridge.component.secret: {error}")))?;
        let (inbound_sender, mut inbound) = mpsc::channel(INBOUND_CAPACITY);
        let occupant_copies = muc::occupant_copies(&self.section.component.domain);
        let link = component::spawn(&self.section.component, secret, inbound_sender, occupant_copies);
        let addressing = self.addressing(bridge.server_name());
        let matrix_api = self
            .appservice_token
            .clone()
            .map(|token| hosted::MatrixApi::new(bridge.matrix().homeserver_url().clone(), token));
        let gateway = Arc::new(Gateway::new(self.section.clone(), addressing, bridge, link.clone(), matrix_api));
        if std::mem::replace(&mut self.running().started, true) {
            return Err(ConnectorError::permanent("the XMPP connector was started twice"));
        }
        // Before any Matrix event is handled (they wait for the gateway), so none misses a restored occupant.
        gateway.restore_hosted().await;
        self.running().gateway = Some(Arc::clone(&gateway));
        let handler = Arc::clone(&gateway);
        let handler = tokio::spawn(async move {
            let lane_handler = Arc::clone(&handler);
            let lanes = Lanes::new(move |stanza| {
                let gateway = Arc::clone(&lane_handler);
                async move { gateway.handle_stanza(stanza).await }
            });
            while let Some(stanza) = inbound.recv().await {
                if let tokio_xmpp::Stanza::Presence(presence) = &stanza {
                    handler.sync_presence_avatar(presence);
                }
                match handler.lane_of(&stanza) {
                    Some(lane) => lanes.dispatch(lane, stanza).await,
                    None => handler.handle_stanza(stanza).await,
                }
            }
        });
        let self_pings = tokio::spawn(Arc::clone(&gateway).run_self_pings());
        // Every new connection is a fresh stream: rejoin every MUC on it.
        let mut state = link.subscribe();
        let rejoiner = tokio::spawn(async move {
            let mut rejoined = 0;
            loop {
                let current = *state.borrow_and_update();
                if current.online && current.generation != rejoined {
                    rejoined = current.generation;
                    let gateway = Arc::clone(&gateway);
                    tokio::spawn(async move { gateway.rejoin_all().await });
                }
                if state.changed().await.is_err() {
                    return;
                }
            }
        });
        self.running().tasks = vec![handler, rejoiner, self_pings];
        tracing::info!(domain = %self.section.component.domain, server = %self.section.component.server,
            "XMPP component supervisor started");
        Ok(())
    }

    async fn stop(&self) {
        let stopped = {
            let mut running = self.running();
            // Closed at once, so the XMPP server drops the component now rather than after a timeout.
            if let Some(gateway) = running.gateway.take() {
                gateway.link.close();
            }
            std::mem::take(&mut running.tasks)
        };
        for task in stopped {
            task.abort();
        }
    }

    fn capabilities(&self, _portal: &Portal) -> Capabilities {
        Capabilities {
            max_text_length: self.section.max_message_bytes,
            formatting: true,
            edits: true,
            replies: true,
            reactions: true,
            redactions: true,
            typing: true,
            receipts: true,
        }
    }

    async fn handle_matrix_event(&self, portal: Option<&Portal>, event: &MatrixEvent) -> ConnectorResult<()> {
        if let (MatrixEventKind::Typing { .. } | MatrixEventKind::Receipts(_), Some(portal)) = (&event.kind, portal) {
            return self.gateway()?.ephemeral(portal, event).await;
        }
        let Some(sender) = event.sender.as_deref() else { return Ok(()) };
        let Some(portal) = portal else {
            // A Matrix user opening a direct chat with an XMPP ghost.
            if let MatrixEventKind::Membership { user_id, membership, is_direct: true, .. } = &event.kind
                && membership == "invite"
            {
                self.gateway()?.accept_direct_invite(&event.room_id, sender, user_id).await?;
            }
            return Ok(());
        };
        if let Some(room) = hosted::portal_room(portal) {
            let gateway = self.gateway()?;
            let written = gateway.hosted_matrix_event(&room, portal, sender, event).await?;
            return delivery::confirm(gateway, written).await;
        }
        if let Some((jid, user)) = direct::portal_parties(portal) {
            return self.handle_direct_event(portal, &jid, &user, sender, event).await;
        }
        let Some(room) = muc::portal_room(portal) else { return Ok(()) };
        let gateway = self.gateway()?;
        match gateway.outgoing(portal, sender, event, true).await? {
            Some(Outgoing::Message { body, payloads, map_as }) => {
                let reflection = gateway.send_groupchat(&room, portal, sender, body, payloads).await?;
                let (portal, event_id) = (portal.clone(), event.event_id.clone());
                // Delivered once the MUC reflects it; the room's next messages go out meanwhile.
                let confirmation = async move {
                    let id = reflection.await?;
                    // Durable before the item is settled: a replay after a crash finds the message delivered.
                    match event_id {
                        Some(event_id) => {
                            let remote_id = map_as.unwrap_or(id);
                            let (room_id, portal_key) = (portal.room_id, portal.remote_key);
                            gateway.record_delivery(MessageMapping { event_id, room_id, portal_key, remote_id }).await
                        }
                        None => Ok(()),
                    }
                };
                if let Err(confirmation) = lattice_bridge_core::confirm_later(confirmation) {
                    confirmation.await?;
                }
                return Ok(());
            }
            Some(Outgoing::Moderate(request)) => {
                return gateway.request_moderation(&room, portal, sender, request).await;
            }
            None => {}
        }
        match &event.kind {
            MatrixEventKind::Membership { user_id, membership, displayname, .. } if user_id == sender => {
                match membership.as_str() {
                    "join" => {
                        gateway.ensure_puppet(&room, portal, sender, displayname.as_deref()).await?;
                    }
                    "leave" | "ban" => gateway.leave_puppet(&room, sender).await?,
                    _ => {}
                }
            }
            MatrixEventKind::Membership { user_id, membership, .. } if membership == "leave" || membership == "ban" => {
                gateway.leave_puppet(&room, user_id).await?;
            }
            MatrixEventKind::Topic(topic) => gateway.send_subject(&room, portal, sender, topic).await?,
            _ => {}
        }
        Ok(())
    }

    async fn resolve_user(&self, user_id: &str) -> ConnectorResult<Option<GhostSpec>> {
        let Some(gateway) = self.try_gateway() else { return Ok(None) };
        let Some(identity) = gateway.addressing().identity_of_ghost(user_id) else { return Ok(None) };
        let displayname = match &identity {
            crate::addressing::XmppIdentity::Account(jid) => jid.to_string(),
            crate::addressing::XmppIdentity::Occupant(jid) => jid.resource().to_string(),
        };
        Ok(Some(GhostSpec {
            user_id: user_id.to_owned(),
            remote_id: identity.as_str().to_owned(),
            displayname: Some(displayname),
            avatar_url: None,
        }))
    }

    async fn resolve_alias(&self, alias: &str) -> ConnectorResult<Option<PortalSpec>> {
        let gateway = self.gateway()?;
        Ok(gateway.addressing().muc_of_alias(alias).map(|room| muc::portal_spec(gateway.addressing(), &room)))
    }

    async fn portal_created(&self, portal: &Portal) -> ConnectorResult<()> {
        let (Some(room), Some(gateway)) = (muc::portal_room(portal), self.try_gateway()) else { return Ok(()) };
        let portal = portal.clone();
        tokio::spawn(async move {
            // A new portal: first its MUC's recent archive, then the join asks for history after it.
            if let Err(error) = gateway.backfill(&room, &portal).await {
                tracing::warn!(%room, %error, "cannot fill the new portal from the MUC's archive");
            }
            if let Err(error) = gateway.ensure_listening(&room, &portal).await {
                tracing::warn!(%room, %error, "cannot join the MUC of a new portal yet; it is joined on reconnection");
            }
        });
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
