//! MUC → Matrix: occupants' presences (joins, leaves, nick changes, kicks and bans, affiliations and roles) as
//! they reach the listener, and the MUC's answers to the bridge's own joins.

use lattice_bridge_core::{
    connector::GhostSpec,
    event::{RemoteEvent, RemoteEventKind},
};
use tokio_xmpp::parsers::{
    jid::{BareJid, FullJid},
    muc::user::{Item, MucUser, Status},
    ns,
    presence::{Presence, Type as PresenceType},
    stanza_error::{DefinedCondition, StanzaError},
};

use super::{JoinError, MucPortals, Occupant, RoomState, error_text};
use crate::{
    addressing::XmppIdentity,
    affiliations::level_of,
    gateway::{find_payload, portal::muc_key},
};

/// What a presence says about one occupant.
struct Seen<'a> {
    nick: String,
    occupant: FullJid,
    identity: XmppIdentity,
    leaving: bool,
    statuses: &'a [Status],
    item: Option<&'a Item>,
    /// The text of the presence's `<status/>`, if any.
    status_text: Option<String>,
}

impl MucPortals<'_> {
    /// A presence from a MUC: an answer to one of the bridge's joins, or an occupant's presence on the listener.
    pub(crate) async fn on_presence(&self, presence: Presence) -> lattice_bridge_core::Result<()> {
        let (Some(from), Some(to)) = (presence.from.clone(), presence.to.clone()) else { return Ok(()) };
        let Ok(from) = from.try_into_full() else { return Ok(()) };
        let Ok(to) = to.try_into_full() else { return Ok(()) };
        let room = from.to_bare();
        if presence.type_ == PresenceType::Error {
            self.on_join_error(&room, &to, &presence);
            return Ok(());
        }
        let muc_user = find_payload::<MucUser>(&presence.payloads, "x", ns::MUC_USER);
        let statuses = muc_user.as_ref().map(|user| user.status.clone()).unwrap_or_default();
        let item = muc_user.and_then(|user| user.items.into_iter().next());
        if statuses.contains(&Status::SelfPresence) {
            if presence.type_ == PresenceType::Unavailable {
                self.forget_own_occupant(&room, &to);
            } else if let Some(waiter) = self.take_join(&room, &to) {
                let _ = waiter.send(Ok(from.resource().to_string()));
            }
            return Ok(());
        }
        if to != self.listener_jid() {
            return Ok(());
        }
        let Some(identity) = self.occupant_identity(&presence.payloads, from.clone()) else { return Ok(()) };
        let seen = Seen {
            nick: from.resource().to_string(),
            occupant: from,
            identity,
            leaving: presence.type_ == PresenceType::Unavailable,
            statuses: &statuses,
            item: item.as_ref(),
            status_text: presence.statuses.values().next().cloned(),
        };
        self.on_occupant(&room, seen).await
    }

    /// The MUC refused one of the bridge's joins: the joiner hears why.
    fn on_join_error(&self, room: &BareJid, to: &FullJid, presence: &Presence) {
        let error = find_payload::<StanzaError>(&presence.payloads, "error", ns::DEFAULT_NS);
        let outcome = match error {
            Some(error) if error.defined_condition == DefinedCondition::Conflict => JoinError::Conflict,
            Some(error) => JoinError::Refused(error_text(&error)),
            None => JoinError::Refused("an error without a reason".into()),
        };
        if let Some(waiter) = self.take_join(room, to) {
            let _ = waiter.send(Err(outcome));
        }
    }

    /// An occupant's presence: their ghost joins, leaves, is renamed, and gets the power level of their
    /// affiliation and role.
    async fn on_occupant(&self, room: &BareJid, seen: Seen<'_>) -> lattice_bridge_core::Result<()> {
        let level = seen.item.map_or(0, |item| level_of(&item.affiliation, &item.role));
        let (events, level_change) = {
            let mut rooms = self.rooms();
            let Some(state) = rooms.get_mut(room) else { return Ok(()) };
            if state.is_ours(&seen.nick) {
                return Ok(());
            }
            let Some(events) = self.occupant_changes(room, state, &seen) else { return Ok(()) };
            (events, self.level_change(state, &seen, level))
        };
        let portal = muc_key(room);
        for (sender, kind) in events {
            if sender.is_none() {
                continue;
            }
            self.bridge
                .push(RemoteEvent { portal: portal.clone(), sender, remote_id: None, timestamp_ms: None, kind })
                .await?;
        }
        // After the join, from the bridge bot: ghosts have no power to give themselves any.
        if let Some(kind) = level_change {
            self.bridge.push(RemoteEvent { portal, sender: None, remote_id: None, timestamp_ms: None, kind }).await?;
        }
        Ok(())
    }

    /// Records what a presence changes in the room's occupants and returns the membership events it makes; `None`
    /// when a renamed occupant known by nick only takes a nick that is no valid JID resource.
    fn occupant_changes(
        &self,
        room: &BareJid,
        state: &mut RoomState,
        seen: &Seen<'_>,
    ) -> Option<Vec<(Option<GhostSpec>, RemoteEventKind)>> {
        let (nick, identity) = (&seen.nick, &seen.identity);
        if !seen.leaving {
            if state.occupants.contains_key(nick) {
                return Some(Vec::new());
            }
            state.occupants.insert(nick.clone(), Occupant { identity: identity.clone() });
            return Some(vec![(self.ghost(identity, nick), RemoteEventKind::Join)]);
        }
        state.occupants.remove(nick);
        let new_nick =
            seen.item.and_then(|item| item.nick.clone()).filter(|_| seen.statuses.contains(&Status::NewNick));
        let Some(new_nick) = new_nick else {
            let reason = leave_reason(seen.statuses, seen.item, seen.status_text.clone());
            return Some(vec![(self.ghost(identity, nick), RemoteEventKind::Leave { reason })]);
        };
        // Known by nick only (no real JID, no trusted occupant-id): a new nick is a new person to Matrix.
        let new_identity = if *identity == XmppIdentity::Occupant(seen.occupant.clone()) {
            XmppIdentity::Occupant(room.with_resource_str(&new_nick).ok()?)
        } else {
            identity.clone()
        };
        state.occupants.insert(new_nick.clone(), Occupant { identity: new_identity.clone() });
        Some(if new_identity == *identity {
            vec![(self.ghost(identity, &new_nick), RemoteEventKind::Profile)]
        } else {
            vec![
                (self.ghost(identity, nick), RemoteEventKind::Leave { reason: None }),
                (self.ghost(&new_identity, &new_nick), RemoteEventKind::Join),
            ]
        })
    }

    /// The power level change a presence makes, if any. The affiliation outlives the visit, so a leave keeps the
    /// level; any presence while in the room carries the current affiliation and role.
    fn level_change(&self, state: &mut RoomState, seen: &Seen<'_>, level: i64) -> Option<RemoteEventKind> {
        let current = state.occupants.values().find(|occupant| occupant.identity == seen.identity).or_else(|| {
            seen.item.and_then(|item| item.nick.as_ref()).and_then(|new_nick| state.occupants.get(new_nick))
        });
        let user_id = current.and_then(|occupant| self.addressing.ghost_for(&occupant.identity))?;
        if state.levels.get(&user_id).copied().unwrap_or(0) == level {
            return None;
        }
        state.levels.insert(user_id.clone(), level);
        Some(RemoteEventKind::PowerLevel { user_id, level })
    }
}

