//! Message content both ways, shared by MUC portals ([`muc`](crate::muc)), gateway MUCs ([`hosted`](crate::hosted))
//! and direct chats ([`direct`](crate::direct)): what an incoming stanza's payloads mean for Matrix, and which
//! payloads a Matrix event becomes. The XEPs themselves live in [`xep`](crate::xep); this module resolves the
//! messages they name through the store's message map and remote ID aliases, so every mapping survives a restart.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Mutex,
};

use lattice_bridge_core::{
    connector::{ConnectorResult, GhostSpec},
    event::{MatrixEvent, MatrixEventKind, MessageType, Relation, RemoteEvent, RemoteEventKind},
    store::Portal,
};
use serde_json::Value;
use tokio_xmpp::parsers::{
    chatstates::ChatState,
    iq::Iq,
    jid::BareJid,
    message::{Id, Message},
    message_correct::Replace,
    minidom::Element,
    reactions::Reactions,
};

use crate::{
    muc::Gateway,
    styling::render_styling,
    xep::{
        chat_states,
        ids::MessageIds,
        payload,
        reactions::{self as reaction_sets, ReactionRef},
        reply::{self, Fallback, Reply},
        retract::{self, ModerateRequest, Retract},
    },
    xhtml::incoming_text,
};

/// Who an incoming message is from and where it goes.
#[derive(Debug, Clone)]
pub(crate) struct Inbound<'a> {
    /// The portal's remote key.
    pub(crate) portal: &'a str,
    /// The sender's ghost; `None` for the MUC itself (moderation).
    pub(crate) sender: Option<GhostSpec>,
    /// When it was sent, for history.
    pub(crate) timestamp_ms: Option<u64>,
}

/// Who was typing in each Matrix room when the last `m.typing` came. Memory only: after a restart the first
/// `m.typing` is taken as the full change.
#[derive(Debug, Default)]
pub(crate) struct TypingState {
    rooms: Mutex<HashMap<String, BTreeSet<String>>>,
}

impl TypingState {
    /// Records who types in a room now; returns who started and who stopped.
    fn change(&self, room_id: &str, now: BTreeSet<String>) -> (Vec<String>, Vec<String>) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let before = rooms.remove(room_id).unwrap_or_default();
        let started = now.difference(&before).cloned().collect();
        let stopped = before.difference(&now).cloned().collect();
        if !now.is_empty() {
            rooms.insert(room_id.to_owned(), now);
        }
        (started, stopped)
    }
}

/// What a Matrix event becomes on XMPP.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outgoing {
    /// A message stanza from the sender.
    Message {
        /// The body, if the stanza has one (reactions have none).
        body: Option<String>,
        /// XEP payloads.
        payloads: Vec<Element>,
        /// What the Matrix event is mapped under when not the sent stanza's own ID (a reaction).
        map_as: Option<String>,
    },
    /// A moderator retracts someone else's message: an IQ to the MUC (XEP-0425).
    Moderate(ModerateRequest),
}

impl Gateway {
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

