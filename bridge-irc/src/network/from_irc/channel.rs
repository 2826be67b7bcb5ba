//! IRC → Matrix channel state: `TOPIC` and `RPL_TOPIC` as the room topic, channel-mode prefixes (`MODE +o`…) as
//! power levels, and bans (`MODE +b`) that match puppets as Matrix bans.

use irc::proto::{ChannelMode, Mode};
use lattice_bridge_core::event::RemoteEventKind;

use crate::{
    ids::casefold,
    network::{
        Network,
        render::{mask_matches, power_level},
    },
};

impl Network {
    /// `TOPIC <channel> :topic` set on IRC.
    pub(super) async fn irc_topic(&self, by: Option<&str>, channel: &str, topic: &str) {
        let Some(portal) = self.portal_of(channel) else { return };
        let ghost = match by {
            Some(nick) => Some(self.ghost(nick).await),
            None => None,
        };
        self.push(&portal, ghost, None, RemoteEventKind::Topic { topic: topic.to_owned() }).await;
    }

    /// `RPL_TOPIC` on joining: the channel's topic, if the portal does not have it yet.
    pub(super) async fn irc_rpl_topic(&self, channel: &str, topic: &str) {
        let Some(portal) = self.portal_of(channel) else { return };
        let known = self.bridge.portals().by_key(&portal).await.ok().flatten();
        if known.and_then(|portal| portal.topic).as_deref() != Some(topic) {
            self.push(&portal, None, None, RemoteEventKind::Topic { topic: topic.to_owned() }).await;
        }
    }

    /// `MODE <channel> …`: prefix modes as power levels, bans of puppets as Matrix bans.
    pub(super) async fn irc_channel_mode(&self, by: Option<&str>, channel: &str, modes: &[Mode<ChannelMode>]) {
        let Some(portal) = self.portal_of(channel) else { return };
        for mode in modes {
            let (plus, mode, Some(nick)) = (match mode {
                Mode::Plus(mode, nick) => (true, mode, nick),
                Mode::Minus(mode, nick) => (false, mode, nick),
                Mode::NoPrefix(mode) => (true, mode, &None),
            }) else {
                continue;
            };
            if *mode == ChannelMode::Ban {
                if plus {
                    self.ban_puppets(&portal, nick, by).await;
                }
                continue;
            }
            let prefix = match mode {
                ChannelMode::Founder => "~",
                ChannelMode::Admin => "&",
                ChannelMode::Oper => "@",
                ChannelMode::Halfop => "%",
                ChannelMode::Voice => "+",
                _ => continue,
            };
            if self.listener.nick().is_some_and(|own| casefold(&own) == casefold(nick)) {
                continue;
            }
            let user_id = match self.puppet_nicks.get(&casefold(nick)) {
                Some(matrix_user) => matrix_user.clone(),
                None => self.ghost(nick).await.user_id,
            };
            let level = if plus { power_level(prefix) } else { 0 };
            self.push(&portal, None, None, RemoteEventKind::PowerLevel { user_id, level }).await;
        }
    }

    /// An IRC ban (`MODE +b mask`) that matches puppets bans their Matrix users from the portal room.
    async fn ban_puppets(&self, portal: &str, mask: &str, by: Option<&str>) {
        let banned: Vec<String> = self
            .puppet_masks
            .iter()
            .filter(|entry| mask_matches(mask, entry.value()))
            .filter_map(|entry| self.puppet_nicks.get(entry.key()).map(|user| user.clone()))
            .collect();
        if banned.is_empty() {
            return;
        }
        let room = match self.bridge.portals().by_key(portal).await {
            Ok(Some(portal)) => portal.room_id,
            _ => return,
        };
        let Ok(room) = room.parse::<ruma::OwnedRoomId>() else { return };
        let reason = format!("Banned on IRC by {} ({mask})", by.unwrap_or("the server"));
        for user in banned {
            let Ok(user) = user.parse::<ruma::OwnedUserId>() else { continue };
            if let Err(error) = self.bridge.matrix().bot().ban(&room, &user, Some(&reason)).await {
                tracing::warn!(network = %self.id, %portal, %user, %error, "cannot ban a Matrix user banned on IRC");
            }
        }
    }
}
