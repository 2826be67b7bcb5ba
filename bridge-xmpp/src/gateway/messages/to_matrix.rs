//! XMPP → Matrix: one incoming message with its payloads — retraction, reactions, displayed marker, chat state,
//! file, correction, reply or plain text — as the Matrix event it becomes, with the messages it names resolved
//! through the store's message map. One handler per kind of payload.

use lattice_bridge_core::{
    Result,
    connector::GhostSpec,
    event::{MessageType, RemoteEvent, RemoteEventKind},
};
use tokio_xmpp::parsers::{
    chatstates::ChatState, message::Message, message_correct::Replace, minidom::Element, reactions::Reactions,
};

use super::{Inbound, Messages, RemoteId};
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

impl Inbound<'_> {
    /// The Matrix event `kind` from `sender` in this message's portal, at its time.
    fn event(&self, sender: Option<GhostSpec>, remote_id: Option<String>, kind: RemoteEventKind) -> RemoteEvent {
        RemoteEvent { portal: self.portal.to_owned(), sender, remote_id, timestamp_ms: self.timestamp_ms, kind }
    }
}

impl Messages<'_> {
    /// Bridges one incoming message with its payloads: retraction, reactions, displayed marker, chat state, or a
    /// text (a file, a correction, a reply). `ids` are the message's names; the sender's is recorded as an alias of
    /// its remote ID so a later correction finds it.
    pub(crate) async fn push_inbound(&self, inbound: Inbound<'_>, message: &Message, ids: &MessageIds) -> Result<()> {
        let remote_id = ids.remote_id().map(str::to_owned);
        if let (Some(alias), Some(remote_id)) = (ids.alias(), &remote_id) {
            self.bridge.messages().alias(inbound.portal, alias, remote_id);
        }
        if let Some(retract) = payload::<Retract>(&message.payloads) {
            return self.on_retraction(inbound, retract).await;
        }
        if let Some(reactions) = payload::<Reactions>(&message.payloads) {
            return self.on_reactions(inbound, reactions).await;
        }
        if let Some(read) = message.payloads.iter().find_map(chat_states::acknowledged)
            && inbound.sender.is_some()
        {
            return self.on_displayed(inbound, read).await;
        }
        match message.get_best_body_cloned(vec![]) {
            Some((_, body)) => self.on_text(inbound, message, body, remote_id).await,
            None => self.on_chat_state(inbound, &message.payloads).await,
        }
    }

    /// XEP-0424/0425: a retraction redacts the message; a moderator's comes from the MUC itself, so the bridge bot
    /// redacts.
    async fn on_retraction(&self, inbound: Inbound<'_>, retract: Retract) -> Result<()> {
        let target = self.bridge.messages().resolve(inbound.portal, &retract.id).await?;
        let sender = if retract.moderated.is_some() { None } else { inbound.sender.clone() };
        let kind = RemoteEventKind::Redaction { target, reason: retract.reason };
        self.bridge.push(inbound.event(sender, None, kind)).await
    }

    /// XEP-0444: the sender's whole set of reactions to a message; the difference from the last set becomes Matrix
    /// reactions and their redactions.
    async fn on_reactions(&self, inbound: Inbound<'_>, reactions: Reactions) -> Result<()> {
        let Some(ghost) = inbound.sender.clone() else { return Ok(()) };
        let bridge = &self.bridge;
        let target = bridge.messages().resolve(inbound.portal, &reactions.id).await?;
        let old = bridge.messages().reactions(inbound.portal, &target, &ghost.user_id).await?;
        let new = reaction_sets::keys_of(&reactions);
        let (added, removed) = reaction_sets::diff(&old, &new);
        for key in removed {
            let reference = ReactionRef { user_id: ghost.user_id.clone(), target: target.clone(), key };
            let kind = RemoteEventKind::Redaction { target: RemoteId::Reaction(reference).to_string(), reason: None };
            self.bridge.push(inbound.event(Some(ghost.clone()), None, kind)).await?;
        }
        for key in added {
            let kind = RemoteEventKind::Reaction { target: target.clone(), key: key.clone() };
            let reference =
                RemoteId::Reaction(ReactionRef { user_id: ghost.user_id.clone(), target: target.clone(), key });
            self.bridge.push(inbound.event(Some(ghost.clone()), Some(reference.to_string()), kind)).await?;
        }
        bridge.messages().set_reactions(inbound.portal, &target, &ghost.user_id, &new).await?;
        Ok(())
    }

    /// XEP-0333 displayed markers and XEP-0184 receipts: a read receipt.
    async fn on_displayed(&self, inbound: Inbound<'_>, read: &str) -> Result<()> {
        let kind = RemoteEventKind::Receipt { target: self.bridge.messages().resolve(inbound.portal, read).await? };
        self.bridge.push(inbound.event(inbound.sender.clone(), None, kind)).await
    }

    /// XEP-0085: a chat state without a body is typing or not.
    async fn on_chat_state(&self, inbound: Inbound<'_>, payloads: &[Element]) -> Result<()> {
        let Some(state) = payload::<ChatState>(payloads) else { return Ok(()) };
        if inbound.sender.is_none() {
            return Ok(());
        }
        let kind = RemoteEventKind::Typing { typing: chat_states::is_typing(&state) };
        self.bridge.push(inbound.event(inbound.sender.clone(), None, kind)).await
    }

    /// A message with a body: a file (XEP-0066), a correction (XEP-0308), a reply (XEP-0461) or a plain text, with
    /// XEP-0393 styling or XHTML-IM.
    async fn on_text(
        &self,
        inbound: Inbound<'_>,
        message: &Message,
        body: String,
        remote_id: Option<String>,
    ) -> Result<()> {
        if let Some(kind) = self.oob_media(&message.payloads, &body).await {
            return self.bridge.push(inbound.event(inbound.sender.clone(), remote_id, kind)).await;
        }
        let reply = payload::<Reply>(&message.payloads);
        let (msgtype, text) = text_of(&message.payloads, body, reply.is_some());
        let (body, html) = incoming_text(&message.payloads, &text);
        let bridge = &self.bridge;
        let kind = match payload::<Replace>(&message.payloads) {
            Some(replace) => RemoteEventKind::Edit {
                target: bridge.messages().resolve(inbound.portal, &replace.id.0).await?,
                body,
                html,
            },
            None => {
                let reply_to = match reply {
                    Some(reply) => Some(bridge.messages().resolve(inbound.portal, &reply.id).await?),
                    None => None,
                };
                RemoteEventKind::Message { msgtype, body, html, reply_to }
            }
        };
        self.bridge.push(inbound.event(inbound.sender.clone(), remote_id, kind)).await
    }
}

