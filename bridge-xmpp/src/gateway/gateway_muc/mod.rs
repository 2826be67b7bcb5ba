//! Matrix rooms as MUCs on the gateway ([XEP-0045 §7](https://xmpp.org/extensions/xep-0045.html#enter), the
//! service side): an XMPP user joins `#room#example.org@{gateway}` for the Matrix alias `#room:example.org`.
//!
//! The gateway answers disco#info as a `conference/text` room, sends the joiner the occupant list (the room's
//! Matrix members by display name, and the other XMPP occupants), recent history with
//! [XEP-0203](https://xmpp.org/extensions/xep-0203.html) delay stamps and the subject; each XMPP occupant becomes a
//! Matrix ghost in the room. The room becomes a portal (`hosted/{room_id}`) so Matrix traffic reaches the occupants.

mod archive;
mod disco;
mod join;
mod to_matrix;
mod to_xmpp;

use std::{
    collections::HashMap,
    str::FromStr,
    sync::{Mutex, MutexGuard},
};

use lattice_bridge_core::{connector::GhostSpec, formatting::RichText, matrix, store::Portal};
use ruma::RoomId;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_xmpp::parsers::{
    jid::{BareJid, FullJid, Jid},
    muc::user::{Item, MucUser, Status},
    stanza_error::{DefinedCondition, ErrorType, StanzaError},
};

use super::facade;
use crate::{
    addressing::XmppIdentity,
    affiliations::{RoomPower, rank_of},
    gateway::{PortalKind, portal::gateway_muc_key},
    styling::render_styling,
};

/// How many recent Matrix messages a joiner receives as history.
pub(crate) const HISTORY_MESSAGES: usize = 20;

