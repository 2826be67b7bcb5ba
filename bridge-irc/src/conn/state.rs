//! A connection's state as a value: whether it is registered and as whom, the room the server's prefix takes,
//! the negotiated IRCv3 capabilities and where it stands with each wanted channel. The process that holds a
//! connection (the edge, see [`crate::edge`]) sends it to the bridge whenever it changes, and the bridge answers
//! its questions about the connection from the copy.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{ChannelStatus, LocalConnection, lock};
use crate::{ircv3::cap::CapSet, line::worst_case_prefix};

/// What a connection's owner asks about it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ConnState {
    /// The nick it is registered as; `None` while it is not registered.
    pub(crate) nick: Option<String>,
    /// The room the server's prefix takes on its lines.
    pub(crate) prefix_len: usize,
    /// The IRCv3 capabilities the current connection negotiated.
    pub(crate) caps: CapSet,
    /// Casefolded channel → where the connection stands with it (wanted channels only).
    pub(crate) channels: BTreeMap<String, ChannelStatus>,
}

impl ConnState {
    /// The room the server's prefix takes, or the worst case for `nick` when not registered.
    pub(crate) fn prefix_len_or(&self, nick: &str) -> usize {
        if self.nick.is_some() { self.prefix_len } else { worst_case_prefix(nick) }
    }
}

impl LocalConnection {
    /// The connection's state now.
    pub(crate) fn state(&self) -> ConnState {
        let (nick, prefix_len) = match lock(&self.shared.session).as_ref() {
            Some(session) => (Some(session.nick.clone()), session.prefix_len),
            None => (None, 0),
        };
        let channels = lock(&self.shared.channels)
            .iter()
            .map(|(key, state)| {
                let status = match state {
                    state if state.joined => ChannelStatus::Joined,
                    super::ChannelState { refused: Some(reason), .. } => ChannelStatus::Refused(reason.clone()),
                    _ => ChannelStatus::Pending,
                };
                (key.clone(), status)
            })
            .collect();
        ConnState { nick, prefix_len, caps: lock(&self.shared.caps).clone(), channels }
    }

    /// Changes whenever the connection's state may have changed.
    pub(crate) fn state_changes(&self) -> watch::Receiver<u64> {
        self.shared.version.subscribe()
    }

    /// The channels the connection is in now, as first named.
    pub(crate) fn joined_channels(&self) -> Vec<String> {
        lock(&self.shared.channels).values().filter(|state| state.joined).map(|state| state.name.clone()).collect()
    }
}
