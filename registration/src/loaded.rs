//! A registration file loaded from disk, validated, with its namespaces compiled.

use std::{fmt, path::Path};

use regex::Regex;
use ruma::api::appservice::{Namespace, Registration};
use url::Url;

use crate::{Error, Result, localpart::is_localpart_char};

/// A validated registration with compiled namespace regexes.
///
/// # Namespace matching
///
/// Matching follows Synapse (`synapse/appservice/__init__.py`, `ApplicationService`):
///
/// - `_matches_regex` tests each namespace of a kind **in file order** with Python's
///   `re.match`, which anchors at the **start** of the ID only. `@irc_alice:example.org` is
///   therefore in a namespace whose regex is `@irc_`, but `@x_irc_alice:example.org` is not,
///   and nothing is implied at the end unless the regex ends in `$`. Each regex is compiled here
///   as `^(?:regex)` to get the same semantics from the `regex` crate.
/// - `_is_exclusive` returns the `exclusive` flag of the **first** matching namespace, not
///   whether any matching namespace is exclusive.
/// - `is_interested_in_user` and `is_exclusive_user` also count the bridge's own sender user
///   (`@{sender_localpart}:{server_name}`), see [`is_interested_in_user`] and [`is_sender`].
///
/// [`is_interested_in_user`]: Self::is_interested_in_user
/// [`is_sender`]: Self::is_sender
#[derive(Clone)]
pub struct AppserviceRegistration {
    registration: Registration,
    users: Vec<CompiledNamespace>,
    aliases: Vec<CompiledNamespace>,
    rooms: Vec<CompiledNamespace>,
}

#[derive(Clone, Debug)]
struct CompiledNamespace {
    exclusive: bool,
    regex: Regex,
}

impl AppserviceRegistration {
    /// Reads, parses and validates the registration file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_owned(), source })?;
        Self::from_yaml_str(&text, path)
    }

    /// Parses and validates a registration document; `path` is only used in error messages.
    pub fn from_yaml_str(text: &str, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let registration = parse(text, path)?;
        Self::new(registration, path)
    }

    /// Validates an in-memory registration; `path` is only used in error messages.
    pub fn new(registration: Registration, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let invalid =
            |field: &str, message: String| Error::Invalid { path: path.to_owned(), field: field.to_owned(), message };
        if let Some((field, message)) = check_fields(&registration) {
            return Err(invalid(field, message));
        }
        let namespaces = &registration.namespaces;
        let users = compile("users", &namespaces.users).map_err(|(f, m)| invalid(&f, m))?;
        let aliases = compile("aliases", &namespaces.aliases).map_err(|(f, m)| invalid(&f, m))?;
        let rooms = compile("rooms", &namespaces.rooms).map_err(|(f, m)| invalid(&f, m))?;
        Ok(Self { registration, users, aliases, rooms })
    }

    /// The registration as it was read.
    pub fn registration(&self) -> &Registration {
        &self.registration
    }

    /// The bridge bot's user ID on `server_name`: `@{sender_localpart}:{server_name}`.
    pub fn sender_user_id(&self, server_name: &str) -> String {
        format!("@{}:{server_name}", self.registration.sender_localpart)
    }

    /// Whether `user_id` is the bridge bot on `server_name`.
    pub fn is_sender(&self, user_id: &str, server_name: &str) -> bool {
        user_id
            .strip_prefix('@')
            .and_then(|rest| rest.split_once(':'))
            .is_some_and(|(localpart, server)| localpart == self.registration.sender_localpart && server == server_name)
    }

    /// Whether some user namespace matches `user_id` (Synapse's `is_user_in_namespace`).
    pub fn is_user_in_namespace(&self, user_id: &str) -> bool {
        first_match(&self.users, user_id).is_some()
    }

    /// Whether the first user namespace matching `user_id` is exclusive.
    ///
    /// This is the namespace half of Synapse's `is_exclusive_user`; Synapse also treats the
    /// sender user as exclusive, which [`is_sender`](Self::is_sender) answers.
    pub fn is_exclusive_user(&self, user_id: &str) -> bool {
        first_match(&self.users, user_id).is_some_and(|ns| ns.exclusive)
    }

    /// Whether the homeserver sends the bridge events about `user_id`: the user is the bridge
    /// bot on `server_name` or in a user namespace (Synapse's `is_interested_in_user`).
    pub fn is_interested_in_user(&self, user_id: &str, server_name: &str) -> bool {
        self.is_sender(user_id, server_name) || self.is_user_in_namespace(user_id)
    }

    /// Whether some alias namespace matches `alias` (Synapse's `is_room_alias_in_namespace`).
    pub fn is_alias_in_namespace(&self, alias: &str) -> bool {
        first_match(&self.aliases, alias).is_some()
    }

    /// Whether the first alias namespace matching `alias` is exclusive (Synapse's
    /// `is_exclusive_alias`).
    pub fn is_exclusive_alias(&self, alias: &str) -> bool {
        first_match(&self.aliases, alias).is_some_and(|ns| ns.exclusive)
    }

    /// Whether some room namespace matches `room_id` (Synapse's `is_room_id_in_namespace`).
    pub fn is_room_in_namespace(&self, room_id: &str) -> bool {
        first_match(&self.rooms, room_id).is_some()
    }

    /// Whether the first room namespace matching `room_id` is exclusive (Synapse's
    /// `is_exclusive_room`).
    pub fn is_exclusive_room(&self, room_id: &str) -> bool {
        first_match(&self.rooms, room_id).is_some_and(|ns| ns.exclusive)
    }
}

