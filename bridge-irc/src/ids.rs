//! Names on both sides: IRC nicks and channels (RFC 1459 casemapping, validation, sanitising), the Matrix IDs
//! made from them through the config's templates, and the portal keys that tie a channel to its room.

/// Lower-cases an IRC name per RFC 1459 casemapping, in which `[]\~` are the upper-case forms of `{}|^`.
pub(crate) fn casefold(name: &str) -> String {
    name.chars().map(fold_char).collect()
}

/// Whether `name` casefolds to `folded` (see [`casefold`]), without building the folded name.
pub(crate) fn casefolds_to(name: &str, folded: &str) -> bool {
    name.chars().map(fold_char).eq(folded.chars())
}

fn fold_char(c: char) -> char {
    match c {
        '[' => '{',
        ']' => '}',
        '\\' => '|',
        '~' => '^',
        other => other.to_ascii_lowercase(),
    }
}

/// Whether `channel` is a channel name the bridge will use: `#` or `&` first, at most 50 bytes, no space, comma,
/// BEL, colon, CR, LF or NUL (RFC 2812 §1.3, plus `:` which cannot appear in a Matrix alias localpart).
pub(crate) fn is_valid_channel(channel: &str) -> bool {
    channel.len() > 1
        && channel.len() <= 50
        && (channel.starts_with('#') || channel.starts_with('&'))
        && !channel.chars().any(|c| matches!(c, ' ' | ',' | '\x07' | ':' | '\r' | '\n' | '\0'))
}

/// Whether `nick` is a nick as RFC 2812 §2.3.1 allows (any length; servers cut it): a letter or special first,
/// then letters, digits, specials and `-`.
pub(crate) fn is_valid_nick(nick: &str) -> bool {
    let special = |c: char| matches!(c, '[' | ']' | '\\' | '`' | '_' | '^' | '{' | '|' | '}');
    let mut chars = nick.chars();
    chars.next().is_some_and(|first| first.is_ascii_alphabetic() || special(first))
        && chars.all(|c| c.is_ascii_alphanumeric() || special(c) || c == '-')
}

/// Makes a nick out of a Matrix display name or localpart: drops what a nick cannot hold, keeps at most `max_len`
/// characters, and falls back to `matrix` when nothing usable is left.
pub(crate) fn sanitise_nick(wanted: &str, max_len: usize) -> String {
    let mut nick: String = wanted
        .chars()
        .filter(|&c| {
            c.is_ascii_alphanumeric() || matches!(c, '[' | ']' | '\\' | '`' | '_' | '^' | '{' | '|' | '}' | '-')
        })
        .collect();
    while nick.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
        nick.remove(0);
    }
    if nick.is_empty() {
        nick = "matrix".into();
    }
    nick.truncate(max_len.max(1));
    nick
}

/// The next nick to try after `nick` was refused as taken: a `_` appended while it fits, else the last
/// character replaced by a digit that grows with `attempt`.
pub(crate) fn next_nick(nick: &str, attempt: u32, max_len: usize) -> String {
    if nick.len() < max_len && attempt <= 1 {
        return format!("{nick}_");
    }
    let digits = attempt.to_string();
    let keep = max_len.saturating_sub(digits.len()).max(1).min(nick.len());
    format!("{}{digits}", &nick[..keep])
}

/// An ident (the `user` of `USER`): ASCII letters and digits of `wanted`, at most 10, or `matrix`.
pub(crate) fn sanitise_username(wanted: &str) -> String {
    let mut user: String = wanted.chars().filter(char::is_ascii_alphanumeric).take(10).collect();
    user.make_ascii_lowercase();
    if user.is_empty() { "matrix".into() } else { user }
}

/// Escapes a case-folded nick into characters valid in a Matrix localpart (`a-z 0-9 . _ -`): every other byte
/// becomes `=xx` (so `=` itself becomes `=3d`), which [`unescape_nick`] reverses.
pub(crate) fn escape_nick(nick: &str) -> String {
    let mut out = String::with_capacity(nick.len());
    for byte in casefold(nick).bytes() {
        if byte.is_ascii_lowercase() || byte.is_ascii_digit() || matches!(byte, b'.' | b'_' | b'-') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("={byte:02x}"));
        }
    }
    out
}

