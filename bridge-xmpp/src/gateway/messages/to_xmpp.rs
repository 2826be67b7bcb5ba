//! Matrix → XMPP: what a Matrix message, edit, reaction or redaction becomes on XMPP — the body and the XEP
//! payloads ([`Outgoing`]) — with the messages it names resolved through the store's message map; the author and
//! text of a replied-to event are read from the homeserver for the fallback quote.

use lattice_bridge_core::{
    connector::ConnectorResult,
    event::{MatrixEvent, MatrixEventKind, Message, MessageType, Relation},
    store::Portal,
};
use serde_json::Value;
use tokio_xmpp::parsers::{message::Id, message_correct::Replace};

use super::{Messages, Outgoing, RemoteId};
use crate::{
    gateway::PortalKind,
    styling::render_styling,
    xep::{
        reactions::{self as reaction_sets, ReactionRef},
        reply::{self, Fallback, Reply},
        retract::{self, ModerateRequest, Retract},
    },
};

/// A Matrix redaction as its XMPP form needs it.
struct Redaction<'a> {
    sender: &'a str,
    target: &'a Relation,
    reason: Option<&'a str>,
    /// Whether the conversation has moderators to ask.
    moderation: bool,
}

impl Messages<'_> {
    /// The ID the sender gave a message mapped under `remote_id`: XEP-0308 corrections name that one.
    async fn sender_id_of(&self, portal: &Portal, remote_id: &str) -> ConnectorResult<String> {
        let aliases = self.bridge.messages().aliases(&portal.remote_key, remote_id).await?;
        Ok(aliases.into_iter().next().unwrap_or_else(|| remote_id.to_owned()))
    }

    /// What a Matrix event from `sender` becomes on XMPP, or `None` when it has no XMPP form (or names a message
    /// that never reached XMPP). `moderation` says whether the conversation has moderators to ask (MUCs).
    pub(crate) async fn outgoing(
        &self,
        portal: &Portal,
        sender: &str,
        event: &MatrixEvent,
        moderation: bool,
    ) -> ConnectorResult<Option<Outgoing>> {
        match &event.kind {
            MatrixEventKind::Message(content) => self.message(&event.room_id, content).await.map(Some),
            MatrixEventKind::Edit { target, new_content } => self.edit(portal, target, new_content).await,
            MatrixEventKind::Reaction { target, key } => self.reaction(portal, sender, target, key).await,
            MatrixEventKind::Redaction { target, reason } => {
                let redaction = Redaction { sender, target, reason: reason.as_deref(), moderation };
                self.redaction(portal, &event.room_id, redaction).await
            }
            _ => Ok(None),
        }
    }

    /// A message: its text in XEP-0393 styling (`/me` for emotes) or a file's URL with XEP-0066, and a reply
    /// (XEP-0461) with its quoted fallback (XEP-0428).
    async fn message(&self, room_id: &str, content: &Message) -> ConnectorResult<Outgoing> {
        let (body, mut payloads) = match &content.media {
            // XEP-0066: clients show the file when the body is exactly the OOB URL.
            Some(media) => {
                let (url, oob) = self.publish_media(media).await?;
                (url, vec![oob.into()])
            }
            None => (text_of(content), Vec::new()),
        };
        let reply = content.reply_to.as_ref().and_then(|relation| Some((relation, relation.remote_ids.last()?)));
        let body = match reply {
            Some((relation, target)) if content.media.is_none() => {
                let (author, quoted) = self.quoted(room_id, relation).await;
                let (body, fallback) = reply::with_quote(&author, &quoted, &body);
                payloads.push(Reply { to: None, id: target.clone() }.into());
                payloads.push(fallback.into());
                body
            }
            _ => body,
        };
        Ok(Outgoing::Message { body: Some(body), payloads, map_as: None })
    }

    /// An edit: an XEP-0308 correction naming the sender's own ID of the message.
    async fn edit(
        &self,
        portal: &Portal,
        target: &Relation,
        new_content: &Message,
    ) -> ConnectorResult<Option<Outgoing>> {
        let Some(original) = target.remote_ids.last() else { return Ok(None) };
        let original = self.sender_id_of(portal, original).await?;
        let payloads = vec![Replace { id: Id(original) }.into()];
        Ok(Some(Outgoing::Message { body: Some(render_styling(&new_content.text)), payloads, map_as: None }))
    }

    /// A reaction: the sender's whole new set of reactions to the message (XEP-0444), mapped under a reference to
    /// this one reaction so its redaction finds it.
    async fn reaction(
        &self,
        portal: &Portal,
        sender: &str,
        target: &Relation,
        key: &str,
    ) -> ConnectorResult<Option<Outgoing>> {
        let Some(remote) = target.remote_ids.last() else { return Ok(None) };
        if reaction_sets::normalise([key]).is_empty() {
            return Ok(None);
        }
        let bridge = &self.bridge;
        let mut keys = bridge.messages().reactions(&portal.remote_key, remote, sender).await?;
        keys.push(key.to_owned());
        let keys = reaction_sets::normalise(keys.iter().map(String::as_str));
        bridge.messages().set_reactions(&portal.remote_key, remote, sender, &keys).await?;
        let reference = ReactionRef { user_id: sender.to_owned(), target: remote.clone(), key: key.to_owned() };
        Ok(Some(Outgoing::Message {
            body: None,
            payloads: vec![reaction_sets::reactions_element(remote, &keys).into()],
            map_as: Some(RemoteId::Reaction(reference)),
        }))
    }

    /// A redaction: of one of the sender's reactions, the set without it; of the sender's own message, an XEP-0424
    /// retraction; of someone else's, where moderators can be asked, an XEP-0425 moderation request.
    async fn redaction(
        &self,
        portal: &Portal,
        room_id: &str,
        redaction: Redaction<'_>,
    ) -> ConnectorResult<Option<Outgoing>> {
        let Redaction { sender, target, reason, moderation } = redaction;
        let Some(remote) = target.remote_ids.last() else { return Ok(None) };
        if let RemoteId::Reaction(reference) = RemoteId::parse(remote) {
            return self.unreact(portal, sender, reference).await;
        }
        Ok(if self.author_of(room_id, &target.event_id).await.as_deref() == Some(sender) {
            let retract = Retract { id: remote.clone(), moderated: None, reason: None };
            let fallback = Fallback { for_ns: retract::NS_RETRACT.to_owned(), body_ranges: Vec::new() };
            let payloads = vec![retract.into(), fallback.into()];
            Some(Outgoing::Message { body: Some(retract::FALLBACK_BODY.to_owned()), payloads, map_as: None })
        } else if moderation {
            Some(Outgoing::Moderate(ModerateRequest { id: remote.clone(), reason: reason.map(str::to_owned) }))
        } else {
            None
        })
    }

    /// The sender's reaction `reference` is taken back: their set of reactions without it.
    async fn unreact(
        &self,
        portal: &Portal,
        sender: &str,
        reference: ReactionRef,
    ) -> ConnectorResult<Option<Outgoing>> {
        if reference.user_id != sender {
            return Ok(None);
        }
        let bridge = &self.bridge;
        let keys = bridge.messages().reactions(&portal.remote_key, &reference.target, sender).await?;
        let keys: Vec<String> = keys.into_iter().filter(|key| *key != reference.key).collect();
        bridge.messages().set_reactions(&portal.remote_key, &reference.target, sender, &keys).await?;
        let payloads = vec![reaction_sets::reactions_element(&reference.target, &keys).into()];
        Ok(Some(Outgoing::Message { body: None, payloads, map_as: None }))
    }

    /// Who sent a Matrix event, asked of the homeserver (a redacted event keeps its sender).
    pub(super) async fn author_of(&self, room_id: &str, event_id: &str) -> Option<String> {
        let event = self.fetch_event(room_id, event_id).await?;
        event.get("sender").and_then(Value::as_str).map(str::to_owned)
    }

    /// An event as the bridge bot sees it, or else as the room's ghost does (the bot is not in direct chats).
    async fn fetch_event(&self, room_id: &str, event_id: &str) -> Option<Value> {
        let room = ruma::OwnedRoomId::try_from(room_id).ok()?;
        let event = ruma::OwnedEventId::try_from(event_id).ok()?;
        let matrix = self.bridge.matrix();
        if let Ok(Some(found)) = matrix.bot().get_event(&room, &event).await {
            return Some(found);
        }
        let portal = self.bridge.portals().by_room(room_id).await.ok().flatten()?;
        let Some(PortalKind::Direct { account, .. }) = PortalKind::of(&portal) else { return None };
        let ghost = self.addressing.ghost_for(&crate::addressing::XmppIdentity::Account(account))?;
        let ghost = ruma::OwnedUserId::try_from(ghost).ok()?;
        matrix.intent(ghost).get_event(&room, &event).await.ok().flatten()
    }

    /// The author's name and the text of the message a reply answers, for the fallback quote.
    async fn quoted(&self, room_id: &str, relation: &Relation) -> (String, String) {
        let Some(event) = self.fetch_event(room_id, &relation.event_id).await else {
            return ("…".to_owned(), String::new());
        };
        let author = event.get("sender").and_then(Value::as_str).unwrap_or_default();
        let author = self.displayname_of(author).await;
        let body = event.pointer("/content/body").and_then(Value::as_str).unwrap_or_default().to_owned();
        (author, body)
    }
}

/// A Matrix message's text in XEP-0393 styling, `/me` first for an emote.
fn text_of(content: &Message) -> String {
    let text = render_styling(&content.text);
    if content.msgtype == MessageType::Emote { format!("/me {text}") } else { text }
}

#[cfg(test)]
mod tests {
    use lattice_bridge_core::formatting::RichText;

    use super::*;

    fn content(msgtype: MessageType, html: &str) -> Message {
        let text = RichText::from_message(html, Some(html), Some("org.matrix.custom.html"));
        Message { msgtype, text, media: None, reply_to: None }
    }

    #[test]
    fn matrix_html_becomes_styling_and_emotes_start_with_me() {
        assert_eq!(text_of(&content(MessageType::Text, "hi <strong>there</strong>")), "hi *there*");
        assert_eq!(text_of(&content(MessageType::Emote, "waves <em>slowly</em>")), "/me waves _slowly_");
    }
}