    /// The ID the sender gave a message mapped under `remote_id`: XEP-0308 corrections name that one.
    async fn sender_id_of(&self, portal: &Portal, remote_id: &str) -> ConnectorResult<String> {
        let aliases = self.bridge.store().remote_aliases(&portal.remote_key, remote_id).await?;
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
        let message =
            |body: String, payloads: Vec<Element>| Outgoing::Message { body: Some(body), payloads, map_as: None };
        Ok(Some(match &event.kind {
            MatrixEventKind::Message(content) => {
                let (body, mut payloads) = match &content.media {
                    // XEP-0066: clients show the file when the body is exactly the OOB URL.
                    Some(media) => {
                        let (url, oob) = self.publish_media(media).await?;
                        (url, vec![oob.into()])
                    }
                    None if content.msgtype == MessageType::Emote => {
                        (format!("/me {}", render_styling(&content.text)), Vec::new())
                    }
                    None => (render_styling(&content.text), Vec::new()),
                };
                match content.reply_to.as_ref().and_then(|relation| Some((relation, relation.remote_ids.last()?))) {
                    Some((relation, target)) if content.media.is_none() => {
                        let (author, quoted) = self.quoted(&event.room_id, relation).await;
                        let (body, fallback) = reply::with_quote(&author, &quoted, &body);
                        payloads.push(Reply { to: None, id: target.clone() }.into());
                        payloads.push(fallback.into());
                        message(body, payloads)
                    }
                    _ => message(body, payloads),
                }
            }
            MatrixEventKind::Edit { target, new_content } => {
                let Some(original) = target.remote_ids.last() else { return Ok(None) };
                let original = self.sender_id_of(portal, original).await?;
                message(render_styling(&new_content.text), vec![Replace { id: Id(original) }.into()])
            }
            MatrixEventKind::Reaction { target, key } => {
                let Some(remote) = target.remote_ids.last() else { return Ok(None) };
                if reaction_sets::normalise([key.as_str()]).is_empty() {
                    return Ok(None);
                }
                let store = self.bridge.store();
                let mut keys = store.reactions(&portal.remote_key, remote, sender).await?;
                keys.push(key.clone());
                let keys = reaction_sets::normalise(keys.iter().map(String::as_str));
                store.set_reactions(&portal.remote_key, remote, sender, &keys).await?;
                let reference = ReactionRef { user_id: sender.to_owned(), target: remote.clone(), key: key.clone() };
                Outgoing::Message {
                    body: None,
                    payloads: vec![reaction_sets::reactions_element(remote, &keys).into()],
                    map_as: Some(reference.encode()),
                }
            }
            MatrixEventKind::Redaction { target, reason } => {
                let Some(remote) = target.remote_ids.last() else { return Ok(None) };
                if let Some(reference) = ReactionRef::decode(remote) {
                    if reference.user_id != sender {
                        return Ok(None);
                    }
                    let store = self.bridge.store();
                    let keys = store
                        .reactions(&portal.remote_key, &reference.target, sender)
                        .await?
                        .into_iter()
                        .filter(|key| *key != reference.key)
                        .collect::<Vec<_>>();
                    store.set_reactions(&portal.remote_key, &reference.target, sender, &keys).await?;
                    Outgoing::Message {
                        body: None,
                        payloads: vec![reaction_sets::reactions_element(&reference.target, &keys).into()],
                        map_as: None,
                    }
                } else if self.author_of(&event.room_id, &target.event_id).await.as_deref() == Some(sender) {
                    let retract = Retract { id: remote.clone(), moderated: None, reason: None };
                    let fallback = Fallback { for_ns: retract::NS_RETRACT.to_owned(), body_ranges: Vec::new() };
                    message(retract::FALLBACK_BODY.to_owned(), vec![retract.into(), fallback.into()])
                } else if moderation {
                    Outgoing::Moderate(ModerateRequest { id: remote.clone(), reason: reason.clone() })
                } else {
                    return Ok(None);
                }
            }
            _ => return Ok(None),
        }))
    }