/// Reverses [`escape_nick`]; `None` for anything it never produces.
pub(crate) fn unescape_nick(localpart: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(localpart.len());
    let mut rest = localpart.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'=' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            let byte = u8::from_str_radix(hex, 16).ok()?;
            if !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return None;
            }
            bytes.push(byte);
            rest = &tail[2..];
        } else if first.is_ascii_lowercase() || first.is_ascii_digit() || matches!(first, b'.' | b'_' | b'-') {
            bytes.push(first);
            rest = tail;
        } else {
            return None;
        }
    }
    let nick = String::from_utf8(bytes).ok()?;
    (!nick.is_empty() && escape_nick(&nick) == localpart).then_some(nick)
}

/// A template with one variable part left after `{network}` and `{server_name}` are filled in:
/// `@irc_libera_{nick}:example.org` is the prefix `@irc_libera_` and the suffix `:example.org`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    prefix: String,
    suffix: String,
}

impl Template {
    /// Fills `{network}` and `{server_name}` into `template` and splits it at `placeholder`.
    pub(crate) fn new(template: &str, placeholder: &str, network: &str, server_name: &str) -> Self {
        let filled = template.replace("{network}", network).replace("{server_name}", server_name);
        let (prefix, suffix) = filled.split_once(placeholder).unwrap_or((&filled, ""));
        Self { prefix: prefix.to_owned(), suffix: suffix.to_owned() }
    }

    /// The template with `value` in the variable part.
    pub(crate) fn fill(&self, value: &str) -> String {
        format!("{}{value}{}", self.prefix, self.suffix)
    }

    /// The variable part of `id`, if `id` matches the template.
    pub(crate) fn extract<'a>(&self, id: &'a str) -> Option<&'a str> {
        id.strip_prefix(&self.prefix)?.strip_suffix(&self.suffix).filter(|value| !value.is_empty())
    }
}

/// The portal key of a channel: `{network}/{casefolded channel}`.
pub(crate) fn portal_key(network: &str, channel: &str) -> String {
    format!("{network}/{}", casefold(channel))
}

/// The portal key of a direct chat between a Matrix user and an IRC nick.
pub(crate) fn dm_key(network: &str, matrix_user: &str, nick: &str) -> String {
    format!("{network}/dm/{matrix_user}/{}", casefold(nick))
}

/// What a portal bridges, read once from its key (see [`portal_key`] and [`dm_key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PortalKind<'a> {
    /// A channel: `{network}/{casefolded channel}`.
    Channel {
        /// The network's ID.
        network: &'a str,
        /// The channel, casefolded.
        channel: &'a str,
    },
    /// A direct chat of a Matrix user with an IRC nick: `{network}/dm/{matrix user}/{casefolded nick}`.
    Direct {
        /// The network's ID.
        network: &'a str,
        /// The Matrix user.
        matrix_user: &'a str,
        /// The nick, casefolded.
        nick: &'a str,
    },
}

impl<'a> PortalKind<'a> {
    /// Reads a portal key; `None` for one the IRC bridge did not make.
    pub(crate) fn parse(key: &'a str) -> Option<Self> {
        if let Some((network, rest)) = key.split_once("/dm/") {
            let (matrix_user, nick) = rest.rsplit_once('/')?;
            return Some(Self::Direct { network, matrix_user, nick });
        }
        let (network, channel) = key.split_once('/').filter(|(_, channel)| is_valid_channel(channel))?;
        Some(Self::Channel { network, channel })
    }