impl fmt::Debug for AppserviceRegistration {
    /// Leaves the tokens out: they authenticate the bridge and the homeserver.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.registration;
        f.debug_struct("AppserviceRegistration")
            .field("id", &r.id)
            .field("url", &r.url)
            .field("as_token", &"<redacted>")
            .field("hs_token", &"<redacted>")
            .field("sender_localpart", &r.sender_localpart)
            .field("users", &self.users)
            .field("aliases", &self.aliases)
            .field("rooms", &self.rooms)
            .field("rate_limited", &r.rate_limited)
            .field("protocols", &r.protocols)
            .field("receive_ephemeral", &r.receive_ephemeral)
            .finish()
    }
}

fn first_match<'a>(namespaces: &'a [CompiledNamespace], id: &str) -> Option<&'a CompiledNamespace> {
    namespaces.iter().find(|ns| ns.regex.is_match(id))
}

fn parse(text: &str, path: &Path) -> Result<Registration> {
    let deserializer = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let field = err.path().to_string();
        let inner = err.into_inner();
        let (line, column) = inner.location().map_or((1, 1), |loc| (loc.line(), loc.column()));
        let mut message = inner.to_string();
        if let Some(stripped) = message.strip_suffix(&format!(" at line {line} column {column}")) {
            message = stripped.to_owned();
        }
        if field != "." && !message.starts_with(&format!("{field}: ")) {
            message = format!("{field}: {message}");
        }
        Error::Parse { path: path.to_owned(), line, column, message }
    })
}

/// Checks the scalar fields; returns the first offending field and what is expected.
fn check_fields(registration: &Registration) -> Option<(&'static str, String)> {
    let r = registration;
    if r.id.is_empty() {
        return Some(("id", "must not be empty (expected a unique ID such as `lattice-irc`)".into()));
    }
    if r.id.contains('|') {
        return Some(("id", "must not contain `|` (expected an ID without `|`: Synapse refuses it)".into()));
    }
    for (field, token) in [("as_token", &r.as_token), ("hs_token", &r.hs_token)] {
        if token.is_empty() {
            return Some((field, "must not be empty (expected a long random secret)".into()));
        }
    }
    if r.as_token == r.hs_token {
        return Some(("hs_token", "must differ from as_token (expected two independent random secrets)".into()));
    }
    if let Some(message) = r.url.as_deref().and_then(check_url) {
        return Some(("url", message));
    }
    if r.sender_localpart.is_empty() {
        return Some((
            "sender_localpart",
            "must not be empty (expected the bridge bot's localpart, such as `ircbot`)".into(),
        ));
    }
    if let Some(bad) = r.sender_localpart.chars().find(|&c| !is_localpart_char(c)) {
        return Some(("sender_localpart", format!("contains {bad:?} (expected only a-z, 0-9 and `._=-/+`)")));
    }
    None
}

fn check_url(url: &str) -> Option<String> {
    match Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => None,
        Ok(parsed) => Some(format!(
            "scheme `{}` is not supported (expected an http:// or https:// URL, or null)",
            parsed.scheme()
        )),
        Err(err) => Some(format!("{err} (expected an http:// or https:// URL, or null)")),
    }
}

