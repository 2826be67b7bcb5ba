//! The one encoder every outgoing IRC line goes through (RFC 1459 §2.3 message format).
//!
//! A [`Line`] is exactly one command: parameters are checked, the trailing parameter has CR, LF and NUL replaced
//! by spaces, and the whole stays within 512 bytes, so nothing a Matrix user types can start a second command.
//! Text that does not fit is split by [`split_text`] first, never inside a UTF-8 character.

use std::fmt;

/// The longest line, CR LF included (RFC 1459 §2.3).
pub(crate) const MAX_LINE: usize = 512;
/// The longest line with IRCv3 message tags in front: the tags' 4094 bytes, `@` and a space, then the message.
const MAX_TAGGED_LINE: usize = crate::ircv3::tags::MAX_CLIENT_TAGS + 2 + MAX_LINE;

/// The room a server's prefix (`:nick!user@host `) takes when relaying our line, when we do not know our own
/// user and host: a 10-byte user and a 63-byte host (RFC 1123 label limit) are what servers allow.
pub(crate) fn worst_case_prefix(nick: &str) -> usize {
    1 + nick.len() + 1 + 10 + 1 + 63 + 1
}

/// One encoded IRC command, CR LF included.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Line(Vec<u8>);

/// Why a line could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LineError {
    /// The command is not letters or a three-digit numeric.
    #[error("invalid IRC command {0:?}")]
    Command(String),
    /// A middle parameter is empty, starts with `:` or holds a space, CR, LF or NUL.
    #[error("invalid IRC parameter {0:?}")]
    Parameter(String),
    /// The encoded line would pass 512 bytes.
    #[error("IRC line too long ({0} bytes)")]
    TooLong(usize),
    /// A line encoded elsewhere is not one whole command.
    #[error("not one encoded IRC line: {0}")]
    Encoded(String),
}

impl Line {
    /// Encodes `command` with its middle parameters and an optional trailing parameter.
    pub(crate) fn new(command: &str, middle: &[&str], trailing: Option<&str>) -> Result<Self, LineError> {
        if command.is_empty() || !command.bytes().all(|b| b.is_ascii_alphabetic() || b.is_ascii_digit()) {
            return Err(LineError::Command(command.to_owned()));
        }
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(command.as_bytes());
        for param in middle {
            if param.is_empty()
                || param.starts_with(':')
                || param.bytes().any(|b| matches!(b, b' ' | b'\r' | b'\n' | 0))
            {
                return Err(LineError::Parameter((*param).to_owned()));
            }
            out.push(b' ');
            out.extend_from_slice(param.as_bytes());
        }
        if let Some(trailing) = trailing {
            out.extend_from_slice(b" :");
            out.extend(trailing.bytes().map(|b| if matches!(b, b'\r' | b'\n' | 0) { b' ' } else { b }));
        }
        out.extend_from_slice(b"\r\n");
        if out.len() > MAX_LINE {
            return Err(LineError::TooLong(out.len()));
        }
        Ok(Self(out))
    }

    /// The same line with `prefix` in front: the IRCv3 message tags (`@…` and a space) that `ircv3::tags` writes,
    /// which do not count against the 512 bytes of the message itself. CR, LF and NUL become spaces, as in a trailing
    /// parameter, so no prefix can end the line early.
    pub(crate) fn prefixed(self, prefix: &str) -> Self {
        if prefix.is_empty() {
            return self;
        }
        let mut out: Vec<u8> = prefix.bytes().map(|b| if matches!(b, b'\r' | b'\n' | 0) { b' ' } else { b }).collect();
        out.extend_from_slice(&self.0);
        Self(out)
    }

