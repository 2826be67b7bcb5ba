//! `appservice:` — how the homeserver and the bridge find each other.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use url::Url;

use crate::validate::{FieldError, Validate, check_http_url, check_localpart};

/// The bridge's side of the application-service connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppserviceConfig {
    /// The application service ID, as in the registration file.
    pub id: String,
    /// Address the HTTP listener binds to (default `127.0.0.1`).
    #[serde(default = "default_bind_address", deserialize_with = "crate::de::ip_addr")]
    pub bind_address: IpAddr,
    /// Port of the HTTP listener, which also serves `/metrics`.
    pub port: u16,
    /// The URL the homeserver uses to reach the bridge, when it is not
    /// `http://{bind_address}:{port}` (a reverse proxy, a container network); see
    /// [`AppserviceConfig::public_url`].
    #[serde(default, deserialize_with = "crate::de::optional_url", skip_serializing_if = "Option::is_none")]
    pub public_url: Option<Url>,
    /// The base URL people on the bridged network use to open files the bridge shares with them (long messages,
    /// Matrix media, which needs authentication to fetch directly); see [`AppserviceConfig::media_url`].
    #[serde(default, deserialize_with = "crate::de::optional_url", skip_serializing_if = "Option::is_none")]
    pub media_url: Option<Url>,
    /// The registration file (default `registration.yaml`, next to the configuration file).
    #[serde(default = "default_registration")]
    pub registration: PathBuf,
    /// The bridge bot user.
    pub bot: BotConfig,
    /// What the listener allows a client before it hangs up (defaults fit a homeserver on a LAN).
    #[serde(default)]
    pub limits: ListenerLimitsConfig,
}

/// `appservice.limits:` — the listener's defences against slow or many clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerLimitsConfig {
    /// Seconds a client has to send a request's line and headers, and the most a kept-alive connection may sit idle
    /// between requests (default 30).
    pub header_timeout_secs: u64,
    /// Seconds a request may take from its headers to its answer, body included (default 60).
    pub request_timeout_secs: u64,
    /// Connections served at once; one more is answered `503` and closed (default 512).
    pub max_connections: usize,
}

impl Default for ListenerLimitsConfig {
    fn default() -> Self {
        Self { header_timeout_secs: 30, request_timeout_secs: 60, max_connections: 512 }
    }
}

/// The bridge bot: the registration's `sender_localpart` user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotConfig {
    /// Localpart of the bot's user ID, e.g. `ircbot` for `@ircbot:example.org`.
    pub localpart: String,
    /// Display name to set on the bot, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub displayname: Option<String>,
    /// `mxc://` avatar to set on the bot, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
}

fn default_bind_address() -> IpAddr {
    Ipv4Addr::LOCALHOST.into()
}

fn default_registration() -> PathBuf {
    PathBuf::from("registration.yaml")
}

impl AppserviceConfig {
    /// The URL the homeserver should use: `public_url`, or `http://{bind_address}:{port}`.
    ///
    /// With a wildcard `bind_address` (`0.0.0.0`, `::`) the default is not reachable from
    /// elsewhere, so set `public_url` then.
    pub fn public_url(&self) -> Url {
        self.public_url.clone().unwrap_or_else(|| {
            let address = SocketAddr::new(self.bind_address, self.port);
            Url::parse(&format!("http://{address}")).expect("an IP address and port always form a valid http URL")
        })
    }

    /// The base URL of files the bridge shares: `media_url`, or [`public_url`](Self::public_url).
    pub fn media_url(&self) -> Url {
        self.media_url.clone().unwrap_or_else(|| self.public_url())
    }

    pub(crate) fn resolve_paths(&mut self, base_dir: &Path) {
        self.registration = crate::paths::resolve(base_dir, &self.registration);
    }
}

