//! Message tags, IRCv3 `message-tags` (<https://ircv3.net/specs/extensions/message-tags>): reading tags the `irc`
//! crate parsed (and unescaped), and writing the `@key=value;…` prefix of lines we send, with values escaped.
//! Client-only tags (`+draft/reply`, `+draft/react`, `+typing`) travel only when the connection negotiated
//! `message-tags`; `label` needs `labeled-response`.

use irc::proto::Message;

use crate::line::Line;

/// The most bytes of tag data a client may send (the spec's 4094, without the leading `@` and trailing space).
pub(crate) const MAX_CLIENT_TAGS: usize = 4094;

/// Why tags could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TagError {
    /// A key holds characters the spec does not allow (`[+][vendor/]name`, letters, digits, `-`, `.`, `/`).
    #[error("invalid IRC tag key {0:?}")]
    Key(String),
    /// The tags pass the 4094 bytes a client may send.
    #[error("IRC tags too long ({0} bytes)")]
    TooLong(usize),
}

impl Line {
    /// The same line with IRCv3 message tags in front ([`prefix`]); tags do not count against the 512 bytes of the
    /// message itself.
    pub(crate) fn tagged(self, tags: &[(&str, Option<&str>)]) -> Result<Self, TagError> {
        Ok(self.prefixed(&prefix(tags)?))
    }
}

/// A tag's value on a received message; a tag present without a value reads as `""`.
pub(crate) fn get<'a>(message: &'a Message, key: &str) -> Option<&'a str> {
    message.tags.iter().flatten().find(|tag| tag.0 == key).map(|tag| tag.1.as_deref().unwrap_or(""))
}

/// Escapes a tag value: `;` `\s` `\\` `\r` `\n` as the spec says.
pub(crate) fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for character in value.chars() {
        match character {
            ';' => out.push_str("\\:"),
            ' ' => out.push_str("\\s"),
            '\\' => out.push_str("\\\\"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\0' => {}
            other => out.push(other),
        }
    }
    out
}

/// Unescapes a tag value; an unknown escape drops the backslash and a trailing lone backslash is dropped. The `irc`
/// crate unescapes what it parses; this is the reference the escaping round-trips against.
#[cfg(test)]
fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut characters = value.chars();
    while let Some(character) = characters.next() {
        if character != '\\' {
            out.push(character);
            continue;
        }
        match characters.next() {
            Some(':') => out.push(';'),
            Some('s') => out.push(' '),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// The `@a=b;c ` prefix for `tags` (key, value), or an empty string for no tags.
pub(crate) fn prefix(tags: &[(&str, Option<&str>)]) -> Result<String, TagError> {
    if tags.is_empty() {
        return Ok(String::new());
    }
    let mut out = String::from("@");
    for (index, (key, value)) in tags.iter().enumerate() {
        let name = key.strip_prefix('+').unwrap_or(key);
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'/')) {
            return Err(TagError::Key((*key).to_owned()));
        }
        if index > 0 {
            out.push(';');
        }
        out.push_str(key);
        if let Some(value) = value.filter(|value| !value.is_empty()) {
            out.push('=');
            out.push_str(&escape(value));
        }
    }
    if out.len() - 1 > MAX_CLIENT_TAGS {
        return Err(TagError::TooLong(out.len() - 1));
    }
    out.push(' ');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    use super::*;

    #[test]
    fn values_escape_and_unescape() {
        for (raw, escaped) in [
            ("plain", "plain"),
            ("a;b c", "a\\:b\\sc"),
            ("back\\slash", "back\\\\slash"),
            ("cr\rlf\n", "cr\\rlf\\n"),
            ("", ""),
            ("😀", "😀"),
        ] {
            assert_eq!(escape(raw), escaped, "{raw:?}");
            assert_eq!(unescape(escaped), raw, "{escaped:?}");
        }
        assert_eq!(unescape("a\\bc\\"), "abc");
        assert_eq!(escape("nul\0"), "nul");
    }

    #[test]
    fn prefixes_are_valid_and_bounded() {
        assert_eq!(prefix(&[]).unwrap(), "");
        assert_eq!(
            prefix(&[("+draft/reply", Some("abc")), ("label", Some("x y"))]).unwrap(),
            "@+draft/reply=abc;label=x\\sy "
        );
        assert_eq!(prefix(&[("+typing", Some("active")), ("flag", None)]).unwrap(), "@+typing=active;flag ");
        assert!(matches!(prefix(&[("bad key", None)]), Err(TagError::Key(_))));
        assert!(matches!(prefix(&[("+", None)]), Err(TagError::Key(_))));
        assert!(matches!(prefix(&[("k", Some(&"x".repeat(5000)))]), Err(TagError::TooLong(_))));
    }

    #[test]
    fn tags_read_from_parsed_messages() {
        let message =
            Message::from_str("@time=2026-11-26T09:30:00.000Z;msgid=a\\sb;flag :n!u@h PRIVMSG #c :hi").unwrap();
        assert_eq!(get(&message, "msgid"), Some("a b"));
        assert_eq!(get(&message, "flag"), Some(""));
        assert_eq!(get(&message, "missing"), None);
    }
}
