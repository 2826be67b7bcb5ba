//! The [`Validate`] trait, its [`FieldError`], and checks shared by several sections.

use std::{fmt, net::Ipv6Addr};

use url::Url;

/// A problem with one configuration field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field relative to the value validated, e.g. `appservice.port` or
    /// `networks.libera.servers[0].host`.
    pub field: String,
    /// What is wrong and what is expected, e.g. `must not be 0 (expected a TCP port 1-65535)`.
    pub message: String,
}

impl FieldError {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// A configuration value that can check itself after parsing.
///
/// Implementations push one [`FieldError`] per problem (they do not stop at the first) with the
/// field path relative to `self`; callers nest them with [`validate_prefixed`].
pub trait Validate {
    /// Appends every problem found in `self` to `errors`.
    fn validate(&self, errors: &mut Vec<FieldError>);
}

/// A bridge without its own section.
impl Validate for () {
    fn validate(&self, _errors: &mut Vec<FieldError>) {}
}

/// Validates `value` and puts `prefix` in front of the field of each error it reports.
///
/// `validate_prefixed("bridge", &section, errors)` turns `networks[0].host` into
/// `bridge.networks[0].host`; an error on the value itself (empty field) becomes `bridge`.
pub fn validate_prefixed<V: Validate + ?Sized>(prefix: &str, value: &V, errors: &mut Vec<FieldError>) {
    let start = errors.len();
    value.validate(errors);
    for error in &mut errors[start..] {
        error.field = join_field(prefix, &error.field);
    }
}

/// Joins a parent path and a child path: `a` + `b` → `a.b`, `a` + `[0]` → `a[0]`.
fn join_field(prefix: &str, field: &str) -> String {
    match (prefix.is_empty(), field.is_empty()) {
        (true, _) => field.to_owned(),
        (false, true) => prefix.to_owned(),
        (false, false) if field.starts_with('[') => format!("{prefix}{field}"),
        (false, false) => format!("{prefix}.{field}"),
    }
}

/// Checks that `url` is an `http` or `https` URL (the url crate requires a host for those).
pub(crate) fn check_http_url(field: &str, url: &Url, errors: &mut Vec<FieldError>) {
    if !matches!(url.scheme(), "http" | "https") {
        errors.push(FieldError::new(
            field,
            format!("scheme `{}` is not supported (expected an http:// or https:// URL)", url.scheme()),
        ));
    }
}

/// Checks a Matrix user-ID localpart: non-empty, only `a-z 0-9 . _ = - / +`.
pub(crate) fn check_localpart(field: &str, localpart: &str, errors: &mut Vec<FieldError>) {
    let expected = "(expected a Matrix localpart of a-z, 0-9 and `._=-/+`, such as `ircbot`)";
    if localpart.is_empty() {
        errors.push(FieldError::new(field, format!("must not be empty {expected}")));
    } else if let Some(bad) = localpart.chars().find(|&c| !is_localpart_char(c)) {
        errors.push(FieldError::new(field, format!("contains {bad:?} {expected}")));
    }
}

fn is_localpart_char(c: char) -> bool {
    matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/' | '+')
}

/// Whether `name` is a Matrix server name: a DNS name, IPv4 address or `[IPv6]` literal,
/// optionally followed by `:port` ([spec](https://spec.matrix.org/latest/appendices/#server-name)).
pub(crate) fn is_server_name(name: &str) -> bool {
    let (host_ok, port) = if let Some(rest) = name.strip_prefix('[') {
        let Some((ipv6, after)) = rest.split_once(']') else { return false };
        let port = match (after.is_empty(), after.strip_prefix(':')) {
            (true, _) => None,
            (false, Some(port)) => Some(port),
            (false, None) => return false,
        };
        (ipv6.parse::<Ipv6Addr>().is_ok(), port)
    } else {
        let (host, port) = match name.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (name, None),
        };
        let dns_ok = (1..=255).contains(&host.len())
            && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'));
        (dns_ok, port)
    };
    let port_ok = port.is_none_or(|port| {
        (1..=5).contains(&port.len())
            && port.chars().all(|c| c.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| p <= 65535)
    });
    host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nested;

    impl Validate for Nested {
        fn validate(&self, errors: &mut Vec<FieldError>) {
            errors.push(FieldError::new("host", "bad host"));
            errors.push(FieldError::new("[2]", "bad item"));
            errors.push(FieldError::new("", "bad section"));
        }
    }

    #[test]
    fn prefixes_only_new_errors() {
        let mut errors = vec![FieldError::new("earlier", "kept as is")];
        validate_prefixed("bridge.networks", &Nested, &mut errors);
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["earlier", "bridge.networks.host", "bridge.networks[2]", "bridge.networks"]);
    }

    #[test]
    fn unit_has_nothing_to_report() {
        let mut errors = Vec::new();
        validate_prefixed("bridge", &(), &mut errors);
        assert_eq!(errors, []);
    }

    #[test]
    fn join_fields() {
        let cases =
            [("", "a", "a"), ("a", "", "a"), ("a", "b", "a.b"), ("a", "[0]", "a[0]"), ("a.b[1]", "c", "a.b[1].c")];
        for (prefix, field, expected) in cases {
            assert_eq!(join_field(prefix, field), expected);
        }
    }

    #[test]
    fn http_urls() {
        let cases = [
            ("https://matrix.example.org", None),
            ("http://127.0.0.1:8008/", None),
            ("ftp://example.org", Some("scheme `ftp`")),
            ("unix:/run/synapse.sock", Some("scheme `unix`")),
        ];
        for (url, expected) in cases {
            let mut errors = Vec::new();
            check_http_url("u", &Url::parse(url).expect("parses"), &mut errors);
            match expected {
                None => assert_eq!(errors, [], "{url}"),
                Some(needle) => {
                    assert_eq!(errors.len(), 1, "{url}");
                    assert!(errors[0].message.contains(needle), "{url}: {}", errors[0]);
                    assert!(errors[0].message.contains("expected"), "{url}");
                }
            }
        }
    }

    #[test]
    fn localparts() {
        let cases = [
            ("ircbot", None),
            ("a.b_c=d-e/f+g9", None),
            ("", Some("must not be empty")),
            ("IrcBot", Some("'I'")),
            ("bot:x", Some("':'")),
        ];
        for (localpart, expected) in cases {
            let mut errors = Vec::new();
            check_localpart("bot.localpart", localpart, &mut errors);
            match expected {
                None => assert_eq!(errors, [], "{localpart}"),
                Some(needle) => {
                    assert_eq!(errors.len(), 1, "{localpart}");
                    assert!(errors[0].message.contains(needle), "{}", errors[0]);
                }
            }
        }
    }

    #[test]
    fn server_names() {
        let cases = [
            ("example.org", true),
            ("matrix.example.org:8448", true),
            ("localhost", true),
            ("1.2.3.4", true),
            ("1.2.3.4:80", true),
            ("[::1]", true),
            ("[2001:db8::1]:8448", true),
            ("", false),
            (":8448", false),
            ("example.org:", false),
            ("example.org:65536", false),
            ("example.org:123456", false),
            ("example.org:http", false),
            ("exa mple.org", false),
            ("example.org/path", false),
            ("[::1", false),
            ("[not-ipv6]", false),
            ("[::1]8448", false),
            ("@alice:example.org", false),
        ];
        for (name, expected) in cases {
            assert_eq!(is_server_name(name), expected, "{name:?}");
        }
    }
}
