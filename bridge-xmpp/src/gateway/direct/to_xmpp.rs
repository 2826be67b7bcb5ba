//! Matrix → XMPP in direct chats: a Matrix user's messages go to the XMPP account as `chat` messages from their
//! gateway JID, and a Matrix user inviting an XMPP ghost opens the direct chat.

use lattice_bridge_core::{
    ConnectorError,
    connector::{ConnectorResult, Sent},
    store::Portal,
};
use tokio_xmpp::parsers::{
    jid::{BareJid, Jid},
    message::{Message, MessageType as XmppMessageType},
    minidom::Element,
};

use super::{DIRECT_RESOURCE, Direct, direct_spec, ghost_of};
use crate::{
    addressing::XmppIdentity,
    gateway::{
        messages::{Outgoing, RemoteId},
        outgoing, transient,
    },
};

impl Direct<'_> {
    /// A Matrix user invited an XMPP ghost to a direct chat: the ghost joins and the room becomes the DM portal.
    pub(crate) async fn accept_invite(&self, room_id: &str, inviter: &str, ghost_user: &str) -> ConnectorResult<()> {
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
        self.bridge.portals().upsert(&portal).await?;
        Ok(())
    }

    /// returns its ID.
    pub(crate) async fn send_chat(
        &self,
        to: &BareJid,
        user_id: &str,
        body: Option<String>,
        payloads: Vec<Element>,
    ) -> ConnectorResult<String> {
        // Ask for displayed markers (XEP-0333) on what people write, not on reactions or retractions.
        let markable = body.is_some() && payloads.is_empty();
        let (mut message, id) =
            outgoing(&self.section, Message::new(Some(Jid::from(to.clone()))), body, payloads, None)?;
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

    /// A Matrix message, edit, reaction or redaction (`outgoing`) from the direct chat's Matrix user to the XMPP
    /// account; confirmed once the server has it. A direct chat has no moderators to ask.
    pub(crate) async fn send_content(
        &self,
        account: &BareJid,
        sender: &str,
        outgoing: Outgoing,
    ) -> ConnectorResult<Sent> {
        let Outgoing::Message { body, payloads, map_as } = outgoing else { return Ok(Sent::Nothing) };
        let id = self.send_chat(account, sender, body, payloads).await?;
        Ok(self.written(Some(map_as.unwrap_or(RemoteId::Message(id)).into())))
    }
}
