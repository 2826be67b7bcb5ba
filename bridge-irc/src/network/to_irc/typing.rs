//! Matrix typing (`m.typing`) → IRC: `+typing` TAGMSGs ([IRCv3 typing](https://ircv3.net/specs/client-tags/typing)).

use std::collections::HashSet;

use lattice_bridge_core::store::Portal;

use crate::{
    conn::ChannelStatus,
    line::Line,
    network::{Network, channels::Target, lock},
};

impl Network {
    /// Matrix typing (`m.typing`) as `+typing` TAGMSGs (IRCv3 typing client tag) from the puppets of those who
    /// started or stopped, to the channel or, in a DM portal, to the nick; only puppets already in the channel (or
    /// connected, for a DM) take part, no connection is made for typing.
    pub(crate) async fn matrix_typing(&self, portal: &Portal, room_id: &str, user_ids: &[String]) {
        let now: HashSet<String> = user_ids.iter().filter(|user| self.puppets.contains_key(*user)).cloned().collect();
        let before = lock(&self.typing).insert(room_id.to_owned(), now.clone()).unwrap_or_default();
        let started = now.difference(&before).map(|user| (user, "active"));
        let stopped = before.difference(&now).map(|user| (user, "done"));
        for (user, state) in started.chain(stopped) {
            let Some(target) = Target::of(portal, user) else { continue };
            let Some(puppet) = self.puppets.get(user).map(|entry| entry.clone()) else { continue };
            let there = match &target {
                Target::Channel(channel) => puppet.channel_status(channel) == ChannelStatus::Joined,
                Target::Nick(_) => puppet.is_connected(),
            };
            if !puppet.has_cap("message-tags") || !there {
                continue;
            }
            let line = Line::new("TAGMSG", &[target.name()], None).map(|line| line.tagged(&[("+typing", Some(state))]));
            if let Ok(Ok(line)) = line {
                // Typing is a hint: a connection that is down just misses it.
                let _ = puppet.send(line).await;
            }
        }
    }
}