/// A message's text as Matrix shows it: without the quoted fallback of a reply (XEP-0428), and an emote for
/// `/me`.
pub(crate) fn text_of(payloads: &[Element], body: String, reply: bool) -> (MessageType, String) {
    let body = if reply {
        let fallbacks: Vec<Fallback> =
            payloads.iter().filter_map(|element| Fallback::try_from(element.clone()).ok()).collect();
        reply::strip_reply_fallback(&body, &fallbacks)
    } else {
        body
    };
    match body.strip_prefix("/me ") {
        Some(action) => (MessageType::Emote, action.to_owned()),
        None => (MessageType::Text, body),
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn replies_lose_their_fallback_and_me_is_an_emote() {
        let fallback = Element::from_str(
            "<fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'><body start='0' end='8'/></fallback>",
        )
        .unwrap();
        let quoted = "> hello\nthanks".to_owned();
        assert_eq!(
            text_of(std::slice::from_ref(&fallback), quoted.clone(), true),
            (MessageType::Text, "thanks".to_owned())
        );
        assert_eq!(text_of(&[fallback], quoted.clone(), false), (MessageType::Text, quoted), "not a reply");
        assert_eq!(text_of(&[], "/me waves".into(), false), (MessageType::Emote, "waves".to_owned()));
        assert_eq!(text_of(&[], "/meh".into(), false), (MessageType::Text, "/meh".to_owned()));
    }
}
