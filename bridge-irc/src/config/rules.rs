//! The settings of Libera.Chat's rules, one type per rule: plumbing approval ([`crate::plumbing`]), the privacy
//! rule ([`crate::privacy`]), spam limits ([`crate::spam`]) and the provisioning API ([`crate::provisioning`]).
//! They live with the rest of the config, which every module reads and which reads no module, so the rules'
//! modules depend on the config and never the other way round.

use lattice_config::{FieldError, Secret, Validate};
use serde::{Deserialize, Serialize};

/// How linking existing rooms to channels is approved on one network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlumbingConfig {
    /// A channel operator must approve each link (Libera.Chat requires it). Off, an admin's `link` is immediate.
    pub require_approval: bool,
    /// Seconds the operator has to answer.
    pub approval_timeout_secs: u64,
    /// Half-operators (`+h`) may approve too, not only operators (`+o` and above).
    pub halfops_may_approve: bool,
}

impl Default for PlumbingConfig {
    fn default() -> Self {
        Self { require_approval: true, approval_timeout_secs: 300, halfops_may_approve: false }
    }
}

/// What happens to a Matrix user in a portal whose IRC connection failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrivacyMode {
    /// Kicked from the portal with the reason; rejoining tries the connection again.
    #[default]
    Kick,
    /// Banned from the portal with the reason until their connection registers, then unbanned.
    BlockMessages,
    /// Left in the room (the network does not ask for the rule).
    Off,
}

/// Per-network spam limits on what Matrix users send to IRC. Zero turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpamConfig {
    /// Messages a Matrix user may send to this network per minute, on average (0: no limit).
    pub messages_per_minute: f64,
    /// Messages a Matrix user may send back to back before the rate applies.
    pub burst: u32,
    /// Lines one Matrix message may have (0: no limit). Longer ones are held back rather than pasted or linked.
    pub max_lines_per_message: usize,
}

impl Default for SpamConfig {
    fn default() -> Self {
        Self { messages_per_minute: 0.0, burst: 5, max_lines_per_message: 0 }
    }
}

/// The provisioning API's settings (`bridge.provisioning`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ProvisioningConfig {
    /// Serve the API.
    pub enabled: bool,
    /// The bearer token callers present; a value, `{ env: VAR }` or `{ file: path }`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_secret: Option<Secret>,
    /// The most channel portals the API may create over all networks (0: no limit).
    pub max_links: usize,
}

impl Validate for ProvisioningConfig {
    fn validate(&self, errors: &mut Vec<FieldError>) {
        if self.enabled && self.shared_secret.is_none() {
            errors.push(FieldError::new("provisioning.shared_secret", "must be set when provisioning is enabled"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enabling_the_api_without_a_secret_is_a_config_error() {
        let mut errors = Vec::new();
        ProvisioningConfig { enabled: true, ..ProvisioningConfig::default() }.validate(&mut errors);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "provisioning.shared_secret");
    }
}
