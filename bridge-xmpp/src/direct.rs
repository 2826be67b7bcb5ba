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
    event::{MessageType, RemoteEvent, RemoteEventKind},
    store::Portal,
};
use serde_json::json;
use tokio_xmpp::parsers::{
    jid::{BareJid, Jid},
    message::{Id, Lang, Message, MessageType as XmppMessageType},
    message_correct::Replace,
    ns,
    oob::Oob,
};

use crate::{
    addressing::XmppIdentity,
    muc::{Gateway, find_payload, new_id, transient},
    xhtml::incoming_text,
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
        let Some((_, body)) = message.get_best_body_cloned(vec![]) else { return Ok(()) };
        let Some(ghost) = ghost_of(self, &sender) else { return Ok(()) };
        let portal = self.bridge.ensure_portal(&direct_spec(&sender, &matrix_user, ghost.clone())).await?;
        self.ensure_dm_member(&portal, &ghost, &matrix_user).await?;
        let remote_id = message.id.clone().map(|id| id.0);
        if let Some(kind) = self.oob_media(&message.payloads, &body).await {
            let event =
                RemoteEvent { portal: portal.remote_key, sender: Some(ghost), remote_id, timestamp_ms: None, kind };
            return self.bridge.push(event).await;
        }
        let (msgtype, text) = match body.strip_prefix("/me ") {
            Some(action) => (MessageType::Emote, action.to_owned()),
            None => (MessageType::Text, body),
        };
        let (body, html) = incoming_text(&message.payloads, &text);
        let kind = match find_payload::<Replace>(&message.payloads, "replace", ns::MESSAGE_CORRECT) {
            Some(replace) => RemoteEventKind::Edit { target: replace.id.0, body, html },
            None => RemoteEventKind::Message { msgtype, body, html, reply_to: None },
        };
        self.bridge
            .push(RemoteEvent { portal: portal.remote_key, sender: Some(ghost), remote_id, timestamp_ms: None, kind })
            .await
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

    /// Sends a Matrix user's message in a DM to the XMPP account as a `chat` message from their gateway JID.
    pub async fn send_chat(
        &self,
        to: &BareJid,
        user_id: &str,
        body: String,
        replace: Option<String>,
        oob: Option<Oob>,
    ) -> ConnectorResult<String> {
        self.section.check_message_size(&body)?;
        let from = self
            .addressing
            .puppet_jid(user_id)
            .and_then(|jid| jid.with_resource_str(DIRECT_RESOURCE).ok())
            .ok_or_else(|| ConnectorError::permanent(format!("{user_id} cannot be represented on XMPP")))?;
        if !self.link.state().online {
            return Err(transient("the XMPP component is reconnecting"));
        }
        let id = new_id();
        let mut message = Message::new(Some(Jid::from(to.clone()))).with_body(Lang::new(), body);
        message.type_ = XmppMessageType::Chat;
        message.from = Some(from.into());
        message.id = Some(Id(id.clone()));
        if let Some(original) = replace {
            message = message.with_payload(Replace { id: Id(original) });
        }
        if let Some(oob) = oob {
            message = message.with_payload(oob);
        }
        self.send(message).await?;
        Ok(id)
    }
}
