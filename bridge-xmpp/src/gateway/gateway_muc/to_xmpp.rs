//! Matrix → XMPP in gateway MUCs: messages, edits, reactions, redactions, topics, memberships, power levels and
//! ephemeral events, from the Matrix member's nick to every XMPP occupant. The gateway is the MUC, so it stamps the
//! Matrix event ID as the message's ID and stanza-id.

use lattice_bridge_core::{
    ConnectorError,
    connector::{ConnectorResult, Sent},
};
use serde_json::Value;
use tokio_xmpp::parsers::{
    jid::{BareJid, FullJid},
    message::{Id, Lang, Message},
    minidom::Element,
    muc::user::{Item, Role, Status},
    presence::Presence,
    stanza_id::StanzaId,
};

use super::{GatewayMucs, muc_user, ranked_item};
use crate::{
    affiliations::rank_of,
    gateway::{
        messages::{Outgoing, RemoteId},
        new_id,
    },
    xep::{
        ids::gateway_muc_occupant_id as occupant_id,
        retract::{FALLBACK_BODY, ModerateRequest, Moderated, Retract},
    },
};

impl GatewayMucs<'_> {
    /// The XMPP occupants of a gateway MUC, by real JID.
    pub(crate) fn occupants(&self, room: &BareJid) -> Vec<FullJid> {
        self.rooms().get(room).map(|state| state.occupants.keys().cloned().collect()).unwrap_or_default()
    }

    /// A Matrix message, edit, reaction or redaction (`outgoing`, the event `event_id` from `sender`) to every
    /// XMPP occupant. The gateway is the MUC: a Matrix moderator's redaction is announced as the MUC's own, and
    /// the event ID is the message's ID and its stanza-id.
    pub(crate) async fn send_content(
        &self,
        room: &BareJid,
        sender: &str,
        event_id: String,
        outgoing: Outgoing,
    ) -> ConnectorResult<Sent> {
        let nick = self.nick_of(room, sender).await;
        let occupant = room
            .with_resource_str(&nick)
            .map_err(|error| ConnectorError::permanent(format!("{nick:?} is not a valid nick: {error}")))?;
        let (body, mut payloads, map_as) = match outgoing {
            Outgoing::Message { body, payloads, map_as } => (body, payloads, map_as),
            Outgoing::Moderate(request) => (Some(FALLBACK_BODY.to_owned()), vec![moderation(request, &occupant)], None),
        };
        if let Some(body) = &body {
            self.section.check_message_size(body)?;
        }
        payloads.push(StanzaId { id: event_id.clone(), by: room.clone().into() }.into());
        payloads.push(occupant_id(room, sender).into());
        for jid in self.occupants(room) {
            let mut message = Message::groupchat(Some(jid.into()));
            if let Some(body) = &body {
                message = message.with_body(Lang::new(), body.clone());
            }
            message.from = Some(occupant.clone().into());
            message.id = Some(Id(event_id.clone()));
            message.payloads = payloads.clone();
            self.send(message).await?;
        }
        Ok(self.written(Some(map_as.unwrap_or(RemoteId::Message(event_id)).into())))
    }

    /// A Matrix topic change: the MUC's subject, to every XMPP occupant.
    pub(crate) async fn send_subject(&self, room: &BareJid, topic: &str) -> ConnectorResult<()> {
        for jid in self.occupants(room) {
            let mut message = Message::groupchat(Some(jid.into()));
            message.from = Some(room.clone().into());
            message.subjects.insert(Lang::new(), topic.to_owned());
            self.send(message).await?;
        }
        Ok(())
    }

    /// A Matrix member joined (under `displayname`) or left: their occupant's presence, to every XMPP occupant.
    /// The bridge's ghosts are the XMPP occupants themselves and are not announced again.
    pub(crate) async fn send_membership(
        &self,
        room: &BareJid,
        user_id: &str,
        joined: bool,
        displayname: Option<&str>,
    ) -> ConnectorResult<()> {
        if self.addressing.is_ghost(user_id) {
            return Ok(());
        }
        let nick = match displayname {
            Some(name) if joined => name.to_owned(),
            _ => self.nick_of(room, user_id).await,
        };
        if let Some(state) = self.rooms().get_mut(room) {
            if joined {
                state.members.insert(user_id.to_owned(), nick.clone());
            } else {
                state.members.remove(user_id);
            }
        }
        let Ok(occupant) = room.with_resource_str(&nick) else { return Ok(()) };
        let level = self.rooms().get(room).map_or(0, |state| state.power.level(user_id));
        let (affiliation, role) = rank_of(level);
        let item = Item::new(affiliation, if joined { role } else { Role::None });
        for jid in self.occupants(room) {
            let presence = if joined { Presence::available() } else { Presence::unavailable() };
            let presence = presence
                .with_from(occupant.clone())
                .with_to(jid)
                .with_payload(muc_user(vec![item.clone()], vec![]))
                .with_payload(occupant_id(room, user_id));
            self.send(presence).await?;
        }
        Ok(())
    }

    /// An ephemeral payload (a chat state, a displayed marker) from a Matrix member to every XMPP occupant of a
    /// gateway MUC, from the member's nick.
    pub(crate) async fn send_ephemeral(&self, room: &BareJid, user_id: &str, payload: Element) -> ConnectorResult<()> {
        let occupants: Vec<FullJid> =
            self.rooms().get(room).map(|state| state.occupants.keys().cloned().collect()).unwrap_or_default();
        if occupants.is_empty() {
            return Ok(());
        }
        let nick = self.nick_of(room, user_id).await;
        let Ok(occupant) = room.with_resource_str(&nick) else { return Ok(()) };
        for jid in occupants {
            let mut message = Message::groupchat(Some(jid.into()));
            message.from = Some(occupant.clone().into());
            message.id = Some(Id(new_id()));
            message.payloads = vec![payload.clone(), occupant_id(room, user_id).into()];
            self.send(message).await?;
        }
        Ok(())
    }

    /// `m.room.power_levels` changed: every occupant whose affiliation or role changed with it is announced
    /// again to the XMPP occupants (XEP-0045 §9.3–9.8), with status 110 to the occupant it is about.
    pub(crate) async fn power_changed(
        &self,
        room: &BareJid,
        content: serde_json::Map<String, Value>,
    ) -> ConnectorResult<()> {
        let (changes, occupants) = {
            let mut rooms = self.rooms();
            let Some(state) = rooms.get_mut(room) else { return Ok(()) };
            let new = state.power.with_levels(content);
            // (nick, person, level, real JID of an XMPP occupant)
            let mut changes: Vec<(String, String, i64, Option<FullJid>)> = state
                .power
                .changed_ranks(&new, state.members.keys())
                .into_iter()
                .filter_map(|user| Some((state.members.get(&user)?.clone(), user.clone(), new.level(&user), None)))
                .collect();
            for (jid, nick) in &state.occupants {
                let (old_level, new_level) =
                    (self.xmpp_occupant_level(&state.power, jid), self.xmpp_occupant_level(&new, jid));
                if rank_of(old_level) != rank_of(new_level) {
                    changes.push((nick.clone(), jid.to_bare().to_string(), new_level, Some(jid.clone())));
                }
            }
            state.power = new;
            (changes, state.occupants.keys().cloned().collect::<Vec<_>>())
        };
        for (nick, person, level, real_jid) in changes {
            let Ok(occupant) = room.with_resource_str(&nick) else { continue };
            for to in &occupants {
                let status = if real_jid.as_ref() == Some(to) { vec![Status::SelfPresence] } else { vec![] };
                let presence = Presence::available()
                    .with_from(occupant.clone())
                    .with_to(to.clone())
                    .with_payload(muc_user(vec![ranked_item(level, real_jid.clone())], status))
                    .with_payload(occupant_id(room, &person));
                self.send(presence).await?;
            }
        }
        Ok(())
    }
}

/// A Matrix moderator's redaction as the gateway MUC announces it: a retraction moderated by the moderator's
/// occupant (XEP-0425).
fn moderation(request: ModerateRequest, by: &FullJid) -> Element {
    let moderated = Moderated { by: Some(by.clone().into()) };
    Retract { id: request.id, moderated: Some(moderated), reason: request.reason }.into()
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn moderations_are_announced_as_the_moderators() {
        let by = FullJid::from_str("#r#hs.org@bridge.example.org/Alice").unwrap();
        let request = ModerateRequest { id: "s1".into(), reason: Some("spam".into()) };
        let retract = Retract::try_from(moderation(request, &by)).unwrap();
        assert_eq!((retract.id.as_str(), retract.reason.as_deref()), ("s1", Some("spam")));
        assert_eq!(retract.moderated.and_then(|moderated| moderated.by).map(|by| by.to_string()), Some(by.to_string()));
    }
}
