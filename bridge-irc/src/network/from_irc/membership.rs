//! IRC → Matrix membership in bridged channels: `JOIN`, `PART`, `QUIT` (netsplits held back, see
//! [`crate::ircv3::netsplit`]), `KICK`, `NICK` and the `RPL_NAMREPLY` list, as ghosts joining, leaving and
//! renaming; the bridge bot's own `JOIN` asks for what it missed (`draft/chathistory`).

use std::time::Duration;

use irc::proto::{Message, Prefix};
use lattice_bridge_core::event::RemoteEventKind;

use crate::{
    ghosts,
    ids::casefold,
    ircv3::{chathistory, netsplit::split_servers},
    network::{Network, lock, render::power_level},
};

impl Network {
    /// A `JOIN` by the bridge bot or a puppet: their mask is noted for bans; the bot (re)joining a bridged channel
    /// asks for what was said meanwhile, where the server offers chathistory.
    pub(super) async fn own_join(&self, message: &Message, own_nick: &str, channel: &str) {
        let Some(Prefix::Nickname(nick, user, host)) = &message.prefix else { return };
        self.puppet_masks.insert(casefold(nick), format!("{nick}!{user}@{host}"));
        if casefold(nick) == casefold(own_nick)
            && self.portal_of(channel).is_some()
            && self.listener.has_cap("draft/chathistory")
        {
            let after = self.last_msgid.get(&casefold(channel)).map(|entry| entry.clone());
            if let Ok(line) = chathistory::request(channel, after.as_deref()) {
                let _ = self.listener.send(line).await;
            }
        }
    }

    /// An IRC person joined a bridged channel; back from a netsplit, their ghost never left.
    pub(super) async fn irc_join(&self, nick: &str, channel: &str) {
        let Some(portal) = self.portal_of(channel) else { return };
        lock(&self.members).entry(casefold(channel)).or_default().insert(casefold(nick));
        if lock(&self.netsplits).rejoin(&casefold(nick), &casefold(channel), tokio::time::Instant::now()) {
            return;
        }
        self.push(&portal, Some(self.ghost(nick).await), None, RemoteEventKind::Join).await;
    }

    /// An IRC person left a bridged channel.
    pub(super) async fn irc_part(&self, nick: &str, channel: &str, reason: Option<&str>) {
        let Some(portal) = self.portal_of(channel) else { return };
        let still_seen = {
            let mut members = lock(&self.members);
            if let Some(members) = members.get_mut(&casefold(channel)) {
                members.remove(&casefold(nick));
            }
            members.values().any(|members| members.contains(&casefold(nick)))
        };
        if !still_seen {
            // Out of every bridged channel: the bridge hears no more about them.
            lock(&self.people).remove(&casefold(nick));
        }
        let kind = RemoteEventKind::Leave { reason: reason.map(str::to_owned) };
        self.push(&portal, Some(self.ghost(nick).await), None, kind).await;
    }

    /// An IRC person quit: their ghost leaves every bridged channel they were in, unless it was a netsplit.
    pub(super) async fn irc_quit(&self, nick: &str, reason: Option<&str>) {
        if let Some((from, to)) = reason.and_then(split_servers) {
            self.split_quit(nick, &format!("{from} {to}"));
            return;
        }
        let nick = casefold(nick);
        lock(&self.people).remove(&nick);
        let channels: Vec<String> = lock(&self.members)
            .iter_mut()
            .filter_map(|(channel, members)| members.remove(&nick).then(|| channel.clone()))
            .collect();
        let ghost = self.ghost(&nick).await;
        for channel in channels {
            if let Some(portal) = self.portals.get(&channel).map(|entry| entry.clone()) {
                let reason = reason.map(|reason| format!("Quit: {reason}"));
                self.push(&portal, Some(ghost.clone()), None, RemoteEventKind::Leave { reason }).await;
            }
        }
    }

    /// Someone was kicked from a bridged channel: a ghost or a puppet's Matrix user is removed from the room; the
    /// bridge bot itself rejoins.
    pub(super) async fn irc_kick(
        &self,
        by: Option<&str>,
        own_nick: &str,
        channel: &str,
        kicked: &str,
        reason: Option<&str>,
    ) {
        let Some(portal) = self.portal_of(channel) else { return };
        if casefold(kicked) == casefold(own_nick) {
            tracing::warn!(network = %self.id, %channel, ?reason, "the bridge bot was kicked; rejoining");
            let listener = self.listener.clone();
            let channel = channel.to_owned();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                listener.want_channel(&channel);
            });
            return;
        }
        let kicker = match by.filter(|nick| !self.is_ours(nick)) {
            Some(nick) => Some(self.ghost(nick).await),
            None => None,
        };
        let user_id = match self.puppet_nicks.get(&casefold(kicked)) {
            Some(matrix_user) => matrix_user.clone(),
            None => {
                if let Some(members) = lock(&self.members).get_mut(&casefold(channel)) {
                    members.remove(&casefold(kicked));
                }
                self.ghost(kicked).await.user_id
            }
        };
        let kind = RemoteEventKind::Kick { user_id, reason: reason.map(str::to_owned) };
        self.push(&portal, kicker, None, kind).await;
    }

    /// An IRC person changed nick: their ghost keeps its Matrix user and shows the new nick.
    pub(super) async fn irc_nick(&self, old: &str, new: &str) {
        let old = casefold(old);
        lock(&self.people).rename(&old, &casefold(new));
        let mut ghost = self.ghost(&old).await;
        ghost.displayname = Some(new.to_owned());
        ghost.remote_id = ghosts::remote_id(&self.id, new);
        {
            let mut ghosts = lock(&self.ghosts);
            ghosts.remove(&old);
            ghosts.insert(casefold(new), ghost.clone());
        }
        if let Err(error) = ghosts::follow_nick(self.bridge.ghosts(), &ghost).await {
            tracing::warn!(network = %self.id, %new, %error, "cannot record a nick change in the store");
        }
        let first_channel = {
            let mut members = lock(&self.members);
            let mut first = None;
            for (channel, nicks) in members.iter_mut() {
                if nicks.remove(&old) {
                    nicks.insert(casefold(new));
                    first.get_or_insert_with(|| channel.clone());
                }
            }
            first
        };
        if let Some(portal) = first_channel.and_then(|channel| self.portals.get(&channel).map(|e| e.clone())) {
            self.push(&portal, Some(ghost), None, RemoteEventKind::Profile).await;
        }
    }

    /// `RPL_NAMREPLY`: who is in a bridged channel, with their channel-mode prefixes as power levels.
    pub(super) async fn irc_names(&self, channel: &str, names: &str) {
        let Some(portal) = self.portal_of(channel) else { return };
        for entry in names.split_whitespace() {
            let nick = entry.trim_start_matches(['~', '&', '@', '%', '+']);
            if nick.is_empty() || self.is_ours(nick) {
                continue;
            }
            let modes = &entry[..entry.len() - nick.len()];
            let fresh = lock(&self.members).entry(casefold(channel)).or_default().insert(casefold(nick));
            let ghost = self.ghost(nick).await;
            // Back from a netsplit (seen in the names after our own reconnect): the ghost never left.
            let now = tokio::time::Instant::now();
            let returned = fresh && lock(&self.netsplits).rejoin(&casefold(nick), &casefold(channel), now);
            if fresh && !returned {
                self.push(&portal, Some(ghost.clone()), None, RemoteEventKind::Join).await;
            }
            let level = power_level(modes);
            if level > 0 {
                let kind = RemoteEventKind::PowerLevel { user_id: ghost.user_id, level };
                self.push(&portal, None, None, kind).await;
            }
        }
    }
}