    /// The bytes to write.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A line encoded elsewhere (the edge process gets them from the bridge), checked again: one command ending in
    /// CR LF with no other CR, LF or NUL, within the length a tagged line may have.
    pub(crate) fn decoded(encoded: String) -> Result<Self, LineError> {
        let bytes = encoded.into_bytes();
        let body = bytes.strip_suffix(b"\r\n").ok_or_else(|| LineError::Encoded("no CR LF at the end".into()))?;
        if body.iter().any(|byte| matches!(byte, b'\r' | b'\n' | 0)) {
            return Err(LineError::Encoded("CR, LF or NUL inside".into()));
        }
        if bytes.len() > MAX_TAGGED_LINE {
            return Err(LineError::TooLong(bytes.len()));
        }
        Ok(Self(bytes))
    }
}

impl fmt::Debug for Line {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Line({})", loggable(&String::from_utf8_lossy(&self.0)))
    }
}

/// SASL mechanism names and the empty and abort markers: the `AUTHENTICATE` arguments that carry no secret.
const PLAIN_AUTHENTICATE: &[&str] = &["+", "*", "PLAIN", "EXTERNAL", "SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// An IRC line as it may appear in a log, in either direction: the parameters of a line that carries a password —
/// `PASS`, `OPER`, an `AUTHENTICATE` step, a message to services with `IDENTIFY`, `REGISTER` or `PASSWORD` in it (also
/// as the server echoes it back with `echo-message`) — are replaced by `<secret>`; tags, prefix and command stay.
pub(crate) fn loggable(line: &str) -> std::borrow::Cow<'_, str> {
    let line = line.trim_end_matches(['\r', '\n']);
    let mut rest = line;
    for marker in ['@', ':'] {
        if rest.starts_with(marker) {
            rest = rest.split_once(' ').map_or("", |(_, after)| after).trim_start_matches(' ');
        }
    }
    let (command, params) = rest.split_once(' ').unwrap_or((rest, ""));
    let secret = match command.to_ascii_uppercase().as_str() {
        "PASS" | "OPER" => true,
        "AUTHENTICATE" => !PLAIN_AUTHENTICATE.contains(&params.trim()),
        "PRIVMSG" | "NOTICE" | "NS" | "NICKSERV" | "CS" | "CHANSERV" => {
            let upper = params.to_ascii_uppercase();
            ["IDENTIFY", "REGISTER", "PASSWORD", "GHOST", "RECOVER", "REGAIN"].iter().any(|word| upper.contains(word))
        }
        _ => false,
    };
    if secret {
        let head = &line[..line.len() - params.len()];
        std::borrow::Cow::Owned(format!("{}<secret>", head))
    } else {
        std::borrow::Cow::Borrowed(line)
    }
}

/// The kind of a chat line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextKind {
    /// `PRIVMSG`.
    Privmsg,
    /// `NOTICE`.
    Notice,
    /// `PRIVMSG` carrying CTCP `ACTION` (`/me`).
    Action,
}

/// Lines carrying `text` to `target`: one or more per line of text, each within 512 bytes once the server has put
/// our prefix (`prefix_len` bytes, see [`worst_case_prefix`]) in front. Empty lines are skipped.
pub(crate) fn text_lines(target: &str, kind: TextKind, text: &str, prefix_len: usize) -> Result<Vec<Line>, LineError> {
    let command = if kind == TextKind::Notice { "NOTICE" } else { "PRIVMSG" };
    let overhead = prefix_len + command.len() + 1 + target.len() + 2 + 2 + if kind == TextKind::Action { 9 } else { 0 };
    let room = MAX_LINE.saturating_sub(overhead).max(16);
    let mut lines = Vec::new();
    for line in text.split(['\n', '\r']) {
        let line = line.replace('\0', "");
        for chunk in split_text(&line, room) {
            let trailing = match kind {
                TextKind::Action => format!("\x01ACTION {chunk}\x01"),
                _ => chunk.to_owned(),
            };
            lines.push(Line::new(command, &[target], Some(&trailing))?);
        }
    }
    Ok(lines)
}

