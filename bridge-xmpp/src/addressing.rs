//! Addressing between Matrix and XMPP, reversible both ways (issue 5 §2):
//!
//! - a Matrix user `@alice:example.org` is the gateway JID `alice\40example.org@{gateway}`: the user ID without its
//!   sigil, `:` turned into `@`, escaped into a JID node per [XEP-0106: JID Escaping][xep-0106];
//! - an XMPP user `bob@example.net` (or, in a semi-anonymous MUC, the occupant `room@muc.example.net/nick`) is the
//!   ghost `@_xmpp_bob=40example.net:{server}`: the JID mapped into a Matrix localpart per the spec's
//!   [mapping from other character sets][mapping], placed in the configured user template;
//! - an XMPP MUC `room@conference.example.net` is the portal alias `#_xmpp_room@conference.example.net:{server}`
//!   (the alias template with the MUC's normalised bare JID).
//!
//! The bridge never bridges its own users back: a gateway JID never becomes a ghost ([`Addressing::ghost_for`]
//! refuses it), and a ghost never gets a gateway JID ([`Addressing::puppet_jid`] refuses the bridge's namespace).
//!
//! [xep-0106]: https://xmpp.org/extensions/xep-0106.html
//! [mapping]: https://spec.matrix.org/latest/appendices/#mapping-from-other-character-sets

use std::{fmt::Write as _, str::FromStr};

use xmpp_parsers::jid::{BareJid, FullJid, Jid};

use crate::config::XmppSection;

/// The longest Matrix user ID the spec allows, in bytes.
const MAX_USER_ID_BYTES: usize = 255;

/// Characters XEP-0106 escapes, with their escape sequences' hex digits.
const ESCAPED: [(char, &str); 10] = [
    (' ', "20"),
    ('"', "22"),
    ('&', "26"),
    ('\'', "27"),
    ('/', "2f"),
    (':', "3a"),
    ('<', "3c"),
    ('>', "3e"),
    ('@', "40"),
    ('\\', "5c"),
];

/// Escapes a string into a JID node per XEP-0106 §4.2: the ten special characters become `\xx`, and a backslash
/// is escaped only where it would otherwise start an escape sequence.
pub fn escape_node(raw: &str) -> String {
    let mut escaped = String::with_capacity(raw.len());
    for (index, character) in raw.char_indices() {
        let must_escape = match character {
            '\\' => starts_escape_sequence(&raw[index..]),
            other => ESCAPED.iter().any(|(special, _)| *special == other),
        };
        match ESCAPED.iter().find(|(special, _)| *special == character) {
            Some((_, hex)) if must_escape => {
                escaped.push('\\');
                escaped.push_str(hex);
            }
            _ => escaped.push(character),
        }
    }
    escaped
}

/// Reverses [`escape_node`] (XEP-0106 §4.3): every `\xx` of the ten escape sequences becomes its character; any
/// other backslash stays.
pub fn unescape_node(escaped: &str) -> String {
    let mut raw = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(character) = rest.chars().next() {
        if character == '\\'
            && let Some((special, _)) = ESCAPED.iter().find(|(_, hex)| rest[1..].get(..2) == Some(*hex))
        {
            raw.push(*special);
            rest = &rest[3..];
        } else {
            raw.push(character);
            rest = &rest[character.len_utf8()..];
        }
    }
    raw
}

fn starts_escape_sequence(text: &str) -> bool {
    ESCAPED.iter().any(|(_, hex)| text.get(1..3) == Some(*hex))
}

/// Maps any string into Matrix localpart characters, per the spec's "mapping from other character sets": `_`
/// becomes `__`, an upper-case letter `_` and its lower case, `a-z 0-9 . -` stay, every other byte `=xx`.
pub fn encode_localpart(raw: &str) -> String {
    let mut encoded = String::with_capacity(raw.len());
    for character in raw.chars() {
        match character {
            'a'..='z' | '0'..='9' | '.' | '-' => encoded.push(character),
            '_' => encoded.push_str("__"),
            'A'..='Z' => {
                encoded.push('_');
                encoded.push(character.to_ascii_lowercase());
            }
            other => {
                let mut buffer = [0; 4];
                for byte in other.encode_utf8(&mut buffer).bytes() {
                    let _ = write!(encoded, "={byte:02x}");
                }
            }
        }
    }
    encoded
}

