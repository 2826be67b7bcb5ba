//! What a connection hands its owner, and what it drops unread: a puppet hears only what concerns it.

use irc::proto::{Command, Message, Response};

use super::Forward;
use crate::{ids::casefolds_to, ircv3::tags, line::Line};

/// Whether the owner asked for `message` (see [`Forward`]); `own` is the owner's nick casefolded.
pub(super) fn wants(forward: Forward, message: &Message, own: &str) -> bool {
    // Answers to what the owner sent — echoes (`echo-message`) and replies carrying a `label` — and what the owner
    // did, such as a nick change.
    let from_self = message.source_nickname().is_some_and(|nick| casefolds_to(nick, own));
    if forward == Forward::Own && (tags::get(message, "label").is_some() || from_self) {
        return !matches!(message.command, Command::JOIN(..) | Command::PART(..) | Command::QUIT(..));
    }
    match forward {
        Forward::All => true,
        Forward::Own => match &message.command {
            Command::Raw(command, _) if command == "FAIL" => true,
            Command::PRIVMSG(target, _) | Command::NOTICE(target, _) => casefolds_to(target, own),
            // Client tags sent to the puppet alone (IRCv3 typing in a DM).
            Command::Raw(command, params) if command == "TAGMSG" => {
                params.first().is_some_and(|target| casefolds_to(target, own))
            }
            Command::KICK(_, kicked, _) => casefolds_to(kicked, own),
            // Why the server closed the connection (a K-line, a ban), for the user's removal notice.
            Command::ERROR(_) => true,
            Command::Response(response, _) => matches!(
                response,
                Response::RPL_WHOISUSER
                    | Response::RPL_WHOISSERVER
                    | Response::RPL_WHOISCHANNELS
                    | Response::RPL_WHOISIDLE
                    | Response::RPL_ENDOFWHOIS
                    | Response::ERR_NOSUCHNICK
                    | Response::ERR_CANNOTSENDTOCHAN
                    | Response::ERR_NICKNAMEINUSE
                    | Response::ERR_ERRONEOUSNICKNAME
            ),
            _ => false,
        },
    }
}

/// Whether a raw line is someone else's message to a channel: most of what a puppet's connection receives, and
/// nothing it acts on (the network's listener bridges channel traffic), so such lines are dropped before parsing.
/// Lines carrying a `label` (answers to what the owner sent) and anything unusual are parsed as usual.
pub(super) fn is_others_channel_chatter(line: &str, own_nick_folded: &str) -> bool {
    let mut rest = line;
    if let Some(tagged) = rest.strip_prefix('@') {
        let Some((tags, after)) = tagged.split_once(' ') else { return false };
        if tags.split(';').any(|tag| tag == "label" || tag.starts_with("label=")) {
            return false;
        }
        rest = after;
    }
    let Some((prefix, after)) = rest.strip_prefix(':').and_then(|prefixed| prefixed.split_once(' ')) else {
        return false;
    };
    let nick = prefix.split(['!', '@']).next().unwrap_or_default();
    let mut words = after.splitn(3, ' ');
    let (Some(command), Some(target)) = (words.next(), words.next()) else { return false };
    matches!(command, "PRIVMSG" | "NOTICE" | "TAGMSG")
        && target.starts_with(['#', '&'])
        && !casefolds_to(nick, own_nick_folded)
}

/// Channel lists per JOIN line: the longest list of channel names, in bytes, one `JOIN` carries (RFC 2812 3.2.1
/// allows a comma-separated list; a line must stay within 512 bytes with the server's prefix on it).
const JOIN_LIST_BYTES: usize = 400;

/// `JOIN` lines for `channels`, several channels to a line, so rejoining thousands of channels takes a few hundred
/// lines rather than thousands.
pub(super) fn join_lines(channels: &[String]) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut list = String::new();
    for channel in channels {
        if !list.is_empty() && list.len() + 1 + channel.len() > JOIN_LIST_BYTES {
            lines.extend(Line::new("JOIN", &[&list], None));
            list.clear();
        }
        if !list.is_empty() {
            list.push(',');
        }
        list.push_str(channel);
    }
    if !list.is_empty() {
        lines.extend(Line::new("JOIN", &[&list], None));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr as _;

    #[test]
    fn rejoins_go_several_channels_to_a_line() {
        let text = |lines: Vec<Line>| -> Vec<String> {
            lines.iter().map(|line| String::from_utf8_lossy(line.as_bytes()).into_owned()).collect()
        };
        assert!(join_lines(&[]).is_empty());
        assert_eq!(text(join_lines(&["#a".into(), "#b".into()])), ["JOIN #a,#b\r\n"]);
        let many: Vec<String> = (0..1000).map(|i| format!("#channel{i}")).collect();
        let lines = text(join_lines(&many));
        assert!(lines.len() < 40, "{} lines", lines.len());
        assert!(lines.iter().all(|line| line.len() <= JOIN_LIST_BYTES + 7));
        let joined: Vec<&str> =
            lines.iter().flat_map(|line| line.trim_end().trim_start_matches("JOIN ").split(',')).collect();
        assert_eq!(joined, many.iter().map(String::as_str).collect::<Vec<_>>());
    }

    #[test]
    fn only_others_channel_messages_are_dropped_unparsed() {
        let cases = [
            (":alice!a@h PRIVMSG #chan :hello", true),
            ("@time=2026-01-01T00:00:00Z;msgid=x :alice!a@h NOTICE &local :hi", true),
            ("@+typing=active :alice!a@h TAGMSG #chan", true),
            // Our own echo, labelled answers, private messages and everything else are parsed.
            (":Me!m@h PRIVMSG #chan :echo", false),
            ("@label=7 :alice!a@h PRIVMSG #chan :answer", false),
            (":alice!a@h PRIVMSG me :private", false),
            (":alice!a@h PRIVMSG @#chan :ops only", false),
            (":alice!a@h JOIN #chan", false),
            ("PING :x", false),
            ("@broken", false),
            (":alice!a@h PRIVMSG", false),
        ];
        for (line, dropped) in cases {
            assert_eq!(is_others_channel_chatter(line, "me"), dropped, "{line}");
        }
    }

    #[test]
    fn puppets_only_hear_what_concerns_them() {
        let parse = |line: &str| Message::from_str(line).unwrap();
        assert!(wants(Forward::Own, &parse(":bob!b@h PRIVMSG Alice :hi"), "alice"));
        assert!(!wants(Forward::Own, &parse(":bob!b@h PRIVMSG #chan :hi"), "alice"));
        assert!(wants(Forward::Own, &parse("@+typing=active :bob!b@h TAGMSG Alice"), "alice"));
        assert!(!wants(Forward::Own, &parse("@+typing=active :bob!b@h TAGMSG #chan"), "alice"));
        assert!(wants(Forward::Own, &parse(":op!o@h KICK #chan alice :bye"), "alice"));
        assert!(!wants(Forward::Own, &parse(":op!o@h KICK #chan bob :bye"), "alice"));
        assert!(wants(Forward::Own, &parse(":alice!a@h NICK alice2"), "alice"));
        assert!(wants(Forward::Own, &parse("ERROR :Closing link: (alice@h) [K-Lined: spam]"), "alice"));
        assert!(wants(Forward::All, &parse(":bob!b@h PRIVMSG #chan :hi"), "alice"));
    }
}
