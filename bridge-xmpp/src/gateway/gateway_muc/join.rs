//! XMPP users entering and leaving a gateway MUC ([XEP-0045 §7.2](https://xmpp.org/extensions/xep-0045.html#enter),
//! the service side): the occupant list (Matrix members by display name, and the other XMPP occupants), the
//! joiner's own presence, recent history with [XEP-0203](https://xmpp.org/extensions/xep-0203.html) delay stamps,
//! the subject; and the occupant's ghost joining the Matrix room.

use std::{collections::HashMap, time::Duration};

use lattice_bridge_core::{
    ConnectorError,
    connector::ConnectorResult,
    event::{RemoteEvent, RemoteEventKind},
    matrix::{Direction, MessagesQuery},
    store::{MessageMapping, Portal},
};
use serde_json::Value;
use tokio_xmpp::parsers::{
    delay::Delay,
    jid::{BareJid, FullJid, Jid},
    message::{Id, Lang, Message},
    muc::user::{Affiliation, Item, Role, Status},
    ns,
    presence::{Presence, Type as PresenceType},
    stanza_error::{DefinedCondition, StanzaError},
    stanza_id::StanzaId,
};

use ruma::OwnedRoomId;

use super::{GatewayMucs, HISTORY_MESSAGES, alias_of_room, content_text, muc_user, ranked_item, stanza_error};
use crate::{
    affiliations::RoomPower,
    gateway::{PortalKind, clock::stamp, core_error, portal::gateway_muc_key},
    xep::ids::gateway_muc_occupant_id as occupant_id,
};

/// How long a joiner's history may take to read before the join goes on without it.
const HISTORY_WAIT: Duration = Duration::from_secs(5);

/// A joiner's occupant JID, and whether the others are told of the arrival.
struct Arrival {
    occupant: FullJid,
    announce: bool,
}

