//! Pure rendering between IRC lines and bridge terms: message kinds, ban masks, power levels.

use std::str::FromStr as _;

use irc::proto::{Command, Message};
use lattice_bridge_core::event::MessageType;

use crate::{ids::casefold, line::Line};
/// What kind of Matrix message an IRC line is, and its text; `None` for CTCP other than ACTION.
pub(super) fn classify(text: &str, notice: bool) -> Option<(MessageType, &str)> {
    if let Some(ctcp) = text.strip_prefix('\x01') {
        let ctcp = ctcp.strip_suffix('\x01').unwrap_or(ctcp);
        return ctcp.strip_prefix("ACTION ").map(|action| (MessageType::Emote, action));
    }
    Some((if notice { MessageType::Notice } else { MessageType::Text }, text))
}

/// The channel a backfilled PRIVMSG or NOTICE was said in.
pub(super) fn backfill_target(message: &Message) -> Option<&str> {
    match &message.command {
        Command::PRIVMSG(target, _) | Command::NOTICE(target, _) => Some(target),
        _ => None,
    }
}

/// The target and text of a PRIVMSG or NOTICE line we are about to send, as its echo will carry them.
pub(super) fn sent_text(line: &Line) -> Option<(String, String)> {
    let text = String::from_utf8_lossy(line.as_bytes());
    match Message::from_str(text.trim_end_matches(['\r', '\n'])).ok()?.command {
        Command::PRIVMSG(target, text) | Command::NOTICE(target, text) => Some((target, text)),
        _ => None,
    }
}

/// Whether an IRC ban mask (`*` and `?` wildcards, RFC 1459 case folding) matches `nick!user@host`.
pub(super) fn mask_matches(mask: &str, full: &str) -> bool {
    fn matches(pattern: &[char], text: &[char]) -> bool {
        match pattern.split_first() {
            None => text.is_empty(),
            Some(('*', rest)) => (0..=text.len()).any(|skip| matches(rest, &text[skip..])),
            Some((&first, rest)) => {
                text.split_first().is_some_and(|(&c, tail)| (first == '?' || first == c) && matches(rest, tail))
            }
        }
    }
    let pattern: Vec<char> = casefold(mask).chars().collect();
    let text: Vec<char> = casefold(full).chars().collect();
    matches(&pattern, &text)
}

/// Matrix power level for IRC channel-mode prefixes: founders, admins and ops 50, halfops 25, voice 10.
pub(super) fn power_level(prefixes: &str) -> i64 {
    prefixes
        .chars()
        .map(|prefix| match prefix {
            '~' | '&' | '@' => 50,
            '%' => 25,
            '+' => 10,
            _ => 0,
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn irc_lines_are_classified() {
        assert_eq!(classify("hi", false), Some((MessageType::Text, "hi")));
        assert_eq!(classify("hi", true), Some((MessageType::Notice, "hi")));
        assert_eq!(classify("\x01ACTION waves\x01", false), Some((MessageType::Emote, "waves")));
        assert_eq!(classify("\x01VERSION\x01", false), None);
        assert_eq!(power_level("@+"), 50);
        assert_eq!(power_level("+"), 10);
        assert_eq!(power_level(""), 0);
    }

    #[test]
    fn ban_masks_match_with_wildcards() {
        for (mask, full, expected) in [
            ("alice!*@*", "Alice!alice@127.0.0.1", true),
            ("*!alice@*", "al!alice@host", true),
            ("a?ice!*@127.*", "alice!x@127.0.0.1", true),
            ("bob!*@*", "alice!alice@host", false),
            ("*", "anyone!u@h", true),
            ("alice!*@*.example", "alice!a@127.0.0.1", false),
        ] {
            assert_eq!(mask_matches(mask, full), expected, "{mask} ~ {full}");
        }
    }
}
