//! Secrets that may be written inline, taken from an environment variable, or read from a file.

use std::{
    fmt, io,
    path::{Path, PathBuf},
};

use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{self, MapAccess, Visitor},
    ser::SerializeMap,
};

/// A secret configuration value (a password, a database URL with credentials, a token).
///
/// In YAML it is one of
///
/// ```yaml
/// url: postgres://lattice:hunter2@db/lattice   # the value itself
/// url: { env: LATTICE_DATABASE_URL }           # an environment variable
/// url: { file: /run/secrets/database_url }     # a file's contents, trailing newlines trimmed
/// ```
///
/// A relative `file` is resolved against the configuration file's directory when the
/// configuration is loaded. Nothing is read until [`Secret::resolve`]. `Debug` never shows the
/// value, only where it comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// The value, written in the configuration file.
    Value(String),
    /// The name of the environment variable that holds the value.
    Env(String),
    /// The file whose contents are the value.
    File(PathBuf),
}

/// A [`Secret`] could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The environment variable is not set.
    #[error("environment variable `{name}` is not set (expected it to hold the secret)")]
    EnvMissing {
        /// The variable's name.
        name: String,
    },
    /// The environment variable is set but not valid UTF-8.
    #[error("environment variable `{name}` is not valid UTF-8 (expected a text value)")]
    EnvNotUnicode {
        /// The variable's name.
        name: String,
    },
    /// The file could not be read as UTF-8 text.
    #[error("cannot read secret file {}: {source} (expected a readable text file)", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        #[source]
        source: io::Error,
    },
}

impl Secret {
    /// Returns the secret's value, reading the environment variable or file it names.
    pub fn resolve(&self) -> Result<String, SecretError> {
        match self {
            Self::Value(value) => Ok(value.clone()),
            Self::Env(name) => std::env::var(name).map_err(|err| match err {
                std::env::VarError::NotPresent => SecretError::EnvMissing { name: name.clone() },
                std::env::VarError::NotUnicode(_) => SecretError::EnvNotUnicode { name: name.clone() },
            }),
            Self::File(path) => std::fs::read_to_string(path)
                .map(|text| text.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|source| SecretError::File { path: path.clone(), source }),
        }
    }

    /// Makes a relative `file` path relative to `base_dir` instead; other secrets are unchanged.
    ///
    /// [`Config::from_yaml_str`](crate::Config::from_yaml_str) does this for the sections it
    /// knows; a bridge calls it for the secrets in its own section.
    pub fn resolve_relative_to(&mut self, base_dir: &Path) {
        if let Self::File(path) = self {
            *path = crate::paths::resolve(base_dir, path);
        }
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::Value(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::Value(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(_) => f.write_str("Secret(<redacted>)"),
            Self::Env(name) => f.debug_struct("Secret").field("env", name).finish(),
            Self::File(path) => f.debug_struct("Secret").field("file", path).finish(),
        }
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Value(value) => serializer.serialize_str(value),
            Self::Env(name) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("env", name)?;
                map.end()
            }
            Self::File(path) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("file", path)?;
                map.end()
            }
        }
    }
}

const EXPECTED: &str = "a string, `{ env: VARIABLE }` or `{ file: PATH }`";

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SecretVisitor)
    }
}

