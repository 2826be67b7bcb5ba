//! MUC → Matrix: occupants' presences (joins, leaves, nick changes, kicks and bans, affiliations and roles) as
//! they reach the listener, and the answers to the bridge's own joins.

use lattice_bridge_core::event::{RemoteEvent, RemoteEventKind};
use tokio_xmpp::parsers::{
    muc::user::{MucUser, Status},
    ns,
    presence::{Presence, Type as PresenceType},
    stanza_error::{DefinedCondition, StanzaError},
};

use super::{JoinError, MucPortals, Occupant, error_text};
use crate::{addressing::XmppIdentity, gateway::find_payload, gateway::portal::muc_key};

impl MucPortals<'_> {
    pub(crate) async fn on_presence(&self, presence: Presence) -> lattice_bridge_core::Result<()> {
        let (Some(from), Some(to)) = (presence.from.clone(), presence.to.clone()) else { return Ok(()) };
        let room = from.to_bare();
        let Some(nick) = from.resource().map(|resource| resource.to_string()) else { return Ok(()) };
        let Ok(to) = to.try_into_full() else { return Ok(()) };
        if presence.type_ == PresenceType::Error {
            let error = find_payload::<StanzaError>(&presence.payloads, "error", ns::DEFAULT_NS);
            let outcome = match error {
                Some(error) if error.defined_condition == DefinedCondition::Conflict => JoinError::Conflict,
                Some(error) => JoinError::Refused(error_text(&error)),
                None => JoinError::Refused("an error without a reason".into()),
            };
            if let Some(waiter) = self.take_join(&room, &to) {
                let _ = waiter.send(Err(outcome));
            }
            return Ok(());
        }
        let muc_user = find_payload::<MucUser>(&presence.payloads, "x", ns::MUC_USER);
        let statuses = muc_user.as_ref().map(|user| user.status.clone()).unwrap_or_default();
        let item = muc_user.and_then(|user| user.items.into_iter().next());
        if statuses.contains(&Status::SelfPresence) {
            if presence.type_ == PresenceType::Unavailable {
                self.forget_own_occupant(&room, &to);
            } else if let Some(waiter) = self.take_join(&room, &to) {
                let _ = waiter.send(Ok(nick));
            }
            return Ok(());
        }
        if to != self.listener_jid() {
            return Ok(());
        }
        let Ok(occupant) = from.clone().try_into_full() else { return Ok(()) };
        let Some(identity) = self.occupant_identity(&presence.payloads, occupant.clone()) else { return Ok(()) };
        // Known by nick only (no real JID, no trusted occupant-id): a new nick is a new person to Matrix.
        let by_nick = identity == XmppIdentity::Occupant(occupant);
        let portal = muc_key(&room);
        let level = item.as_ref().map_or(0, |item| crate::affiliations::level_of(&item.affiliation, &item.role));
        let mut events = Vec::new();
        let mut level_change = None;
        {
            let mut rooms = self.rooms();
            let Some(state) = rooms.get_mut(&room) else { return Ok(()) };
            if state.is_ours(&nick) {
                return Ok(());
            }
            let leaving = presence.type_ == PresenceType::Unavailable;
            match (leaving, state.occupants.contains_key(&nick)) {
                (false, false) => {
                    state.occupants.insert(nick.clone(), Occupant { identity: identity.clone() });
                    events.push((self.ghost(&identity, &nick), RemoteEventKind::Join));
                }
                (false, true) => {}
                (true, _) => {
                    state.occupants.remove(&nick);
                    let new_nick = item.as_ref().and_then(|item| item.nick.clone());
                    match new_nick.filter(|_| statuses.contains(&Status::NewNick)) {
                        Some(new_nick) => {
                            let new_identity = if by_nick {
                                match room.with_resource_str(&new_nick) {
                                    Ok(full) => XmppIdentity::Occupant(full),
                                    Err(_) => return Ok(()),
                                }
                            } else {
                                identity.clone()
                            };
                            state.occupants.insert(new_nick.clone(), Occupant { identity: new_identity.clone() });
                            if new_identity == identity {
                                events.push((self.ghost(&identity, &new_nick), RemoteEventKind::Profile));
                            } else {
                                events.push((self.ghost(&identity, &nick), RemoteEventKind::Leave { reason: None }));
                                events.push((self.ghost(&new_identity, &new_nick), RemoteEventKind::Join));
                            }
                        }
                        None => {
                            let reason =
                                item.as_ref().and_then(|item| item.reason.as_ref()).map(|reason| reason.0.clone());
                            let reason = if statuses.contains(&Status::Banned) {
                                Some(format!("banned{}", reason.map(|r| format!(": {r}")).unwrap_or_default()))
                            } else if statuses.contains(&Status::Kicked) {
                                Some(format!("kicked{}", reason.map(|r| format!(": {r}")).unwrap_or_default()))
                            } else {
                                presence.statuses.values().next().cloned().or(reason)
                            };
                            events.push((self.ghost(&identity, &nick), RemoteEventKind::Leave { reason }));
                        }
                    }
                }
            }
            // The affiliation outlives the visit, so a leave keeps the level; any presence while in the room
            // carries the current affiliation and role.
            let current = state.occupants.values().find(|occupant| occupant.identity == identity).or_else(|| {
                item.as_ref().and_then(|item| item.nick.as_ref()).and_then(|new_nick| state.occupants.get(new_nick))
            });
            if let Some(user_id) = current.and_then(|occupant| self.addressing.ghost_for(&occupant.identity))
                && state.levels.get(&user_id).copied().unwrap_or(0) != level
            {
                state.levels.insert(user_id.clone(), level);
                level_change = Some(RemoteEventKind::PowerLevel { user_id, level });
            }
        }
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
}
