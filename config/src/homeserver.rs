//! `homeserver:` — the Matrix homeserver the bridge belongs to.

use serde::{Deserialize, Serialize};
use url::Url;

use crate::validate::{FieldError, Validate, check_http_url, is_server_name};

/// The homeserver the bridge talks to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeserverConfig {
    /// Client-server API base URL, e.g. `https://matrix.example.org` or `http://127.0.0.1:8008`.
    #[serde(deserialize_with = "crate::de::url")]
    pub url: Url,
    /// The server name in user IDs (`@alice:example.org` → `example.org`).
    pub server_name: String,
}

impl Validate for HomeserverConfig {
    fn validate(&self, errors: &mut Vec<FieldError>) {
        check_http_url("url", &self.url, errors);
        if self.server_name.is_empty() {
            errors.push(FieldError::new(
                "server_name",
                "must not be empty (expected the part after `:` in user IDs, such as example.org)",
            ));
        } else if !is_server_name(&self.server_name) {
            errors.push(FieldError::new(
                "server_name",
                format!(
                    "`{}` is not a server name (expected a host name, IPv4 or [IPv6] address, \
                     optionally with :port, such as example.org)",
                    self.server_name
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        let cases = [
            ("https://matrix.example.org", "example.org", vec![]),
            ("http://127.0.0.1:8008", "localhost:8448", vec![]),
            ("ftp://example.org", "example.org", vec!["url"]),
            ("https://example.org", "", vec!["server_name"]),
            ("https://example.org", "https://example.org", vec!["server_name"]),
            ("ws://example.org", "@alice:example.org", vec!["url", "server_name"]),
        ];
        for (url, server_name, expected) in cases {
            let config = HomeserverConfig { url: Url::parse(url).expect("url"), server_name: server_name.to_owned() };
            let mut errors = Vec::new();
            config.validate(&mut errors);
            let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
            assert_eq!(fields, expected, "{url} {server_name}");
            assert!(errors.iter().all(|e| e.message.contains("expected")), "{errors:?}");
        }
    }
}
