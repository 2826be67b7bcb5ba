//! `encryption:` — the key that encrypts stored remote-network credentials at rest.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::validate::{FieldError, Validate};

/// Encryption at rest of the credentials the bridge stores (IRC passwords, XMPP logins).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncryptionConfig {
    /// The key file (default `lattice.key`, next to the configuration file).
    pub key_file: PathBuf,
}

impl Default for EncryptionConfig {
    fn default() -> Self {
        Self { key_file: PathBuf::from("lattice.key") }
    }
}

impl EncryptionConfig {
    pub(crate) fn resolve_paths(&mut self, base_dir: &Path) {
        self.key_file = crate::paths::resolve(base_dir, &self.key_file);
    }
}

impl Validate for EncryptionConfig {
    fn validate(&self, errors: &mut Vec<FieldError>) {
        if self.key_file.as_os_str().is_empty() {
            errors.push(FieldError::new("key_file", "must not be empty (expected a file path such as lattice.key)"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_and_paths() {
        let base = Path::new("/etc/lattice");
        // (key_file, resolved, error field)
        let cases = [
            ("lattice.key", "/etc/lattice/lattice.key", None),
            ("/secure/lattice.key", "/secure/lattice.key", None),
            ("", "", Some("key_file")),
        ];
        for (key_file, resolved, error) in cases {
            let mut config = EncryptionConfig { key_file: key_file.into() };
            config.resolve_paths(base);
            assert_eq!(config.key_file, Path::new(resolved));
            let mut errors = Vec::new();
            config.validate(&mut errors);
            let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
            assert_eq!(fields, error.into_iter().collect::<Vec<_>>(), "{key_file:?}");
        }
    }
}
