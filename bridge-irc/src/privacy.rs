//! Libera.Chat's privacy rule for bridges: no IRC traffic reaches a Matrix user in a portal who is not connected to
//! IRC (in a channel, everyone present can be seen in NAMES; a Matrix reader without a connection would be an
//! invisible listener). matrix-appservice-irc enforced it by halting whole rooms (its #1564, #1739); here only the
//! user concerned is affected.
//!
//! The rule as the bridge applies it (also in `bridge-irc/README.md`):
//! - a Matrix user who joins a portal (or is in one when it is linked or the bridge starts) gets a puppet
//!   connection; if it is refused outright (the network's connection limit) they are removed at once;
//! - when an attempt to connect fails or the connection is lost, and it has not registered again within the grace
//!   period (`privacy_grace_secs`), it counts as failed (refused, K-lined, banned, unreachable) and the user is
//!   removed. A puppet still waiting for its turn to connect (the reconnect cap after a restart) has not failed;
//! - a puppet closed on purpose (idle reaping, `quit`) removes its user too;
//! - a puppet the channel refuses (invite-only, banned, full, a key) gets its user kicked from that portal;
//! - removing is `kick` (they may rejoin, which tries again) or `block-messages` (banned from the portal, so no
//!   message reaches them, and unbanned as soon as their connection registers, e.g. after `reconnect` in the admin
//!   room); `off` leaves them in (for networks without the rule);
//! - nobody else is affected: the room and everyone connected keep talking throughout.

use std::{collections::HashSet, sync::Arc, time::Duration};

use dashmap::DashMap;
use lattice_bridge_core::BridgeHandle;

use crate::{
    config::PrivacyMode,
    conn::{ChannelStatus, Connection},
};

/// How long a join is watched for a refusal at least (the connection may first wait for its turn to connect).
const JOIN_WATCH: Duration = Duration::from_secs(300);

/// The rule of one network, and the users it currently keeps out.
#[derive(Clone)]
pub(crate) struct Privacy {
    mode: PrivacyMode,
    grace: Duration,
    network: String,
    bridge: BridgeHandle,
    /// Matrix users banned under `block-messages` → the portal rooms they are banned from.
    blocked: Arc<DashMap<String, HashSet<String>>>,
    /// Matrix users whose connection is being watched: one watch at a time, however often it fails meanwhile.
    watching: Arc<DashMap<String, ()>>,
    /// What the server last said closing a Matrix user's connection (`ERROR`), to tell them why they were removed.
    closed_because: Arc<DashMap<String, String>>,
}

impl Privacy {
    /// The rule for the network named `network` (display name, for reasons).
    pub(crate) fn new(mode: PrivacyMode, grace: Duration, network: &str, bridge: BridgeHandle) -> Self {
        Self {
            mode,
            grace,
            network: network.to_owned(),
            bridge,
            blocked: Arc::default(),
            watching: Arc::default(),
            closed_because: Arc::default(),
        }
    }

    /// Whether the rule applies at all.
    pub(crate) fn enabled(&self) -> bool {
        self.mode != PrivacyMode::Off
    }

    /// Removes `user_id` from `rooms` now, as the mode says: their connection was refused for `why`.
    pub(crate) async fn refused(&self, user_id: &str, rooms: &[String], why: &str) {
        self.remove(self.mode, user_id, rooms, why).await;
    }

    async fn remove(&self, mode: PrivacyMode, user_id: &str, rooms: &[String], why: &str) {
        if !self.enabled() {
            return;
        }
        let reason = match mode {
            PrivacyMode::BlockMessages => format!(
                "Not connected to {}: {why}. Only people connected to IRC may read its channels; you can come back \
                 once your connection works (send `reconnect` to the bridge bot).",
                self.network
            ),
            _ => format!(
                "Not connected to {}: {why}. Only people connected to IRC may read its channels; rejoin to try again.",
                self.network
            ),
        };
        for room in rooms {
            let (Ok(room_id), Ok(user)) = (room.parse::<ruma::OwnedRoomId>(), user_id.parse::<ruma::OwnedUserId>())
            else {
                continue;
            };
            let bot = self.bridge.matrix().bot();
            let removed = match mode {
                PrivacyMode::BlockMessages => bot.ban(&room_id, &user, Some(&reason)).await,
                _ => bot.kick(&room_id, &user, Some(&reason)).await,
            };
            match removed {
                Ok(()) => {
                    tracing::info!(network = %self.network, matrix_user = %user_id, %room, %why,
                        "removed a Matrix user without an IRC connection from a portal");
                    if mode == PrivacyMode::BlockMessages {
                        self.blocked.entry(user_id.to_owned()).or_default().insert(room.clone());
                    }
                }
                Err(error) => {
                    tracing::error!(network = %self.network, matrix_user = %user_id, %room, %error,
                        "cannot remove a Matrix user without an IRC connection: give the bot power to kick");
                }
            }
        }
    }

