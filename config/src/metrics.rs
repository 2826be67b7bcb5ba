//! `metrics:` — the Prometheus endpoint.

use serde::{Deserialize, Serialize};

/// Prometheus metrics, served at `/metrics` on the appservice listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Whether `/metrics` is served (default `true`).
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}
