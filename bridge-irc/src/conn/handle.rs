//! The handle the bridge holds on an IRC connection, wherever the connection lives: in this process
//! ([`LocalConnection`]) or in the edge process that keeps connections across bridge restarts
//! ([`RemoteConnection`], see [`crate::edge`]). Both answer the same questions and take the same lines.

use std::time::Duration;

use tokio::sync::oneshot;

use super::{ChannelStatus, LocalConnection, Login, NotConnected};
use crate::{edge::RemoteConnection, line::Line, receipt::Receipt};

/// A kept-alive IRC connection. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) enum Connection {
    /// Held by this process.
    Local(LocalConnection),
    /// Held by the edge process.
    Edge(RemoteConnection),
}

/// What sending lines under a key (a Matrix event's ID) comes to.
#[derive(Debug)]
pub(crate) struct Keyed {
    /// Resolves once the server has read the lines (when asked for).
    pub(crate) read: Option<Receipt>,
    /// Resolves when the same key was sent before — by a bridge process that ended before it heard how it went —
    /// and the server has read those lines: nothing went out again. Only the edge keeps keys.
    pub(crate) earlier: Option<oneshot::Receiver<bool>>,
}

impl Connection {
    /// The nick the connection is registered as, while it is.
    pub(crate) fn nick(&self) -> Option<String> {
        match self {
            Self::Local(local) => local.nick(),
            Self::Edge(remote) => remote.nick(),
        }
    }

    /// Whether the current connection negotiated the IRCv3 capability `cap`.
    pub(crate) fn has_cap(&self, cap: &str) -> bool {
        match self {
            Self::Local(local) => local.has_cap(cap),
            Self::Edge(remote) => remote.has_cap(cap),
        }
    }

    /// The value the current connection's server offered an enabled capability with.
    pub(crate) fn cap_value(&self, cap: &str) -> Option<String> {
        match self {
            Self::Local(local) => local.cap_value(cap),
            Self::Edge(remote) => remote.cap_value(cap),
        }
    }

    /// Whether the connection is registered.
    pub(crate) fn is_connected(&self) -> bool {
        match self {
            Self::Local(local) => local.is_connected(),
            Self::Edge(remote) => remote.is_connected(),
        }
    }

    /// The room the server's prefix takes on lines we send.
    pub(crate) fn prefix_len(&self) -> usize {
        match self {
            Self::Local(local) => local.prefix_len(),
            Self::Edge(remote) => remote.prefix_len(),
        }
    }

    /// Queues a line; fails at once if the connection is not registered (the caller retries later).
    pub(crate) async fn send(&self, line: Line) -> Result<(), NotConnected> {
        match self {
            Self::Local(local) => local.send(line).await,
            Self::Edge(remote) => remote.send(vec![line]),
        }
    }

    /// Queues lines, in order, and returns a receipt that resolves once the server has read the last of them.
    pub(crate) async fn send_with_receipt(&self, lines: Vec<Line>) -> Result<Receipt, NotConnected> {
        match self {
            Self::Local(local) => local.send_with_receipt(lines).await,
            Self::Edge(remote) => remote.send_keyed(lines, None, true).map(|keyed| keyed.read.expect("asked for")),
        }
    }

    /// Queues a Matrix event's lines under its `key`: where the connection outlives bridge processes, lines sent
    /// under the same key before are not sent again ([`Keyed::earlier`]). With `read`, also a receipt.
    pub(crate) async fn send_keyed(&self, lines: Vec<Line>, key: &str, read: bool) -> Result<Keyed, NotConnected> {
        match self {
            Self::Local(local) if read => {
                Ok(Keyed { read: Some(local.send_with_receipt(lines).await?), earlier: None })
            }
            Self::Local(local) => {
                for line in lines {
                    local.send(line).await?;
                }
                Ok(Keyed { read: None, earlier: None })
            }
            Self::Edge(remote) => remote.send_keyed(lines, Some(key), read),
        }
    }

    /// Wants the connection in `channel`: joins now if registered, and after every reconnect.
    pub(crate) fn want_channel(&self, channel: &str) {
        match self {
            Self::Local(local) => local.want_channel(channel),
            Self::Edge(remote) => remote.want_channel(channel),
        }
    }

    /// Leaves `channel` and stops wanting it.
    pub(crate) fn part(&self, channel: &str, reason: Option<&str>) {
        match self {
            Self::Local(local) => local.part(channel, reason),
            Self::Edge(remote) => remote.part(channel, reason),
        }
    }

    /// Where the connection stands with `channel`.
    pub(crate) fn channel_status(&self, channel: &str) -> ChannelStatus {
        match self {
            Self::Local(local) => local.channel_status(channel),
            Self::Edge(remote) => remote.channel_status(channel),
        }
    }

    /// The channels the connection wants, as first named.
    pub(crate) fn channels(&self) -> Vec<String> {
        match self {
            Self::Local(local) => local.channels(),
            Self::Edge(remote) => remote.channels(),
        }
    }

    /// Asks for a new nick now (if registered) and after every reconnect.
    pub(crate) fn set_nick(&self, nick: &str) {
        match self {
            Self::Local(local) => local.set_nick(nick),
            Self::Edge(remote) => remote.set_nick(nick),
        }
    }

    /// Uses `login` from the next connection on.
    pub(crate) fn set_login(&self, login: Option<Login>) {
        match self {
            Self::Local(local) => local.set_login(login),
            Self::Edge(remote) => remote.set_login(login),
        }
    }

    /// Drops the current connection and connects again at once.
    pub(crate) fn reconnect(&self) {
        match self {
            Self::Local(local) => local.reconnect(),
            Self::Edge(remote) => remote.reconnect(),
        }
    }

    /// Waits until the connection changes state (registers, joins, drops) or `timeout` passes.
    pub(crate) async fn changed(&self, timeout: Duration) {
        match self {
            Self::Local(local) => local.changed(timeout).await,
            Self::Edge(remote) => remote.changed(timeout).await,
        }
    }

    /// Sends QUIT and ends the connection for good.
    pub(crate) fn quit(&self, reason: &str) {
        match self {
            Self::Local(local) => local.quit(reason),
            Self::Edge(remote) => remote.quit(reason),
        }
    }
}
