//! The `bridge:` section of `lattice-irc`'s config: the IRC networks and the ID templates.

use std::collections::BTreeMap;

use lattice_bridge_core::cli::{BridgeSection, validate_id_template};
use lattice_config::{FieldError, Validate};
use serde::{Deserialize, Serialize};

pub use self::rules::{PlumbingConfig, PrivacyMode, ProvisioningConfig, SpamConfig};

mod rules;

/// The IRC bridge's own config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IrcSection {
    /// Ghost user IDs; `{network}` and `{nick}` are filled in per IRC user.
    pub user_template: String,
    /// Portal aliases; `{network}` and `{channel}` (with its `#`) are filled in per channel.
    pub alias_template: String,
    /// The IRC networks, by short ID (`libera`), which appears in IDs and aliases.
    pub networks: BTreeMap<String, NetworkConfig>,
    /// The ident server (RFC 1413), which tells IRC servers the username of each puppet connection.
    pub ident: IdentConfig,
    /// Seconds a puppet connection may go without its Matrix user doing anything before it is closed (the user is
    /// told first; it reconnects when they next speak). 0 keeps puppets forever. A network may override it.
    pub idle_timeout_secs: u64,
    /// The provisioning HTTP API (`/_matrix/provision/…`), for integration managers that link rooms.
    pub provisioning: ProvisioningConfig,
    /// The edge process that holds the IRC connections across bridge restarts.
    pub edge: EdgeConfig,
}

/// Where the IRC connections live: in an edge process that outlives the bridge (restarts, crashes and upgrades of
/// the bridge are invisible on IRC), or in the bridge's own process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// `auto`: `lattice-irc run` holds them in an edge it starts itself, a program embedding the connector holds
    /// them in its own process; `on` or `off` force one or the other.
    pub mode: EdgeMode,
    /// The edge's Unix socket. Default: `lattice-irc-<digest>.sock` in `$XDG_RUNTIME_DIR` (else the temp
    /// directory), the digest naming this bridge's registration file, so each bridge has its own edge.
    pub socket: Option<String>,
    /// Seconds the edge keeps the connections while no bridge is attached; then it quits them and exits.
    pub linger_secs: u64,
}

/// See [`EdgeConfig::mode`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeMode {
    /// The edge for `lattice-irc run`, the bridge's own process otherwise.
    #[default]
    Auto,
    /// Always the edge.
    On,
    /// Always the bridge's own process.
    Off,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self { mode: EdgeMode::Auto, socket: None, linger_secs: 600 }
    }
}

/// The ident server (RFC 1413): IRC servers ask it who owns a connection and show the answer as the username.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentConfig {
    /// Run it.
    pub enabled: bool,
    /// Where it listens: port 113 is what servers ask (binding it needs root or `CAP_NET_BIND_SERVICE`).
    pub bind: String,
}

impl Default for IdentConfig {
    fn default() -> Self {
        Self { enabled: false, bind: "0.0.0.0:113".into() }
    }
}

impl Default for IrcSection {
    fn default() -> Self {
        Self {
            user_template: "@irc_{network}_{nick}:{server_name}".into(),
            alias_template: "#irc_{network}_{channel}:{server_name}".into(),
            networks: BTreeMap::new(),
            ident: IdentConfig::default(),
            idle_timeout_secs: 0,
            provisioning: ProvisioningConfig::default(),
            edge: EdgeConfig::default(),
        }
    }
}

