//! One-to-one chats ([RFC 6121 §5](https://www.rfc-editor.org/rfc/rfc6121#section-5)): an XMPP user's `chat`
//! message to a Matrix user's gateway JID (`alice\40example.org@{gateway}`) becomes a Matrix DM from the XMPP user's
//! ghost, and the Matrix user's replies go back as `chat` messages from that gateway JID.
//!
//! A Matrix user who left the DM room is invited again by the next XMPP message, so nothing vanishes into a room
//! nobody reads (matrix-bifrost #213).

use std::str::FromStr;

use lattice_bridge_core::{
    ConnectorError,
    connector::{BridgeInfoSpec, ConnectorResult, DirectChat, GhostSpec, PortalSpec},
    store::Portal,
};
use serde_json::json;
use tokio_xmpp::parsers::{
    jid::{BareJid, Jid},
    message::{Message, MessageType as XmppMessageType},
    minidom::Element,
};

use crate::{
    addressing::XmppIdentity,
    messages::Inbound,
    muc::{Gateway, outgoing, transient},
    xep::ids::MessageIds,
};

/// The resource Matrix users' chat messages come from.
const DIRECT_RESOURCE: &str = "matrix";

/// The portal key of the direct chat between a Matrix user and an XMPP account.
pub fn portal_key(matrix_user: &str, jid: &BareJid) -> String {
    format!("dm/{matrix_user}/{jid}")
}

/// The XMPP account and the Matrix user of a direct-chat portal, if the portal is one.
pub fn portal_parties(portal: &Portal) -> Option<(BareJid, String)> {
    let jid = portal.metadata.get("dm")?.as_str().and_then(|jid| BareJid::from_str(jid).ok())?;
    let user = portal.metadata.get("user")?.as_str()?.to_owned();
    Some((jid, user))
}

fn ghost_of(gateway: &Gateway, jid: &BareJid) -> Option<GhostSpec> {
    let identity = XmppIdentity::Account(jid.clone());
    Some(GhostSpec {
        user_id: gateway.addressing.ghost_for(&identity)?,
        remote_id: jid.to_string(),
        displayname: Some(jid.to_string()),
        avatar_url: None,
    })
}

fn direct_spec(jid: &BareJid, matrix_user: &str, ghost: GhostSpec) -> PortalSpec {
    PortalSpec {
        remote_key: portal_key(matrix_user, jid),
        alias_localpart: None,
        name: None,
        topic: None,
        bridge_info: BridgeInfoSpec {
            network_id: jid.domain().to_string(),
            network_name: jid.domain().to_string(),
            channel_id: jid.to_string(),
            channel_name: jid.to_string(),
        },
        public: false,
        direct: Some(DirectChat { ghost, matrix_user: matrix_user.to_owned() }),
        metadata: json!({"dm": jid.as_str(), "user": matrix_user}),
    }
}

impl Gateway {
    /// A `chat` (or `normal`) message from an XMPP account to a Matrix user's gateway JID.
    pub(crate) async fn on_direct_message(&self, message: Message) -> lattice_bridge_core::Result<()> {
        let (Some(from), Some(to)) = (message.from.clone(), message.to.clone()) else { return Ok(()) };
        let sender = from.to_bare();
        // Never bridge the gateway's own JIDs back, and leave MUC private messages to the MUC side.
        if self.addressing.is_gateway_domain(sender.domain().as_str())
            || sender.node().is_none()
            || self.is_bridged_muc(&sender)
        {
            return Ok(());
        }
        let Some(matrix_user) = self.addressing.matrix_user_of(&to.to_bare()) else { return Ok(()) };
        let Some(ghost) = ghost_of(self, &sender) else { return Ok(()) };
        let portal = self.bridge.ensure_portal(&direct_spec(&sender, &matrix_user, ghost.clone())).await?;
        self.ensure_dm_member(&portal, &ghost, &matrix_user).await?;
        let ids = MessageIds::of(&message, None);
        let inbound = Inbound { portal: &portal.remote_key, sender: Some(ghost.clone()), timestamp_ms: None };
        self.push_inbound(inbound, &message, &ids).await?;
        // The contact's XEP-0084 picture, asked once in a while (after the message: it must not wait for this).
        self.check_user_avatar(ghost, to, sender).await;
        Ok(())
    }

