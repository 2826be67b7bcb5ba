//! Joining MUCs ([XEP-0045 §7.2](https://xmpp.org/extensions/xep-0045.html#enter)): the listener occupant of each
//! portal, and each Matrix user's own occupant, with a free nick; rejoining after a reconnection.

use std::sync::Arc;

use lattice_bridge_core::{ConnectorError, connector::ConnectorResult, store::Portal};
use tokio::sync::oneshot;
use tokio_xmpp::parsers::{
    jid::{BareJid, FullJid},
    muc::{Muc, muc::History},
    presence::Presence,
};

use super::{JoinError, JoinWaiter, MucPortals, NICK_ATTEMPTS, PUPPET_RESOURCE, Puppet, RoomState, sanitize_nick};
use crate::{
    gateway::PortalKind,
    gateway::{new_id, transient},
};

impl MucPortals<'_> {
    /// The lock that keeps joins to one MUC one at a time.
    fn join_lock(&self, room: &BareJid) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.mucs.join_locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(locks.entry(room.clone()).or_default())
    }

    /// Makes sure the portal's MUC has a listener on the current connection.
    pub(super) async fn ensure_listening(&self, room: &BareJid, portal: &Portal) -> ConnectorResult<()> {
        let lock = self.join_lock(room);
        let _guard = lock.lock().await;
        let state = self.online()?;
        let (joined, history) = {
            let mut rooms = self.rooms();
            let entry = rooms
                .entry(room.clone())
                .or_insert_with(|| RoomState { topic: portal.topic.clone(), ..RoomState::default() });
            (entry.listener_generation == Some(state.generation), entry.last_seen.clone())
        };
        if joined {
            return Ok(());
        }
        // The MUC announces every occupant again on this join.
        if let Some(state) = self.rooms().get_mut(room) {
            state.occupants.clear();
        }
        self.learn_muc_features(room).await;
        // History since the last message seen fills the gap of a reconnection; a first join takes none.
        let history = match history {
            Some(since) => History::new().with_since(since),
            None => History::new().with_maxstanzas(0),
        };
        let base = sanitize_nick(&self.section.muc.listener_nick);
        let nick = self.join_with_nicks(room, &self.listener_jid(), &base, history).await?;
        let mut rooms = self.rooms();
        let entry = rooms.entry(room.clone()).or_default();
        entry.joining.remove(&nick);
        entry.listener_nick = Some(nick);
        entry.listener_generation = Some(state.generation);
        Ok(())
    }

    /// Joins under `base`, then `base` with the conflict suffix and a number, until a nick is free.
    async fn join_with_nicks(
        &self,
        room: &BareJid,
        occupant: &FullJid,
        base: &str,
        history: History,
    ) -> ConnectorResult<String> {
        let suffix = &self.section.muc.nick_conflict_suffix;
        for attempt in 0..NICK_ATTEMPTS {
            let nick = match attempt {
                0 => base.to_owned(),
                1 => format!("{base}{suffix}"),
                n => format!("{base}{suffix}{n}"),
            };
            let taken = {
                let rooms = self.rooms();
                rooms.get(room).is_some_and(|state| state.occupants.contains_key(&nick))
            };
            if taken {
                continue;
            }
            match self.join(room, occupant, &nick, history.clone()).await? {
                Ok(nick) => return Ok(nick),
                Err(JoinError::Conflict) => continue,
                Err(JoinError::Refused(reason)) => {
                    return Err(ConnectorError::permanent(format!("the MUC {room} refused {occupant}: {reason}")));
                }
            }
        }
        Err(ConnectorError::permanent(format!("no free nick like {base:?} in the MUC {room}")))
    }

    /// Sends one join presence and waits for the MUC's self-presence or error.
    async fn join(
        &self,
        room: &BareJid,
        occupant: &FullJid,
        nick: &str,
        history: History,
    ) -> ConnectorResult<Result<String, JoinError>> {
        let to = room
            .with_resource_str(nick)
            .map_err(|error| ConnectorError::permanent(format!("{nick:?} is not a valid nick: {error}")))?;
        let (sender, receiver) = oneshot::channel();
        self.rooms().entry(room.clone()).or_default().joining.insert(nick.to_owned());
        self.mucs
            .joins
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert((room.clone(), occupant.clone()), sender);
        let presence = Presence::available()
            .with_from(occupant.clone())
            .with_to(to)
            .with_id(new_id())
            .with_payload(Muc::new().with_history(history));
        // A Matrix user's occupant says what its gateway JID can do (XEP-0115) and names its avatar (XEP-0153); the
        // listener is the gateway itself.
        let user = occupant.node().and_then(|_| self.addressing.matrix_user_of(&occupant.to_bare()));
        let presence = match user {
            Some(user) => {
                let avatar = self.avatars().matrix_avatar(&user).await;
                let mut presence = presence.with_payload(crate::xep::caps::user_caps());
                if let Some(avatar) = avatar {
                    presence.payloads.push(avatar.update().into());
                }
                presence
            }
            None => presence,
        };
        let outcome = match self.send(presence).await {
            Ok(()) => tokio::time::timeout(self.timeout, receiver)
                .await
                .ok()
                .and_then(Result::ok)
                .ok_or_else(|| transient(format!("the MUC {room} did not confirm the join of {occupant}"))),
            Err(error) => Err(error),
        };
        // The nick the MUC gave stays in `joining` until the caller records whose it is.
        if !matches!(&outcome, Ok(Ok(given)) if given == nick) {
            self.forget_joining(room, nick);
        }
        if let Ok(Ok(given)) = &outcome
            && given != nick
        {
            self.rooms().entry(room.clone()).or_default().joining.insert(given.clone());
        }
        if outcome.is_err() {
            self.mucs
                .joins
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(&(room.clone(), occupant.clone()));
        }
        outcome
    }

    /// Makes sure a Matrix user is an occupant of the MUC on the current connection; returns their nick.
    pub(crate) async fn ensure_puppet(
        &self,
        room: &BareJid,
        portal: &Portal,
        user_id: &str,
        displayname: Option<&str>,
    ) -> ConnectorResult<(FullJid, String)> {
        self.ensure_listening(room, portal).await?;
        let lock = self.join_lock(room);
        let _guard = lock.lock().await;
        let state = self.online()?;
        let Some(puppet) = self.addressing.puppet_jid(user_id) else {
            return Err(ConnectorError::permanent(format!("{user_id} cannot be represented on XMPP")));
        };
        let occupant = puppet
            .with_resource_str(PUPPET_RESOURCE)
            .map_err(|error| ConnectorError::permanent(format!("{user_id} has no valid gateway JID: {error}")))?;
        let known = self.rooms().get(room).and_then(|state| state.puppets.get(user_id).cloned());
        let wanted = displayname.map(sanitize_nick);
        if let Some(known) = &known
            && known.joined_generation == Some(state.generation)
            && wanted.as_ref().is_none_or(|wanted| known.nick.starts_with(wanted.as_str()))
        {
            return Ok((occupant, known.nick.clone()));
        }
        let base = match wanted {
            Some(wanted) => wanted,
            None => match known {
                Some(known) => known.nick,
                None => sanitize_nick(&self.displayname_of(user_id).await),
            },
        };
        let nick = self.join_with_nicks(room, &occupant, &base, History::new().with_maxstanzas(0)).await?;
        self.rooms()
            .entry(room.clone())
            .or_default()
            .puppets
            .insert(user_id.to_owned(), Puppet { nick: nick.clone(), joined_generation: Some(state.generation) });
        self.forget_joining(room, &nick);
        Ok((occupant, nick))
    }

    /// A Matrix user left the portal: their occupant leaves the MUC.
    pub(crate) async fn leave_puppet(&self, room: &BareJid, user_id: &str) -> ConnectorResult<()> {
        let removed = self.rooms().get_mut(room).and_then(|state| state.puppets.remove(user_id));
        let (Some(puppet), Some(jid)) = (removed, self.addressing.puppet_jid(user_id)) else { return Ok(()) };
        if puppet.joined_generation != Some(self.link.state().generation) {
            return Ok(());
        }
        let Ok(from) = jid.with_resource_str(PUPPET_RESOURCE) else { return Ok(()) };
        let Ok(to) = room.with_resource_str(&puppet.nick) else { return Ok(()) };
        self.send(Presence::unavailable().with_from(from).with_to(to)).await
    }

    /// After a (re)connection: joins every portal's MUC again and the Matrix users who were in it.
    pub(crate) async fn rejoin_all(&self) {
        let mut tasks = Vec::new();
        for (kind, portal) in self.portals("rejoin their MUCs").await {
            let PortalKind::Muc(room) = kind else { continue };
            let gateway = self.arc();
            tasks.push(tokio::spawn(async move { gateway.muc().rejoin_room(&room, &portal).await }));
        }
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Joins one portal's MUC again, then the Matrix users who were in it.
    pub(super) async fn rejoin_room(&self, room: &BareJid, portal: &Portal) {
        if let Err(error) = self.ensure_listening(room, portal).await {
            tracing::warn!(%room, %error, "cannot rejoin the MUC");
            return;
        }
        let puppets: Vec<(String, String)> = self
            .rooms()
            .get(room)
            .map(|state| state.puppets.iter().map(|(user, puppet)| (user.clone(), puppet.nick.clone())).collect())
            .unwrap_or_default();
        for (user_id, nick) in puppets {
            if let Err(error) = self.ensure_puppet(room, portal, &user_id, Some(&nick)).await {
                tracing::warn!(%room, %user_id, %error, "cannot rejoin a Matrix user to the MUC");
            }
        }
        tracing::info!(%room, "rejoined the MUC");
    }

    /// The join waiting for the MUC's answer about `occupant`.
    pub(super) fn take_join(&self, room: &BareJid, occupant: &FullJid) -> Option<JoinWaiter> {
        self.mucs
            .joins
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&(room.clone(), occupant.clone()))
    }

    /// The MUC removed one of the bridge's occupants (kick, shutdown): join again on next use.
    pub(super) fn forget_joining(&self, room: &BareJid, nick: &str) {
        if let Some(state) = self.rooms().get_mut(room) {
            state.joining.remove(nick);
        }
    }

    /// The MUC says one of the bridge's occupants left (its self-presence): it joins again on next use.
    pub(super) fn forget_own_occupant(&self, room: &BareJid, occupant: &FullJid) {
        let mut rooms = self.rooms();
        let Some(state) = rooms.get_mut(room) else { return };
        if *occupant == self.listener_jid() {
            state.listener_generation = None;
            return;
        }
        let user = self.addressing.matrix_user_of(&occupant.to_bare());
        if let Some(puppet) = user.and_then(|user| state.puppets.get_mut(&user)) {
            puppet.joined_generation = None;
        }
    }
}