/// One IRC network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// The name people know it by, e.g. `Libera.Chat`.
    pub name: String,
    /// Servers to connect to, tried in order.
    pub servers: Vec<ServerConfig>,
    /// The nick of the bridge bot's own connection, which listens in every bridged channel.
    #[serde(default = "default_bot_nick")]
    pub bot_nick: String,
    /// The longest nick the bridge gives a puppet before the server says (ISUPPORT `NICKLEN`); RFC 1459 says 9.
    #[serde(default = "default_max_nick_length")]
    pub max_nick_length: usize,
    /// How stored passwords log a puppet in: `sasl` (SASL PLAIN before registration), `nickserv`
    /// (`PRIVMSG NickServ :IDENTIFY` after it) or `none`.
    #[serde(default)]
    pub auth: AuthMethod,
    /// Flood control for each connection: lines sent at once, then lines per second.
    #[serde(default)]
    pub flood: FloodConfig,
    /// Reconnecting after a lost connection.
    #[serde(default)]
    pub reconnect: ReconnectConfig,
    /// A Matrix message that takes more IRC lines than this is published as a text file (on the bridge's media
    /// endpoint) and sent as one line with its link.
    #[serde(default = "default_max_lines")]
    pub max_lines: usize,
    /// This network's idle timeout for puppets, in seconds, instead of the bridge-wide `idle_timeout_secs`; 0 keeps
    /// puppets forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
    /// How Matrix replies, edits and redactions look on IRC, which has none of them.
    #[serde(default)]
    pub messages: MessageStyle,
    /// The most puppet connections the bridge opens to this network (0: no limit); a Matrix user beyond it is told
    /// their message was not delivered. Networks limit connections per host: ask the operators for an exemption.
    #[serde(default)]
    pub max_clients: usize,
    /// What happens to a Matrix user in a portal whose IRC connection failed: `kick`, `block-messages` (banned
    /// until it works) or `off`. See the privacy rule in the crate's README.
    #[serde(default)]
    pub privacy: PrivacyMode,
    /// Seconds a puppet may take to register (after its user joins, or after it lost its connection) before the
    /// privacy rule counts it as failed.
    #[serde(default = "default_privacy_grace_secs")]
    pub privacy_grace_secs: u64,
    /// Linking existing Matrix rooms to channels: operator approval.
    #[serde(default)]
    pub plumbing: PlumbingConfig,
    /// Per-Matrix-user spam limits on what goes to IRC.
    #[serde(default)]
    pub spam: SpamConfig,
    /// A PEM file of certificates to trust besides the Mozilla roots, for networks with their own certificate
    /// authority (or a self-signed server certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<String>,
}

fn default_privacy_grace_secs() -> u64 {
    60
}

/// How Matrix replies, edits and redactions are shown on IRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessageStyle {
    /// A reply starts with `nick: ` and, when this is above 0, a quote of up to this many characters of the message
    /// replied to: `bob: "the original…" the reply`.
    pub reply_quote_chars: usize,
    /// An edit becomes one line: `correction` (`* the new text`), `sed` (`s/old/new/`, falling back to a correction
    /// when the change is not one span), or `ignore`. Never the whole message again.
    pub edits: EditStyle,
    /// A redaction is `ignore`d (IRC cannot unsay a line) or announced with a `notice` to the channel.
    pub redactions: RedactionStyle,
}

impl Default for MessageStyle {
    fn default() -> Self {
        Self { reply_quote_chars: 40, edits: EditStyle::Correction, redactions: RedactionStyle::Ignore }
    }
}

/// How an edit is shown on IRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EditStyle {
    /// `* the new text`.
    Correction,
    /// `s/old/new/`.
    Sed,
    /// Nothing.
    Ignore,
}

/// How a redaction is shown on IRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedactionStyle {
    /// Nothing.
    Ignore,
    /// A NOTICE saying a message was deleted.
    Notice,
}

/// How a puppet logs in to its IRC account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// SASL PLAIN (IRCv3 `sasl`), before the connection registers.
    Sasl,
    /// `PRIVMSG NickServ :IDENTIFY account password` once registered.
    Nickserv,
    /// Stored passwords are not used.
    #[default]
    None,
}

/// Flood control per connection: a token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FloodConfig {
    /// Lines that may go out back to back.
    pub burst: u32,
    /// Lines per second after the burst.
    pub lines_per_second: f64,
}

impl Default for FloodConfig {
    fn default() -> Self {
        Self { burst: 5, lines_per_second: 2.0 }
    }
}