    /// Invites the Matrix user back into the DM room when they left it. Asked of the homeserver on every message
    /// rather than cached: a leave that the bridge has not processed yet must not swallow the message.
    async fn ensure_dm_member(
        &self,
        portal: &Portal,
        ghost: &GhostSpec,
        matrix_user: &str,
    ) -> lattice_bridge_core::Result<()> {
        let intent = self.bridge.sync_ghost(ghost).await?;
        let (Ok(room), Ok(user)) =
            (ruma::OwnedRoomId::try_from(portal.room_id.as_str()), ruma::OwnedUserId::try_from(matrix_user))
        else {
            return Ok(());
        };
        let membership = intent
            .get_state_event(&room, "m.room.member", matrix_user)
            .await?
            .and_then(|content| content.get("membership").and_then(|m| m.as_str()).map(str::to_owned));
        if !matches!(membership.as_deref(), Some("join" | "invite")) {
            tracing::info!(room_id = %portal.room_id, %matrix_user, "inviting the Matrix user back into the DM");
            intent.invite(&room, &user).await?;
        }
        Ok(())
    }

    /// A Matrix user invited an XMPP ghost to a direct chat: the ghost joins and the room becomes the DM portal.
    pub async fn accept_direct_invite(&self, room_id: &str, inviter: &str, ghost_user: &str) -> ConnectorResult<()> {
        let Some(XmppIdentity::Account(jid)) = self.addressing.identity_of_ghost(ghost_user) else { return Ok(()) };
        if self.addressing.puppet_jid(inviter).is_none() {
            return Ok(());
        }
        let Some(ghost) = ghost_of(self, &jid) else { return Ok(()) };
        let intent = self.bridge.sync_ghost(&ghost).await.map_err(|error| {
            if error.is_transient() {
                transient(error.to_string())
            } else {
                ConnectorError::permanent(error.to_string())
            }
        })?;
        let room = ruma::OwnedRoomId::try_from(room_id)
            .map_err(|_| ConnectorError::permanent(format!("{room_id} is not a room ID")))?;
        intent.ensure_joined(&room).await?;
        let spec = direct_spec(&jid, inviter, ghost);
        let portal = Portal {
            remote_key: spec.remote_key,
            room_id: room_id.to_owned(),
            alias: None,
            name: None,
            topic: None,
            metadata: spec.metadata,
        };
        self.bridge.store().upsert_portal(&portal).await?;
        Ok(())
    }

    /// Sends a Matrix user's message in a DM to the XMPP account as a `chat` message from their gateway JID;
    /// returns its ID.
    pub async fn send_chat(
        &self,
        to: &BareJid,
        user_id: &str,
        body: Option<String>,
        payloads: Vec<Element>,
    ) -> ConnectorResult<String> {
        // Ask for displayed markers (XEP-0333) on what people write, not on reactions or retractions.
        let markable = body.is_some() && payloads.is_empty();
        let (mut message, id) = outgoing(&self.section, Message::new(Some(Jid::from(to.clone()))), body, payloads)?;
        if markable {
            message.payloads.push(crate::xep::chat_states::markable());
        }
        let from = self
            .addressing
            .puppet_jid(user_id)
            .and_then(|jid| jid.with_resource_str(DIRECT_RESOURCE).ok())
            .ok_or_else(|| ConnectorError::permanent(format!("{user_id} cannot be represented on XMPP")))?;
        if !self.link.state().online {
            return Err(transient("the XMPP component is reconnecting"));
        }
        message.type_ = XmppMessageType::Chat;
        message.from = Some(from.into());
        self.send(message).await?;
        Ok(id)
    }
}
