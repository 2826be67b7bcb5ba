//! What the bridge and its edge process say to each other over the edge's Unix socket: length-prefixed frames
//! (tokio-util's `LengthDelimitedCodec`, a 4-byte big-endian length) of one JSON message each.
//!
//! The bridge opens connections, sends lines and asks for channels; the edge reports each connection's state as
//! it changes, the events of its connections numbered per network, what became of lines sent with a receipt, and
//! every second how many lines its connections read and wrote (for the bridge's metrics).
//! The bridge acknowledges events once it has handled them; the edge keeps the rest and hands them to the next
//! bridge that attaches.

use bytes::Bytes;
use futures::{SinkExt, StreamExt as _};
use irc::proto::{Message, message::Tag};
use serde::{Deserialize, Serialize};
use tokio::net::UnixStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::conn::{ConnEvent, ConnState, Login, Settings, TrafficDelta};

/// The tag the bridge puts on a message the edge handed over, naming it for good: the edge and the event's number.
/// A message without a server `msgid` is known by it in the message map, so a message handed over again after
/// a bridge crash is recognised (see [`crate::message_id::MessageId::of_line`]). Never sent to IRC.
pub(crate) const EDGE_ID_TAG: &str = "lattice/edge-id";
/// The version of this protocol; an edge answers a bridge of another version with [`ToBridge::Refused`].
pub(crate) const VERSION: u32 = 1;
/// The longest frame: a connection's state with thousands of channels stays well below it.
const MAX_FRAME: usize = 16 * 1024 * 1024;

/// Which connection: the network's ID and the owner (`bot`, or a Matrix user ID).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct ConnKey {
    pub(crate) network: String,
    pub(crate) owner: String,
}

impl ConnKey {
    /// The key of `settings`' connection.
    pub(crate) fn of(settings: &Settings) -> Self {
        Self { network: settings.network.clone(), owner: settings.owner.clone() }
    }
}

/// The optional message [`ToBridge::Traffic`], as named in [`ToEdge::Hello`].
pub(crate) const READS_TRAFFIC: &str = "traffic";

/// From the bridge to the edge.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum ToEdge {
    /// The first message on a new link; `reads` names the optional messages the bridge understands (an edge
    /// sends no other: a bridge of an earlier release, attached to a newer edge, is never sent what it cannot read).
    Hello {
        version: u32,
        #[serde(default)]
        reads: Vec<String>,
    },
    /// Hand over the events of `network`: the unacknowledged ones first, in order, then new ones as they come.
    Attach { network: String },
    /// The connection `settings` describe: opened unless the edge holds it already.
    Open { settings: Box<Settings> },
    /// Lines for a connection, in order. `receipt` asks to hear when the server has read them; `key` names the
    /// Matrix event they carry, so that lines sent under a key the edge has seen are not sent again.
    Send { conn: ConnKey, lines: Vec<String>, receipt: Option<u64>, key: Option<String> },
    /// Join `channel`, now and after every reconnect.
    Want { conn: ConnKey, channel: String },
    /// Leave `channel`.
    Part { conn: ConnKey, channel: String, reason: Option<String> },
    /// Take `nick`.
    Nick { conn: ConnKey, nick: String },
    /// Log in with `login` from the next connection on.
    Login { conn: ConnKey, login: Option<Box<Login>> },
    /// Connect again now.
    Reconnect { conn: ConnKey },
    /// Quit and forget the connection.
    Quit { conn: ConnKey, reason: String },
    /// The events of `network` up to `seq` are handled.
    Ack { network: String, seq: u64 },
    /// The first message of a successor edge (a new binary): hand me your connections (see [`super::upgrade`]).
    Handover { version: u32 },
    /// The successor has read the hand-over and waits for the sockets.
    Ready,
}

/// From the edge to the bridge.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum ToBridge {
    /// The answer to [`ToEdge::Hello`]: the connections the edge holds, and whether it has just started (its
    /// connections, if the bridge had any, were lost with an earlier edge).
    Welcome { connections: Vec<ConnKey>, started_now: bool, edge_id: u64 },
    /// The edge speaks another version of the protocol.
    Refused { reason: String },
    /// An event of a connection of `network`, numbered in the network's order.
    Event { network: String, seq: u64, event: WireEvent },
    /// A connection's state changed.
    State { conn: ConnKey, state: ConnState },
    /// The server has read the lines sent with `receipt`.
    Read { receipt: u64 },
    /// The lines sent with `receipt` carried a key sent before, and the server has read those: nothing was sent.
    Earlier { receipt: u64 },
    /// The connection ended before the server confirmed the lines sent with `receipt`.
    Lost { receipt: u64 },
    /// What `network`'s connections read, wrote and reconnected since the last report (sent every second while
    /// something was counted).
    Traffic { network: String, delta: TrafficDelta },
    /// The edge hands its connections to a successor on the same socket: attach to it once it listens.
    Moving,
    /// To the successor: everything but the sockets, which follow.
    Handing(Box<Handing>),
}

/// A network's event log as handed over.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct HandedLog {
    pub(crate) network: String,
    pub(crate) last_seq: u64,
    pub(crate) waiting: Vec<(u64, WireEvent)>,
}

