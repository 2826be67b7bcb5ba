//! The `bridge:` section of `lattice-xmpp`'s config: the XEP-0114 component and the ID templates.

use lattice_bridge_core::cli::{BridgeSection, validate_id_template};
use lattice_config::{FieldError, Secret, Validate};
use serde::{Deserialize, Serialize};

/// The XMPP bridge's own config section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XmppSection {
    /// The external component (XEP-0114) the bridge connects as.
    pub component: ComponentConfig,
    /// Ghost user IDs for XMPP users; `{jid}` is the bare JID, XEP-0106-escaped into a localpart.
    pub user_template: String,
    /// Portal aliases for XMPP MUCs; `{room}` is the MUC's bare JID (`room@conference.example.net`).
    pub alias_template: String,
    /// How the bridge takes part in MUCs.
    pub muc: MucConfig,
    /// The longest message body, in bytes, the bridge sends to XMPP; longer Matrix messages are refused with an
    /// error to their sender rather than cut or dropped by the server.
    pub max_message_bytes: usize,
    /// Files linked from XMPP (XEP-0066 out-of-band data, HTTP upload).
    pub media: MediaConfig,
}

/// How the bridge fetches files linked from XMPP to upload them to Matrix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// The largest file downloaded, in bytes; a larger one reaches Matrix as its link.
    pub max_download_bytes: u64,
    /// Whether files may be fetched from loopback, private and link-local addresses. Off by default: a message's
    /// link must not make the bridge probe its own network.
    pub allow_private_targets: bool,
    /// Seconds a download may take.
    pub download_timeout_secs: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self { max_download_bytes: 50 * 1024 * 1024, allow_private_targets: false, download_timeout_secs: 30 }
    }
}

/// How the bridge takes part in MUCs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MucConfig {
    /// The nick of the bridge's own occupant, which listens to each bridged MUC on behalf of the portal.
    pub listener_nick: String,
    /// Suffix added to a Matrix user's display name when their nick is taken in a MUC.
    pub nick_conflict_suffix: String,
    /// Seconds of silence from a bridged MUC after which the bridge checks with an XEP-0410 self-ping that it is
    /// still an occupant, and rejoins if the MUC forgot it (a restart of a remote MUC service is not announced).
    pub self_ping_interval_secs: u64,
}

impl Default for MucConfig {
    fn default() -> Self {
        Self {
            listener_nick: "Matrix bridge".into(),
            nick_conflict_suffix: " [m]".into(),
            self_ping_interval_secs: 300,
        }
    }
}

impl Default for XmppSection {
    fn default() -> Self {
        Self {
            component: ComponentConfig::default(),
            user_template: "@_xmpp_{jid}:{server_name}".into(),
            alias_template: "#_xmpp_{room}:{server_name}".into(),
            muc: MucConfig::default(),
            max_message_bytes: 16 * 1024,
            media: MediaConfig::default(),
        }
    }
}

/// The XEP-0114 connection to the XMPP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ComponentConfig {
    /// The component's domain, as declared on the XMPP server (`Component "bridge.example.org"` in Prosody).
    pub domain: String,
    /// The server's component port, `host:port`.
    pub server: String,
    /// The shared secret of the handshake.
    pub secret: Secret,
    /// Seconds between XEP-0199 pings to the server; a ping unanswered within `response_timeout_secs` counts the
    /// connection as dead and reconnects it.
    pub ping_interval_secs: u64,
    /// Seconds to wait for the server's answer to a ping, a MUC join or the reflection of a sent message.
    pub response_timeout_secs: u64,
    /// Upper bound, in seconds, of the jittered exponential backoff between reconnection attempts.
    pub max_reconnect_delay_secs: u64,
}

impl Default for ComponentConfig {
    fn default() -> Self {
        Self {
            domain: "bridge.localhost".into(),
            server: "127.0.0.1:5347".into(),
            secret: Secret::Env("LATTICE_XMPP_COMPONENT_SECRET".into()),
            ping_interval_secs: 30,
            response_timeout_secs: 10,
            max_reconnect_delay_secs: 30,
        }
    }
}

impl XmppSection {
    /// Refuses a message longer than `max_message_bytes`, with words the Matrix sender can act on.
    pub(crate) fn check_message_size(&self, body: &str) -> lattice_bridge_core::connector::ConnectorResult<()> {
        if body.len() > self.max_message_bytes {
            return Err(lattice_bridge_core::ConnectorError::permanent(format!(
                "the message is {} bytes long; XMPP accepts at most {} bytes here (bridge.max_message_bytes)",
                body.len(),
                self.max_message_bytes
            )));
        }
        Ok(())
    }
}

impl Validate for XmppSection {
    fn validate(&self, errors: &mut Vec<FieldError>) {
        let domain = &self.component.domain;
        if domain.is_empty() || domain.contains(['@', '/', ' ']) {
            errors.push(FieldError::new("component.domain", "must be a bare domain such as bridge.example.org"));
        }
        let port = self.component.server.rsplit_once(':').and_then(|(_, port)| port.parse::<u16>().ok());
        if !matches!(port, Some(1..)) {
            errors.push(FieldError::new("component.server", "must be host:port, e.g. 127.0.0.1:5347"));
        }
        for (field, value) in [
            ("component.ping_interval_secs", self.component.ping_interval_secs),
            ("component.response_timeout_secs", self.component.response_timeout_secs),
            ("component.max_reconnect_delay_secs", self.component.max_reconnect_delay_secs),
            ("media.max_download_bytes", self.media.max_download_bytes),
            ("media.download_timeout_secs", self.media.download_timeout_secs),
            ("muc.self_ping_interval_secs", self.muc.self_ping_interval_secs),
        ] {
            if value == 0 {
                errors.push(FieldError::new(field, "must be at least 1"));
            }
        }
        let nick = self.muc.listener_nick.trim();
        if nick.is_empty() || nick.chars().any(char::is_control) {
            errors.push(FieldError::new("muc.listener_nick", "must be a non-empty nick without control characters"));
        }
        if self.max_message_bytes < 64 {
            errors.push(FieldError::new("max_message_bytes", "must be at least 64 bytes"));
        }
        validate_id_template("user_template", &self.user_template, &["{jid}"], errors);
        validate_id_template("alias_template", &self.alias_template, &["{room}"], errors);
    }
}

impl BridgeSection for XmppSection {
    const PROTOCOL: &'static str = "xmpp";

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
        let config: Config<XmppSection> = Config::from_yaml_str(sample, "config.sample.yaml").unwrap();
        assert_eq!(config.bridge.component.domain, "bridge.localhost");
        assert_eq!(config.appservice.bot.localpart, "xmppbot");
    }

    #[test]
    fn invalid_sections_name_the_field() {
        let section = XmppSection {
            component: ComponentConfig { domain: "a@b".into(), server: "nohost".into(), ..ComponentConfig::default() },
            alias_template: "#x_{jid}:example.org".into(),
            ..XmppSection::default()
        };
        let mut errors = Vec::new();
        section.validate(&mut errors);
        let fields: Vec<&str> = errors.iter().map(|error| error.field.as_str()).collect();
        assert_eq!(fields, ["component.domain", "component.server", "alias_template", "alias_template"]);
    }
}