struct SecretVisitor;

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECTED)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Secret, E> {
        Ok(Secret::Value(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Secret, E> {
        Ok(Secret::Value(value))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Secret, A::Error> {
        let secret = match map.next_key::<String>()?.as_deref() {
            Some("env") => Secret::Env(map.next_value()?),
            Some("file") => Secret::File(map.next_value()?),
            Some(other) => {
                return Err(de::Error::custom(format!("unknown secret source `{other}` (expected {EXPECTED})")));
            }
            None => {
                return Err(de::Error::custom(format!("empty mapping (expected {EXPECTED})")));
            }
        };
        if map.next_key::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::custom(format!("more than one secret source (expected {EXPECTED})")));
        }
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn deserializes_each_form() {
        let cases = [
            ("hunter2", Secret::Value("hunter2".into())),
            ("'123'", Secret::Value("123".into())),
            ("{ env: DB_URL }", Secret::Env("DB_URL".into())),
            ("file: /run/secrets/db", Secret::File("/run/secrets/db".into())),
            ("{ file: relative/db }", Secret::File("relative/db".into())),
        ];
        for (yaml, expected) in cases {
            let secret: Secret = serde_yaml::from_str(yaml).expect(yaml);
            assert_eq!(secret, expected, "{yaml}");
            let back = serde_yaml::to_string(&secret).expect("serializes");
            let again: Secret = serde_yaml::from_str(&back).expect(&back);
            assert_eq!(again, expected, "round trip of {yaml} via {back}");
        }
    }

    #[test]
    fn rejects_other_shapes() {
        let cases = [
            ("{ vault: x }", "unknown secret source `vault`"),
            ("{ env: A, file: B }", "more than one secret source"),
            ("{}", "empty mapping"),
            ("[a]", "expected a string, `{ env: VARIABLE }`"),
            ("1234", "expected a string, `{ env: VARIABLE }`"),
            ("{ env: [x] }", "invalid type"),
        ];
        for (yaml, needle) in cases {
            let err = serde_yaml::from_str::<Secret>(yaml).expect_err(yaml).to_string();
            assert!(err.contains(needle), "{yaml}: {err}");
        }
    }

    #[test]
    fn debug_hides_the_value() {
        let cases = [
            (Secret::Value("hunter2".into()), "Secret(<redacted>)"),
            (Secret::Env("DB".into()), "Secret { env: \"DB\" }"),
            (Secret::File("/s".into()), "Secret { file: \"/s\" }"),
        ];
        for (secret, expected) in cases {
            assert_eq!(format!("{secret:?}"), expected);
        }
    }

    #[test]
    fn resolves_value_env_and_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("secret");
        fs::write(&file, "from-file\r\n\n").expect("write");
        let path = std::env::var("PATH").expect("PATH is set for tests");
        let cases = [
            (Secret::Value("inline".into()), "inline".to_owned()),
            (Secret::Env("PATH".into()), path),
            (Secret::File(file), "from-file".to_owned()),
        ];
        for (secret, expected) in cases {
            assert_eq!(secret.resolve().expect("resolves"), expected, "{secret:?}");
        }
    }

    #[test]
    fn resolve_errors_name_the_source() {
        let missing_var = "LATTICE_TEST_VARIABLE_THAT_IS_NEVER_SET";
        assert!(std::env::var_os(missing_var).is_none());
        let err = Secret::Env(missing_var.into()).resolve().expect_err("unset");
        assert!(matches!(&err, SecretError::EnvMissing { name } if name == missing_var));
        assert!(err.to_string().contains(missing_var), "{err}");

        let dir = tempfile::tempdir().expect("tempdir");
        let missing_file = dir.path().join("nope");
        let err = Secret::File(missing_file.clone()).resolve().expect_err("no file");
        assert!(matches!(&err, SecretError::File { path, .. } if path == &missing_file));
        assert!(err.to_string().contains(&missing_file.display().to_string()), "{err}");
    }

    #[test]
    fn only_relative_files_move() {
        let base = Path::new("/etc/lattice");
        let cases = [
            (Secret::File("db".into()), Secret::File("/etc/lattice/db".into())),
            (Secret::File("/abs/db".into()), Secret::File("/abs/db".into())),
            (Secret::Env("db".into()), Secret::Env("db".into())),
            (Secret::Value("db".into()), Secret::Value("db".into())),
        ];
        for (mut secret, expected) in cases {
            secret.resolve_relative_to(base);
            assert_eq!(secret, expected);
        }
    }
}