/// Reverses [`encode_localpart`]; `None` when the localpart is not a well-formed mapping.
pub fn decode_localpart(encoded: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut rest = encoded.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        match first {
            b'_' => {
                let (&next, tail) = tail.split_first()?;
                match next {
                    b'_' => bytes.push(b'_'),
                    b'a'..=b'z' => bytes.push(next.to_ascii_uppercase()),
                    _ => return None,
                }
                rest = tail;
            }
            b'=' => {
                let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
                if hex.bytes().any(|digit| digit.is_ascii_uppercase()) {
                    return None;
                }
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                rest = &tail[2..];
            }
            b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' => {
                bytes.push(first);
                rest = tail;
            }
            _ => return None,
        }
    }
    String::from_utf8(bytes).ok()
}

/// 64-bit FNV-1a: a stable hash (unlike std's `DefaultHasher`) for shortened ghost IDs.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// A template such as `@_xmpp_{jid}:{server_name}` split around its one placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Template {
    prefix: String,
    suffix: String,
}

impl Template {
    fn new(template: &str, placeholder: &str, server_name: &str) -> Self {
        let template = template.replace("{server_name}", server_name);
        let (prefix, suffix) = template.split_once(placeholder).unwrap_or((&template, ""));
        Self { prefix: prefix.to_owned(), suffix: suffix.to_owned() }
    }

    fn fill(&self, value: &str) -> String {
        format!("{}{value}{}", self.prefix, self.suffix)
    }

    fn extract<'a>(&self, filled: &'a str) -> Option<&'a str> {
        filled.strip_prefix(&self.prefix)?.strip_suffix(&self.suffix).filter(|value| !value.is_empty())
    }
}

/// Who an XMPP person is to the bridge: a real bare JID when the MUC reveals it, else their occupant JID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum XmppIdentity {
    /// A real account, `bob@example.net`.
    Account(BareJid),
    /// An occupant of a semi-anonymous MUC, `room@conference.example.net/nick`.
    Occupant(FullJid),
}

impl XmppIdentity {
    /// The JID as text: the ghost's remote ID.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Account(jid) => jid.as_str(),
            Self::Occupant(jid) => jid.as_str(),
        }
    }

    /// The JID's domain.
    pub fn domain(&self) -> &str {
        match self {
            Self::Account(jid) => jid.domain().as_str(),
            Self::Occupant(jid) => jid.domain().as_str(),
        }
    }
}

/// The bridge's mappings, made from its config section and the homeserver's server name.
#[derive(Debug, Clone)]
pub struct Addressing {
    gateway: String,
    server_name: String,
    users: Template,
    aliases: Template,
}

impl Addressing {
    /// The mappings of a config section on a homeserver.
    pub fn new(section: &XmppSection, server_name: &str) -> Self {
        Self {
            gateway: section.component.domain.clone(),
            server_name: server_name.to_owned(),
            users: Template::new(&section.user_template, "{jid}", server_name),
            aliases: Template::new(&section.alias_template, "{room}", server_name),
        }
    }

    /// The gateway (component) domain.
    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    /// Whether a user ID lies in the bridge's ghost namespace (so it must never be puppeted into XMPP).
    pub fn is_ghost(&self, user_id: &str) -> bool {
        user_id.starts_with(&self.users.prefix) && user_id.ends_with(&self.users.suffix)
    }

    /// The gateway JID of a Matrix user: `@alice:example.org` → `alice\40example.org@{gateway}`. `None` for the
    /// bridge's own ghosts and for IDs that are not user IDs.
    pub fn puppet_jid(&self, user_id: &str) -> Option<BareJid> {
        if self.is_ghost(user_id) {
            return None;
        }
        let (localpart, server) = user_id.strip_prefix('@')?.split_once(':')?;
        if localpart.is_empty() || server.is_empty() {
            return None;
        }
        let node = escape_node(&format!("{localpart}@{server}"));
        BareJid::from_str(&format!("{node}@{}", self.gateway)).ok()
    }