/// Why an occupant left, as Matrix shows it: a ban or kick (with the moderator's reason), else what their
/// presence's status says, else the reason the MUC gave.
fn leave_reason(statuses: &[Status], item: Option<&Item>, status_text: Option<String>) -> Option<String> {
    let reason = item.and_then(|item| item.reason.as_ref()).map(|reason| reason.0.clone());
    let with_reason =
        |what: &str| Some(format!("{what}{}", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default()));
    if statuses.contains(&Status::Banned) {
        with_reason("banned")
    } else if statuses.contains(&Status::Kicked) {
        with_reason("kicked")
    } else {
        status_text.or(reason)
    }
}

#[cfg(test)]
mod tests {
    use tokio_xmpp::parsers::muc::user::{Affiliation, Reason, Role};

    use super::*;

    #[test]
    fn leaves_say_who_removed_the_occupant_and_why() {
        let mut item = Item::new(Affiliation::Outcast, Role::None);
        item.reason = Some(Reason("spam".into()));
        let plain = Item::new(Affiliation::None, Role::None);
        let table = [
            (&[Status::Banned][..], Some(&item), None, Some("banned: spam")),
            (&[Status::Kicked][..], Some(&plain), Some("bye"), Some("kicked")),
            (&[Status::Kicked][..], Some(&item), None, Some("kicked: spam")),
            (&[][..], Some(&item), Some("gone home"), Some("gone home")),
            (&[][..], Some(&item), None, Some("spam")),
            (&[][..], None, None, None),
        ];
        for (statuses, item, text, expected) in table {
            let reason = leave_reason(statuses, item, text.map(str::to_owned));
            assert_eq!(reason.as_deref(), expected, "{statuses:?} {text:?}");
        }
    }
}
