//! Matrix rooms as MUCs on the gateway ([XEP-0045 §7](https://xmpp.org/extensions/xep-0045.html#enter), the
//! service side): an XMPP user joins `#room#example.org@{gateway}` for the Matrix alias `#room:example.org`.
//!
//! The gateway answers disco#info as a `conference/text` room, sends the joiner the occupant list (the room's
//! Matrix members by display name, and the other XMPP occupants), recent history with
//! [XEP-0203](https://xmpp.org/extensions/xep-0203.html) delay stamps and the subject; each XMPP occupant becomes a
//! Matrix ghost in the room. The room becomes a portal (`hosted/{room_id}`) so Matrix traffic reaches the occupants.

use std::{
    collections::HashMap,
    str::FromStr,
    sync::{Mutex, MutexGuard},
};

use lattice_bridge_core::{
    ConnectorError,
    connector::{ConnectorResult, GhostSpec},
    event::{RemoteEvent, RemoteEventKind},
    formatting::RichText,
    store::{MessageMapping, Portal},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_xmpp::parsers::{
    date::DateTime,
    delay::Delay,
    disco::{DiscoInfoResult, DiscoItemsResult, Identity},
    iq::Iq,
    jid::{BareJid, FullJid, Jid},
    message::{Id, Lang, Message, MessageType as XmppMessageType},
    minidom::Element,
    muc::user::{Affiliation, Item, MucUser, Role, Status},
    ns,
    presence::{Presence, Type as PresenceType},
    stanza_error::{DefinedCondition, ErrorType, StanzaError},
    stanza_id::StanzaId,
};

use crate::{
    addressing::XmppIdentity,
    affiliations::{RoomPower, rank_of},
    delivery::Written,
    messages::{Inbound, Outgoing},
    muc::{Gateway, new_id, transient},
    styling::render_styling,
    xep::{
        ids::{MessageIds, hosted_occupant_id as occupant_id},
        retract::{FALLBACK_BODY, Moderated, Retract},
    },
};

/// How many recent Matrix messages a joiner receives as history.
pub(crate) const HISTORY_MESSAGES: usize = 20;

/// The Matrix alias a gateway MUC JID names: `#room#example.org@{gateway}` → `#room:example.org`.
///
/// XMPP servers lower-case the node of every JID (nodeprep), so an upper-case letter of the alias is written as
/// `^` and the letter (`#^rust#matrix.org` → `#Rust:matrix.org`) and a `^` as `^^`; see [`room_node_of_alias`].
pub fn alias_of_room(node: &str) -> Option<String> {
    let (room, server) = node.strip_prefix('#')?.rsplit_once('#')?;
    if room.is_empty() || server.is_empty() {
        return None;
    }
    let mut decoded = String::with_capacity(room.len());
    let mut chars = room.chars();
    while let Some(c) = chars.next() {
        match c {
            '^' => match chars.next()? {
                '^' => decoded.push('^'),
                next => decoded.extend(next.to_uppercase()),
            },
            c => decoded.push(c),
        }
    }
    Some(format!("#{decoded}:{server}"))
}

/// The node of the gateway MUC for a Matrix alias, the inverse of [`alias_of_room`]:
/// `#Rust:matrix.org` → `#^rust#matrix.org`.
pub fn room_node_of_alias(alias: &str) -> Option<String> {
    let (room, server) = alias.strip_prefix('#')?.split_once(':')?;
    let mut node = String::from("#");
    for c in room.chars() {
        match c {
            '^' => node.push_str("^^"),
            c if c.is_uppercase() => {
                node.push('^');
                node.extend(c.to_lowercase());
            }
            c => node.push(c),
        }
    }
    Some(format!("{node}#{server}"))
}

/// The portal key of a Matrix room hosted as a gateway MUC.
pub fn portal_key(room_id: &str) -> String {
    format!("hosted/{room_id}")
}

/// The gateway MUC a hosted portal stands for.
pub fn portal_room(portal: &Portal) -> Option<BareJid> {
    portal.metadata.get("hosted").and_then(Value::as_str).and_then(|jid| BareJid::from_str(jid).ok())
}

/// One hosted room: who is in it on the XMPP side, and the Matrix members' names.
#[derive(Debug, Default)]
pub(crate) struct HostedRoom {
    pub(crate) room_id: String,
    /// XMPP occupants: real full JID → nick.
    pub(crate) occupants: HashMap<FullJid, String>,
    /// Matrix members (not the bridge's ghosts) → display name.
    pub(crate) members: HashMap<String, String>,
    /// Who holds which power level, for the occupants' affiliations and roles.
    pub(crate) power: RoomPower,
}

/// One XMPP occupant of a gateway MUC as the portal's metadata keeps it (`occupants`), so the occupancy outlives a
/// restart of the bridge: XMPP clients are never told the gateway went away, and must keep receiving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredOccupant {
    /// The occupant's real full JID.
    pub jid: String,
    /// Their nick in the room.
    pub nick: String,
}

