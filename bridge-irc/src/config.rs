//! The `bridge:` section of `lattice-irc`'s config: the IRC networks and the ID templates.

use std::collections::BTreeMap;

use lattice_bridge_core::cli::BridgeSection;
use lattice_config::{FieldError, Validate};
use serde::{Deserialize, Serialize};

/// The IRC bridge's own config section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IrcSection {
    /// Ghost user IDs; `{network}` and `{nick}` are filled in per IRC user.
    pub user_template: String,
    /// Portal aliases; `{network}` and `{channel}` (with its `#`) are filled in per channel.
    pub alias_template: String,
    /// The IRC networks, by short ID (`libera`), which appears in IDs and aliases.
    pub networks: BTreeMap<String, NetworkConfig>,
}

impl Default for IrcSection {
    fn default() -> Self {
        Self {
            user_template: "@irc_{network}_{nick}:{server_name}".into(),
            alias_template: "#irc_{network}_{channel}:{server_name}".into(),
            networks: BTreeMap::new(),
        }
    }
}

/// One IRC network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// The name people know it by, e.g. `Libera.Chat`.
    pub name: String,
    /// Servers to connect to, tried in order.
    pub servers: Vec<ServerConfig>,
}

/// One server of a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Host name or address.
    pub host: String,
    /// Port; 6697 for TLS, 6667 without.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Connect with TLS.
    #[serde(default = "default_tls")]
    pub tls: bool,
}

fn default_port() -> u16 {
    6697
}

fn default_tls() -> bool {
    true
}

/// Network IDs go into user IDs and aliases, so they keep to characters valid in both.
fn is_valid_network_id(id: &str) -> bool {
    !id.is_empty() && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

impl Validate for IrcSection {
    fn validate(&self, errors: &mut Vec<FieldError>) {
        for (field, template, placeholders) in [
            ("user_template", &self.user_template, ["{network}", "{nick}"]),
            ("alias_template", &self.alias_template, ["{network}", "{channel}"]),
        ] {
            for placeholder in placeholders {
                if !template.contains(placeholder) {
                    errors.push(FieldError::new(field, format!("must contain {placeholder}")));
                }
            }
            if !template.ends_with(":{server_name}") {
                errors.push(FieldError::new(field, "must end with :{server_name}"));
            }
        }
        for (id, network) in &self.networks {
            let field = format!("networks.{id}");
            if !is_valid_network_id(id) {
                errors.push(FieldError::new(&field, "network IDs use lower-case letters, digits and '-' only"));
            }
            if network.servers.is_empty() {
                errors.push(FieldError::new(format!("{field}.servers"), "list at least one server"));
            }
            for (index, server) in network.servers.iter().enumerate() {
                if server.host.trim().is_empty() {
                    errors.push(FieldError::new(format!("{field}.servers[{index}].host"), "must not be empty"));
                }
                if server.port == 0 {
                    errors.push(FieldError::new(format!("{field}.servers[{index}].port"), "must be 1-65535"));
                }
            }
        }
    }
}

impl BridgeSection for IrcSection {
    const PROTOCOL: &'static str = "irc";

    fn user_templates(&self) -> Vec<String> {
        vec![self.user_template.clone()]
    }

    fn alias_templates(&self) -> Vec<String> {
        vec![self.alias_template.clone()]
    }
}

#[cfg(test)]
mod tests {
    use lattice_config::Config;

    use super::*;

    #[test]
    fn the_sample_config_loads_and_validates() {
        let sample = include_str!("../config.sample.yaml");
        let config: Config<IrcSection> = Config::from_yaml_str(sample, "config.sample.yaml").unwrap();
        assert_eq!(config.bridge.networks["libera"].name, "Libera.Chat");
        assert_eq!(config.appservice.bot.localpart, "ircbot");
    }

    #[test]
    fn invalid_sections_name_the_field() {
        let mut section = IrcSection { user_template: "@irc_{nick}:example.org".into(), ..IrcSection::default() };
        section.networks.insert(
            "Bad Net".into(),
            NetworkConfig { name: "x".into(), servers: vec![ServerConfig { host: " ".into(), port: 0, tls: false }] },
        );
        let mut errors = Vec::new();
        section.validate(&mut errors);
        let fields: Vec<&str> = errors.iter().map(|error| error.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "user_template",
                "user_template",
                "networks.Bad Net",
                "networks.Bad Net.servers[0].host",
                "networks.Bad Net.servers[0].port"
            ]
        );
    }
}