    /// The network the portal is on.
    pub(crate) fn network(self) -> &'a str {
        match self {
            Self::Channel { network, .. } | Self::Direct { network, .. } => network,
        }
    }

    /// The channel, for a channel portal.
    pub(crate) fn channel(self) -> Option<&'a str> {
        match self {
            Self::Channel { channel, .. } => Some(channel),
            Self::Direct { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casefolding_follows_rfc1459() {
        for (input, folded) in [("Alice", "alice"), ("#Chan[1]", "#chan{1}"), ("a\\b~", "a|b^"), ("ÄB", "Äb")] {
            assert_eq!(casefold(input), folded, "{input}");
            assert!(casefolds_to(input, folded), "{input}");
        }
        assert!(!casefolds_to("Alice", "alic"));
        assert!(!casefolds_to("Alic", "alice"));
        assert!(!casefolds_to("[x]", "[x]"));
    }

    #[test]
    fn nick_escaping_round_trips() {
        for (nick, escaped) in [
            ("alice", "alice"),
            ("Bob", "bob"),
            ("[away]", "=7baway=7d"),
            ("a|b", "a=7cb"),
            ("x=y", "x=3dy"),
            ("dash-_.", "dash-_."),
            ("ünï", "=c3=bcn=c3=af"),
        ] {
            assert_eq!(escape_nick(nick), escaped, "{nick}");
            assert_eq!(unescape_nick(escaped), Some(casefold(nick)), "{escaped}");
        }
        for bad in ["", "=7", "=zz", "A", "a b", "=41"] {
            assert_eq!(unescape_nick(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn channels_and_nicks_are_validated() {
        for good in ["#rust", "&local", "#a.b-c", "#ünicode"] {
            assert!(is_valid_channel(good), "{good}");
        }
        for bad in ["rust", "#", "#a b", "#a,b", "#a\r\nQUIT", "#a:b", &format!("#{}", "x".repeat(50))] {
            assert!(!is_valid_channel(bad), "{bad:?}");
        }
        for good in ["alice", "[m]bob", "x-1", "_under"] {
            assert!(is_valid_nick(good), "{good}");
        }
        for bad in ["", "1abc", "-x", "a b", "a!b", "a\nb"] {
            assert!(!is_valid_nick(bad), "{bad:?}");
        }
    }

    #[test]
    fn nicks_are_made_from_display_names() {
        for (wanted, max, nick) in [
            ("Alice Liddell", 30, "AliceLiddell"),
            ("42 bob", 30, "bob"),
            ("日本", 30, "matrix"),
            ("averyveryverylongname", 9, "averyvery"),
            ("a\r\nQUIT", 30, "aQUIT"),
        ] {
            assert_eq!(sanitise_nick(wanted, max), nick, "{wanted:?}");
            assert!(is_valid_nick(&sanitise_nick(wanted, max)));
        }
        assert_eq!(next_nick("alice", 1, 9), "alice_");
        assert_eq!(next_nick("alice_", 2, 9), "alice_2");
        assert_eq!(next_nick("averyvery", 1, 9), "averyver1");
        assert_eq!(next_nick("averyvery", 12, 9), "averyve12");
        assert_eq!(sanitise_username("@Al.ice:localhost"), "alicelocal");
    }

    #[test]
    fn templates_fill_and_extract() {
        let users = Template::new("@irc_{network}_{nick}:{server_name}", "{nick}", "libera", "example.org");
        assert_eq!(users.fill("bob"), "@irc_libera_bob:example.org");
        assert_eq!(users.extract("@irc_libera_bob:example.org"), Some("bob"));
        assert_eq!(users.extract("@irc_oftc_bob:example.org"), None);
        assert_eq!(users.extract("@irc_libera_:example.org"), None);
        assert_eq!(portal_key("libera", "#Rust[x]"), "libera/#rust{x}");
        let channel = PortalKind::Channel { network: "libera", channel: "#rust" };
        assert_eq!(PortalKind::parse("libera/#rust"), Some(channel));
        assert_eq!(channel.channel(), Some("#rust"));
        let direct = PortalKind::Direct { network: "libera", matrix_user: "@a:b", nick: "bob" };
        assert_eq!(PortalKind::parse(&dm_key("libera", "@a:b", "Bob")), Some(direct));
        assert_eq!((direct.network(), direct.channel()), ("libera", None));
        assert_eq!(PortalKind::parse("libera/not-a-channel"), None);
        assert_eq!(PortalKind::parse("nothing"), None);
    }
}