    /// The Matrix user behind a gateway JID; `None` for JIDs of other domains.
    pub fn matrix_user_of(&self, jid: &BareJid) -> Option<String> {
        if jid.domain().as_str() != self.gateway {
            return None;
        }
        let raw = unescape_node(jid.node()?.as_str());
        let (localpart, server) = raw.rsplit_once('@')?;
        Some(format!("@{localpart}:{server}"))
    }

    /// Whether a JID belongs to the gateway (its domain or a user under it): such JIDs are the bridge's own.
    pub fn is_gateway_domain(&self, domain: &str) -> bool {
        domain == self.gateway
    }

    /// The ghost user ID of an XMPP person, or `None` when the JID is the gateway's own (never bridged back).
    ///
    /// A JID whose mapping would make a user ID longer than the spec's 255 bytes (a very long nick) gets a
    /// shortened mapping ending in `==` and a hash of the JID: still unique and stable, but no longer reversible,
    /// so such ghosts are found through the store's remote ID rather than [`Addressing::identity_of_ghost`].
    pub fn ghost_for(&self, identity: &XmppIdentity) -> Option<String> {
        if self.is_gateway_domain(identity.domain()) {
            return None;
        }
        let encoded = encode_localpart(identity.as_str());
        let user_id = self.users.fill(&encoded);
        if user_id.len() <= MAX_USER_ID_BYTES {
            return Some(user_id);
        }
        let hash = format!("=={:016x}", fnv1a(identity.as_str()));
        let room = MAX_USER_ID_BYTES - (user_id.len() - encoded.len()) - hash.len();
        // `encoded` is ASCII: any byte index is a character boundary.
        Some(self.users.fill(&format!("{}{hash}", &encoded[..room.min(encoded.len())])))
    }

    /// The XMPP person a ghost user ID stands for, when it is one of ours.
    pub fn identity_of_ghost(&self, user_id: &str) -> Option<XmppIdentity> {
        let raw = decode_localpart(self.users.extract(user_id)?)?;
        let jid = Jid::from_str(&raw).ok()?;
        // Only the canonical spelling is the ghost: `Bob@…` and `bob@…` must not be two users.
        if jid.as_str() != raw || jid.node().is_none() || self.is_gateway_domain(jid.domain().as_str()) {
            return None;
        }
        Some(match jid.try_into_full() {
            Ok(full) => XmppIdentity::Occupant(full),
            Err(bare) => XmppIdentity::Account(bare),
        })
    }

    /// The portal alias of a MUC: `room@conference.example.net` → `#_xmpp_room@conference.example.net:{server}`.
    pub fn muc_alias(&self, room: &BareJid) -> String {
        self.aliases.fill(room.as_str())
    }

    /// The alias localpart (without `#` and server) of a MUC's portal.
    pub fn muc_alias_localpart(&self, room: &BareJid) -> String {
        let alias = self.muc_alias(room);
        let without_server = alias.strip_suffix(&format!(":{}", self.server_name)).unwrap_or(&alias);
        without_server.strip_prefix('#').unwrap_or(without_server).to_owned()
    }