    /// Watches `puppet` for the grace period: if it has not registered by then, its user is removed from the rooms of
    /// the portals `portal_keys`.
    ///
    /// `close_failed` runs once the user is removed: it closes the failed connection, so a K-lined one does not knock
    /// at the server forever (the user's next `reconnect` or join starts a new one).
    pub(crate) fn watch(
        &self,
        user_id: &str,
        puppet: Connection,
        portal_keys: Vec<String>,
        close_failed: impl FnOnce() + Send + 'static,
    ) {
        if !self.enabled() || portal_keys.is_empty() || self.watching.insert(user_id.to_owned(), ()).is_some() {
            return;
        }
        let privacy = self.clone();
        let user_id = user_id.to_owned();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + privacy.grace;
            while !puppet.is_connected() {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    privacy.watching.remove(&user_id);
                    let why = match privacy.closed_because.get(&user_id) {
                        Some(reason) => format!("the IRC server closed your connection ({})", reason.as_str()),
                        None => format!("your connection did not register within {} s", privacy.grace.as_secs()),
                    };
                    let rooms = privacy.rooms_of(&portal_keys).await;
                    privacy.refused(&user_id, &rooms, &why).await;
                    close_failed();
                    return;
                }
                puppet.changed(deadline - now).await;
            }
            privacy.watching.remove(&user_id);
        });
    }

    /// Watches `puppet` join `channel`: if the server refuses it (invite-only, banned, full, a key), its user is
    /// kicked from `room` — in either mode, since no reconnect lifts a channel's refusal; only its operators can.
    /// A join still pending when the watch ends is left to the connection's own watch.
    pub(crate) fn watch_join(&self, user_id: &str, puppet: Connection, channel: &str, room: &str) {
        if !self.enabled() {
            return;
        }
        let (privacy, user_id, channel, room) = (self.clone(), user_id.to_owned(), channel.to_owned(), room.to_owned());
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + privacy.grace.max(JOIN_WATCH);
            loop {
                match puppet.channel_status(&channel) {
                    ChannelStatus::Joined | ChannelStatus::Unknown => return,
                    ChannelStatus::Refused(reason) => {
                        let why = format!("IRC refused to let you into {channel} ({reason})");
                        privacy.remove(PrivacyMode::Kick, &user_id, &[room], &why).await;
                        return;
                    }
                    ChannelStatus::Pending => {}
                }
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return;
                }
                puppet.changed(deadline - now).await;
            }
        });
    }

    /// The Matrix rooms of portals, by key.
    pub(crate) async fn rooms_of(&self, portal_keys: &[String]) -> Vec<String> {
        let mut rooms = Vec::new();
        for key in portal_keys {
            match self.bridge.portals().by_key(key).await {
                Ok(Some(portal)) => rooms.push(portal.room_id),
                Ok(None) => {}
                Err(error) => tracing::warn!(network = %self.network, %key, %error, "cannot look a portal up"),
            }
        }
        rooms
    }

    /// The server closed the connection of `user_id` saying `reason` (`ERROR`).
    pub(crate) fn closed_by_server(&self, user_id: &str, reason: &str) {
        self.closed_because.insert(user_id.to_owned(), reason.to_owned());
    }

    /// The connection of `user_id` registered: lifts the bans `block-messages` placed (in the background).
    pub(crate) fn registered(&self, user_id: &str) {
        self.closed_because.remove(user_id);
        let Some((_, rooms)) = self.blocked.remove(user_id) else { return };
        let Ok(user) = user_id.parse::<ruma::OwnedUserId>() else { return };
        let (bridge, network) = (self.bridge.clone(), self.network.clone());
        tokio::spawn(async move {
            for room in rooms {
                let Ok(room_id) = room.parse::<ruma::OwnedRoomId>() else { continue };
                let reason = format!("Connected to {network} again");
                if let Err(error) = bridge.matrix().bot().unban(&room_id, &user, Some(&reason)).await {
                    tracing::warn!(%network, matrix_user = %user, %room, %error, "cannot lift a privacy ban");
                }
            }
        });
    }
}
