//! The XMPP connector: what the runtime calls. It starts the [gateway](crate::gateway) on a supervised component
//! connection, hands each Matrix event to the gateway's entry point for its kind, and settles the event's queue
//! item once XMPP has what it became.

use std::sync::{Arc, Mutex};

use lattice_bridge_core::{
    BridgeHandle, Connector, ConnectorError,
    connector::{
        Capabilities, ConnectorInfo, ConnectorResult, GhostSpec, InPortal, MembershipChange, PortalSpec, RemoteId, Sent,
    },
    event::{MatrixEvent, Message, Relation},
    store::Portal,
};
use serde_json::{Value, json};

use crate::{
    addressing::XmppIdentity,
    config::XmppSection,
    gateway::{Gateway, PortalKind, Started},
};

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
    running: Arc<Mutex<Running>>,
}

impl XmppConnector {
    /// A connector for the configured component.
    pub fn new(section: XmppSection) -> Self {
        Self { section, running: Arc::default() }
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

    /// A message, edit, reaction or redaction: the gateway's one path to XMPP for content.
    async fn content(&self, at: InPortal<'_>) -> ConnectorResult<Sent> {
        self.gateway()?.on_matrix_content(at.portal, at.sender, at.event).await
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
        if std::mem::replace(&mut self.running().started, true) {
            return Err(ConnectorError::permanent("the XMPP connector was started twice"));
        }
        let Started { gateway, tasks } = Gateway::start(&self.section, secret, bridge).await;
        let mut running = self.running();
        running.gateway = Some(gateway);
        running.tasks = tasks;
        drop(running);
        tracing::info!(domain = %self.section.component.domain, server = %self.section.component.server,
            "XMPP component supervisor started");
        Ok(())
    }

    async fn stop(&self) {
        let stopped = {
            let mut running = self.running();
            // Closed at once, so the XMPP server drops the component now rather than after a timeout.
            if let Some(gateway) = running.gateway.take() {
                gateway.close();
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

    async fn matrix_message(&self, at: InPortal<'_>, _message: &Message) -> ConnectorResult<Sent> {
        self.content(at).await
    }

    async fn matrix_delivered_before(&self, at: InPortal<'_>) -> ConnectorResult<Option<RemoteId>> {
        self.gateway()?.matrix_delivered_before(at.portal, at.sender, at.event).await
    }

    async fn matrix_edit(&self, at: InPortal<'_>, _target: &Relation, _new: &Message) -> ConnectorResult<Sent> {
        self.content(at).await
    }

    async fn matrix_reaction(&self, at: InPortal<'_>, _target: &Relation, _key: &str) -> ConnectorResult<Sent> {
        self.content(at).await
    }

    async fn matrix_redaction(
        &self,
        at: InPortal<'_>,
        _target: &Relation,
        _reason: Option<&str>,
    ) -> ConnectorResult<Sent> {
        self.content(at).await
    }

    async fn matrix_membership(&self, at: InPortal<'_>, change: MembershipChange<'_>) -> ConnectorResult<Sent> {
        let (user_id, membership, displayname) = (change.user_id, change.membership, change.displayname);
        self.gateway()?.on_matrix_membership(at.portal, at.sender, user_id, membership, displayname).await?;
        Ok(Sent::Nothing)
    }

    async fn matrix_topic(&self, at: InPortal<'_>, topic: &str) -> ConnectorResult<Sent> {
        self.gateway()?.on_matrix_topic(at.portal, at.sender, topic).await?;
        Ok(Sent::Nothing)
    }

    /// XMPP MUC subjects are topics; a MUC's name is its own.
    async fn matrix_name(&self, _at: InPortal<'_>, _name: &str) -> ConnectorResult<Sent> {
        Ok(Sent::Nothing)
    }

    /// The room's power levels (`m.room.power_levels`), as MUC affiliations.
    async fn matrix_other(&self, at: InPortal<'_>) -> ConnectorResult<Sent> {
        let event = at.event;
        if event.event_type == "m.room.power_levels" && event.raw.get("state_key").and_then(Value::as_str) == Some("") {
            let content = event.raw.get("content").and_then(Value::as_object).cloned().unwrap_or_default();
            self.gateway()?.on_matrix_power_levels(at.portal, content).await?;
        }
        Ok(Sent::Nothing)
    }

    async fn matrix_typing(&self, portal: &Portal, event: &MatrixEvent, user_ids: &[String]) -> ConnectorResult<()> {
        self.gateway()?.on_matrix_typing(portal, &event.room_id, user_ids).await
    }

    async fn matrix_receipts(
        &self,
        portal: &Portal,
        event: &MatrixEvent,
        receipts: &[(String, String)],
    ) -> ConnectorResult<()> {
        self.gateway()?.on_matrix_receipts(portal, &event.room_id, receipts).await
    }

    async fn matrix_direct_invite(&self, event: &MatrixEvent, sender: &str, invitee: &str) -> ConnectorResult<()> {
        self.gateway()?.on_matrix_direct_invite(&event.room_id, sender, invitee).await
    }

    async fn resolve_user(&self, user_id: &str) -> ConnectorResult<Option<GhostSpec>> {
        let Some(gateway) = self.try_gateway() else { return Ok(None) };
        let Some(identity) = gateway.addressing().identity_of_ghost(user_id) else { return Ok(None) };
        let displayname = match &identity {
            XmppIdentity::Account(jid) => jid.to_string(),
            XmppIdentity::Occupant(jid) => jid.resource().to_string(),
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
        Ok(gateway.muc().portal_of_alias(alias))
    }

    async fn portal_created(&self, portal: &Portal) -> ConnectorResult<()> {
        let (Some(PortalKind::Muc(room)), Some(gateway)) = (PortalKind::of(portal), self.try_gateway()) else {
            return Ok(());
        };
        gateway.muc().spawn_first_join(room, portal.clone());
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
mod tests;
