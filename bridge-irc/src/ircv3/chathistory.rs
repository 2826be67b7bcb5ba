//! `draft/chathistory` (<https://ircv3.net/specs/extensions/chathistory>): backfill of what a channel said while the
//! bridge was not listening. When the bridge bot (re)joins a bridged channel on a server that offers it, it asks for
//! the latest messages (after the last one it saw this session, if any); the answer arrives as a `chathistory`
//! batch whose messages not yet in the message map are bridged with their own `server-time`.

use irc::proto::{Command, Message};

use crate::line::{Line, LineError};

/// How many messages one backfill asks for.
pub(crate) const LIMIT: usize = 100;

/// `CHATHISTORY LATEST <channel> <msgid=…|*> <limit>`: the latest messages, only those after `after` when given.
pub(crate) fn request(channel: &str, after: Option<&str>) -> Result<Line, LineError> {
    let bound = after.map_or_else(|| "*".to_owned(), |msgid| format!("msgid={msgid}"));
    Line::new("CHATHISTORY", &["LATEST", channel, &bound, &LIMIT.to_string()], None)
}

/// Whether a message of a `chathistory` batch is bridged: what people said, not the joins and parts the server
/// may replay with it (those happened long ago; the member list comes from NAMES).
pub(crate) fn replayable(message: &Message) -> bool {
    matches!(message.command, Command::PRIVMSG(..) | Command::NOTICE(..))
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    use super::*;

    #[test]
    fn requests_name_the_last_message_seen() {
        let text = |line: Line| String::from_utf8_lossy(line.as_bytes()).into_owned();
        assert_eq!(text(request("#c", None).unwrap()), "CHATHISTORY LATEST #c * 100\r\n");
        assert_eq!(text(request("#c", Some("abc")).unwrap()), "CHATHISTORY LATEST #c msgid=abc 100\r\n");
        assert!(request("#c", Some("a b")).is_err());
    }

    #[test]
    fn only_what_people_said_is_replayed() {
        assert!(replayable(&Message::from_str("@msgid=1 :a!a@h PRIVMSG #c :hi").unwrap()));
        assert!(replayable(&Message::from_str(":a!a@h NOTICE #c :hi").unwrap()));
        assert!(!replayable(&Message::from_str(":a!a@h JOIN #c").unwrap()));
    }
}