impl GatewayMucs<'_> {
    /// Answers a presence with an error presence.
    async fn reply_presence_error(&self, from: Jid, to: Jid, error: StanzaError) {
        let mut presence = Presence::new(PresenceType::Error).with_from(from).with_to(to);
        presence.payloads.push(error.into());
        let _ = self.send(presence).await;
    }

    /// A presence to a gateway MUC: a join, a nick change (treated as a join) or a leave.
    pub(crate) async fn on_presence(&self, presence: Presence) -> lattice_bridge_core::Result<()> {
        let (Some(from), Some(to)) = (presence.from.clone(), presence.to.clone()) else { return Ok(()) };
        let Ok(from) = from.try_into_full() else { return Ok(()) };
        let room = to.to_bare();
        if self.addressing.is_gateway_domain(from.domain().as_str()) {
            return Ok(());
        }
        match presence.type_ {
            PresenceType::None => {
                let Some(nick) = to.resource().map(|nick| nick.to_string()) else { return Ok(()) };
                // A join carries `<x xmlns='…/muc'/>`; without it, it is a status change of an occupant.
                let joining = presence.payloads.iter().any(|payload| payload.is("x", ns::MUC));
                if let Err(error) = self.join(&room, &from, &nick, joining).await {
                    tracing::warn!(%room, %from, %error, "cannot let an XMPP user into a Matrix room");
                    let condition = match &error {
                        ConnectorError::Permanent { .. } => DefinedCondition::ItemNotFound,
                        _ => DefinedCondition::ServiceUnavailable,
                    };
                    self.reply_presence_error(to, from.into(), stanza_error(condition, &error.to_string())).await;
                }
            }
            PresenceType::Unavailable => self.leave(&room, &from).await?,
            _ => {}
        }
        Ok(())
    }

    /// Lets `from` into the room as `nick`. An occupant who joins again (a client that thinks it dropped out) gets
    /// the whole join again, but the others are not told of a new arrival.
    async fn join(&self, room: &BareJid, from: &FullJid, nick: &str, joining: bool) -> ConnectorResult<()> {
        let Ok(occupant_jid) = room.with_resource_str(nick) else {
            return Err(ConnectorError::permanent(format!("{nick:?} is not a valid nick")));
        };
        let (already, taken) = self.rooms().get(room).map_or((false, false), |state| {
            (
                state.occupants.get(from).is_some_and(|known| known == nick),
                state.occupants.iter().any(|(jid, taken)| taken == nick && jid != from),
            )
        });
        if already && !joining {
            return Ok(());
        }
        if taken {
            let error = stanza_error(DefinedCondition::Conflict, "that nick is taken");
            let mut presence = Presence::new(PresenceType::Error).with_from(occupant_jid).with_to(from.clone());
            presence.payloads.push(error.into());
            return self.send(presence).await;
        }
        let (room_id, portal) = self.open_room(room).await?;
        let (members, power) = self.read_room(&room_id).await?;
        let others = self.seat(room, from, nick, &room_id, &members, &power);
        self.persist_occupants(room).await;
        // 1. Everyone already in the room, 2. the joiner's own presence (110), to them and to the others.
        self.send_occupants(room, from, &members, &power, &others).await?;
        let arrival = Arrival { occupant: occupant_jid, announce: !already };
        self.announce(room, from, arrival, &power, &others).await?;
        // 3. History, with delay stamps, then 4. the subject.
        self.send_history(room, from, &portal, &room_id).await?;
        self.send_current_subject(room, from, &room_id).await?;
        // The occupant's ghost joins the Matrix room.
        if let Some(ghost) = self.ghost_of(from, nick) {
            let kind = RemoteEventKind::Join;
            let event = RemoteEvent {
                portal: portal.remote_key,
                sender: Some(ghost),
                remote_id: None,
                timestamp_ms: None,
                kind,
            };
            self.bridge.push(event).await.map_err(core_error)?;
        }
        Ok(())
    }

    /// The Matrix room a gateway MUC names, joined by the bridge bot, and its portal (made on first use).
    async fn open_room(&self, room: &BareJid) -> ConnectorResult<(OwnedRoomId, Portal)> {
        let alias = room.node().and_then(|node| alias_of_room(node.as_str())).unwrap_or_default();
        let alias_id = ruma::OwnedRoomAliasId::try_from(alias.as_str())
            .map_err(|_| ConnectorError::permanent(format!("{alias} is not a Matrix room alias")))?;
        let room_id = self
            .bridge
            .matrix()
            .resolve_alias(&alias_id)
            .await?
            .ok_or_else(|| ConnectorError::permanent(format!("no Matrix room has the alias {alias}")))?;
        let bot = self.bridge.matrix().bot();
        bot.ensure_registered().await?;
        bot.join(<&ruma::RoomOrAliasId>::from(&*room_id)).await?;
        let key = gateway_muc_key(room_id.as_str());
        let portal = match self.bridge.portals().by_key(&key).await? {
            Some(portal) => portal,
            None => {
                let portal = Portal {
                    remote_key: key,
                    room_id: room_id.to_string(),
                    alias: Some(alias),
                    name: None,
                    topic: None,
                    metadata: PortalKind::GatewayMuc(room.clone()).metadata(),
                };
                self.bridge.portals().upsert(&portal).await?;
                portal
            }
        };
        Ok((room_id, portal))
    }

    /// The room's Matrix members (people, not the bridge's users) by display name, and its power levels.
    async fn read_room(&self, room_id: &OwnedRoomId) -> ConnectorResult<(HashMap<String, String>, RoomPower)> {
        Ok((self.matrix_members(room_id).await?, self.room_power(room_id).await?))
    }

    /// Seats `from` in the room as `nick`, with what is known of the Matrix side; returns the other XMPP occupants.
    fn seat(
        &self,
        room: &BareJid,
        from: &FullJid,
        nick: &str,
        room_id: &OwnedRoomId,
        members: &HashMap<String, String>,
        power: &RoomPower,
    ) -> Vec<(FullJid, String)> {
        let mut rooms = self.rooms();
        let state = rooms.entry(room.clone()).or_default();
        state.room_id = room_id.to_string();
        state.members = members.clone();
        state.power = power.clone();
        let others = state.occupants.iter().filter(|(jid, _)| *jid != from).map(|(j, n)| (j.clone(), n.clone()));
        let others = others.collect();
        state.occupants.insert(from.clone(), nick.to_owned());
        others
    }

    /// The presence of everyone already in the room, to the joiner: Matrix members by name, then XMPP occupants.
    async fn send_occupants(
        &self,
        room: &BareJid,
        to: &FullJid,
        members: &HashMap<String, String>,
        power: &RoomPower,
        others: &[(FullJid, String)],
    ) -> ConnectorResult<()> {
        let mut names: Vec<(&String, &String)> = members.iter().map(|(user, name)| (name, user)).collect();
        names.sort();
        let members = names.into_iter().map(|(name, user)| (name.as_str(), None, user.clone(), power.level(user)));
        let occupants = others.iter().map(|(jid, nick)| {
            (nick.as_str(), Some(jid.clone()), jid.to_bare().to_string(), self.xmpp_occupant_level(power, jid))
        });
        for (nick, real_jid, person, level) in members.chain(occupants).collect::<Vec<_>>() {
            let Ok(occupant) = room.with_resource_str(nick) else { continue };
            let presence = Presence::available()
                .with_from(occupant)
                .with_to(to.clone())
                .with_payload(muc_user(vec![ranked_item(level, real_jid)], vec![]))
                .with_payload(occupant_id(room, &person));
            self.send(presence).await?;
        }
        Ok(())
    }

    /// The joiner's own presence: to the other occupants when `arrival.announce`, and to the joiner with statuses
    /// 100 (the room is non-anonymous) and 110 (this is you).
    async fn announce(
        &self,
        room: &BareJid,
        from: &FullJid,
        arrival: Arrival,
        power: &RoomPower,
        others: &[(FullJid, String)],
    ) -> ConnectorResult<()> {
        let own_item = ranked_item(self.xmpp_occupant_level(power, from), Some(from.clone()));
        let own_id = occupant_id(room, from.to_bare().as_str());
        for (jid, _) in others.iter().filter(|_| arrival.announce) {
            let presence = Presence::available()
                .with_from(arrival.occupant.clone())
                .with_to(jid.clone())
                .with_payload(muc_user(vec![own_item.clone()], vec![]))
                .with_payload(own_id.clone());
            self.send(presence).await?;
        }
        let own = Presence::available()
            .with_from(arrival.occupant)
            .with_to(from.clone())
            .with_payload(muc_user(vec![own_item], vec![Status::NonAnonymousRoom, Status::SelfPresence]))
            .with_payload(own_id);
        self.send(own).await
    }

    /// The room's recent messages, with delay stamps, to the joiner; each is mapped under its event ID so
    /// reactions, replies and retractions can name it.
    async fn send_history(
        &self,
        room: &BareJid,
        to: &FullJid,
        portal: &Portal,
        room_id: &OwnedRoomId,
    ) -> ConnectorResult<()> {
        // The occupant is in already; without history (Conduit 0.11 answers an appservice's `/messages` with an
        // empty 500, retried in vain) the join still stands, after at most `HISTORY_WAIT`.
        let query = MessagesQuery::room_messages(Direction::Backward, HISTORY_MESSAGES, None);
        let bot = self.bridge.matrix().bot();
        let events = match tokio::time::timeout(HISTORY_WAIT, bot.messages(room_id, &query)).await {
            Ok(Ok(page)) => page.chunk.into_iter().rev().collect(),
            Ok(Err(error)) => {
                tracing::warn!(%error, room = %room_id, "cannot read the room's history; joining without it");
                Vec::new()
            }
            Err(_) => {
                tracing::warn!(room = %room_id, "reading the room's history takes too long; joining without it");
                Vec::new()
            }
        };
        for event in events {
            let Some(text) = event.get("content").and_then(content_text) else { continue };
            let sender = event.get("sender").and_then(Value::as_str).unwrap_or_default();
            let name = self.nick_of(room, sender).await;
            let Ok(occupant) = room.with_resource_str(&name) else { continue };
            let mut message = Message::groupchat(Some(to.clone().into())).with_body(Lang::new(), text);
            message.from = Some(occupant.into());
            message.payloads.push(occupant_id(room, sender).into());
            if let Some(event_id) = event.get("event_id").and_then(Value::as_str) {
                message.id = Some(Id(event_id.to_owned()));
                message.payloads.push(StanzaId { id: event_id.to_owned(), by: room.clone().into() }.into());
                self.map_event_id(portal, event_id).await?;
            }
            let stamp = event.get("origin_server_ts").and_then(Value::as_u64).and_then(stamp);
            if let Some(stamp) = stamp {
                message = message.with_payload(Delay { from: Some(room.clone().into()), stamp, data: None });
            }
            self.send(message).await?;
        }
        Ok(())
    }

    /// The room's topic as the MUC's subject, to the joiner (empty when it has none).
    async fn send_current_subject(&self, room: &BareJid, to: &FullJid, room_id: &OwnedRoomId) -> ConnectorResult<()> {
        let topic = self
            .bridge
            .matrix()
            .bot()
            .get_state_event(room_id, "m.room.topic", "")
            .await
            .ok()
            .flatten()
            .and_then(|content| content.get("topic").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_default();
        let mut subject = Message::groupchat(Some(to.clone().into()));
        subject.from = Some(room.clone().into());
        subject.subjects.insert(Lang::new(), topic);
        self.send(subject).await
    }

    /// An XMPP occupant left: the others and the occupant hear of it, and their ghost leaves the Matrix room.
    async fn leave(&self, room: &BareJid, from: &FullJid) -> lattice_bridge_core::Result<()> {
        let (nick, others) = {
            let mut rooms = self.rooms();
            let Some(state) = rooms.get_mut(room) else { return Ok(()) };
            let Some(nick) = state.occupants.remove(from) else { return Ok(()) };
            (nick, state.occupants.keys().cloned().collect::<Vec<_>>())
        };
        let Ok(occupant) = room.with_resource_str(&nick) else { return Ok(()) };
        let item = Item::new(Affiliation::Member, Role::None);
        let id = occupant_id(room, from.to_bare().as_str());
        let own = Presence::unavailable()
            .with_from(occupant.clone())
            .with_to(from.clone())
            .with_payload(muc_user(vec![item.clone()], vec![Status::SelfPresence]))
            .with_payload(id.clone());
        let _ = self.send(own).await;
        for jid in others {
            let presence = Presence::unavailable()
                .with_from(occupant.clone())
                .with_to(jid)
                .with_payload(muc_user(vec![item.clone()], vec![]))
                .with_payload(id.clone());
            let _ = self.send(presence).await;
        }
        let room_id = self.rooms().get(room).map(|state| state.room_id.clone()).unwrap_or_default();
        self.persist_occupants(room).await;
        if let Some(ghost) = self.ghost_of(from, &nick) {
            let kind = RemoteEventKind::Leave { reason: None };
            let event = RemoteEvent {
                portal: gateway_muc_key(&room_id),
                sender: Some(ghost),
                remote_id: None,
                timestamp_ms: None,
                kind,
            };
            self.bridge.push(event).await?;
        }
        Ok(())
    }

    /// Records a Matrix event served to XMPP under its own event ID, so reactions, replies and retractions can name
    /// it.
    async fn map_event_id(&self, portal: &Portal, event_id: &str) -> ConnectorResult<()> {
        self.bridge.messages().also_known_as(MessageMapping {
            event_id: event_id.to_owned(),
            room_id: portal.room_id.clone(),
            portal_key: portal.remote_key.clone(),
            remote_id: event_id.to_owned(),
        });
        Ok(())
    }
}
