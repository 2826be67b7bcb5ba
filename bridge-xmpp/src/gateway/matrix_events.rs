//! Matrix events to XMPP: one entry point per kind of Matrix event, each handing the event to the to-XMPP handler of
//! the portal's kind ([`PortalKind`]): a MUC portal ([`super::muc`]), a gateway MUC ([`super::gateway_muc`]) or a
//! direct chat ([`super::direct`]). Each returns what was written ([`Sent`]) for the runtime to settle the event's
//! queue item. Typing notifications and read receipts have theirs beside their handling, in
//! [`super::messages`].

use lattice_bridge_core::{
    connector::{ConnectorResult, Sent},
    event::MatrixEvent,
    store::Portal,
};
use serde_json::{Map, Value};
use tokio_xmpp::parsers::jid::BareJid;

use super::{Gateway, PortalKind};

/// Where a Matrix event with an XMPP message form goes.
enum Conversation {
    /// A bridged MUC.
    Muc(BareJid),
    /// A gateway MUC with XMPP occupants.
    GatewayMuc(BareJid),
    /// A direct chat with an XMPP account.
    Direct(BareJid),
}

impl Gateway {
    /// A Matrix message, edit, reaction or redaction from `sender`. A gateway MUC without XMPP occupants, and a
    /// direct chat's other members, have nothing to send.
    pub(crate) async fn on_matrix_content(
        &self,
        portal: &Portal,
        sender: &str,
        event: &MatrixEvent,
    ) -> ConnectorResult<Sent> {
        let conversation = match PortalKind::of(portal) {
            Some(PortalKind::Muc(room)) => Conversation::Muc(room),
            Some(PortalKind::GatewayMuc(room)) if !self.gateway_mucs().occupants(&room).is_empty() => {
                if event.event_id.is_none() {
                    return Ok(Sent::Nothing);
                }
                Conversation::GatewayMuc(room)
            }
            Some(PortalKind::Direct { account, matrix_user }) if matrix_user == sender => Conversation::Direct(account),
            _ => return Ok(Sent::Nothing),
        };
        let moderation = !matches!(conversation, Conversation::Direct(_));
        let Some(outgoing) = self.messages().outgoing(portal, sender, event, moderation).await? else {
            return Ok(Sent::Nothing);
        };
        match conversation {
            Conversation::Muc(room) => {
                self.muc().send_content(&room, portal, sender, event.event_id.as_deref(), outgoing).await
            }
            Conversation::GatewayMuc(room) => {
                let event_id = event.event_id.clone().unwrap_or_default();
                self.gateway_mucs().send_content(&room, sender, event_id, outgoing).await
            }
            Conversation::Direct(account) => self.direct().send_content(&account, sender, outgoing).await,
        }
    }

    /// A Matrix message, edit, reaction or redaction left from before a restart: whether the MUC of a MUC portal has
    /// it already (its reflection was lost with the process), found in the MUC's archive by the ID it was sent
    /// with; then what it became there. Gateway MUCs and direct chats cannot tell (their messages are sent again).
    pub(crate) async fn matrix_delivered_before(
        &self,
        portal: &Portal,
        sender: &str,
        event: &MatrixEvent,
    ) -> ConnectorResult<Option<lattice_bridge_core::connector::RemoteId>> {
        let (Some(PortalKind::Muc(room)), Some(event_id)) = (PortalKind::of(portal), event.event_id.as_deref()) else {
            return Ok(None);
        };
        let id = super::event_message_id(event_id);
        let Some(stanza_id) = self.muc().archived_as(&room, portal, &id).await? else { return Ok(None) };
        // What the reflection would have recorded (see `MucPortals::send_content`).
        let Some(crate::gateway::messages::Outgoing::Message { map_as, .. }) =
            self.messages().outgoing(portal, sender, event, true).await?
        else {
            return Ok(None);
        };
        self.bridge.messages().alias(&portal.remote_key, &id, &stanza_id);
        Ok(Some(map_as.unwrap_or(crate::gateway::messages::RemoteId::Message(stanza_id)).into()))
    }

    /// A membership change of `user_id`, sent by `sender`: a Matrix user joining or leaving a MUC portal makes their
    /// occupant join or leave the MUC; a member joining or leaving a gateway MUC is announced to its occupants.
    pub(crate) async fn on_matrix_membership(
        &self,
        portal: &Portal,
        sender: &str,
        user_id: &str,
        membership: &str,
        displayname: Option<&str>,
    ) -> ConnectorResult<()> {
        match PortalKind::of(portal) {
            Some(PortalKind::Muc(room)) => match membership {
                "join" if user_id == sender => {
                    self.muc().ensure_puppet(&room, portal, sender, displayname).await?;
                    Ok(())
                }
                "leave" | "ban" => self.muc().leave_puppet(&room, user_id).await,
                _ => Ok(()),
            },
            Some(PortalKind::GatewayMuc(room)) if !self.gateway_mucs().occupants(&room).is_empty() => {
                self.gateway_mucs().send_membership(&room, user_id, membership == "join", displayname).await
            }
            _ => Ok(()),
        }
    }

    /// A topic change by `sender`: the MUC's subject.
    pub(crate) async fn on_matrix_topic(&self, portal: &Portal, sender: &str, topic: &str) -> ConnectorResult<()> {
        match PortalKind::of(portal) {
            Some(PortalKind::Muc(room)) => self.muc().send_subject(&room, portal, sender, topic).await,
            Some(PortalKind::GatewayMuc(room)) => self.gateway_mucs().send_subject(&room, topic).await,
            _ => Ok(()),
        }
    }

    /// New power levels (`m.room.power_levels` content): gateway MUC occupants see the affiliations and roles
    /// that changed with them.
    pub(crate) async fn on_matrix_power_levels(
        &self,
        portal: &Portal,
        content: Map<String, Value>,
    ) -> ConnectorResult<()> {
        match PortalKind::of(portal) {
            Some(PortalKind::GatewayMuc(room)) if !self.gateway_mucs().occupants(&room).is_empty() => {
                self.gateway_mucs().power_changed(&room, content).await
            }
            _ => Ok(()),
        }
    }

    /// A Matrix user invited an XMPP ghost to a direct chat.
    pub(crate) async fn on_matrix_direct_invite(
        &self,
        room_id: &str,
        inviter: &str,
        ghost: &str,
    ) -> ConnectorResult<()> {
        self.direct().accept_invite(room_id, inviter, ghost).await
    }
}