/// Reconnecting: exponential backoff with full jitter, and a cap on connections reconnecting at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconnectConfig {
    /// The first delay, in milliseconds; it doubles per failed attempt.
    pub initial_delay_ms: u64,
    /// The longest delay, in seconds.
    pub max_delay_secs: u64,
    /// Connections of this network that may be connecting at the same moment (after a netsplit or a restart).
    pub max_concurrent: usize,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self { initial_delay_ms: 1000, max_delay_secs: 300, max_concurrent: 5 }
    }
}

impl NetworkConfig {
    /// How long a puppet of this network may idle before it is closed, if ever: the network's own setting, else
    /// the bridge-wide one.
    pub fn idle_timeout(&self, section: &IrcSection) -> Option<std::time::Duration> {
        let secs = self.idle_timeout_secs.unwrap_or(section.idle_timeout_secs);
        (secs > 0).then(|| std::time::Duration::from_secs(secs))
    }

    /// A network with these servers and every other option at its default.
    pub fn new(name: &str, servers: Vec<ServerConfig>) -> Self {
        Self {
            name: name.into(),
            servers,
            bot_nick: default_bot_nick(),
            max_nick_length: default_max_nick_length(),
            auth: AuthMethod::default(),
            flood: FloodConfig::default(),
            reconnect: ReconnectConfig::default(),
            max_lines: default_max_lines(),
            idle_timeout_secs: None,
            messages: MessageStyle::default(),
            max_clients: 0,
            privacy: PrivacyMode::default(),
            privacy_grace_secs: default_privacy_grace_secs(),
            plumbing: PlumbingConfig::default(),
            spam: SpamConfig::default(),
            tls_ca_file: None,
        }
    }
}

fn default_max_lines() -> usize {
    3
}

fn default_bot_nick() -> String {
    "lattice".into()
}