impl Validate for AppserviceConfig {
    fn validate(&self, errors: &mut Vec<FieldError>) {
        if self.id.is_empty() {
            errors
                .push(FieldError::new("id", "must not be empty (expected the registration's id, such as lattice-irc)"));
        } else if self.id.contains('|') {
            errors.push(FieldError::new("id", "must not contain `|` (expected an ID without `|`: Synapse refuses it)"));
        }
        if self.port == 0 {
            errors.push(FieldError::new("port", "must not be 0 (expected a TCP port 1-65535)"));
        }
        if let Some(url) = &self.public_url {
            check_http_url("public_url", url, errors);
        }
        if let Some(url) = &self.media_url {
            check_http_url("media_url", url, errors);
        }
        if self.registration.as_os_str().is_empty() {
            errors.push(FieldError::new(
                "registration",
                "must not be empty (expected a file path such as registration.yaml)",
            ));
        }
        check_localpart("bot.localpart", &self.bot.localpart, errors);
        for (field, value) in [
            ("limits.header_timeout_secs", self.limits.header_timeout_secs),
            ("limits.request_timeout_secs", self.limits.request_timeout_secs),
            ("limits.max_connections", self.limits.max_connections as u64),
        ] {
            if value == 0 {
                errors.push(FieldError::new(
                    field,
                    "must not be 0 (expected a positive number; leave it out for the default)",
                ));
            }
        }
        if let Some(avatar) = &self.bot.avatar_url {
            let valid = avatar
                .strip_prefix("mxc://")
                .and_then(|rest| rest.split_once('/'))
                .is_some_and(|(server, media)| !server.is_empty() && !media.is_empty());
            if !valid {
                errors.push(FieldError::new(
                    "bot.avatar_url",
                    "is not an mxc:// URI (expected mxc://server/media_id; upload the image first)",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AppserviceConfig {
        AppserviceConfig {
            id: "lattice-irc".into(),
            bind_address: default_bind_address(),
            port: 29330,
            public_url: None,
            media_url: None,
            registration: default_registration(),
            bot: BotConfig { localpart: "ircbot".into(), displayname: None, avatar_url: None },
            limits: ListenerLimitsConfig::default(),
        }
    }

    #[test]
    fn public_url_defaults_to_the_listener() {
        let cases = [
            (IpAddr::from([127, 0, 0, 1]), None, "http://127.0.0.1:29330/"),
            (IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]), None, "http://[::1]:29330/"),
            (IpAddr::from([0, 0, 0, 0]), Some("https://bridge.example.org/irc"), "https://bridge.example.org/irc"),
        ];
        for (bind_address, public_url, expected) in cases {
            let config = AppserviceConfig {
                bind_address,
                public_url: public_url.map(|u| Url::parse(u).expect("url")),
                ..config()
            };
            assert_eq!(config.public_url().as_str(), expected);
        }
    }

    #[test]
    fn media_url_defaults_to_the_public_url() {
        assert_eq!(config().media_url().as_str(), "http://127.0.0.1:29330/");
        let own = Url::parse("https://files.example.org/").unwrap();
        assert_eq!(AppserviceConfig { media_url: Some(own.clone()), ..config() }.media_url(), own);
    }

    #[test]
    fn validation() {
        type Edit = fn(&mut AppserviceConfig);
        let cases: [(Edit, &[&str]); 10] = [
            (|_| {}, &[]),
            (|c| c.id.clear(), &["id"]),
            (|c| c.id = "a|b".into(), &["id"]),
            (|c| c.port = 0, &["port"]),
            (|c| c.public_url = Some(Url::parse("ftp://x").expect("url")), &["public_url"]),
            (|c| c.registration = PathBuf::new(), &["registration"]),
            (|c| c.bot.localpart = "Bot".into(), &["bot.localpart"]),
            (|c| c.bot.avatar_url = Some("https://x/y.png".into()), &["bot.avatar_url"]),
            (|c| c.limits.max_connections = 0, &["limits.max_connections"]),
            (
                |c| {
                    c.port = 0;
                    c.bot.localpart.clear();
                    c.bot.avatar_url = Some("mxc://example.org/abc".into());
                },
                &["port", "bot.localpart"],
            ),
        ];
        for (index, (edit, expected)) in cases.into_iter().enumerate() {
            let mut config = config();
            edit(&mut config);
            let mut errors = Vec::new();
            config.validate(&mut errors);
            let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
            assert_eq!(fields, expected, "case {index}");
            assert!(errors.iter().all(|e| e.message.contains("expected")), "{errors:?}");
        }
    }
}