    /// Who sent a Matrix event, asked of the homeserver (a redacted event keeps its sender).
    async fn author_of(&self, room_id: &str, event_id: &str) -> Option<String> {
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
        let portal = self.bridge.store().portal_by_room(room_id).await.ok().flatten()?;
        let (jid, _) = crate::direct::portal_parties(&portal)?;
        let ghost = self.addressing.ghost_for(&crate::addressing::XmppIdentity::Account(jid))?;
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

    /// Asks a MUC to retract an occupant's message for a Matrix user with the power to (XEP-0425). The MUC
    /// announces the retraction to everyone, the bridge included, when it grants the request.
    pub(crate) async fn request_moderation(
        &self,
        room: &BareJid,
        portal: &Portal,
        user_id: &str,
        request: ModerateRequest,
    ) -> ConnectorResult<()> {
        let (occupant, _) = self.ensure_puppet(room, portal, user_id, None).await?;
        let iq = Iq::Set {
            from: Some(occupant.into()),
            to: Some(room.clone().into()),
            id: crate::muc::new_id(),
            payload: request.into(),
        };
        self.send(iq).await
    }

    /// Sends an ephemeral payload (a chat state, a displayed marker) from a Matrix user into the conversation of a
    /// portal: to the XMPP account of a direct chat (from its Matrix user only), from the user's occupant in a MUC
    /// portal (only one already joined: ephemeral traffic never makes the gateway join), or from the user's nick to
    /// every occupant of a gateway MUC.
    async fn send_ephemeral(&self, portal: &Portal, user: &str, payload: Element) -> ConnectorResult<()> {
        if let Some((jid, dm_user)) = crate::direct::portal_parties(portal) {
            if dm_user == user {
                self.send_chat(&jid, user, None, vec![payload]).await?;
            }
        } else if let Some(room) = crate::hosted::portal_room(portal) {
            self.hosted_ephemeral(&room, user, payload).await?;
        } else if let Some(room) = crate::muc::portal_room(portal)
            && let Some(occupant) = self.joined_occupant(&room, user)
        {
            let mut message = Message::groupchat(Some(room.into()));
            message.from = Some(occupant.into());
            message.id = Some(Id(crate::muc::new_id()));
            message.payloads.push(payload);
            self.send(message).await?;
        }
        Ok(())
    }

    /// Typing notifications and read receipts (ephemeral events) in a portal: XEP-0085 chat states from the
    /// Matrix users who started or stopped typing, and XEP-0333 displayed markers for what Matrix users read (in
    /// a MUC named by its stanza-id, as XEP-0333 §3 asks).
    pub(crate) async fn ephemeral(&self, portal: &Portal, event: &MatrixEvent) -> ConnectorResult<()> {
        match &event.kind {
            MatrixEventKind::Typing { user_ids } => {
                let people = user_ids
                    .iter()
                    .filter(|user| !self.addressing.is_ghost(user) && !self.bridge.is_bridge_user(user))
                    .cloned()
                    .collect();
                let (started, stopped) = self.typing.change(&event.room_id, people);
                let changes =
                    started.into_iter().map(|user| (user, true)).chain(stopped.into_iter().map(|u| (u, false)));
                for (user, typing) in changes {
                    self.send_ephemeral(portal, &user, chat_states::state_of(typing).into()).await?;
                }
            }
            MatrixEventKind::Receipts(receipts) => {
                let readers = receipts
                    .iter()
                    .filter(|(_, user)| !self.addressing.is_ghost(user) && !self.bridge.is_bridge_user(user));
                for (event_id, user) in readers {
                    let mapped = self.bridge.store().remotes_for_event(event_id).await?;
                    let Some(read) = mapped.into_iter().rev().find(|mapping| {
                        mapping.portal_key == portal.remote_key && ReactionRef::decode(&mapping.remote_id).is_none()
                    }) else {
                        continue;
                    };
                    // Sending moves the sender's own receipt too: only what others wrote gets a marker.
                    if self.author_of(&event.room_id, event_id).await.as_deref() == Some(user.as_str()) {
                        continue;
                    }
                    self.send_ephemeral(portal, user, chat_states::displayed(&read.remote_id)).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_changes_are_who_started_and_who_stopped() {
        let state = TypingState::default();
        let set = |users: &[&str]| users.iter().map(|user| (*user).to_owned()).collect::<BTreeSet<_>>();
        let list = |users: &[&str]| users.iter().map(|user| (*user).to_owned()).collect::<Vec<_>>();
        assert_eq!(state.change("!r", set(&["@a:hs", "@b:hs"])), (list(&["@a:hs", "@b:hs"]), list(&[])));
        assert_eq!(state.change("!r", set(&["@b:hs", "@c:hs"])), (list(&["@c:hs"]), list(&["@a:hs"])));
        assert_eq!(state.change("!other", set(&[])), (list(&[]), list(&[])));
        assert_eq!(state.change("!r", set(&[])), (list(&[]), list(&["@b:hs", "@c:hs"])));
        assert_eq!(state.change("!r", set(&[])), (list(&[]), list(&[])), "nothing left to stop");
    }
}
