//! Permalinks to Matrix users and rooms: the `https://matrix.to/#/…` links that Matrix HTML uses for mentions
//! ("pills"), and the `matrix:` URIs that some clients send instead.
//!
//! See the client-server spec, "Appendices › Identifier Grammar › matrix.to navigation" and "Matrix URI scheme",
//! and "User and room mentions" for how clients turn these links into pills.

use crate::formatting::MentionTarget;

/// Characters left as they are in a matrix.to identifier; everything else is percent-encoded. `#`, `/`, `?` and `%`
/// must be encoded there, since they delimit the fragment's parts.
const PERMALINK_SAFE: &[u8] = b"-._~!$()*+,;=:@";

impl MentionTarget {
    /// Recognises a permalink to a user, room alias or room ID: `https://matrix.to/#/<id>` (percent-encoded or
    /// not, with any `?via=` query) or `matrix:u/…`, `matrix:r/…` and `matrix:roomid/…`. Links to events and
    /// anything else give `None`.
    pub fn from_permalink(url: &str) -> Option<Self> {
        if let Some(fragment) =
            url.strip_prefix("https://matrix.to/#/").or_else(|| url.strip_prefix("http://matrix.to/#/"))
        {
            let path = fragment.split('?').next().unwrap_or_default();
            if path.contains('/') {
                return None;
            }
            return Self::from_id(&percent_decode(path)?);
        }
        let path = url.strip_prefix("matrix:")?.split(['?', '#']).next().unwrap_or_default();
        let (kind, id) = path.split_once('/')?;
        let sigil = match kind {
            "u" => '@',
            "r" => '#',
            "roomid" => '!',
            _ => return None,
        };
        if id.contains('/') {
            return None;
        }
        Self::from_id(&format!("{sigil}{}", percent_decode(id)?))
    }

    /// The matrix.to permalink Matrix clients render as a pill for this user or room.
    pub fn permalink(&self) -> String {
        let mut url = String::from("https://matrix.to/#/");
        for byte in self.id().bytes() {
            if byte.is_ascii_alphanumeric() || PERMALINK_SAFE.contains(&byte) {
                url.push(char::from(byte));
            } else {
                url.push_str(&format!("%{byte:02X}"));
            }
        }
        url
    }
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits stays as it is. `None` if the result is not UTF-8.
fn percent_decode(input: &str) -> Option<String> {
    let bytes = input.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 3)
            .filter(|_| bytes[i] == b'%')
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                i += 3;
            }
            None => {
                decoded.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn recognises_permalinks() {
        let user = |id: &str| Some(MentionTarget::User(id.to_owned()));
        let cases = [
            ("https://matrix.to/#/@alice:example.org", user("@alice:example.org")),
            ("https://matrix.to/#/%40alice%3Aexample.org", user("@alice:example.org")),
            ("http://matrix.to/#/@alice:example.org", user("@alice:example.org")),
            ("https://matrix.to/#/@a%2Fb:example.org", user("@a/b:example.org")),
            (
                "https://matrix.to/#/#lattice:example.org?via=example.org",
                Some(MentionTarget::RoomAlias("#lattice:example.org".into())),
            ),
            (
                "https://matrix.to/#/%23lattice:example.org",
                Some(MentionTarget::RoomAlias("#lattice:example.org".into())),
            ),
            (
                "https://matrix.to/#/!room:example.org?via=a.org&via=b.org",
                Some(MentionTarget::Room("!room:example.org".into())),
            ),
            ("https://matrix.to/#/!room:example.org/$event", None),
            ("https://matrix.to/#/@alice", None),
            ("https://matrix.to/#/@al%FFice:example.org", None),
            ("https://matrix.to/#/@100%:example.org", user("@100%:example.org")),
            ("https://example.org/#/@alice:example.org", None),
            ("matrix:u/alice:example.org?action=chat", user("@alice:example.org")),
            ("matrix:r/lattice:example.org", Some(MentionTarget::RoomAlias("#lattice:example.org".into()))),
            ("matrix:roomid/room:example.org?via=example.org", Some(MentionTarget::Room("!room:example.org".into()))),
            ("matrix:roomid/room:example.org/e/event", None),
            ("matrix:x/alice:example.org", None),
            ("matrix:u", None),
            ("mailto:alice@example.org", None),
        ];
        for (url, expected) in cases {
            assert_eq!(MentionTarget::from_permalink(url), expected, "{url}");
        }
    }

    #[test]
    fn permalinks_encode_delimiters() {
        let cases = [
            (MentionTarget::User("@alice:example.org".into()), "https://matrix.to/#/@alice:example.org"),
            (MentionTarget::User("@a/b=c:example.org".into()), "https://matrix.to/#/@a%2Fb=c:example.org"),
            (MentionTarget::RoomAlias("#a:example.org".into()), "https://matrix.to/#/%23a:example.org"),
            (MentionTarget::Room("!r?%:example.org".into()), "https://matrix.to/#/!r%3F%25:example.org"),
            (MentionTarget::User("@é:example.org".into()), "https://matrix.to/#/@%C3%A9:example.org"),
        ];
        for (target, url) in cases {
            assert_eq!(target.permalink(), url);
            assert_eq!(MentionTarget::from_permalink(url), Some(target));
        }
    }

    proptest! {
        #[test]
        fn permalinks_round_trip(sigil in prop::sample::select(vec!['@', '#', '!']), local in "[^:\\pC]\\PC*", server in "[a-z0-9.:-]{1,12}") {
            let target = MentionTarget::from_id(&format!("{sigil}{local}:{server}")).expect("valid identifier");
            prop_assert_eq!(MentionTarget::from_permalink(&target.permalink()), Some(target));
        }
    }
}
