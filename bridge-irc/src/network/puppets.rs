//! Puppet connections: one IRC connection per Matrix user, started on first use, joined to the channels its user
//! is in, closed when idle, and watched under Libera.Chat's privacy rule.

use std::{sync::Arc, time::Duration};

use lattice_bridge_core::{ConnectorError, connector::ConnectorResult};

use crate::network::{
    Activity, JOIN_WAIT, Network, account_setting, certfp_credential, nick_setting, transient, username_setting,
};
use irc::proto::Message;
use tokio::sync::mpsc;

use crate::{
    config::AuthMethod,
    conn::{ChannelStatus, Connection, Forward, Login, Settings, Traffic},
    ids::{sanitise_nick, sanitise_username},
};

impl Network {
    /// Notes that `user_id` just used their puppet (in `room_id`), which keeps it from being reaped as idle.
    pub(super) fn touch(&self, user_id: &str, room_id: Option<&str>) {
        let mut entry = self
            .activity
            .entry(user_id.to_owned())
            .or_insert_with(|| Activity { at: tokio::time::Instant::now(), room_id: None });
        entry.at = tokio::time::Instant::now();
        if let Some(room_id) = room_id {
            entry.room_id = Some(room_id.to_owned());
        }
    }

    /// Closes puppets unused for `timeout`, telling their users first; a puppet comes back on its user's next
    /// message. Ends when the network is dropped.
    pub(super) async fn reap_idle(network: std::sync::Weak<Self>, timeout: Duration) {
        let period = (timeout / 4).clamp(Duration::from_millis(250), Duration::from_secs(60));
        loop {
            tokio::time::sleep(period).await;
            let Some(network) = network.upgrade() else { return };
            let now = tokio::time::Instant::now();
            let idle: Vec<(String, Option<String>)> = network
                .activity
                .iter()
                .filter(|entry| now.duration_since(entry.at) >= timeout)
                .map(|entry| (entry.key().clone(), entry.room_id.clone()))
                .collect();
            for (user_id, room_id) in idle {
                // Used again since the scan: keep it.
                if network
                    .activity
                    .remove_if(&user_id, |_, activity| now.duration_since(activity.at) >= timeout)
                    .is_none()
                {
                    continue;
                }
                let Some((_, puppet)) = network.puppets.remove(&user_id) else { continue };
                network.tell_idle(&user_id, room_id.as_deref(), timeout).await;
                tracing::info!(network = %network.id, matrix_user = %user_id, "closing an idle puppet connection");
                puppet.quit("Idle");
                let why = format!("your connection was closed after {} s unused", timeout.as_secs());
                network.puppet_closed(&user_id, &puppet, &why).await;
            }
        }
    }

    /// Tells a Matrix user that their idle puppet is being closed.
    pub(super) async fn tell_idle(&self, user_id: &str, room_id: Option<&str>, timeout: Duration) {
        let comeback = if self.privacy.enabled() {
            // The privacy rule removes the user from the portals too (see `puppet_closed`).
            "you leave its rooms too, as only people connected to IRC may read them; rejoin one to reconnect"
        } else {
            "it reconnects when you next send a message"
        };
        let text = format!(
            "Your IRC connection to {} was unused for {} s and is being closed; {comeback}.",
            self.config.name,
            timeout.as_secs()
        );
        self.tell(user_id, room_id, &text).await;
    }