fn compile(kind: &str, namespaces: &[Namespace]) -> Result<Vec<CompiledNamespace>, (String, String)> {
    namespaces
        .iter()
        .enumerate()
        .map(|(index, ns)| {
            Regex::new(&format!("^(?:{})", ns.regex))
                .map(|regex| CompiledNamespace { exclusive: ns.exclusive, regex })
                .map_err(|err| {
                    (
                        format!("namespaces.{kind}[{index}].regex"),
                        format!("does not compile: {err} (expected a regular expression)"),
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"# generated by Lattice
id: lattice-irc
url: http://127.0.0.1:9000
as_token: aaaa
hs_token: bbbb
sender_localpart: ircbot
namespaces:
  users:
    - exclusive: false
      regex: '@irc_libera_shared.*'
    - exclusive: true
      regex: '@irc_.*:example\.org'
    - exclusive: true
      regex: '@full_[a-z]+:example\.org$'
  aliases:
    - exclusive: true
      regex: '#irc_.*'
    - exclusive: false
      regex: '#shared_.*'
  rooms:
    - exclusive: false
      regex: '!bridged:example\.org'
rate_limited: false
protocols: [irc]
"#;

    fn valid() -> AppserviceRegistration {
        AppserviceRegistration::from_yaml_str(VALID, "registration.yaml").expect("valid")
    }

    #[test]
    fn loads_valid_document() {
        let reg = valid();
        assert_eq!(reg.registration().id, "lattice-irc");
        assert_eq!(reg.registration().url.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(reg.registration().protocols, Some(vec!["irc".to_owned()]));
        assert_eq!(reg.sender_user_id("example.org"), "@ircbot:example.org");
    }

    #[test]
    fn debug_hides_tokens() {
        let debug = format!("{:?}", valid());
        assert!(debug.contains("lattice-irc"), "{debug}");
        assert!(!debug.contains("aaaa") && !debug.contains("bbbb"), "{debug}");
    }

    #[test]
    fn user_matching_follows_synapse() {
        let reg = valid();
        // (user, in namespace, exclusive)
        let cases = [
            // Start-anchored: a prefix match is enough, the rest of the ID is free.
            ("@irc_alice:example.org", true, true),
            ("@irc_alice:example.org.evil", true, true),
            ("@irc_alice:other.org", false, false),
            ("x@irc_alice:example.org", false, false),
            ("@IRC_alice:example.org", false, false),
            // First match decides exclusivity: the shared namespace comes first.
            ("@irc_libera_shared_bob:example.org", true, false),
            // A `$` in the regex anchors the end as usual.
            ("@full_abc:example.org", true, true),
            ("@full_abc:example.orgx", false, false),
            ("@alice:example.org", false, false),
            ("", false, false),
        ];
        for (user, in_namespace, exclusive) in cases {
            assert_eq!(reg.is_user_in_namespace(user), in_namespace, "in namespace: {user}");
            assert_eq!(reg.is_exclusive_user(user), exclusive, "exclusive: {user}");
        }
    }

    #[test]
    fn sender_is_interesting_but_not_in_namespace() {
        let reg = valid();
        // (user, server name, is sender, interested)
        let cases = [
            ("@ircbot:example.org", "example.org", true, true),
            ("@ircbot:other.org", "example.org", false, false),
            ("@ircbot2:example.org", "example.org", false, false),
            ("ircbot:example.org", "example.org", false, false),
            ("@irc_alice:example.org", "example.org", false, true),
            ("@alice:example.org", "example.org", false, false),
        ];
        for (user, server, sender, interested) in cases {
            assert_eq!(reg.is_sender(user, server), sender, "sender: {user}");
            assert_eq!(reg.is_interested_in_user(user, server), interested, "interested: {user}");
        }
        assert!(!reg.is_user_in_namespace("@ircbot:example.org"));
    }

    #[test]
    fn alias_and_room_matching() {
        let reg = valid();
        // (alias, in namespace, exclusive)
        let aliases = [
            ("#irc_libera_rust:example.org", true, true),
            ("#shared_room:example.org", true, false),
            ("#other:example.org", false, false),
            ("@irc_alice:example.org", false, false),
        ];
        for (alias, in_namespace, exclusive) in aliases {
            assert_eq!(reg.is_alias_in_namespace(alias), in_namespace, "{alias}");
            assert_eq!(reg.is_exclusive_alias(alias), exclusive, "{alias}");
        }
        // (room, in namespace, exclusive)
        let rooms = [("!bridged:example.org", true, false), ("!other:example.org", false, false)];
        for (room, in_namespace, exclusive) in rooms {
            assert_eq!(reg.is_room_in_namespace(room), in_namespace, "{room}");
            assert_eq!(reg.is_exclusive_room(room), exclusive, "{room}");
        }
    }

    #[test]
    fn regex_metacharacters_at_top_level_stay_anchored() {
        // Without the `(?:…)` group, `^a|b` would let `b` match anywhere.
        let text = VALID.replace(r"'@irc_.*:example\.org'", "'@a|@b'");
        let reg = AppserviceRegistration::from_yaml_str(&text, "r.yaml").expect("valid");
        let cases = [("@a:x", true), ("@b:x", true), ("x@b:x", false), ("x@a:x", false)];
        for (user, expected) in cases {
            assert_eq!(reg.is_user_in_namespace(user), expected, "{user}");
        }
    }

    #[test]
    fn validation_errors_name_the_field() {
        let cases = [
            ("id: lattice-irc", "id: ''", "id", "must not be empty"),
            ("id: lattice-irc", "id: 'a|b'", "id", "`|`"),
            ("as_token: aaaa", "as_token: ''", "as_token", "must not be empty"),
            ("hs_token: bbbb", "hs_token: ''", "hs_token", "must not be empty"),
            ("hs_token: bbbb", "hs_token: aaaa", "hs_token", "must differ from as_token"),
            ("url: http://127.0.0.1:9000", "url: not a url", "url", "relative URL"),
            ("url: http://127.0.0.1:9000", "url: ftp://host/x", "url", "scheme `ftp`"),
            ("url: http://127.0.0.1:9000", "url: 'mailto:a@b'", "url", "scheme `mailto`"),
            ("sender_localpart: ircbot", "sender_localpart: ''", "sender_localpart", "empty"),
            ("sender_localpart: ircbot", "sender_localpart: IrcBot", "sender_localpart", "'I'"),
            (
                "regex: '@irc_.*:example\\.org'",
                "regex: '@irc_(unclosed'",
                "namespaces.users[1].regex",
                "does not compile",
            ),
            ("regex: '!bridged:example\\.org'", "regex: '(?<=x)y'", "namespaces.rooms[0].regex", "does not compile"),
        ];
        for (from, to, field, needle) in cases {
            let text = VALID.replace(from, to);
            assert_ne!(text, VALID, "case {to:?} did not change the document");
            let err = AppserviceRegistration::from_yaml_str(&text, "registration.yaml").expect_err(to);
            let Error::Invalid { field: got, message, .. } = &err else {
                panic!("{to}: expected Invalid, got {err:?}");
            };
            assert_eq!(got, field, "{to}");
            assert!(message.contains(needle), "{to}: {message}");
            assert!(message.contains("expected"), "{to}: {message}");
            assert!(err.to_string().starts_with(&format!("registration.yaml: field {field}: ")), "{err}");
        }
    }

    #[test]
    fn null_url_is_allowed() {
        let text = VALID.replace("url: http://127.0.0.1:9000", "url: null");
        let reg = AppserviceRegistration::from_yaml_str(&text, "r.yaml").expect("valid");
        assert_eq!(reg.registration().url, None);
    }

    #[test]
    fn parse_errors_carry_line_and_column() {
        // (document, line, column, text in the message)
        let cases = [
            ("id: x\n bad: y\n", 2, 5, "mapping values are not allowed"),
            ("id: x\nurl: null\nas_token: a\nhs_token: b\n", 1, 1, "missing field `sender_localpart`"),
            (
                "id: x\nurl: null\nas_token: a\nhs_token: b\nsender_localpart: s\nnamespaces:\n  users:\n    - exclusive: maybe\n      regex: x\n",
                8,
                18,
                "namespaces.users[0].exclusive: invalid type",
            ),
            ("- a list\n", 1, 1, "invalid type: sequence"),
            ("", 1, 1, "missing field `id`"),
        ];
        for (text, line, column, needle) in cases {
            let err = AppserviceRegistration::from_yaml_str(text, "registration.yaml").expect_err(text);
            let Error::Parse { line: got_line, column: got_column, message, .. } = &err else {
                panic!("{text:?}: expected Parse, got {err:?}");
            };
            assert_eq!((*got_line, *got_column), (line, column), "{text:?}: {message}");
            assert!(message.contains(needle), "{text:?}: {message}");
            assert!(err.to_string().starts_with(&format!("registration.yaml:{line}:{column}: ")), "{err}");
        }
    }

    #[test]
    fn load_names_missing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing.yaml");
        let err = AppserviceRegistration::load(&path).expect_err("missing");
        assert!(matches!(&err, Error::Io { path: p, .. } if p == &path), "{err:?}");
    }
}