/// The Matrix alias a gateway MUC JID names: `#room#example.org@{gateway}` → `#room:example.org`.
///
/// XMPP servers lower-case the node of every JID (nodeprep), so an upper-case letter of the alias is written as
/// `^` and the letter (`#^rust#matrix.org` → `#Rust:matrix.org`) and a `^` as `^^`; see [`room_node_of_alias`].
pub(crate) fn alias_of_room(node: &str) -> Option<String> {
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
pub(crate) fn room_node_of_alias(alias: &str) -> Option<String> {
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

/// One gateway MUC: who is in it on the XMPP side, and the Matrix members' names.
#[derive(Debug, Default)]
pub(crate) struct Room {
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
pub(super) struct StoredOccupant {
    /// The occupant's real full JID.
    jid: String,
    /// Their nick in the room.
    nick: String,
}

/// The gateway MUCs currently occupied by XMPP users; each gateway MUC portal's metadata holds its occupants too.
#[derive(Debug, Default)]
pub(crate) struct State {
    rooms: Mutex<HashMap<BareJid, Room>>,
}

facade!(
    /// The gateway MUCs: Matrix rooms that XMPP users join on the gateway.
    GatewayMucs,
    gateway_mucs
);

/// The occupants a gateway MUC portal's metadata lists; entries that do not parse are skipped.
fn stored_occupants(portal: &Portal) -> HashMap<FullJid, String> {
    let stored: Vec<StoredOccupant> =
        portal.metadata.get("occupants").and_then(|list| serde_json::from_value(list.clone()).ok()).unwrap_or_default();
    stored.into_iter().filter_map(|occupant| Some((FullJid::from_str(&occupant.jid).ok()?, occupant.nick))).collect()
}

/// The `<item/>` of an occupant at Matrix power `level`, with their real JID when they are an XMPP user.
pub(super) fn ranked_item(level: i64, jid: Option<FullJid>) -> Item {
    let (affiliation, role) = rank_of(level);
    let item = Item::new(affiliation, role);
    match jid {
        Some(jid) => item.with_jid(jid),
        None => item,
    }
}

pub(super) fn muc_user(items: Vec<Item>, status: Vec<Status>) -> MucUser {
    MucUser::new().with_statuses(status).with_items(items)
}

pub(super) fn stanza_error(condition: DefinedCondition, text: &str) -> StanzaError {
    StanzaError::new(ErrorType::Cancel, condition, "en", text)
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

impl GatewayMucs<'_> {
    /// The gateway MUCs with XMPP occupants.
    fn rooms(&self) -> MutexGuard<'_, HashMap<BareJid, Room>> {
        self.gateway_mucs.rooms.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether a JID addresses a gateway MUC (its node is `#room#server`).
    pub(crate) fn is_gateway_muc_jid(&self, jid: &Jid) -> bool {
        jid.domain().as_str() == self.addressing.gateway()
            && jid.node().is_some_and(|node| alias_of_room(node.as_str()).is_some())
    }

    /// The power level of an XMPP occupant's ghost.
    fn xmpp_occupant_level(&self, power: &RoomPower, jid: &FullJid) -> i64 {
        self.addressing.ghost_for(&XmppIdentity::Account(jid.to_bare())).map_or(0, |ghost| power.level(&ghost))
    }

    /// Writes the room's XMPP occupants into its portal's metadata. A failure is logged, not returned: the
    /// occupancy in memory is right, and the next join or leave writes it again.
    async fn persist_occupants(&self, room: &BareJid) {
        let Some((room_id, stored)) = self.rooms().get(room).map(|state| {
            let stored: Vec<StoredOccupant> = state
                .occupants
                .iter()
                .map(|(jid, nick)| StoredOccupant { jid: jid.to_string(), nick: nick.clone() })
                .collect();
            (state.room_id.clone(), stored)
        }) else {
            return;
        };
        let bridge = &self.bridge;
        let outcome = async {
            let Some(mut portal) = bridge.portals().by_key(&gateway_muc_key(&room_id)).await? else { return Ok(()) };
            portal.metadata["occupants"] = json!(stored);
            bridge.portals().upsert(&portal).await
        };
        if let Err(error) = outcome.await {
            tracing::warn!(%room, %error, "cannot store the XMPP occupants of a gateway MUC");
        }
    }

    /// Loads the XMPP occupants of every gateway MUC from the store, after a restart, with the rooms' members and
    /// power levels. Runs before the gateway handles anything.
    pub(crate) async fn restore(&self) {
        for (kind, portal) in self.portals("restore gateway MUC occupants").await {
            let PortalKind::GatewayMuc(room) = kind else { continue };
            let occupants = stored_occupants(&portal);
            if occupants.is_empty() {
                continue;
            }
            let (mut members, mut power) = (HashMap::new(), RoomPower::default());
            if let Ok(room_id) = <&RoomId>::try_from(portal.room_id.as_str()) {
                match self.matrix_members(room_id).await {
                    Ok(found) => members = found,
                    Err(error) => tracing::warn!(%room, %error, "cannot read the members of a gateway MUC"),
                }
                match self.room_power(room_id).await {
                    Ok(found) => power = found,
                    Err(error) => tracing::warn!(%room, %error, "cannot read the power levels of a gateway MUC"),
                }
            }
            tracing::info!(%room, occupants = occupants.len(), "restored the XMPP occupants of a gateway MUC");
            self.rooms().insert(room, Room { room_id: portal.room_id.clone(), occupants, members, power });
        }
    }

    /// The room's Matrix members (people, not the bridge's users) by display name, their localpart when they have
    /// none.
    pub(super) async fn matrix_members(&self, room_id: &RoomId) -> matrix::Result<HashMap<String, String>> {
        let members = self.bridge.matrix().bot().joined_member_profiles(room_id).await?;
        Ok(members
            .into_iter()
            .filter(|(user, _)| self.is_matrix_person(user.as_str()))
            .map(|(user, member)| {
                let name = member.display_name.unwrap_or_else(|| user.localpart().to_owned());
                (user.to_string(), name)
            })
            .collect())
    }

    /// Who holds which level in the room: its power levels, and the creators above them.
    pub(super) async fn room_power(&self, room_id: &RoomId) -> matrix::Result<RoomPower> {
        Ok(RoomPower::from_state(&self.bridge.matrix().bot().room_state(room_id).await?))
    }

    /// The ghost of an XMPP occupant, named after their nick.
    fn ghost_of(&self, from: &FullJid, nick: &str) -> Option<GhostSpec> {
        let identity = XmppIdentity::Account(from.to_bare());
        Some(GhostSpec {
            user_id: self.addressing.ghost_for(&identity)?,
            remote_id: identity.as_str().to_owned(),
            displayname: Some(nick.to_owned()),
            avatar_url: None,
        })
    }

    /// The nick a Matrix user has in a gateway MUC: their display name in the room.
    async fn nick_of(&self, room: &BareJid, user_id: &str) -> String {
        if let Some(name) = self.rooms().get(room).and_then(|state| state.members.get(user_id).cloned()) {
            return name;
        }
        let name = self.displayname_of(user_id).await;
        if let Some(state) = self.rooms().get_mut(room) {
            state.members.insert(user_id.to_owned(), name.clone());
        }
        name
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
            remote_key: gateway_muc_key("!r"),
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
}