/// The gateway MUCs currently occupied by XMPP users; each hosted portal's metadata holds its occupants too.
#[derive(Debug, Default)]
pub struct Hosted {
    rooms: Mutex<HashMap<BareJid, HostedRoom>>,
}

impl Hosted {
    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<BareJid, HostedRoom>> {
        self.rooms.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The occupants a hosted portal's metadata lists; entries that do not parse are skipped.
pub fn stored_occupants(portal: &Portal) -> HashMap<FullJid, String> {
    let stored: Vec<StoredOccupant> =
        portal.metadata.get("occupants").and_then(|list| serde_json::from_value(list.clone()).ok()).unwrap_or_default();
    stored.into_iter().filter_map(|occupant| Some((FullJid::from_str(&occupant.jid).ok()?, occupant.nick))).collect()
}

/// Raw client-server calls the runtime's Matrix client does not offer (history, members with names).
#[derive(Debug, Clone)]
pub struct MatrixApi {
    http: reqwest::Client,
    homeserver: url::Url,
    token: String,
}

impl MatrixApi {
    /// A client for `homeserver` acting with the appservice token.
    pub fn new(homeserver: url::Url, token: String) -> Self {
        let http = reqwest::Client::builder().no_proxy().build().unwrap_or_default();
        Self { http, homeserver, token }
    }

    pub(crate) async fn get(&self, path: &[&str], query: &[(&str, &str)], as_user: &str) -> Result<Value, String> {
        let mut url = self.homeserver.clone();
        url.path_segments_mut().map_err(|()| "bad homeserver URL".to_owned())?.pop_if_empty().extend(path);
        url.query_pairs_mut().extend_pairs(query).append_pair("user_id", as_user);
        let response = self.http.get(url).bearer_auth(&self.token).send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        if status.is_success() { Ok(body) } else { Err(format!("{status}: {body}")) }
    }

    /// Joined members and their display names (`GET /rooms/{roomId}/joined_members`).
    async fn members(&self, room_id: &str, as_user: &str) -> Result<HashMap<String, String>, String> {
        let body = self.get(&["_matrix", "client", "v3", "rooms", room_id, "joined_members"], &[], as_user).await?;
        let joined = body.get("joined").and_then(Value::as_object).cloned().unwrap_or_default();
        Ok(joined
            .into_iter()
            .map(|(user, profile)| {
                let name = profile.get("display_name").and_then(Value::as_str).map(str::to_owned);
                let name = name.unwrap_or_else(|| localpart(&user));
                (user, name)
            })
            .collect())
    }

    /// The room's current state events (`GET /rooms/{roomId}/state`).
    pub(crate) async fn room_state(&self, room_id: &str, as_user: &str) -> Result<Vec<Value>, String> {
        let body = self.get(&["_matrix", "client", "v3", "rooms", room_id, "state"], &[], as_user).await?;
        Ok(body.as_array().cloned().unwrap_or_default())
    }

    /// The last `limit` message events, oldest first (`GET /rooms/{roomId}/messages?dir=b`).
    async fn recent_messages(&self, room_id: &str, as_user: &str, limit: usize) -> Result<Vec<Value>, String> {
        let limit = limit.to_string();
        let filter = json!({"types": ["m.room.message"]}).to_string();
        let query = [("dir", "b"), ("limit", limit.as_str()), ("filter", filter.as_str())];
        let body = self.get(&["_matrix", "client", "v3", "rooms", room_id, "messages"], &query, as_user).await?;
        let mut events = body.get("chunk").and_then(Value::as_array).cloned().unwrap_or_default();
        events.reverse();
        Ok(events)
    }
}

pub(crate) fn core_error(error: lattice_bridge_core::Error) -> ConnectorError {
    if error.is_transient() { transient(error.to_string()) } else { ConnectorError::permanent(error.to_string()) }
}

fn localpart(user_id: &str) -> String {
    user_id.trim_start_matches('@').split(':').next().unwrap_or(user_id).to_owned()
}

/// The `<item/>` of an occupant at Matrix power `level`, with their real JID when they are an XMPP user.
fn ranked_item(level: i64, jid: Option<FullJid>) -> Item {
    let (affiliation, role) = rank_of(level);
    let item = Item::new(affiliation, role);
    match jid {
        Some(jid) => item.with_jid(jid),
        None => item,
    }
}

fn muc_user(items: Vec<Item>, status: Vec<Status>) -> MucUser {
    MucUser::new().with_statuses(status).with_items(items)
}

fn stanza_error(condition: DefinedCondition, text: &str) -> StanzaError {
    StanzaError::new(ErrorType::Cancel, condition, "en", text)
}

/// XEP-0082 stamp from milliseconds since the epoch.
pub(crate) fn stamp(ms: u64) -> Option<DateTime> {
    let seconds = i64::try_from(ms / 1000).ok()?;
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = crate::muc::civil_from_days(days);
    let text = format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60);
    DateTime::from_str(&text).ok()
}

/// A Matrix message's content as XEP-0393 text, `/me` for emotes, the URL for files.
pub(crate) fn content_text(content: &Value) -> Option<String> {
    let body = content.get("body")?.as_str()?;
    let msgtype = content.get("msgtype").and_then(Value::as_str).unwrap_or("m.text");
    let format = content.get("format").and_then(Value::as_str);
    let html = content.get("formatted_body").and_then(Value::as_str);
    let text = render_styling(&RichText::from_message(body, html, format));
    Some(if msgtype == "m.emote" { format!("/me {text}") } else { text })
}

impl Gateway {
    fn hosted(&self) -> MutexGuard<'_, HashMap<BareJid, HostedRoom>> {
        self.hosted.lock()
    }

