//! The message-map ID of an IRC message, `{nick}/{id}`: built and read here only. `id` is the IRCv3 `msgid` the
//! server gave the message ([message-ids](https://ircv3.net/specs/extensions/message-ids)); a Matrix message
//! delivered before its echo named it is recorded under its Matrix event ID (`$…`), and a line without a `msgid`
//! under a random one.

use std::fmt;

use irc::proto::Message;
use lattice_bridge_core::connector::RemoteId;

use crate::ircv3::tags;

/// An IRC message as the message map names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MessageId {
    nick: String,
    id: String,
}

impl MessageId {
    /// A message `nick` sent that the server named `msgid`.
    pub(crate) fn new(nick: &str, msgid: &str) -> Self {
        Self { nick: nick.to_owned(), id: msgid.to_owned() }
    }

    /// A received line from `nick`: its `msgid` tag, else the edge's name for it (see [`crate::edge::EDGE_ID_TAG`]),
    /// else a random ID (the line can then not be named back).
    pub(crate) fn of_line(nick: &str, message: &Message) -> Self {
        let id = match tags::get(message, "msgid").filter(|msgid| !msgid.is_empty()) {
            Some(msgid) => msgid.to_owned(),
            // Handed over by the edge: named by it, the same when handed over again.
            None => match tags::get(message, crate::edge::EDGE_ID_TAG).filter(|stamp| !stamp.is_empty()) {
                Some(stamp) => format!("edge-{stamp}"),
                None => format!("{:016x}", rand::random::<u64>()),
            },
        };
        Self { nick: nick.to_owned(), id }
    }

    /// A Matrix message the puppet `nick` delivered, named by its Matrix event until its echo gives a msgid.
    pub(crate) fn delivered(nick: &str, event_id: &str) -> Self {
        Self::new(nick, event_id)
    }

    /// Reads a recorded ID; `None` for one this module did not build.
    pub(crate) fn parse(remote_id: &str) -> Option<Self> {
        let (nick, id) = remote_id.split_once('/')?;
        (!nick.is_empty() && !id.is_empty()).then(|| Self::new(nick, id))
    }

    /// Who sent the message.
    pub(crate) fn nick(&self) -> &str {
        &self.nick
    }

    /// The server's `msgid`, if the ID is one (not a Matrix event ID standing in for it).
    pub(crate) fn msgid(&self) -> Option<&str> {
        (!self.id.starts_with('$') && !self.id.starts_with("edge-")).then_some(self.id.as_str())
    }

    /// The ID as the message map stores it.
    pub(crate) fn remote_id(&self) -> RemoteId {
        RemoteId::new(self.to_string())
    }

    /// What every recorded ID of the message the server named `msgid` ends with, whoever sent it (IRCv3 replies,
    /// reactions and redactions name a message by its msgid alone).
    pub(crate) fn suffix_of(msgid: &str) -> String {
        format!("/{msgid}")
    }

    /// The newest server `msgid` among a Matrix event's remote IDs, leaving out the stand-in event IDs.
    pub(crate) fn latest_msgid(remote_ids: &[String]) -> Option<String> {
        remote_ids.iter().rev().filter_map(|id| Self::parse(id)).find_map(|id| id.msgid().map(str::to_owned))
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.nick, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_tell_msgids_from_event_ids() {
        let id = MessageId::new("alice", "abc123");
        assert_eq!(id.to_string(), "alice/abc123");
        assert_eq!(MessageId::parse("alice/abc123"), Some(id.clone()));
        assert_eq!(id.msgid(), Some("abc123"));
        assert_eq!(id.remote_id().as_str(), "alice/abc123");
        let before_echo = MessageId::delivered("alice", "$event:hs");
        assert_eq!(before_echo.msgid(), None);
        assert_eq!(MessageId::parse(&before_echo.to_string()).unwrap().nick(), "alice");
        assert_eq!(MessageId::parse("no-slash"), None);
        assert_eq!(MessageId::parse("/x"), None);
    }

    #[test]
    fn the_latest_server_msgid_is_found() {
        let ids = ["bob/first".to_owned(), "bob/second".to_owned(), "bob/$event".to_owned()];
        assert_eq!(MessageId::latest_msgid(&ids).as_deref(), Some("second"));
        assert_eq!(MessageId::latest_msgid(&["bob/$only".to_owned()]), None);
        assert_eq!(MessageId::latest_msgid(&[]), None);
    }

    #[test]
    fn received_lines_carry_their_msgid_or_a_random_id() {
        let tagged: Message = "@msgid=xyz :bob!b@h PRIVMSG #c :hi".parse().unwrap();
        assert_eq!(MessageId::of_line("bob", &tagged).to_string(), "bob/xyz");
        let plain: Message = ":bob!b@h PRIVMSG #c :hi".parse().unwrap();
        let random = MessageId::of_line("bob", &plain);
        assert_eq!(random.nick(), "bob");
        assert_ne!(random, MessageId::of_line("bob", &plain));
        assert!(MessageId::parse(&MessageId::suffix_of("xyz")).is_none());
    }
}
