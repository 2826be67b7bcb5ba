//! The bridged channels of a network: which channel has which portal, the portals' specs and aliases, and where
//! a portal's messages go on IRC.

use lattice_bridge_core::{
    connector::{BridgeInfoSpec, PortalSpec},
    store::Portal,
};
use serde_json::json;

use crate::network::{Network, lock};
use crate::{
    conn::Connection,
    ids::{PortalKind, casefold, is_valid_channel, portal_key},
};

impl Network {
    pub(super) fn channel_name(portal: &Portal, fallback: &str) -> String {
        portal.metadata.get("channel").and_then(|value| value.as_str()).unwrap_or(fallback).to_owned()
    }

    /// Makes the listener join a portal's channel.
    pub(crate) fn add_channel(&self, portal: &Portal, channel_key: &str) {
        let channel = Self::channel_name(portal, channel_key);
        self.portals.insert(casefold(&channel), portal.remote_key.clone());
        self.listener.want_channel(&channel);
    }

    /// Stops bridging a channel: the listener leaves it and its lines no longer reach Matrix.
    pub(crate) fn remove_channel(&self, channel: &str) {
        self.portals.remove(&casefold(channel));
        lock(&self.members).remove(&casefold(channel));
        self.listener.part(channel, Some("Unlinked from Matrix"));
    }

    /// The portal of a (bridged) channel.
    pub(super) fn portal_of(&self, channel: &str) -> Option<String> {
        self.portals.get(&casefold(channel)).map(|entry| entry.clone())
    }

    /// The portal an alias in our namespace names, if it names a valid channel.
    pub(crate) fn portal_for_alias(&self, alias: &str) -> Option<PortalSpec> {
        let channel = self.aliases.extract(alias)?;
        if !is_valid_channel(channel) {
            return None;
        }
        let mut spec = self.portal_spec(channel);
        spec.alias_localpart = Some(alias.strip_prefix('#')?.rsplit_once(':')?.0.to_owned());
        Some(spec)
    }

    /// The portal of a channel, with the alias the template gives it.
    pub(crate) fn portal_spec(&self, channel: &str) -> PortalSpec {
        let alias = self.aliases.fill(channel);
        let localpart =
            alias.strip_prefix('#').and_then(|rest| rest.rsplit_once(':')).map(|(local, _)| local.to_owned());
        PortalSpec {
            remote_key: portal_key(&self.id, channel),
            alias_localpart: localpart,
            name: Some(channel.to_owned()),
            topic: None,
            bridge_info: BridgeInfoSpec {
                network_id: self.id.clone(),
                network_name: self.config.name.clone(),
                channel_id: casefold(channel),
                channel_name: channel.to_owned(),
            },
            public: true,
            direct: None,
            metadata: json!({"network": self.id, "channel": channel}),
        }
    }

    /// The portal keys of the channels a puppet is in or wants.
    pub(super) fn portal_keys(&self, puppet: &Connection) -> Vec<String> {
        puppet
            .channels()
            .iter()
            .filter_map(|channel| self.portals.get(&casefold(channel)).map(|key| key.clone()))
            .collect()
    }
}

/// Where a portal's messages go on IRC.
pub(super) enum Target {
    Channel(String),
    Nick(String),
}

impl Target {
    /// Where what `user` does in `portal` goes: its channel, or, in a DM portal of theirs, the nick it is with.
    pub(super) fn of(portal: &Portal, user: &str) -> Option<Self> {
        match PortalKind::parse(&portal.remote_key)? {
            PortalKind::Channel { channel, .. } => Some(Self::Channel(Network::channel_name(portal, channel))),
            PortalKind::Direct { matrix_user, nick, .. } if matrix_user == user => {
                let nick = portal.metadata.get("nick").and_then(|nick| nick.as_str()).unwrap_or(nick);
                Some(Self::Nick(nick.to_owned()))
            }
            _ => None,
        }
    }

    pub(super) fn name(&self) -> &str {
        match self {
            Self::Channel(name) | Self::Nick(name) => name,
        }
    }
}
