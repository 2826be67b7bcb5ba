//! Reading a configuration file: parse, resolve relative paths, validate, locate errors.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

use crate::{
    Config, ConfigError, FieldError, LocatedFieldError, Location, Result, Validate, locate::locate, paths::base_dir,
};

impl<B> Config<B>
where
    B: DeserializeOwned + Default + Validate,
{
    /// Reads and validates the configuration file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.to_owned(), source })?;
        Self::from_yaml_str(&text, path)
    }

    /// Parses and validates `text` as if read from `path`.
    ///
    /// `path` names the file in errors, and its directory is the base of relative paths (see
    /// [`Config`]). Validation resolves `database.url` once to check it, reading its environment
    /// variable or file.
    pub fn from_yaml_str(text: &str, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let deserializer = serde_yaml::Deserializer::from_str(text);
        let mut config: Self =
            serde_path_to_error::deserialize(deserializer).map_err(|err| parse_error(err, text, path))?;

        let base = base_dir(path);
        config.appservice.resolve_paths(&base);
        config.database.resolve_paths(&base);
        config.encryption.resolve_paths(&base);

        let mut errors = Vec::new();
        config.validate(&mut errors);
        if errors.is_empty() {
            Ok(config)
        } else {
            let errors = errors
                .into_iter()
                .map(|FieldError { field, message }| LocatedFieldError {
                    location: locate(text, &field),
                    field,
                    message,
                })
                .collect();
            Err(ConfigError::Invalid { path: path.to_owned(), errors })
        }
    }
}

fn parse_error(err: serde_path_to_error::Error<serde_yaml::Error>, text: &str, path: &Path) -> ConfigError {
    let field = field_path(err.path());
    let inner = err.into_inner();
    let location = inner
        .location()
        .map(|loc| Location { line: loc.line(), column: loc.column() })
        .or_else(|| locate(text, &field));
    let message = clean_message(&inner.to_string(), &field, location);
    ConfigError::Parse { path: path.to_owned(), location, field, message }
}

/// The dotted path of the field being read, up to the first segment serde could not name.
fn field_path(path: &serde_path_to_error::Path) -> String {
    let mut field = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => field.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !field.is_empty() {
                    field.push('.');
                }
                field.push_str(key);
            }
            Segment::Unknown => break,
        }
    }
    field
}

/// Drops what serde_yaml adds around the message that the error already says elsewhere: the
/// ` at line L column C` suffix, and its own `path: ` prefix (the field, or a parent of it).
fn clean_message(message: &str, field: &str, location: Option<Location>) -> String {
    let mut message = message;
    if let Some(loc) = location {
        let suffix = format!(" at line {} column {}", loc.line, loc.column);
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped;
        } else if let Some((before, after)) = message.split_once(&suffix) {
            return clean_message(&format!("{before}{after}"), field, None);
        }
    }
    let mut prefix = field;
    while !prefix.is_empty() {
        if let Some(stripped) = message.strip_prefix(&format!("{prefix}: ")) {
            return stripped.to_owned();
        }
        prefix = parent(prefix);
    }
    message.to_owned()
}

/// `a.b[0].c` → `a.b[0]` → `a.b` → `a` → ``.
fn parent(field: &str) -> &str {
    match field.rfind(['.', '[']) {
        Some(index) => &field[..index],
        None => "",
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, fs, net::IpAddr, path::PathBuf};

    use serde::Deserialize;

    use super::*;
    use crate::{LogFormat, Secret, validate_prefixed};

    /// A bridge section shaped like the IRC bridge's.
    #[derive(Debug, Default, PartialEq, Eq, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct IrcSection {
        networks: BTreeMap<String, Network>,
    }

    #[derive(Debug, PartialEq, Eq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Network {
        servers: Vec<Server>,
    }

    #[derive(Debug, PartialEq, Eq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Server {
        host: String,
        port: u16,
    }

    impl Validate for IrcSection {
        fn validate(&self, errors: &mut Vec<FieldError>) {
            for (name, network) in &self.networks {
                validate_prefixed(&format!("networks.{name}"), network, errors);
            }
        }
    }

    impl Validate for Network {
        fn validate(&self, errors: &mut Vec<FieldError>) {
            if self.servers.is_empty() {
                errors.push(FieldError::new("servers", "must not be empty (expected a server)"));
            }
            for (index, server) in self.servers.iter().enumerate() {
                if server.host.is_empty() {
                    errors.push(FieldError::new(
                        format!("servers[{index}].host"),
                        "must not be empty (expected a host name such as irc.libera.chat)",
                    ));
                }
            }
        }
    }

    const FULL: &str = "\
homeserver:
  url: https://matrix.example.org
  server_name: example.org
