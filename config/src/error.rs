//! Errors raised while loading a configuration file, each located in the file.

use std::{fmt, io, path::PathBuf};

/// A 1-based line and column in the configuration file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A validation error together with where its field is written in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocatedFieldError {
    /// Where the field (or, when it is absent, its nearest written parent) is, if found.
    pub location: Option<Location>,
    /// Dotted path of the field, e.g. `appservice.port`.
    pub field: String,
    /// What is wrong and what is expected.
    pub message: String,
}

/// The configuration file could not be read, parsed or validated.
///
/// `Display` gives operator-ready lines that start with `file:line:column:`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the configuration file: {source}", path.display())]
    Io {
        /// The configuration file.
        path: PathBuf,
        /// The operating-system error.
        #[source]
        source: io::Error,
    },

    /// The file is not valid YAML or does not have the expected shape (unknown or missing field,
    /// wrong type, malformed value).
    #[error("{}", located_line(path, *location, field, message))]
    Parse {
        /// The configuration file.
        path: PathBuf,
        /// Where the parser stopped, if known.
        location: Option<Location>,
        /// Dotted path of the field being read; empty at the top level.
        field: String,
        /// What is wrong and, where known, what is expected.
        message: String,
    },

    /// The file parsed, but some values are unusable; every problem is listed.
    #[error("{}", invalid_lines(path, errors))]
    Invalid {
        /// The configuration file.
        path: PathBuf,
        /// Every problem found, in the order the sections are declared.
        errors: Vec<LocatedFieldError>,
    },
}

/// `Result` with this crate's [`ConfigError`] as the default error type.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

fn located_line(path: &std::path::Path, location: Option<Location>, field: &str, message: &str) -> String {
    let mut line = path.display().to_string();
    if let Some(location) = location {
        line.push_str(&format!(":{location}"));
    }
    line.push_str(": ");
    if !field.is_empty() {
        line.push_str(&format!("{field}: "));
    }
    line.push_str(message);
    line
}

fn invalid_lines(path: &std::path::Path, errors: &[LocatedFieldError]) -> String {
    errors
        .iter()
        .map(|error| located_line(path, error.location, &error.field, &error.message))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn display_lines() {
        let at = |line, column| Some(Location { line, column });
        let cases = [
            (
                ConfigError::Parse {
                    path: "config.yaml".into(),
                    location: at(4, 9),
                    field: "homeserver.url".into(),
                    message: "relative URL without a base (expected an absolute http(s) URL)".into(),
                },
                "config.yaml:4:9: homeserver.url: relative URL without a base (expected an absolute http(s) URL)",
            ),
            (
                ConfigError::Parse {
                    path: "config.yaml".into(),
                    location: None,
                    field: String::new(),
                    message: "EOF".into(),
                },
                "config.yaml: EOF",
            ),
            (
                ConfigError::Invalid {
                    path: "/etc/lattice/config.yaml".into(),
                    errors: vec![
                        LocatedFieldError {
                            location: at(12, 3),
                            field: "appservice.port".into(),
                            message: "must not be 0 (expected a TCP port 1-65535)".into(),
                        },
                        LocatedFieldError { location: None, field: "bridge".into(), message: "m".into() },
                    ],
                },
                "/etc/lattice/config.yaml:12:3: appservice.port: must not be 0 (expected a TCP port 1-65535)\n\
                 /etc/lattice/config.yaml: bridge: m",
            ),
            (
                ConfigError::Io { path: "config.yaml".into(), source: io::Error::new(io::ErrorKind::NotFound, "gone") },
                "config.yaml: cannot read the configuration file: gone",
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(error.to_string(), expected);
        }
        assert_eq!(located_line(Path::new("c"), None, "f", "m"), "c: f: m");
    }
}