/// What an edge hands its successor besides the sockets (one per connection, in this order).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Handing {
    /// The successor goes on under the same ID, so events it hands over again are named as before.
    pub(crate) edge_id: u64,
    /// Per network: the number of its last event and the events not acknowledged yet.
    pub(crate) networks: Vec<HandedLog>,
    /// Keys of lines the server has read.
    pub(crate) keys: Vec<String>,
    /// The frozen connections.
    pub(crate) connections: Vec<crate::conn::FrozenState>,
}

/// A [`ConnEvent`] on the wire: the IRC message as its line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum WireEvent {
    Registered { owner: String, nick: String },
    Message { owner: String, nick: String, line: String },
    Disconnected { owner: String, nick: String },
    LoginFailed { owner: String, account: String, reason: String },
}

impl From<&ConnEvent> for WireEvent {
    fn from(event: &ConnEvent) -> Self {
        match event.clone() {
            ConnEvent::Registered { owner, nick } => Self::Registered { owner, nick },
            ConnEvent::Message { owner, nick, message } => Self::Message { owner, nick, line: message.to_string() },
            ConnEvent::Disconnected { owner, nick } => Self::Disconnected { owner, nick },
            ConnEvent::LoginFailed { owner, account, reason } => Self::LoginFailed { owner, account, reason },
        }
    }
}

impl WireEvent {
    /// The event for the network, or `None` for a line that does not parse (the edge read it as a message, so
    /// this happens only between versions that disagree; it is logged). A message carries `stamp` — the edge and
    /// its number for the event, the same each time the edge hands it over — in the [`EDGE_ID_TAG`] tag.
    pub(crate) fn into_event(self, stamp: &str) -> Option<ConnEvent> {
        Some(match self {
            Self::Registered { owner, nick } => ConnEvent::Registered { owner, nick },
            Self::Message { owner, nick, line } => match line.parse::<Message>() {
                Ok(mut message) => {
                    let tag = Tag(EDGE_ID_TAG.to_owned(), Some(stamp.to_owned()));
                    message.tags.get_or_insert_with(Vec::new).push(tag);
                    ConnEvent::Message { owner, nick, message: Box::new(message) }
                }
                Err(error) => {
                    tracing::warn!(%owner, %error, "an IRC line from the edge does not parse");
                    return None;
                }
            },
            Self::Disconnected { owner, nick } => ConnEvent::Disconnected { owner, nick },
            Self::LoginFailed { owner, account, reason } => ConnEvent::LoginFailed { owner, account, reason },
        })
    }
}

type Framing = Framed<UnixStream, LengthDelimitedCodec>;
/// The sending half of a split link.
pub(crate) type LinkSink = futures::stream::SplitSink<Framing, Bytes>;
/// The receiving half of a split link.
pub(crate) type LinkStream = futures::stream::SplitStream<Framing>;

/// One end of the link.
pub(crate) struct Link(Framed<UnixStream, LengthDelimitedCodec>);

/// The link failed: the other end went away or said something unreadable.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error("the edge link failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("unreadable message on the edge link: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the edge link closed")]
    Closed,
    #[error("the edge hands its connections to a successor")]
    Moved,
}

impl Link {
    pub(crate) fn new(stream: UnixStream) -> Self {
        Self(LengthDelimitedCodec::builder().max_frame_length(MAX_FRAME).new_framed(stream))
    }

    /// Sends one message.
    pub(crate) async fn send<T: Serialize>(&mut self, message: &T) -> Result<(), WireError> {
        self.0.send(Bytes::from(serde_json::to_vec(message)?)).await?;
        Ok(())
    }

    /// The next message; [`WireError::Closed`] at the end.
    pub(crate) async fn next<T: for<'de> Deserialize<'de>>(&mut self) -> Result<T, WireError> {
        let frame = self.0.next().await.ok_or(WireError::Closed)??;
        Ok(serde_json::from_slice(&frame)?)
    }

    /// The socket under the link, for passing file descriptors; nothing may be in flight on it.
    pub(crate) fn into_std(self) -> std::io::Result<std::os::unix::net::UnixStream> {
        let stream = self.0.into_inner().into_std()?;
        stream.set_nonblocking(false)?;
        Ok(stream)
    }

    /// Splits the link into its two directions.
    pub(crate) fn split(self) -> (LinkSink, LinkStream) {
        self.0.split()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IRC message crosses the link as its line and comes back the same, tags included.
    #[test]
    fn events_cross_as_lines() {
        let message: Message =
            "@msgid=abc;time=2026-01-01T00:00:00.000Z :bob!b@h PRIVMSG #chan :hi there\r\n".parse().unwrap();
        let event = ConnEvent::Message { owner: "bot".into(), nick: "lattice".into(), message: Box::new(message) };
        let wire: WireEvent = serde_json::from_str(&serde_json::to_string(&WireEvent::from(&event)).unwrap()).unwrap();
        match (wire.into_event("e1.7"), event) {
            (Some(ConnEvent::Message { message: back, .. }), ConnEvent::Message { mut message, .. }) => {
                message.tags.as_mut().unwrap().push(Tag(EDGE_ID_TAG.into(), Some("e1.7".into())));
                assert_eq!(back, message)
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
