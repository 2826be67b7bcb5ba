//! XMPP → Matrix: one incoming message with its payloads — retraction, reactions, displayed marker, chat state,
//! file, correction, reply or plain text — as the Matrix event it becomes, with the messages it names resolved
//! through the store's message map.

use lattice_bridge_core::{
    connector::GhostSpec,
    event::{MessageType, RemoteEvent, RemoteEventKind},
};
use tokio_xmpp::parsers::{chatstates::ChatState, message::Message, message_correct::Replace, reactions::Reactions};

use super::{Inbound, Messages};
use crate::{
    xep::{
        chat_states,
        ids::MessageIds,
        payload,
        reactions::{self as reaction_sets, ReactionRef},
        reply::{self, Fallback, Reply},
        retract::Retract,
    },
    xhtml::incoming_text,
};

impl Messages<'_> {
    /// Bridges one incoming message with its payloads: retraction, reactions, chat state, correction, reply or
    /// plain text (and files). `ids` are the message's names; the sender's is recorded as an alias of its remote
    /// ID so a later correction finds it.
    pub(crate) async fn push_inbound(
        &self,
        inbound: Inbound<'_>,
        message: &Message,
        ids: &MessageIds,
    ) -> lattice_bridge_core::Result<()> {
        let store = self.bridge.store();
        let portal = inbound.portal;
        let remote_id = ids.remote_id().map(str::to_owned);
        if let (Some(alias), Some(remote_id)) = (ids.alias(), &remote_id) {
            store.alias_remote(portal, alias, remote_id);
        }
        let push = |sender: Option<GhostSpec>, remote_id: Option<String>, kind: RemoteEventKind| RemoteEvent {
            portal: portal.to_owned(),
            sender,
            remote_id,
            timestamp_ms: inbound.timestamp_ms,
            kind,
        };
        if let Some(retract) = payload::<Retract>(&message.payloads) {
            let target = store.resolve_remote(portal, &retract.id).await?;
            // A moderator's retraction comes from the MUC itself: the bridge bot redacts.
            let sender = if retract.moderated.is_some() { None } else { inbound.sender };
            let kind = RemoteEventKind::Redaction { target, reason: retract.reason };
            return self.bridge.push(push(sender, None, kind)).await;
        }
        if let Some(reactions) = payload::<Reactions>(&message.payloads) {
            let Some(ghost) = inbound.sender else { return Ok(()) };
            let target = store.resolve_remote(portal, &reactions.id).await?;
            let old = store.reactions(portal, &target, &ghost.user_id).await?;
            let new = reaction_sets::keys_of(&reactions);
            let (added, removed) = reaction_sets::diff(&old, &new);
            for key in removed {
                let reference = ReactionRef { user_id: ghost.user_id.clone(), target: target.clone(), key };
                let kind = RemoteEventKind::Redaction { target: reference.encode(), reason: None };
                self.bridge.push(push(Some(ghost.clone()), None, kind)).await?;
            }
            for key in added {
                let reference = ReactionRef { user_id: ghost.user_id.clone(), target: target.clone(), key };
                let kind = RemoteEventKind::Reaction { target: target.clone(), key: reference.key.clone() };
                self.bridge.push(push(Some(ghost.clone()), Some(reference.encode()), kind)).await?;
            }
            store.set_reactions(portal, &target, &ghost.user_id, &new).await?;
            return Ok(());
        }
        if let Some(read) = message.payloads.iter().find_map(chat_states::acknowledged)
            && inbound.sender.is_some()
        {
            let kind = RemoteEventKind::Receipt { target: store.resolve_remote(portal, read).await? };
            return self.bridge.push(push(inbound.sender, None, kind)).await;
        }
        let Some((_, body)) = message.get_best_body_cloned(vec![]) else {
            if let Some(state) = payload::<ChatState>(&message.payloads)
                && inbound.sender.is_some()
            {
                let kind = RemoteEventKind::Typing { typing: chat_states::is_typing(&state) };
                return self.bridge.push(push(inbound.sender, None, kind)).await;
            }
            return Ok(());
        };
        if let Some(kind) = self.oob_media(&message.payloads, &body).await {
            return self.bridge.push(push(inbound.sender, remote_id, kind)).await;
        }
        let reply = payload::<Reply>(&message.payloads);
        let body = match &reply {
            Some(_) => {
                let fallbacks: Vec<Fallback> =
                    message.payloads.iter().filter_map(|element| Fallback::try_from(element.clone()).ok()).collect();
                reply::strip_reply_fallback(&body, &fallbacks)
            }
            None => body,
        };
        let (msgtype, text) = match body.strip_prefix("/me ") {
            Some(action) => (MessageType::Emote, action.to_owned()),
            None => (MessageType::Text, body),
        };
        let (body, html) = incoming_text(&message.payloads, &text);
        let kind = match payload::<Replace>(&message.payloads) {
            Some(replace) => {
                RemoteEventKind::Edit { target: store.resolve_remote(portal, &replace.id.0).await?, body, html }
            }
            None => {
                let reply_to = match reply {
                    Some(reply) => Some(store.resolve_remote(portal, &reply.id).await?),
                    None => None,
                };
                RemoteEventKind::Message { msgtype, body, html, reply_to }
            }
        };
        self.bridge.push(push(inbound.sender, remote_id, kind)).await
    }
}