fn default_max_nick_length() -> usize {
    9
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
    /// Connect with TLS (rustls, checked against the Mozilla root certificates).
    #[serde(default = "default_tls")]
    pub tls: bool,
    /// The server password (`PASS`), if the server wants one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
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
        validate_id_template("user_template", &self.user_template, &["{network}", "{nick}"], errors);
        validate_id_template("alias_template", &self.alias_template, &["{network}", "{channel}"], errors);
        if self.ident.enabled && self.ident.bind.parse::<std::net::SocketAddr>().is_err() {
            errors.push(FieldError::new("ident.bind", "must be an address and port, e.g. 0.0.0.0:113"));
        }
        self.provisioning.validate(errors);
        if self.edge.socket.as_ref().is_some_and(|socket| socket.len() > 100) {
            errors.push(FieldError::new("edge.socket", "Unix socket paths are limited to about 100 bytes"));
        }
        for (id, network) in &self.networks {
            let field = format!("networks.{id}");
            if !is_valid_network_id(id) {
                errors.push(FieldError::new(&field, "network IDs use lower-case letters, digits and '-' only"));
            }
            if network.servers.is_empty() {
                errors.push(FieldError::new(format!("{field}.servers"), "list at least one server"));
            }
            if !crate::ids::is_valid_nick(&network.bot_nick) {
                errors.push(FieldError::new(format!("{field}.bot_nick"), "must be a valid IRC nick"));
            }
            if network.max_nick_length < 2 {
                errors.push(FieldError::new(format!("{field}.max_nick_length"), "must be at least 2"));
            }
            if network.flood.burst == 0 {
                errors.push(FieldError::new(format!("{field}.flood.burst"), "must be at least 1"));
            }
            if network.flood.lines_per_second.is_nan() || network.flood.lines_per_second <= 0.0 {
                errors.push(FieldError::new(format!("{field}.flood.lines_per_second"), "must be above 0"));
            }
            if network.max_lines == 0 {
                errors.push(FieldError::new(format!("{field}.max_lines"), "must be at least 1"));
            }
            let rate = network.spam.messages_per_minute;
            if rate.is_nan() || rate < 0.0 {
                errors.push(FieldError::new(format!("{field}.spam.messages_per_minute"), "must be 0 (off) or above"));
            }
            if rate > 0.0 && network.spam.burst == 0 {
                errors.push(FieldError::new(format!("{field}.spam.burst"), "must be at least 1 when a rate is set"));
            }
            if network.plumbing.require_approval && network.plumbing.approval_timeout_secs == 0 {
                errors.push(FieldError::new(
                    format!("{field}.plumbing.approval_timeout_secs"),
                    "must be at least 1 (seconds an operator has to answer)",
                ));
            }
            if network.reconnect.max_concurrent == 0 {
                errors.push(FieldError::new(format!("{field}.reconnect.max_concurrent"), "must be at least 1"));
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
        assert_eq!(config.bridge.idle_timeout_secs, 0);
        assert_eq!(config.bridge.networks["libera"].idle_timeout_secs, None);
        let libera = &config.bridge.networks["libera"];
        assert_eq!((libera.privacy, libera.privacy_grace_secs), (PrivacyMode::Kick, 60));
        assert_eq!(libera.plumbing, PlumbingConfig::default());
        assert_eq!(libera.spam, SpamConfig { messages_per_minute: 20.0, burst: 5, max_lines_per_message: 10 });
        assert!(!config.bridge.provisioning.enabled);
    }

    #[test]
    fn the_idle_timeout_of_a_network_overrides_the_bridge_wide_one() {
        let server = ServerConfig { host: "irc.example".into(), port: 6697, tls: true, password: None };
        let mut network = NetworkConfig::new("x", vec![server]);
        let mut section = IrcSection::default();
        assert_eq!(network.idle_timeout(&section), None, "0 (the default) keeps puppets forever");
        section.idle_timeout_secs = 60;
        assert_eq!(network.idle_timeout(&section), Some(std::time::Duration::from_secs(60)));
        network.idle_timeout_secs = Some(5);
        assert_eq!(network.idle_timeout(&section), Some(std::time::Duration::from_secs(5)));
        network.idle_timeout_secs = Some(0);
        assert_eq!(network.idle_timeout(&section), None);
    }

    #[test]
    fn spam_and_plumbing_limits_are_checked() {
        let server = ServerConfig { host: "irc.example".into(), port: 6697, tls: true, password: None };
        let mut network = NetworkConfig::new("x", vec![server]);
        network.spam = SpamConfig { messages_per_minute: f64::NAN, burst: 0, max_lines_per_message: 0 };
        network.plumbing.approval_timeout_secs = 0;
        let mut section = IrcSection::default();
        section.networks.insert("net".into(), network.clone());
        let mut errors = Vec::new();
        section.validate(&mut errors);
        let fields: Vec<&str> = errors.iter().map(|error| error.field.as_str()).collect();
        assert_eq!(fields, ["networks.net.spam.messages_per_minute", "networks.net.plumbing.approval_timeout_secs"]);

        network.spam.messages_per_minute = 10.0;
        section.networks.insert("net".into(), network);
        errors.clear();
        section.validate(&mut errors);
        let fields: Vec<&str> = errors.iter().map(|error| error.field.as_str()).collect();
        assert_eq!(fields, ["networks.net.spam.burst", "networks.net.plumbing.approval_timeout_secs"]);
    }

    #[test]
    fn invalid_sections_name_the_field() {
        let mut section = IrcSection { user_template: "@irc_{nick}:example.org".into(), ..IrcSection::default() };
        section.networks.insert(
            "Bad Net".into(),
            NetworkConfig {
                bot_nick: "1bad".into(),
                ..NetworkConfig::new("x", vec![ServerConfig { host: " ".into(), port: 0, tls: false, password: None }])
            },
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
                "networks.Bad Net.bot_nick",
                "networks.Bad Net.servers[0].host",
                "networks.Bad Net.servers[0].port"
            ]
        );
    }
}