/// Splits `text` into pieces of at most `max_bytes` bytes, at a space when there is one in the second half of a
/// piece (the space is dropped), else at the last character boundary that fits. Carries mIRC formatting over:
/// a piece after the first starts with the codes that restore the style the previous piece ended in.
pub(crate) fn split_text(text: &str, max_bytes: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    let mut carried = String::new();
    while !rest.is_empty() {
        let room = max_bytes.saturating_sub(carried.len()).max(1);
        if rest.len() <= room {
            pieces.push(format!("{carried}{rest}"));
            break;
        }
        let mut cut = room;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if cut == 0 {
            cut = rest.chars().next().map_or(1, char::len_utf8);
        }
        // Never cut a colour code in half: back up to before a \x03 within its 6 following bytes.
        let mut window = cut.saturating_sub(6);
        while !rest.is_char_boundary(window) {
            window += 1;
        }
        if let Some(code) = rest[window..cut].rfind(['\x03', '\x04']) {
            let at = window + code;
            if at > 0 && at < cut {
                cut = at;
            }
        }
        let (piece, next) = match rest[..cut].rfind(' ').filter(|&space| space >= cut / 2 && space > 0) {
            Some(space) => (&rest[..space], &rest[space + 1..]),
            None => (&rest[..cut], &rest[cut..]),
        };
        let piece = format!("{carried}{piece}");
        carried = crate::mirc::codes_to_restore(&piece);
        pieces.push(piece);
        rest = next;
    }
    pieces.retain(|piece| !crate::mirc::strip(piece).trim().is_empty());
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_goes_in_front_and_cannot_end_the_line() {
        let line = Line::new("PRIVMSG", &["#chan"], Some("hi")).unwrap();
        assert_eq!(text(&line.clone().prefixed("@+typing=active ")), "@+typing=active PRIVMSG #chan :hi\r\n");
        assert_eq!(text(&line.clone().prefixed("@a=b\r\nQUIT ")), "@a=b  QUIT PRIVMSG #chan :hi\r\n");
        assert_eq!(text(&line.clone().prefixed("")), text(&line));
    }

    #[test]
    fn lines_with_passwords_are_logged_without_them() {
        let cases = [
            ("PASS hunter2\r\n", "PASS <secret>"),
            ("AUTHENTICATE PLAIN\r\n", "AUTHENTICATE PLAIN"),
            ("AUTHENTICATE +", "AUTHENTICATE +"),
            ("AUTHENTICATE AGFsaWNlAHMzY3JldA==", "AUTHENTICATE <secret>"),
            ("PRIVMSG NickServ :IDENTIFY alice s3cret", "PRIVMSG <secret>"),
            ("privmsg nickserv :identify s3cret", "privmsg <secret>"),
            (
                "@time=2026-12-07T21:44:14Z;msgid=6 :carol!c@h PRIVMSG NickServ :IDENTIFY carol s3cret",
                "@time=2026-12-07T21:44:14Z;msgid=6 :carol!c@h PRIVMSG <secret>",
            ),
            (":alice!a@h PRIVMSG NickServ :REGISTER s3cret a@example.org", ":alice!a@h PRIVMSG <secret>"),
            ("NS GHOST alice s3cret", "NS <secret>"),
            ("OPER admin s3cret", "OPER <secret>"),
            (":srv AUTHENTICATE cj1meWtvK2Q=", ":srv AUTHENTICATE <secret>"),
            ("PRIVMSG #chan :hello there", "PRIVMSG #chan :hello there"),
            (":bob!b@h PRIVMSG #chan :identity matters", ":bob!b@h PRIVMSG #chan :identity matters"),
        ];
        for (line, shown) in cases {
            assert_eq!(loggable(line), shown, "{line}");
        }
        let encoded = Line::new("PRIVMSG", &["NickServ"], Some("IDENTIFY alice s3cret")).unwrap();
        assert_eq!(format!("{encoded:?}"), "Line(PRIVMSG <secret>)");
    }

    fn text(line: &Line) -> String {
        String::from_utf8(line.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn lines_are_one_command_each() {
        let line = Line::new("PRIVMSG", &["#chan"], Some("hi\r\nQUIT :x\0")).unwrap();
        assert_eq!(text(&line), "PRIVMSG #chan :hi  QUIT :x \r\n");
        for bad in ["#a b", "", ":x", "#a\r\nQUIT", "a\0"] {
            assert!(matches!(Line::new("JOIN", &[bad], None), Err(LineError::Parameter(_))), "{bad:?}");
        }
        assert!(matches!(Line::new("JOIN\r\nQUIT", &[], None), Err(LineError::Command(_))));
        assert!(matches!(Line::new("PRIVMSG", &["#c"], Some(&"x".repeat(600))), Err(LineError::TooLong(_))));
        assert_eq!(text(&Line::new("001", &["me"], Some("")).unwrap()), "001 me :\r\n");
    }

    /// A line that crossed a process boundary is taken only as one whole command.
    #[test]
    fn decoded_lines_are_checked_again() {
        let line = Line::new("PRIVMSG", &["#chan"], Some("hi")).unwrap().tagged(&[("label", Some("a1"))]).unwrap();
        assert_eq!(Line::decoded(text(&line)).unwrap(), line);
        for bad in ["PRIVMSG #c :hi", "PRIVMSG #c :a\r\nQUIT\r\n", "PRIVMSG #c :a\nb\r\n", "PRIVMSG #c :a\0\r\n"] {
            assert!(matches!(Line::decoded(bad.into()), Err(LineError::Encoded(_))), "{bad:?}");
        }
        let long = format!("PRIVMSG #c :{}\r\n", "x".repeat(5000));
        assert!(matches!(Line::decoded(long), Err(LineError::TooLong(_))));
    }

    #[test]
    fn text_becomes_lines_that_fit_with_the_prefix() {
        let prefix = worst_case_prefix("alice");
        let message = "é".repeat(400) + "\nsecond\r\n\nQUIT :x";
        let lines = text_lines("#chan", TextKind::Privmsg, &message, prefix).unwrap();
        let texts: Vec<String> = lines.iter().map(text).collect();
        assert_eq!(texts.len(), 4, "{texts:?}");
        for line in &texts {
            assert!(line.len() + prefix <= MAX_LINE, "{} bytes", line.len());
            assert!(line.starts_with("PRIVMSG #chan :"));
            assert_eq!(line.matches("\r\n").count(), 1);
        }
        let rejoined: String = texts[..2].iter().map(|line| &line["PRIVMSG #chan :".len()..line.len() - 2]).collect();
        assert_eq!(rejoined, "é".repeat(400));
        assert_eq!(texts[2], "PRIVMSG #chan :second\r\n");
        assert_eq!(texts[3], "PRIVMSG #chan :QUIT :x\r\n");
        let action = text_lines("#chan", TextKind::Action, "waves", prefix).unwrap();
        assert_eq!(text(&action[0]), "PRIVMSG #chan :\x01ACTION waves\x01\r\n");
        let notice = text_lines("bob", TextKind::Notice, "hi", prefix).unwrap();
        assert_eq!(text(&notice[0]), "NOTICE bob :hi\r\n");
    }

    #[test]
    fn splitting_prefers_spaces_and_carries_formatting() {
        assert_eq!(split_text("hello world again", 12), ["hello world", "again"]);
        assert_eq!(split_text("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(split_text("\x02bold text here", 10), ["\x02bold", "\x02text here"]);
        assert_eq!(split_text("", 10), Vec::<String>::new());
        for width in 8..20 {
            for piece in split_text(&"日本語のテキスト ".repeat(10), width) {
                assert!(piece.len() <= width.max(8), "{piece:?}");
            }
        }
    }
}