    /// The MUC a portal alias names, if it names one in its canonical (normalised) spelling.
    pub fn muc_of_alias(&self, alias: &str) -> Option<BareJid> {
        let raw = self.aliases.extract(alias)?;
        let room = BareJid::from_str(raw).ok()?;
        (room.as_str() == raw && room.node().is_some() && !self.is_gateway_domain(room.domain().as_str()))
            .then_some(room)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn addressing() -> Addressing {
        Addressing::new(&XmppSection::default(), "localhost")
    }

    #[test]
    fn xep_0106_examples() {
        // Table 3 of XEP-0106, as node parts.
        let cases = [
            ("space cadet", r"space\20cadet"),
            ("call me \"ishmael\"", r"call\20me\20\22ishmael\22"),
            ("at&t guy", r"at\26t\20guy"),
            ("d'artagnan", r"d\27artagnan"),
            ("/.fanboy", r"\2f.fanboy"),
            ("::foo::", r"\3a\3afoo\3a\3a"),
            ("<foo>", r"\3cfoo\3e"),
            ("user@host", r"user\40host"),
            (r"c:\net", r"c\3a\net"),
            (r"c:\\net", r"c\3a\\net"),
            (r"c:\cool stuff", r"c\3a\cool\20stuff"),
            (r"c:\5commas", r"c\3a\5c5commas"),
        ];
        for (raw, escaped) in cases {
            assert_eq!(escape_node(raw), escaped, "escaping {raw:?}");
            assert_eq!(unescape_node(escaped), raw, "unescaping {escaped:?}");
        }
    }

    #[test]
    fn issue_examples() {
        let addressing = addressing();
        let puppet = addressing.puppet_jid("@alice:example.org").unwrap();
        assert_eq!(puppet.as_str(), r"alice\40example.org@bridge.localhost");
        assert_eq!(addressing.matrix_user_of(&puppet).as_deref(), Some("@alice:example.org"));

        let bob = XmppIdentity::Account(BareJid::from_str("bob@example.net").unwrap());
        let ghost = addressing.ghost_for(&bob).unwrap();
        assert_eq!(ghost, "@_xmpp_bob=40example.net:localhost");
        assert_eq!(addressing.identity_of_ghost(&ghost), Some(bob));

        let room = BareJid::from_str("room@conference.example.net").unwrap();
        assert_eq!(addressing.muc_alias(&room), "#_xmpp_room@conference.example.net:localhost");
        assert_eq!(addressing.muc_alias_localpart(&room), "_xmpp_room@conference.example.net");
        assert_eq!(addressing.muc_of_alias("#_xmpp_room@conference.example.net:localhost"), Some(room));
    }

    #[test]
    fn the_bridge_never_bridges_its_own_users_back() {
        let addressing = addressing();
        // A ghost gets no gateway JID …
        assert_eq!(addressing.puppet_jid("@_xmpp_bob=40example.net:localhost"), None);
        // … and a gateway JID (a puppet, or the gateway itself) gets no ghost.
        for jid in [r"alice\40example.org@bridge.localhost", "x@bridge.localhost"] {
            let identity = XmppIdentity::Account(BareJid::from_str(jid).unwrap());
            assert_eq!(addressing.ghost_for(&identity), None, "{jid}");
        }
        assert_eq!(addressing.identity_of_ghost("@_xmpp_x=40bridge.localhost:localhost"), None);
        assert_eq!(addressing.muc_of_alias("#_xmpp_room@bridge.localhost:localhost"), None);
    }

    #[test]
    fn hostile_and_unusual_ids() {
        let addressing = addressing();
        // Non-canonical spellings and garbage are not ghosts or portals.
        for user_id in [
            "@_xmpp_:localhost",
            "@_xmpp__Bob=40example.net:localhost",
            "@_xmpp_=4:localhost",
            "@_xmpp_bob:localhost",
            "@_xmpp_=3c=3e:localhost",
            "@someone:localhost",
        ] {
            assert_eq!(addressing.identity_of_ghost(user_id), None, "{user_id}");
        }
        for alias in ["#_xmpp_:localhost", "#_xmpp_Room@muc.example:localhost", "#_xmpp_muc.example:localhost"] {
            assert_eq!(addressing.muc_of_alias(alias), None, "{alias}");
        }
        // An occupant with a hostile nick still maps to a valid, reversible ghost.
        let occupant = FullJid::from_str("room@muc.example/\"<b>@evil</b>' &").unwrap();
        let identity = XmppIdentity::Occupant(occupant);
        let ghost = addressing.ghost_for(&identity).unwrap();
        assert!(ghost.bytes().all(|byte| byte.is_ascii_lowercase() || b"0123456789._=-@:".contains(&byte)), "{ghost}");
        assert_eq!(addressing.identity_of_ghost(&ghost), Some(identity));
        // A very long nick makes an ID too long to be reversible: it is shortened with a hash, and unique.
        let long = |last| {
            let nick = format!("{}{last}", "é".repeat(200));
            XmppIdentity::Occupant(FullJid::from_str(&format!("room@muc.example/{nick}")).unwrap())
        };
        let ghost = addressing.ghost_for(&long('a')).unwrap();
        assert_eq!(ghost.len(), MAX_USER_ID_BYTES, "{ghost}");
        assert_ne!(Some(ghost.clone()), addressing.ghost_for(&long('b')));
        assert_eq!(addressing.identity_of_ghost(&ghost), None);
        // Servers with ports survive the trip through a JID node.
        let puppet = addressing.puppet_jid("@carol:example.org:8448").unwrap();
        assert_eq!(puppet.as_str(), r"carol\40example.org\3a8448@bridge.localhost");
        assert_eq!(addressing.matrix_user_of(&puppet).as_deref(), Some("@carol:example.org:8448"));
    }

    /// Host names as IDNA accepts them: labels of letters, digits and inner hyphens.
    const DOMAIN: &str = "[a-z][a-z0-9]{0,9}(-[a-z0-9]{1,5})?(\\.[a-z][a-z0-9]{0,9}(-[a-z0-9]{1,5})?){0,3}";

    proptest! {
        #[test]
        fn escaping_round_trips(raw in "\\PC*") {
            prop_assert_eq!(unescape_node(&escape_node(&raw)), raw);
        }

        #[test]
        fn escaped_nodes_hold_no_special_character(raw in "\\PC*") {
            let escaped = escape_node(&raw);
            prop_assert!(!escaped.contains([' ', '"', '&', '\'', '/', ':', '<', '>', '@']), "{}", escaped);
        }

        #[test]
        fn localpart_mapping_round_trips(raw in "\\PC*") {
            let encoded = encode_localpart(&raw);
            prop_assert!(encoded.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._=-".contains(&b)));
            prop_assert_eq!(decode_localpart(&encoded), Some(raw));
        }

        #[test]
        fn matrix_users_round_trip_through_gateway_jids(
            localpart in "[a-z0-9._=/+-]{1,40}",
            server in "[a-z0-9-]{1,20}(\\.[a-z0-9-]{1,10}){0,3}(:[0-9]{1,5})?",
        ) {
            let addressing = addressing();
            let user_id = format!("@{localpart}:{server}");
            prop_assume!(!addressing.is_ghost(&user_id));
            let jid = addressing.puppet_jid(&user_id).expect("every Matrix user has a gateway JID");
            prop_assert_eq!(addressing.matrix_user_of(&jid), Some(user_id));
        }

        #[test]
        fn xmpp_users_round_trip_through_ghosts(
            node in "[a-z0-9._+=-]{1,30}",
            domain in DOMAIN,
            nick in proptest::option::of("[^\\p{C}\\s][^\\p{C}]{0,20}[^\\p{C}\\s]"),
        ) {
            let addressing = addressing();
            prop_assume!(domain != addressing.gateway());
            let identity = match nick {
                Some(nick) => match FullJid::from_str(&format!("{node}@{domain}/{nick}")) {
                    Ok(jid) => XmppIdentity::Occupant(jid),
                    Err(_) => return Ok(()),
                },
                None => XmppIdentity::Account(BareJid::from_str(&format!("{node}@{domain}")).unwrap()),
            };
            if let Some(ghost) = addressing.ghost_for(&identity) {
                prop_assert_eq!(addressing.identity_of_ghost(&ghost), Some(identity));
            }
        }

        #[test]
        fn mucs_round_trip_through_aliases(node in "[a-z0-9._-]{1,30}", domain in DOMAIN) {
            let addressing = addressing();
            prop_assume!(domain != addressing.gateway());
            let room = BareJid::from_str(&format!("{node}@{domain}")).unwrap();
            prop_assert_eq!(addressing.muc_of_alias(&addressing.muc_alias(&room)), Some(room));
        }
    }
}