    /// Whether a JID addresses a gateway MUC (its node is `#room#server`).
    pub(crate) fn is_hosted_jid(&self, jid: &Jid) -> bool {
        jid.domain().as_str() == self.addressing.gateway()
            && jid.node().is_some_and(|node| alias_of_room(node.as_str()).is_some())
    }

    async fn reply_presence_error(&self, from: Jid, to: Jid, error: StanzaError) {
        let mut presence = Presence::new(PresenceType::Error).with_from(from).with_to(to);
        presence.payloads.push(error.into());
        let _ = self.send(presence).await;
    }

    /// A presence to a gateway MUC: a join, a nick change (treated as a join) or a leave.
    pub(crate) async fn on_hosted_presence(&self, presence: Presence) -> lattice_bridge_core::Result<()> {
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
                if let Err(error) = self.hosted_join(&room, &from, &nick, joining).await {
                    tracing::warn!(%room, %from, %error, "cannot let an XMPP user into a Matrix room");
                    let condition = match &error {
                        ConnectorError::Permanent { .. } => DefinedCondition::ItemNotFound,
                        _ => DefinedCondition::ServiceUnavailable,
                    };
                    self.reply_presence_error(to, from.into(), stanza_error(condition, &error.to_string())).await;
                }
            }
            PresenceType::Unavailable => self.hosted_leave(&room, &from).await?,
            _ => {}
        }
        Ok(())
    }

    /// Lets `from` into the room as `nick`. An occupant who joins again (a client that thinks it dropped out) gets
    /// the whole join again, but the others are not told of a new arrival.
    async fn hosted_join(&self, room: &BareJid, from: &FullJid, nick: &str, joining: bool) -> ConnectorResult<()> {
        let alias = room.node().and_then(|node| alias_of_room(node.as_str())).unwrap_or_default();
        let Ok(occupant_jid) = room.with_resource_str(nick) else {
            return Err(ConnectorError::permanent(format!("{nick:?} is not a valid nick")));
        };
        let (already, taken) = self.hosted().get(room).map_or((false, false), |state| {
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
        let key = portal_key(room_id.as_str());
        let portal = match self.bridge.store().portal_by_key(&key).await? {
            Some(portal) => portal,
            None => {
                let portal = Portal {
                    remote_key: key.clone(),
                    room_id: room_id.to_string(),
                    alias: Some(alias.clone()),
                    name: None,
                    topic: None,
                    metadata: json!({"hosted": room.as_str()}),
                };
                self.bridge.store().upsert_portal(&portal).await?;
                portal
            }
        };
        let bot_id = self.bridge.bot_user_id();
        let members = match &self.matrix_api {
            Some(api) => api.members(room_id.as_str(), &bot_id).await.map_err(transient)?,
            None => bot
                .joined_members(&room_id)
                .await?
                .into_iter()
                .map(|user| (user.to_string(), localpart(user.as_str())))
                .collect(),
        };
        let members: HashMap<String, String> = members
            .into_iter()
            .filter(|(user, _)| !self.addressing.is_ghost(user) && !self.bridge.is_bridge_user(user))
            .collect();
        let power = match &self.matrix_api {
            Some(api) => RoomPower::from_state(&api.room_state(room_id.as_str(), &bot_id).await.map_err(transient)?),
            None => RoomPower::default().with_levels(bot.power_levels(&room_id).await?.into_content()),
        };
        let others: Vec<(FullJid, String)> = {
            let mut hosted = self.hosted();
            let state = hosted.entry(room.clone()).or_default();
            state.room_id = room_id.to_string();
            state.members = members.clone();
            state.power = power.clone();
            let others = state.occupants.iter().filter(|(jid, _)| *jid != from).map(|(j, n)| (j.clone(), n.clone()));
            let others = others.collect();
            state.occupants.insert(from.clone(), nick.to_owned());
            others
        };
        self.persist_occupants(room).await;
        // 1. Everyone already in the room, 2. the joiner's own presence (110), to them and to the others.
        let mut names: Vec<(&String, &String)> = members.iter().map(|(user, name)| (name, user)).collect();
        names.sort();
        for (name, user) in names {
            let Ok(occupant) = room.with_resource_str(name) else { continue };
            let presence = Presence::available()
                .with_from(occupant)
                .with_to(from.clone())
                .with_payload(muc_user(vec![ranked_item(power.level(user), None)], vec![]))
                .with_payload(occupant_id(room, user));
            self.send(presence).await?;
        }
        for (jid, other_nick) in &others {
            let Ok(occupant) = room.with_resource_str(other_nick) else { continue };
            let item = ranked_item(self.xmpp_occupant_level(&power, jid), Some(jid.clone()));
            let presence = Presence::available()
                .with_from(occupant)
                .with_to(from.clone())
                .with_payload(muc_user(vec![item], vec![]))
                .with_payload(occupant_id(room, jid.to_bare().as_str()));
            self.send(presence).await?;
        }
        let own_item = ranked_item(self.xmpp_occupant_level(&power, from), Some(from.clone()));
        let own_id = occupant_id(room, from.to_bare().as_str());
        for (jid, _) in others.iter().filter(|_| !already) {
            let presence = Presence::available()
                .with_from(occupant_jid.clone())
                .with_to(jid.clone())
                .with_payload(muc_user(vec![own_item.clone()], vec![]))
                .with_payload(own_id.clone());
            self.send(presence).await?;
        }
        let own = Presence::available()
            .with_from(occupant_jid)
            .with_to(from.clone())
            .with_payload(muc_user(vec![own_item], vec![Status::NonAnonymousRoom, Status::SelfPresence]))
            .with_payload(own_id);
        self.send(own).await?;
        // 3. History, with delay stamps, then 4. the subject.
        if let Some(api) = &self.matrix_api {
            // The occupant is in already; without history (Conduit 0.11 answers an appservice's `/messages` with
            // an empty 500) the join still stands.
            let events = match api.recent_messages(room_id.as_str(), &bot_id, HISTORY_MESSAGES).await {
                Ok(events) => events,
                Err(error) => {
                    tracing::warn!(%error, room = %room_id, "cannot read the room's history; joining without it");
                    Vec::new()
                }
            };
            for event in events {
                let Some(text) = event.get("content").and_then(content_text) else { continue };
                let sender = event.get("sender").and_then(Value::as_str).unwrap_or_default();
                let name = self.hosted_nick(room, sender).await;
                let Ok(occupant) = room.with_resource_str(&name) else { continue };
                let mut message = Message::groupchat(Some(from.clone().into())).with_body(Lang::new(), text);
                message.from = Some(occupant.into());
                message.payloads.push(occupant_id(room, sender).into());
                if let Some(event_id) = event.get("event_id").and_then(Value::as_str) {
                    message.id = Some(Id(event_id.to_owned()));
                    message.payloads.push(StanzaId { id: event_id.to_owned(), by: room.clone().into() }.into());
                    // Known by its event ID, so reactions, replies and retractions can name it.
                    self.map_sent(&portal, event_id, event_id.to_owned()).await?;
                }
                let stamp = event.get("origin_server_ts").and_then(Value::as_u64).and_then(stamp);
                if let Some(stamp) = stamp {
                    message = message.with_payload(Delay { from: Some(room.clone().into()), stamp, data: None });
                }
                self.send(message).await?;
            }
        }
        let topic = bot
            .get_state_event(&room_id, "m.room.topic", "")
            .await
            .ok()
            .flatten()
            .and_then(|content| content.get("topic").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_default();
        let mut subject = Message::groupchat(Some(from.clone().into()));
        subject.from = Some(room.clone().into());
        subject.subjects.insert(Lang::new(), topic);
        self.send(subject).await?;
        // The occupant's ghost joins the Matrix room.
        if let Some(ghost) = self.hosted_ghost(from, nick) {
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

    /// The power level of an XMPP occupant's ghost.
    fn xmpp_occupant_level(&self, power: &RoomPower, jid: &FullJid) -> i64 {
        self.addressing.ghost_for(&XmppIdentity::Account(jid.to_bare())).map_or(0, |ghost| power.level(&ghost))
    }

    /// Writes the room's XMPP occupants into its portal's metadata. A failure is logged, not returned: the
    /// occupancy in memory is right, and the next join or leave writes it again.
    async fn persist_occupants(&self, room: &BareJid) {
        let Some((room_id, stored)) = self.hosted().get(room).map(|state| {
            let stored: Vec<StoredOccupant> = state
                .occupants
                .iter()
                .map(|(jid, nick)| StoredOccupant { jid: jid.to_string(), nick: nick.clone() })
                .collect();
            (state.room_id.clone(), stored)
        }) else {
            return;
        };
        let store = self.bridge.store();
        let outcome = async {
            let Some(mut portal) = store.portal_by_key(&portal_key(&room_id)).await? else { return Ok(()) };
            portal.metadata["occupants"] = json!(stored);
            store.upsert_portal(&portal).await
        };
        if let Err(error) = outcome.await {
            tracing::warn!(%room, %error, "cannot store the XMPP occupants of a gateway MUC");
        }
    }

    /// Loads the XMPP occupants of every gateway MUC from the store, after a restart, with the rooms' members and
    /// power levels. Runs before the gateway handles anything.
    pub(crate) async fn restore_hosted(&self) {
        let portals = match self.bridge.store().portals().await {
            Ok(portals) => portals,
            Err(error) => {
                tracing::error!(%error, "cannot list portals to restore gateway MUC occupants");
                return;
            }
        };
        let bot_id = self.bridge.bot_user_id();
        for portal in portals {
            let Some(room) = portal_room(&portal) else { continue };
            let occupants = stored_occupants(&portal);
            if occupants.is_empty() {
                continue;
            }
            let (mut members, mut power) = (HashMap::new(), RoomPower::default());
            if let Some(api) = &self.matrix_api {
                match api.members(&portal.room_id, &bot_id).await {
                    Ok(found) => {
                        members = found
                            .into_iter()
                            .filter(|(user, _)| !self.addressing.is_ghost(user) && !self.bridge.is_bridge_user(user))
                            .collect();
                    }
                    Err(error) => tracing::warn!(%room, %error, "cannot read the members of a gateway MUC"),
                }
                match api.room_state(&portal.room_id, &bot_id).await {
                    Ok(state) => power = RoomPower::from_state(&state),
                    Err(error) => tracing::warn!(%room, %error, "cannot read the power levels of a gateway MUC"),
                }
            }
            tracing::info!(%room, occupants = occupants.len(), "restored the XMPP occupants of a gateway MUC");
            self.hosted().insert(room, HostedRoom { room_id: portal.room_id.clone(), occupants, members, power });
        }
    }

    fn hosted_ghost(&self, from: &FullJid, nick: &str) -> Option<GhostSpec> {
        let identity = XmppIdentity::Account(from.to_bare());
        Some(GhostSpec {
            user_id: self.addressing.ghost_for(&identity)?,
            remote_id: identity.as_str().to_owned(),
            displayname: Some(nick.to_owned()),
            avatar_url: None,
        })
    }

    /// The nick a Matrix user has in a gateway MUC: their display name in the room.
    pub(crate) async fn hosted_nick(&self, room: &BareJid, user_id: &str) -> String {
        if let Some(name) = self.hosted().get(room).and_then(|state| state.members.get(user_id).cloned()) {
            return name;
        }
        let name = self.displayname_of(user_id).await;
        if let Some(state) = self.hosted().get_mut(room) {
            state.members.insert(user_id.to_owned(), name.clone());
        }
        name
    }

    async fn hosted_leave(&self, room: &BareJid, from: &FullJid) -> lattice_bridge_core::Result<()> {
        let (nick, others) = {
            let mut hosted = self.hosted();
            let Some(state) = hosted.get_mut(room) else { return Ok(()) };
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
        let room_id = self.hosted().get(room).map(|state| state.room_id.clone()).unwrap_or_default();
        self.persist_occupants(room).await;
        if let Some(ghost) = self.hosted_ghost(from, &nick) {
            let kind = RemoteEventKind::Leave { reason: None };
            let event = RemoteEvent {
                portal: portal_key(&room_id),
                sender: Some(ghost),
                remote_id: None,
                timestamp_ms: None,
                kind,
            };
            self.bridge.push(event).await?;
        }
        Ok(())
    }

    /// A groupchat message from an XMPP occupant: into Matrix from their ghost, and reflected to every occupant.
    pub(crate) async fn on_hosted_message(&self, message: Message) -> lattice_bridge_core::Result<()> {
        let (Some(from), Some(to)) = (message.from.clone(), message.to.clone()) else { return Ok(()) };
        let Ok(from) = from.try_into_full() else { return Ok(()) };
        let room = to.to_bare();
        if message.type_ != XmppMessageType::Groupchat {
            return Ok(());
        }
        let joined = self.hosted().get(&room).and_then(|state| {
            let nick = state.occupants.get(&from)?.clone();
            Some((nick, state.room_id.clone(), state.occupants.keys().cloned().collect::<Vec<_>>()))
        });
        let Some((nick, room_id, occupants)) = joined else {
            let mut error = Message::new(Some(from.clone().into()));
            error.type_ = XmppMessageType::Error;
            error.from = Some(room.into());
            error.id = message.id.clone();
            error.payloads.push(stanza_error(DefinedCondition::NotAcceptable, "join the room first").into());
            let _ = self.send(error).await;
            return Ok(());
        };
        let Ok(occupant) = room.with_resource_str(&nick) else { return Ok(()) };
        if let Some((_, body)) = message.get_best_body_cloned(vec![])
            && body.len() > self.section.max_message_bytes
        {
            let mut error = Message::new(Some(from.clone().into()));
            error.type_ = XmppMessageType::Error;
            error.from = Some(room.into());
            error.id = message.id.clone();
            let text = format!("the message is longer than {} bytes", self.section.max_message_bytes);
            error.payloads.push(stanza_error(DefinedCondition::NotAcceptable, &text).into());
            let _ = self.send(error).await;
            return Ok(());
        }
        // The gateway is the MUC: it stamps the stanza-id (XEP-0359) everyone refers to the message by, and
        // reflects the message with its payloads (corrections, replies, reactions, retractions, chat states).
        let mut ids = MessageIds::of(&message, None);
        let stanza_id = new_id();
        ids.stanza_id = Some(stanza_id.clone());
        // The sender's own stanza-ids and occupant-ids are not the MUC's: replaced (XEP-0359 §4, XEP-0421 §4).
        let mut payloads: Vec<Element> = message
            .payloads
            .iter()
            .filter(|element| !element.is("stanza-id", ns::SID) && !element.is("occupant-id", ns::OID))
            .cloned()
            .collect();
        payloads.push(StanzaId { id: stanza_id, by: room.clone().into() }.into());
        payloads.push(occupant_id(&room, from.to_bare().as_str()).into());
        for jid in occupants {
            let mut reflection = Message::groupchat(Some(jid.into()));
            reflection.bodies = message.bodies.clone();
            reflection.from = Some(occupant.clone().into());
            reflection.id = message.id.clone();
            reflection.payloads = payloads.clone();
            let _ = self.send(reflection).await;
        }
        let portal = portal_key(&room_id);
        let inbound = Inbound { portal: &portal, sender: self.hosted_ghost(&from, &nick), timestamp_ms: None };
        self.push_inbound(inbound, &message, &ids).await
    }

    /// disco#info on a gateway MUC: a public, open, non-anonymous text conference.
    pub(crate) fn hosted_disco_info(&self, room: &BareJid) -> DiscoInfoResult {
        let alias = room.node().and_then(|node| alias_of_room(node.as_str())).unwrap_or_default();
        // What Gajim, Dino and Conversations look for; `muc#stable_id` because a reflection keeps the sender's
        // message ID; MAM because the room's Matrix history is served as its archive; occupant-id because every
        // occupant's presence and message carries one (XEP-0421).
        let features = [
            ns::DISCO_INFO,
            ns::DISCO_ITEMS,
            ns::MUC,
            "http://jabber.org/protocol/muc#stable_id",
            ns::PING,
            "muc_public",
            "muc_open",
            "muc_unmoderated",
            "muc_nonanonymous",
            "muc_persistent",
            "muc_unsecured",
            ns::MAM,
            ns::OID,
        ];
        DiscoInfoResult {
            node: None,
            identities: vec![Identity::new("conference", "text", "en", alias)],
            features: features.into_iter().map(str::to_owned).collect(),
            extensions: Vec::new(),
        }
    }

    /// Replies to an IQ to a gateway MUC.
    pub(crate) async fn on_hosted_iq(&self, iq: Iq) {
        if let Iq::Set { from: Some(from), to: Some(to), id, payload } = &iq
            && payload.is("query", ns::MAM)
        {
            return self.serve_archive(from, to, id, payload).await;
        }
        if let Iq::Set { from: Some(from), to: Some(to), id, payload } = &iq {
            // Every set gets an answer (RFC 6120 §8.2.3). XMPP occupants cannot moderate: their ghosts hold no
            // power in the Matrix room.
            let error = if payload.is("moderate", crate::xep::retract::NS_MODERATE) {
                stanza_error(DefinedCondition::Forbidden, "only Matrix moderators moderate this room")
            } else {
                stanza_error(DefinedCondition::ServiceUnavailable, "not supported")
            };
            let reply =
                Iq::Error { from: Some(to.clone()), to: Some(from.clone()), id: id.clone(), error, payload: None };
            let _ = self.send(reply).await;
            return;
        }
        let Iq::Get { from: Some(from), to: Some(to), id, payload } = iq else { return };
        let reply = if payload.is("query", ns::DISCO_INFO) {
            Iq::from_result(id, Some(self.hosted_disco_info(&to.to_bare()))).with_from(to).with_to(from)
        } else if payload.is("query", ns::DISCO_ITEMS) {
            // XEP-0045 §6.5 lets a room keep its occupant list private; joining shows it.
            let items = DiscoItemsResult { node: None, items: Vec::new(), rsm: None };
            Iq::from_result(id, Some(items)).with_from(to).with_to(from)
        } else if payload.is("ping", ns::PING) {
            match from.try_into_full() {
                Ok(from) => self.hosted_ping_reply(&from, &to, id),
                Err(from) => Iq::Result { from: Some(to), to: Some(from.into()), id, payload: None },
            }
        } else {
            let error = stanza_error(DefinedCondition::ServiceUnavailable, "not supported");
            Iq::Error { from: Some(to), to: Some(from), id, error, payload: None }
        };
        let _ = self.send(reply).await;
    }

    /// A Matrix event in a hosted room: messages, topics and memberships go to the XMPP occupants. Returns what
    /// was written that the event's queue item waits for (see [`crate::delivery`]).
    pub async fn hosted_matrix_event(
        &self,
        room: &BareJid,
        portal: &Portal,
        sender: &str,
        event: &lattice_bridge_core::event::MatrixEvent,
    ) -> ConnectorResult<Option<Written>> {
        use lattice_bridge_core::event::MatrixEventKind;
        let occupants: Vec<FullJid> =
            self.hosted().get(room).map(|state| state.occupants.keys().cloned().collect()).unwrap_or_default();
        if occupants.is_empty() {
            return Ok(None);
        }
        match &event.kind {
            MatrixEventKind::Message(_)
            | MatrixEventKind::Edit { .. }
            | MatrixEventKind::Reaction { .. }
            | MatrixEventKind::Redaction { .. } => {
                let Some(event_id) = event.event_id.clone() else { return Ok(None) };
                let Some(outgoing) = self.outgoing(portal, sender, event, true).await? else { return Ok(None) };
                let nick = self.hosted_nick(room, sender).await;
                let occupant = room
                    .with_resource_str(&nick)
                    .map_err(|error| ConnectorError::permanent(format!("{nick:?} is not a valid nick: {error}")))?;
                let (body, mut payloads, map_as) = match outgoing {
                    Outgoing::Message { body, payloads, map_as } => (body, payloads, map_as),
                    // The gateway is the MUC: a Matrix moderator's redaction is announced as the MUC's own.
                    Outgoing::Moderate(request) => {
                        let moderated = Moderated { by: Some(occupant.clone().into()) };
                        let retract = Retract { id: request.id, moderated: Some(moderated), reason: request.reason };
                        (Some(FALLBACK_BODY.to_owned()), vec![retract.into()], None)
                    }
                };
                if let Some(body) = &body {
                    self.section.check_message_size(body)?;
                }
                // Matrix events are known to XMPP by their event ID: it is the message's ID and its stanza-id.
                payloads.push(StanzaId { id: event_id.clone(), by: room.clone().into() }.into());
                payloads.push(occupant_id(room, sender).into());
                for jid in occupants {
                    let mut message = Message::groupchat(Some(jid.into()));
                    if let Some(body) = &body {
                        message = message.with_body(Lang::new(), body.clone());
                    }
                    message.from = Some(occupant.clone().into());
                    message.id = Some(Id(event_id.clone()));
                    message.payloads = payloads.clone();
                    self.send(message).await?;
                }
                let record = MessageMapping {
                    remote_id: map_as.unwrap_or_else(|| event_id.clone()),
                    event_id,
                    room_id: portal.room_id.clone(),
                    portal_key: portal.remote_key.clone(),
                };
                return Ok(Some(Written { record: Some(record) }));
            }
            MatrixEventKind::Topic(topic) => {
                for jid in occupants {
                    let mut message = Message::groupchat(Some(jid.into()));
                    message.from = Some(room.clone().into());
                    message.subjects.insert(Lang::new(), topic.clone());
                    self.send(message).await?;
                }
            }
            MatrixEventKind::Membership { user_id, membership, displayname, .. } => {
                if self.addressing.is_ghost(user_id) {
                    return Ok(None);
                }
                let joined = membership == "join";
                let nick = match displayname {
                    Some(name) if joined => name.clone(),
                    _ => self.hosted_nick(room, user_id).await,
                };
                if let Some(state) = self.hosted().get_mut(room) {
                    if joined {
                        state.members.insert(user_id.clone(), nick.clone());
                    } else {
                        state.members.remove(user_id);
                    }
                }
                let Ok(occupant) = room.with_resource_str(&nick) else { return Ok(None) };
                let level = self.hosted().get(room).map_or(0, |state| state.power.level(user_id));
                let (affiliation, role) = rank_of(level);
                let item = Item::new(affiliation, if joined { role } else { Role::None });
                for jid in occupants {
                    let presence = if joined { Presence::available() } else { Presence::unavailable() };
                    let presence = presence
                        .with_from(occupant.clone())
                        .with_to(jid)
                        .with_payload(muc_user(vec![item.clone()], vec![]))
                        .with_payload(occupant_id(room, user_id));
                    self.send(presence).await?;
                }
            }
            MatrixEventKind::Other
                if event.event_type == "m.room.power_levels"
                    && event.raw.get("state_key").and_then(Value::as_str) == Some("") =>
            {
                let content = event.raw.get("content").and_then(Value::as_object).cloned().unwrap_or_default();
                self.hosted_power_changed(room, content).await?;
            }
            _ => {}
        }
        Ok(None)
    }

    /// An ephemeral payload (a chat state, a displayed marker) from a Matrix member to every XMPP occupant of a
    /// gateway MUC, from the member's nick.
    pub(crate) async fn hosted_ephemeral(
        &self,
        room: &BareJid,
        user_id: &str,
        payload: Element,
    ) -> ConnectorResult<()> {
        let occupants: Vec<FullJid> =
            self.hosted().get(room).map(|state| state.occupants.keys().cloned().collect()).unwrap_or_default();
        if occupants.is_empty() {
            return Ok(());
        }
        let nick = self.hosted_nick(room, user_id).await;
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
    async fn hosted_power_changed(
        &self,
        room: &BareJid,
        content: serde_json::Map<String, Value>,
    ) -> ConnectorResult<()> {
        let (changes, occupants) = {
            let mut hosted = self.hosted();
            let Some(state) = hosted.get_mut(room) else { return Ok(()) };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_muc_nodes_name_aliases_with_case_kept() {
        for (node, alias) in [
            ("#room#example.org", Some("#room:example.org")),
            ("#^rust#matrix.org", Some("#Rust:matrix.org")),
            ("#a^^b#matrix.org", Some("#a^b:matrix.org")),
            ("#bad^#matrix.org", None),
            ("#a#b#c.org", Some("#a#b:c.org")),
            ("room#example.org", None),
            ("#room", None),
            ("##example.org", None),
        ] {
            assert_eq!(alias_of_room(node).as_deref(), alias, "{node}");
        }
    }

    #[test]
    fn alias_nodes_round_trip() {
        for alias in ["#room:example.org", "#Rust:matrix.org", "#A^b_C:x.org", "#a#b:c.org"] {
            let node = room_node_of_alias(alias).unwrap();
            assert_eq!(node, node.to_lowercase(), "nodeprep must not change {node}");
            assert_eq!(alias_of_room(&node).as_deref(), Some(alias));
        }
    }

    #[test]
    fn stored_occupants_read_back_and_bad_entries_are_skipped() {
        let portal = Portal {
            remote_key: portal_key("!r"),
            room_id: "!r".into(),
            alias: None,
            name: None,
            topic: None,
            metadata: json!({"hosted": "#r#s.org@g.org", "occupants": [
                {"jid": "x@y.org/phone", "nick": "X"},
                {"jid": "no resource@y.org", "nick": "Y"}
            ]}),
        };
        let occupants = stored_occupants(&portal);
        assert_eq!(occupants.len(), 1);
        assert_eq!(occupants.get(&FullJid::from_str("x@y.org/phone").unwrap()).map(String::as_str), Some("X"));
        assert!(stored_occupants(&Portal { metadata: json!({"hosted": "#r#s.org@g.org"}), ..portal }).is_empty());
    }

    #[test]
    fn stamps_are_xep_0082() {
        assert_eq!(stamp(0).map(|stamp| stamp.0.to_rfc3339()), Some("1970-01-01T00:00:00+00:00".to_owned()));
    }
}
