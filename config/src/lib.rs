//! Typed YAML configuration shared by the Lattice bridges.
//!
//! Each bridge loads a [`Config<B>`]: the common sections (homeserver, appservice, database,
//! encryption, logging, metrics, permissions) plus its own `bridge:` section `B`. Loading reads
//! the file, deserializes it strictly (unknown fields are errors), resolves relative paths
//! against the file's directory, and runs [`Validate`] over every section, so that an operator
//! sees every problem at once, each as `file:line:column: field: what is wrong (expected …)`.
//!
//! ```
//! use lattice_config::{Config, LogFormat, PermissionLevel, Permissions};
//!
//! let yaml = "
//! homeserver:
//!   url: https://matrix.example.org
//!   server_name: example.org
//! appservice:
//!   id: lattice-irc
//!   port: 29330
//!   bot:
//!     localpart: ircbot
//! permissions:
//!   admins: ['@alice:example.org']
//! ";
//! let config = Config::<()>::from_yaml_str(yaml, "/etc/lattice/config.yaml")?;
//! assert_eq!(config.appservice.public_url().as_str(), "http://127.0.0.1:29330/");
//! assert_eq!(config.appservice.registration.to_str(), Some("/etc/lattice/registration.yaml"));
//! assert_eq!(config.logging.format, LogFormat::Pretty);
//! let permissions = Permissions::new(&config.permissions)?;
//! assert_eq!(permissions.level("@alice:example.org"), PermissionLevel::Admin);
//! assert_eq!(permissions.level("@bob:elsewhere.org"), PermissionLevel::User);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs, unreachable_pub)]

mod appservice;
mod database;
mod de;
mod encryption;
mod error;
mod homeserver;
mod load;
mod locate;
mod logging;
mod metrics;
mod paths;
mod permissions;
mod secret;
mod validate;

use serde::{Deserialize, Serialize};

pub use crate::{
    appservice::{AppserviceConfig, BotConfig, ListenerLimitsConfig},
    database::DatabaseConfig,
    encryption::EncryptionConfig,
    error::{ConfigError, LocatedFieldError, Location, Result},
    homeserver::HomeserverConfig,
    logging::{LogFormat, LoggingConfig},
    metrics::MetricsConfig,
    permissions::{PermissionLevel, Permissions, PermissionsConfig},
    secret::{Secret, SecretError},
    validate::{FieldError, Validate, validate_prefixed},
};

/// A bridge's whole configuration file; `B` is the bridge's own `bridge:` section.
///
/// Only `homeserver` and `appservice` are required; the other sections, and `bridge` (hence
/// `B: Default`), may be left out to get their defaults.
///
/// # Relative paths
///
/// When loaded with [`Config::load`] or [`Config::from_yaml_str`], relative paths are made
/// absolute against the directory of the configuration file (not the working directory):
/// `appservice.registration`, `encryption.key_file`, a `{ file: … }` [`Secret`] in
/// `database.url`, and the file of a `sqlite://relative.db` or `sqlite:relative.db` URL written
/// in `database.url`. `sqlite::memory:` is left alone, as is a URL that comes from `env` or
/// `file`. A bridge resolves the paths of its own section itself (see
/// [`Secret::resolve_relative_to`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config<B> {
    /// The homeserver.
    pub homeserver: HomeserverConfig,
    /// The application-service listener and bot.
    pub appservice: AppserviceConfig,
    /// The database.
    #[serde(default)]
    pub database: DatabaseConfig,
    /// Encryption of stored credentials.
    #[serde(default)]
    pub encryption: EncryptionConfig,
    /// Logging.
    #[serde(default)]
    pub logging: LoggingConfig,
    /// Prometheus metrics.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Who may use and administer the bridge.
    #[serde(default)]
    pub permissions: PermissionsConfig,
    /// The bridge's own section.
    #[serde(default)]
    pub bridge: B,
}

impl<B: Validate> Validate for Config<B> {
    fn validate(&self, errors: &mut Vec<FieldError>) {
        validate_prefixed("homeserver", &self.homeserver, errors);
        validate_prefixed("appservice", &self.appservice, errors);
        validate_prefixed("database", &self.database, errors);
        validate_prefixed("encryption", &self.encryption, errors);
        validate_prefixed("logging", &self.logging, errors);
        validate_prefixed("permissions", &self.permissions, errors);
        validate_prefixed("bridge", &self.bridge, errors);
    }
}
