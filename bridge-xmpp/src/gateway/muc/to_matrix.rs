//! MUC → Matrix: the groupchat messages and subjects that reach the listener occupant, once each and in the MUC's
//! order, and the reflections and errors that confirm or refuse Matrix users' messages.

use lattice_bridge_core::{
    connector::GhostSpec,
    event::{RemoteEvent, RemoteEventKind},
};
use tokio_xmpp::parsers::{
    delay::Delay,
    jid::{BareJid, Jid},
    message::Message,
    ns,
    stanza_error::{DefinedCondition, ErrorType, StanzaError},
};

use super::{MucPortals, identity_of};
use crate::{
    gateway::{clock, find_payload, messages::Inbound, portal::muc_key},
    xep::ids::MessageIds,
};

/// What the listener's copy of a groupchat message is, once admitted.
struct Admitted {
    /// The sender's ghost; `None` for the MUC itself.
    sender: Option<GhostSpec>,
    /// The portal's topic before this message.
    topic: Option<String>,
}

impl MucPortals<'_> {
    /// An error in answer to a message a Matrix user sent: their message's sender hears of the refusal.
    pub(crate) fn on_error(&self, message: &Message) {
        let Some(waiter) = message.id.as_ref().and_then(|id| self.take_ack(&id.0)) else { return };
        let error = find_payload::<StanzaError>(&message.payloads, "error", ns::DEFAULT_NS).unwrap_or_else(|| {
            StanzaError::new(ErrorType::Cancel, DefinedCondition::UndefinedCondition, "en", "unknown")
        });
        let _ = waiter.send(Err(error));
    }

    /// A groupchat message from a MUC: the reflection of a Matrix user's message, and, on the listener's copy, a
    /// message or subject for the portal.
    pub(crate) async fn on_message(&self, message: Message) -> lattice_bridge_core::Result<()> {
        let Some(from) = message.from.clone() else { return Ok(()) };
        let room = from.to_bare();
        // The reflection of a Matrix user's message, on the listener's copy (the others are skimmed off).
        if let Some(waiter) = message.id.as_ref().and_then(|id| self.take_ack(&id.0)) {
            let _ = waiter.send(Ok(MessageIds::of(&message, Some(&room)).stanza_id));
        }
        // Every occupant the bridge has in the MUC gets a copy: only the listener's is bridged (the Matrix users'
        // occupants' copies seldom get here: `occupant_copies` skims them off before parsing).
        if message.to.as_ref().map(Jid::as_str) != Some(self.listener_jid().as_str()) {
            return Ok(());
        }
        let delay = find_payload::<Delay>(&message.payloads, "delay", ns::DELAY);
        let Some(Admitted { sender, topic }) = self.admit(&room, &message, delay.as_ref()) else { return Ok(()) };
        let portal = muc_key(&room);
        let timestamp_ms = delay.as_ref().and_then(|delay| u64::try_from(delay.stamp.0.timestamp_millis()).ok());
        let subject = message.get_best_subject_cloned(vec![]).filter(|_| message.bodies.is_empty());
        if let Some((_, subject)) = subject {
            if topic.as_deref().unwrap_or_default() == subject {
                return Ok(());
            }
            if let Some(state) = self.rooms().get_mut(&room) {
                state.topic = Some(subject.clone());
            }
            let kind = RemoteEventKind::Topic { topic: subject };
            return self.bridge.push(RemoteEvent { portal, sender, remote_id: None, timestamp_ms, kind }).await;
        }
        let ids = MessageIds::of(&message, Some(&room));
        self.messages().push_inbound(Inbound { portal: &portal, sender, timestamp_ms }, &message, &ids).await
    }

    /// Admits the listener's copy of a message from a bridged MUC, once: not from the bridge's own occupants, not
    /// seen before (history replayed after a rejoin), noting how far the portal has seen. Names its sender.
    fn admit(&self, room: &BareJid, message: &Message, delay: Option<&Delay>) -> Option<Admitted> {
        let from = message.from.as_ref()?;
        let nick = from.resource().map(|resource| resource.to_string());
        let mut rooms = self.rooms();
        let state = rooms.get_mut(room)?;
        if nick.as_deref().is_some_and(|nick| state.is_ours(nick)) {
            return None;
        }
        let key = seen_key(nick.as_deref().unwrap_or_default(), message, delay);
        if !message.bodies.is_empty() && !state.remember(key) {
            return None;
        }
        state.last_seen = Some(match delay {
            Some(delay) => delay.stamp.clone(),
            None => clock::now(),
        });
        let sender = nick.as_ref().and_then(|nick| {
            let identity = state.occupants.get(nick).map(|occupant| occupant.identity.clone()).or_else(|| {
                let occupant = from.clone().try_into_full().ok()?;
                identity_of(&self.addressing, &message.payloads, occupant, state.occupant_ids)
            })?;
            self.ghost(&identity, nick)
        });
        Some(Admitted { sender, topic: state.topic.clone() })
    }
}

/// What a MUC message is remembered by, to drop it when a rejoin's history brings it again: its sender's nick
/// and ID, or without an ID its nick, text and delay stamp.
fn seen_key(nick: &str, message: &Message, delay: Option<&Delay>) -> String {
    match &message.id {
        Some(id) => format!("{nick}\u{0}{}", id.0),
        None => {
            let body = message.bodies.values().next().cloned().unwrap_or_default();
            format!("{nick}\u{0}{body}\u{0}{:?}", delay.map(|delay| delay.stamp.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_xmpp::parsers::message::{Id, Lang};

    use super::*;

    fn message(id: Option<&str>) -> Message {
        let mut message = Message::groupchat(None::<Jid>).with_body(Lang::new(), "hi".into());
        message.id = id.map(|id| Id(id.to_owned()));
        message
    }

    #[test]
    fn messages_are_known_by_nick_and_id_else_by_text_and_time() {
        let with_id = message(Some("m1"));
        assert_eq!(seen_key("Xavier", &with_id, None), "Xavier\u{0}m1");
        let without = message(None);
        let delay = Delay { from: None, stamp: clock::stamp(1_000).unwrap(), data: None };
        let (live, replayed) = (seen_key("Xavier", &without, None), seen_key("Xavier", &without, Some(&delay)));
        assert!(live.starts_with("Xavier\u{0}hi\u{0}"));
        assert_ne!(live, replayed, "the same text at another time is another message");
        assert_eq!(replayed, seen_key("Xavier", &without, Some(&delay)));
        assert_ne!(seen_key("Yves", &with_id, None), seen_key("Xavier", &with_id, None));
    }
}
