//! `database:` — where the bridge keeps its portals, puppets and message mappings.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{
    Secret,
    validate::{FieldError, Validate},
};

const EXPECTED: &str = "expected sqlite://FILE, sqlite::memory: or postgres://USER:PASSWORD@HOST/DB";

/// The database connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Connection URL: `sqlite://lattice.db` (the default), `sqlite:///abs/path.db`,
    /// `sqlite:relative.db`, `sqlite::memory:`, `postgres://…` or `postgresql://…`. Often a
    /// [`Secret`] from `env` or `file`, since a PostgreSQL URL carries a password.
    pub url: Secret,
    /// Maximum number of pooled connections (default 10).
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: Secret::Value("sqlite://lattice.db".to_owned()), max_connections: 10 }
    }
}

impl DatabaseConfig {
    /// Makes the file of a relative `sqlite:` URL written in the file relative to `base_dir`.
    ///
    /// A URL from `env` or `file` is used as it is: a relative SQLite path in it is relative to
    /// the working directory, like any other process environment value.
    pub(crate) fn resolve_paths(&mut self, base_dir: &Path) {
        self.url.resolve_relative_to(base_dir);
        if let Secret::Value(url) = &mut self.url
            && let Some(resolved) = absolute_sqlite_url(url, base_dir)
        {
            *url = resolved;
        }
    }
}

impl Validate for DatabaseConfig {
    /// Resolves `url` once to check it; the value is not kept, nor shown in any message.
    fn validate(&self, errors: &mut Vec<FieldError>) {
        match self.url.resolve() {
            Ok(url) => {
                if let Some(message) = check_url(&url) {
                    errors.push(FieldError::new("url", message));
                }
            }
            Err(err) => errors.push(FieldError::new("url", err.to_string())),
        }
        if self.max_connections == 0 {
            errors.push(FieldError::new(
                "max_connections",
                "must be at least 1 (expected the size of the connection pool, such as 10)",
            ));
        }
    }
}

/// What is wrong with a database URL, without repeating the URL (it may hold a password).
fn check_url(url: &str) -> Option<String> {
    let Some((scheme, rest)) = url.split_once(':') else {
        return Some(format!("is not a URL ({EXPECTED})"));
    };
    match scheme {
        "sqlite" => {
            let (database, _query) = sqlite_parts(rest);
            database.is_empty().then(|| format!("names no database file ({EXPECTED})"))
        }
        "postgres" | "postgresql" => {
            url::Url::parse(url).err().map(|err| format!("is not a valid URL: {err} ({EXPECTED})"))
        }
        _ if !scheme.is_empty()
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            Some(format!("database `{scheme}` is not supported ({EXPECTED})"))
        }
        _ => Some(format!("is not a URL ({EXPECTED})")),
    }
}

/// Splits what follows `sqlite:` into the database (without a leading `//`) and the query.
fn sqlite_parts(rest: &str) -> (&str, Option<&str>) {
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    match rest.split_once('?') {
        Some((database, query)) => (database, Some(query)),
        None => (rest, None),
    }
}

/// `sqlite://relative.db` or `sqlite:relative.db` → `sqlite:///base/dir/relative.db`; `None`
/// for absolute, in-memory, empty or non-SQLite URLs, and when `base_dir` is not UTF-8.
fn absolute_sqlite_url(url: &str, base_dir: &Path) -> Option<String> {
    let (database, query) = sqlite_parts(url.strip_prefix("sqlite:")?);
    if database.is_empty() || database == ":memory:" || database.starts_with('/') {
        return None;
    }
    // sqlx percent-decodes the path, so the directory must be encoded the same way.
    let mut base = String::new();
    for c in base_dir.to_str()?.trim_end_matches('/').chars() {
        match c {
            '%' => base.push_str("%25"),
            '?' => base.push_str("%3F"),
            '#' => base.push_str("%23"),
            c => base.push(c),
        }
    }
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    Some(format!("sqlite://{base}/{database}{query}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_become_absolute() {
        let base = Path::new("/etc/lattice");
        let cases = [
            ("sqlite://lattice.db", Some("sqlite:///etc/lattice/lattice.db")),
            ("sqlite:relative.db", Some("sqlite:///etc/lattice/relative.db")),
            ("sqlite://data/l.db?mode=rwc", Some("sqlite:///etc/lattice/data/l.db?mode=rwc")),
            ("sqlite:///var/lib/lattice.db", None),
            ("sqlite:/var/lib/lattice.db", None),
            ("sqlite::memory:", None),
            ("sqlite://:memory:", None),
            ("sqlite://", None),
            ("postgres://u:p@db/lattice", None),
        ];
        for (url, expected) in cases {
            assert_eq!(absolute_sqlite_url(url, base).as_deref(), expected, "{url}");
        }
        assert_eq!(
            absolute_sqlite_url("sqlite:x.db", Path::new("/odd?dir#100%")).as_deref(),
            Some("sqlite:///odd%3Fdir%23100%25/x.db"),
        );
    }

    #[test]
    fn url_checks() {
        let cases = [
            ("sqlite://lattice.db", None),
            ("sqlite:///abs/lattice.db", None),
            ("sqlite:relative.db", None),
            ("sqlite::memory:", None),
            ("postgres://lattice:secret@db:5432/lattice", None),
            ("postgresql:///lattice?host=/run/postgresql", None),
            ("sqlite://", Some("names no database file")),
            ("sqlite:?mode=rwc", Some("names no database file")),
            ("mysql://u:p@db/x", Some("database `mysql` is not supported")),
            ("lattice.db", Some("is not a URL")),
            ("p@ss word:x", Some("is not a URL")),
            ("postgres://u:p@[bad/x", Some("is not a valid URL")),
        ];
        for (url, expected) in cases {
            let message = check_url(url);
            match expected {
                None => assert_eq!(message, None, "{url}"),
                Some(needle) => {
                    let message = message.expect(url);
                    assert!(message.contains(needle), "{url}: {message}");
                    assert!(message.contains("expected sqlite://"), "{url}: {message}");
                    assert!(!message.contains(":p@"), "{url}: message leaks the password");
                }
            }
        }
    }

    #[test]
    fn validation() {
        let missing_var = "LATTICE_TEST_DATABASE_URL_NEVER_SET";
        assert!(std::env::var_os(missing_var).is_none());
        let cases = [
            (DatabaseConfig::default(), vec![]),
            (
                DatabaseConfig { max_connections: 0, ..DatabaseConfig::default() },
                vec![("max_connections", "must be at least 1")],
            ),
            (DatabaseConfig { url: Secret::Env(missing_var.into()), max_connections: 1 }, vec![("url", missing_var)]),
            (
                DatabaseConfig { url: "redis://x".into(), max_connections: 0 },
                vec![("url", "`redis`"), ("max_connections", "at least 1")],
            ),
        ];
        for (config, expected) in cases {
            let mut errors = Vec::new();
            config.validate(&mut errors);
            assert_eq!(errors.len(), expected.len(), "{config:?}: {errors:?}");
            for (error, (field, needle)) in errors.iter().zip(expected) {
                assert_eq!(error.field, field);
                assert!(error.message.contains(needle), "{error}");
                assert!(error.message.contains("expected"), "{error}");
            }
        }
    }
}