appservice:
  id: lattice-irc
  bind_address: 0.0.0.0
  port: 29330
  public_url: http://bridge:29330
  registration: irc-registration.yaml
  bot:
    localpart: ircbot
    displayname: IRC Bridge
    avatar_url: mxc://example.org/abc
database:
  url: sqlite://data/irc.db
  max_connections: 4
encryption:
  key_file: /var/lib/lattice/irc.key
logging:
  filter: info,lattice_bridge_irc=debug
  format: json
metrics:
  enabled: false
permissions:
  admins: ['@alice:example.org']
  users:
    - '*:example.org'
bridge:
  networks:
    libera:
      servers:
        - host: irc.libera.chat
          port: 6697
";

    const MINIMAL: &str = "\
homeserver:
  url: http://127.0.0.1:8008
  server_name: localhost
appservice:
  id: lattice-xmpp
  port: 29331
  bot:
    localpart: xmppbot
";

    #[test]
    fn full_config_loads_with_paths_resolved() {
        let config = Config::<IrcSection>::from_yaml_str(FULL, "/etc/lattice/config.yaml").expect("valid config");
        assert_eq!(config.homeserver.url.as_str(), "https://matrix.example.org/");
        assert_eq!(config.homeserver.server_name, "example.org");
        assert_eq!(config.appservice.bind_address, IpAddr::from([0, 0, 0, 0]));
        assert_eq!(config.appservice.public_url().as_str(), "http://bridge:29330/");
        assert_eq!(config.appservice.registration, PathBuf::from("/etc/lattice/irc-registration.yaml"));
        assert_eq!(config.appservice.bot.displayname.as_deref(), Some("IRC Bridge"));
        assert_eq!(config.database.url, Secret::from("sqlite:///etc/lattice/data/irc.db"));
        assert_eq!(config.database.max_connections, 4);
        assert_eq!(config.encryption.key_file, PathBuf::from("/var/lib/lattice/irc.key"));
        assert_eq!(config.logging.filter, "info,lattice_bridge_irc=debug");
        assert_eq!(config.logging.format, LogFormat::Json);
        assert!(!config.metrics.enabled);
        assert_eq!(config.permissions.admins, ["@alice:example.org"]);
        assert_eq!(config.permissions.users, ["*:example.org"]);
        let libera = &config.bridge.networks["libera"];
        assert_eq!(libera.servers, [Server { host: "irc.libera.chat".into(), port: 6697 }]);
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = Config::<()>::from_yaml_str(MINIMAL, "/srv/xmpp/config.yaml").expect("valid config");
        assert_eq!(config.appservice.bind_address, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(config.appservice.public_url, None);
        assert_eq!(config.appservice.public_url().as_str(), "http://127.0.0.1:29331/");
        assert_eq!(config.appservice.registration, PathBuf::from("/srv/xmpp/registration.yaml"));
        assert_eq!(config.appservice.bot.displayname, None);
        assert_eq!(config.database.url, Secret::from("sqlite:///srv/xmpp/lattice.db"));
        assert_eq!(config.database.max_connections, 10);
        assert_eq!(config.encryption.key_file, PathBuf::from("/srv/xmpp/lattice.key"));
        assert_eq!(config.logging.filter, "info");
        assert_eq!(config.logging.format, LogFormat::Pretty);
        assert!(config.metrics.enabled);
        assert!(config.permissions.admins.is_empty());
        assert_eq!(config.permissions.users, ["*"]);

        let with_empty_bridge = format!("{MINIMAL}bridge:\n");
        let config = Config::<()>::from_yaml_str(&with_empty_bridge, "c.yaml").expect("valid");
        assert_eq!(config.bridge, ());
        let config = Config::<IrcSection>::from_yaml_str(MINIMAL, "c.yaml").expect("valid");
        assert!(config.bridge.networks.is_empty());
    }

    #[test]
    fn database_url_forms() {
        // (written url, loaded url)
        let cases = [
            ("sqlite://relative.db", "sqlite:///etc/lattice/relative.db"),
            ("sqlite:relative.db", "sqlite:///etc/lattice/relative.db"),
            ("sqlite:///abs/path.db", "sqlite:///abs/path.db"),
            ("sqlite::memory:", "sqlite::memory:"),
            ("postgres://l:pw@db/lattice", "postgres://l:pw@db/lattice"),
            ("postgresql://l:pw@db/lattice", "postgresql://l:pw@db/lattice"),
        ];
        for (url, expected) in cases {
            let text = format!("{MINIMAL}database:\n  url: '{url}'\n");
            let config = Config::<()>::from_yaml_str(&text, "/etc/lattice/config.yaml")
                .unwrap_or_else(|err| panic!("{url}: {err}"));
            assert_eq!(config.database.url, Secret::from(expected), "{url}");
        }
    }

    #[test]
    fn load_reads_the_file_and_resolves_secret_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("db-url"), "postgres://l:pw@db/lattice\n").expect("secret");
        let config_path = dir.path().join("config.yaml");
        let text = format!("{MINIMAL}database:\n  url: {{ file: db-url }}\n");
        fs::write(&config_path, text).expect("config");

        let config = Config::<()>::load(&config_path).expect("valid config");
        let secret_path = dir.path().join("db-url");
        assert_eq!(config.database.url, Secret::File(secret_path));
        assert_eq!(config.database.url.resolve().expect("readable"), "postgres://l:pw@db/lattice");
        assert_eq!(config.appservice.registration, dir.path().join("registration.yaml"));
    }

    #[test]
    fn load_names_a_missing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing.yaml");
        let err = Config::<()>::load(&path).expect_err("missing");
        assert!(matches!(&err, ConfigError::Io { path: p, .. } if p == &path), "{err:?}");
        assert!(err.to_string().starts_with(&path.display().to_string()), "{err}");
    }

    #[test]
    fn secret_sources_are_checked_at_load() {
        let missing_var = "LATTICE_TEST_CONFIG_DB_NEVER_SET";
        assert!(std::env::var_os(missing_var).is_none());
        // (database.url, message fragment)
        let cases = [
            (format!("{{ env: {missing_var} }}"), format!("`{missing_var}` is not set")),
            ("{ file: no-such-file }".to_owned(), "/nonexistent-dir/no-such-file".to_owned()),
        ];
        for (url, needle) in cases {
            let text = format!("{MINIMAL}database:\n  url: {url}\n");
            let err = Config::<()>::from_yaml_str(&text, "/nonexistent-dir/config.yaml").expect_err(&url);
            let ConfigError::Invalid { errors, .. } = &err else { panic!("{err:?}") };
            assert_eq!(errors.len(), 1, "{err}");
            assert_eq!(errors[0].field, "database.url");
            assert_eq!(errors[0].location, Some(Location { line: 10, column: 3 }));
            assert!(errors[0].message.contains(&needle), "{err}");
        }
    }

    #[test]
    fn invalid_values_are_all_reported_with_their_lines() {
        /// (field, line, column, message fragment)
        type Expected = (&'static str, usize, usize, &'static str);
        // (replace, with, expected errors)
        let cases: [(&str, &str, &[Expected]); 11] = [
            (
                "url: https://matrix.example.org",
                "url: ftp://matrix.example.org",
                &[("homeserver.url", 2, 3, "scheme `ftp` is not supported")],
            ),
            ("server_name: example.org", "server_name: ''", &[("homeserver.server_name", 3, 3, "must not be empty")]),
            ("port: 29330", "port: 0", &[("appservice.port", 7, 3, "must not be 0 (expected a TCP port 1-65535)")]),
            ("localpart: ircbot", "localpart: IRC", &[("appservice.bot.localpart", 11, 5, "contains 'I'")]),
            (
                "url: sqlite://data/irc.db",
                "url: mysql://x/y",
                &[("database.url", 15, 3, "database `mysql` is not supported")],
            ),
            ("max_connections: 4", "max_connections: 0", &[("database.max_connections", 16, 3, "must be at least 1")]),
            (
                "filter: info,lattice_bridge_irc=debug",
                "filter: info,irc=chatty",
                &[("logging.filter", 20, 3, "`chatty` in `irc=chatty` is not a level")],
            ),
            ("- '*:example.org'", "- 'example.org'", &[("permissions.users[0]", 27, 5, "starts with @")]),
            (
                "- host: irc.libera.chat",
                "- host: ''",
                &[("bridge.networks.libera.servers[0].host", 32, 11, "must not be empty")],
            ),
            // An absent key is located at its nearest parent.
            (
                "key_file: /var/lib/lattice/irc.key",
                "key_file: ''",
                &[("encryption.key_file", 18, 3, "must not be empty")],
            ),
            // Several problems at once, in section order.
            (
                "id: lattice-irc\n  bind_address: 0.0.0.0\n  port: 29330",
                "id: ''\n  bind_address: 0.0.0.0\n  port: 0",
                &[("appservice.id", 5, 3, "must not be empty"), ("appservice.port", 7, 3, "must not be 0")],
            ),
        ];
        for (from, to, expected) in cases {
            let text = FULL.replacen(from, to, 1);
            assert_ne!(text, FULL, "{from} not found");
            let result = Config::<IrcSection>::from_yaml_str(&text, "config.yaml");
            let err = match result {
                Err(err @ ConfigError::Invalid { .. }) => err,
                other => panic!("{to}: expected Invalid, got {other:?}"),
            };
            let ConfigError::Invalid { errors, .. } = &err else { unreachable!() };
            assert_eq!(errors.len(), expected.len(), "{to}: {err}");
            for (error, &(field, line, column, needle)) in errors.iter().zip(expected) {
                assert_eq!(error.field, field, "{to}");
                assert_eq!(error.location, Some(Location { line, column }), "{to}: {field}");
                assert!(error.message.contains(needle), "{to}: {}", error.message);
                assert!(error.message.contains("expected"), "{to}: {}", error.message);
            }
            let display = err.to_string();
            let (field, line, column, _) = expected[0];
            assert!(display.starts_with(&format!("config.yaml:{line}:{column}: {field}: ")), "{display}");
            assert_eq!(display.lines().count(), expected.len(), "{display}");
        }
    }

    #[test]
    fn missing_bridge_field_is_located_at_its_parent() {
        let text = FULL
            .replace("          port: 6697\n", "")
            .replace("      servers:\n        - host: irc.libera.chat\n", "      servers: []\n");
        let err = Config::<IrcSection>::from_yaml_str(&text, "config.yaml").expect_err("empty");
        assert_eq!(
            err.to_string(),
            "config.yaml:31:7: bridge.networks.libera.servers: must not be empty (expected a server)"
        );
    }

    #[test]
    fn parse_errors_name_field_and_location() {
        // (replace, with, field, line, column, message fragment)
        let cases = [
            (
                "url: https://matrix.example.org",
                "url: matrix.example.org",
                "homeserver.url",
                2,
                8,
                "relative URL without a base (expected an absolute http(s) URL",
            ),
            (
                "port: 29330",
                "prot: 29330",
                "appservice.prot",
                7,
                3,
                "unknown field `prot`, expected one of `id`, `bind_address`, `port`",
            ),
            ("metrics:", "metric:", "metric", 22, 1, "unknown field `metric`"),
            (
                "port: 6697",
                "prot: 6697",
                "bridge.networks.libera.servers[0].prot",
                33,
                11,
                "unknown field `prot`, expected `host` or `port`",
            ),
            ("port: 29330", "port: 70000", "appservice.port", 7, 9, "invalid value: integer `70000`, expected u16"),
            ("  port: 29330\n", "", "appservice", 5, 3, "missing field `port`"),
            (
                "bind_address: 0.0.0.0",
                "bind_address: localhost",
                "appservice.bind_address",
                6,
                17,
                "expected an IP address",
            ),
            (
                "format: json",
                "format: xml",
                "logging.format",
                21,
                11,
                "unknown variant `xml`, expected `pretty` or `json`",
            ),
            ("url: sqlite://data/irc.db", "url: { vault: db }", "database.url", 15, 8, "unknown secret source `vault`"),
            (
                "enabled: false",
                "enabled: nope",
                "metrics.enabled",
                23,
                12,
                "invalid type: string \"nope\", expected a boolean",
            ),
            ("port: 29330", "port: 29330: 1", "appservice", 7, 14, "mapping values are not allowed in this context"),
        ];
        for (from, to, field, line, column, needle) in cases {
            let text = FULL.replacen(from, to, 1);
            assert_ne!(text, FULL, "{from} not found");
            let err = Config::<IrcSection>::from_yaml_str(&text, "config.yaml").expect_err(to);
            let ConfigError::Parse { field: got, location, message, .. } = &err else {
                panic!("{to}: expected Parse, got {err:?}");
            };
            assert_eq!(got, field, "{to}: {err}");
            assert_eq!(*location, Some(Location { line, column }), "{to}: {err}");
            assert!(message.contains(needle), "{to}: {message}");
            let prefix = match field {
                "" => format!("config.yaml:{line}:{column}: "),
                field => format!("config.yaml:{line}:{column}: {field}: "),
            };
            assert!(err.to_string().starts_with(&prefix), "{err}");
            assert!(!err.to_string().contains(" at line "), "{err}");
        }
    }

    #[test]
    fn parents() {
        let cases = [("a.b[0].c", "a.b[0]"), ("a.b[0]", "a.b"), ("a.b", "a"), ("a", ""), ("", "")];
        for (field, expected) in cases {
            assert_eq!(parent(field), expected, "{field}");
        }
    }

    #[test]
    fn cleans_serde_yaml_decorations() {
        let at = Some(Location { line: 3, column: 5 });
        let cases = [
            ("a.b: bad at line 3 column 5", "a.b", at, "bad"),
            ("a: unknown field `x` at line 3 column 5", "a.x", at, "unknown field `x`"),
            ("unknown field `x` at line 3 column 5", "x", at, "unknown field `x`"),
            ("problem at line 3 column 5, while parsing", "", at, "problem, while parsing"),
            ("other: kept", "a", None, "other: kept"),
        ];
        for (message, field, location, expected) in cases {
            assert_eq!(clean_message(message, field, location), expected, "{message}");
        }
    }
}