    /// The puppet connection of a Matrix user, started on first use with the nick they chose, else one made from
    /// their display name or localpart.
    pub(crate) async fn puppet(&self, user_id: &str, displayname: Option<&str>) -> ConnectorResult<Connection> {
        if let Some(puppet) = self.puppets.get(user_id) {
            return Ok(puppet.clone());
        }
        self.touch(user_id, None);
        let bridge = &self.bridge;
        let chosen = bridge.settings().get(user_id, &nick_setting(&self.id)).await?;
        let displayname = match (chosen.is_some(), displayname) {
            (true, _) => None,
            (false, Some(name)) => Some(name.to_owned()),
            (false, None) => match user_id.parse::<ruma::OwnedUserId>() {
                Ok(parsed) => self
                    .bridge
                    .matrix()
                    .bot()
                    .get_profile(&parsed)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|profile| profile.displayname),
                Err(_) => None,
            },
        };
        let localpart = user_id.trim_start_matches('@').split(':').next().unwrap_or("matrix");
        let wanted = chosen.or(displayname).unwrap_or_else(|| localpart.to_owned());
        let nick = sanitise_nick(&wanted, self.config.max_nick_length);
        let username = bridge.settings().get(user_id, &username_setting(&self.id)).await?;
        let username = sanitise_username(username.as_deref().unwrap_or(localpart));
        let login = self.login(user_id, Some(&nick)).await?;
        if let Some(why) = self.limit_reached(user_id) {
            // A network's connection limit is the operator's rule: say so rather than queue forever.
            return Err(ConnectorError::permanent(why));
        }
        let puppet = self
            .puppets
            .entry(user_id.to_owned())
            .or_insert_with(|| {
                tracing::info!(network = %self.id, matrix_user = %user_id, %nick, "starting a puppet connection");
                self.dialer.open(Settings {
                    owner: user_id.to_owned(),
                    network: self.id.clone(),
                    servers: self.config.servers.clone(),
                    ca_file: self.config.tls_ca_file.clone(),
                    nick,
                    max_nick_length: self.config.max_nick_length,
                    username,
                    realname: format!("{user_id} via Lattice"),
                    login,
                    flood: self.config.flood,
                    reconnect: self.config.reconnect,
                    forward: Forward::Own,
                    ident: self.ident.clone(),
                    // The dialer counts the network's connections together.
                    traffic: Traffic::default(),
                })
            })
            .clone();
        Ok(puppet)
    }

    /// Takes back the puppets the edge kept while the bridge was away, as they are (same nick, same channels).
    pub(super) fn adopt_held_puppets(self: &Arc<Self>) {
        let owners: Vec<String> =
            self.dialer.held_at_start(&self.id).into_iter().filter(|owner| owner != super::BOT_OWNER).collect();
        if owners.is_empty() {
            return;
        }
        tracing::info!(network = %self.id, puppets = owners.len(), "taking back the puppets the edge kept");
        let network = Arc::clone(self);
        tokio::spawn(async move {
            for owner in owners {
                if let Err(error) = network.puppet(&owner, None).await {
                    tracing::warn!(network = %network.id, matrix_user = %owner, %error, "cannot take back a puppet");
                }
            }
        });
    }

    /// Why no new puppet can be opened for `user_id` now, if the network's connection limit is reached.
    pub(super) fn limit_reached(&self, user_id: &str) -> Option<String> {
        let max_clients = self.config.max_clients;
        (max_clients > 0 && !self.puppets.contains_key(user_id) && self.puppets.len() >= max_clients).then(|| {
            format!(
                "the bridge already holds {max_clients} connections to {}, its limit; try again later",
                self.config.name
            )
        })
    }

    /// The stored login of a Matrix user on this network, if the network uses one. Without a stored account name
    /// the account is the puppet's nick: `nick` for a puppet about to start, else the running puppet's.
    pub(crate) async fn login(&self, user_id: &str, nick: Option<&str>) -> ConnectorResult<Option<Login>> {
        if self.config.auth == AuthMethod::None {
            return Ok(None);
        }
        let bridge = &self.bridge;
        let password = bridge.credentials().get(user_id, &self.id).await?;
        let certificate = match self.config.auth {
            AuthMethod::Sasl => bridge.credentials().get(user_id, &certfp_credential(&self.id)).await?,
            _ => None,
        };
        if password.is_none() && certificate.is_none() {
            return Ok(None);
        }
        let account = match bridge.settings().get(user_id, &account_setting(&self.id)).await? {
            Some(account) => account,
            None => {
                match nick.map(str::to_owned).or_else(|| self.puppets.get(user_id).and_then(|puppet| puppet.nick())) {
                    Some(nick) => nick,
                    None => sanitise_nick(user_id.trim_start_matches('@'), self.config.max_nick_length),
                }
            }
        };
        Ok(Some(Login { method: self.config.auth, account, password: password.unwrap_or_default(), certificate }))
    }

    /// Waits until `puppet` is in `channel`, asking it to join; transient while it connects, permanent if the
    /// server refuses.
    pub(super) async fn joined(&self, puppet: &Connection, channel: &str) -> ConnectorResult<()> {
        puppet.want_channel(channel);
        let deadline = tokio::time::Instant::now() + JOIN_WAIT;
        loop {
            match puppet.channel_status(channel) {
                ChannelStatus::Joined => return Ok(()),
                ChannelStatus::Refused(reason) => {
                    // Forget the refusal, so a later message tries again.
                    puppet.part(channel, None);
                    return Err(ConnectorError::permanent(format!("IRC refused to let you join {channel}: {reason}")));
                }
                ChannelStatus::Pending | ChannelStatus::Unknown => {}
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(transient(format!("waiting for the IRC connection to join {channel}")));
            }
            puppet.changed(deadline - now).await;
            puppet.want_channel(channel);
        }
    }

    /// A Matrix user is in the portal `room_id` of `channel`: their puppet connects and joins the channel, or, under
    /// the privacy rule, they are removed when it is refused outright (a failed attempt is watched from
    /// [`ConnEvent::Disconnected`]).
    pub(crate) async fn member_joined(
        &self,
        user_id: &str,
        displayname: Option<&str>,
        room_id: &str,
        channel: &str,
    ) -> ConnectorResult<()> {
        if self.privacy.enabled()
            && let Some(why) = self.limit_reached(user_id)
        {
            self.privacy.refused(user_id, &[room_id.to_owned()], &why).await;
            return Ok(());
        }
        let puppet = self.puppet(user_id, displayname).await?;
        self.touch(user_id, Some(room_id));
        puppet.want_channel(channel);
        self.privacy.watch_join(user_id, puppet, channel, room_id);
        Ok(())
    }

    /// The Matrix members of a portal get their puppets (see [`Network::member_joined`]): when it is linked, and at
    /// start under the privacy rule.
    pub(crate) async fn connect_members(&self, room_id: &str, channel: &str) {
        let Ok(room) = room_id.parse::<ruma::OwnedRoomId>() else { return };
        let members = match self.bridge.matrix().bot().joined_members(&room).await {
            Ok(members) => members,
            Err(error) => {
                tracing::warn!(network = %self.id, %room_id, %error, "cannot list the members of a linked room");
                return;
            }
        };
        for member in members.iter().map(|member| member.as_str()).filter(|m| !self.bridge.is_bridge_user(m)) {
            if let Err(error) = self.member_joined(member, None, room_id, channel).await {
                tracing::warn!(network = %self.id, %room_id, matrix_user = %member, %error, "cannot connect a member");
            }
        }
    }

    /// A puppet lost its connection, or an attempt to connect failed: unless it was closed on purpose, its user is
    /// removed from its portals if it has not registered within the grace period. A puppet still waiting for its
    /// turn to connect (the network's reconnect cap) has not failed and is left alone.
    pub(super) fn watch_lost_puppet(&self, user_id: &str) {
        let Some(puppet) = self.puppets.get(user_id).map(|entry| entry.clone()) else { return };
        let keys = self.portal_keys(&puppet);
        let (puppets, owner) = (Arc::clone(&self.puppets), user_id.to_owned());
        self.privacy.watch(user_id, puppet, keys, move || {
            if let Some((_, failed)) = puppets.remove_if(&owner, |_, current| !current.is_connected()) {
                failed.quit("Not connected");
            }
        });
    }

    /// A puppet was closed on purpose (idle, `quit`): under the privacy rule its user leaves its portals too, for
    /// `why`; they come back by rejoining (or, under `block-messages`, once connected again).
    pub(crate) async fn puppet_closed(&self, user_id: &str, puppet: &Connection, why: &str) {
        if self.privacy.enabled() {
            let rooms = self.privacy.rooms_of(&self.portal_keys(puppet)).await;
            self.privacy.refused(user_id, &rooms, why).await;
        }
    }
}

impl Network {
    /// The puppet of a Matrix user, if one runs.
    pub(crate) fn existing_puppet(&self, user_id: &str) -> Option<Connection> {
        self.puppets.get(user_id).map(|entry| entry.clone())
    }

    /// Takes a Matrix user's puppet out of use, for closing it; the user's next message starts a new one.
    pub(crate) fn take_puppet(&self, user_id: &str) -> Option<Connection> {
        self.puppets.remove(user_id).map(|(_, puppet)| puppet)
    }

    /// Hands the server's replies to a Matrix user's puppet (`whois` and the like) to the receiver returned, until
    /// [`Network::stop_replies`].
    pub(crate) fn expect_replies(&self, user_id: &str) -> mpsc::Receiver<Message> {
        let (replies, receiver) = mpsc::channel(32);
        self.pending_replies.insert(user_id.to_owned(), replies);
        receiver
    }

    /// Stops handing a puppet's server replies on (see [`Network::expect_replies`]).
    pub(crate) fn stop_replies(&self, user_id: &str) {
        self.pending_replies.remove(user_id);
    }
}
