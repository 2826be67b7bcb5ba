//! `logging:` — what is logged and how it looks.

use serde::{Deserialize, Serialize};

use crate::validate::{FieldError, Validate};

/// Log output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// A `tracing_subscriber::EnvFilter` directive list such as `info` or
    /// `warn,lattice_bridge_irc=debug` (default `info`).
    pub filter: String,
    /// Output format (default `pretty`).
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, for a terminal.
    #[default]
    Pretty,
    /// One JSON object per line, for a log collector.
    Json,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self { filter: "info".to_owned(), format: LogFormat::default() }
    }
}

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
const EXPECTED: &str = "expected comma-separated `level` or `target=level` directives, \
                        with level one of trace, debug, info, warn, error, off";

impl Validate for LoggingConfig {
    fn validate(&self, errors: &mut Vec<FieldError>) {
        if let Some(problem) = check_filter(&self.filter) {
            errors.push(FieldError::new("filter", format!("{problem} ({EXPECTED})")));
        }
    }
}

/// A light check of `EnvFilter` syntax: `[target][span selector][=level]` directives.
///
/// Span selectors (`target[span{field=value}]`) are accepted without looking inside them.
fn check_filter(filter: &str) -> Option<String> {
    if filter.trim().is_empty() {
        return Some("must not be empty".to_owned());
    }
    filter.split(',').map(str::trim).filter(|directive| !directive.is_empty()).find_map(check_directive)
}

fn check_directive(directive: &str) -> Option<String> {
    let (selector, level) = match directive.find('[') {
        Some(open) => {
            let Some(close) = directive.rfind(']').filter(|&close| close > open) else {
                return Some(format!("`{directive}` has an unclosed `[`"));
            };
            let after = &directive[close + 1..];
            let level = match after.strip_prefix('=') {
                Some(level) => Some(level),
                None if after.is_empty() => None,
                None => return Some(format!("`{directive}` has `{after}` after `]`")),
            };
            (&directive[..open], level)
        }
        None => match directive.split_once('=') {
            Some((target, level)) => {
                if target.is_empty() {
                    return Some(format!("`{directive}` has no target before `=`"));
                }
                (target, Some(level))
            }
            None => (directive, None),
        },
    };
    if let Some(level) = level.filter(|level| !is_level(level)) {
        return Some(format!("`{level}` in `{directive}` is not a level"));
    }
    if let Some(bad) = selector.chars().find(|&c| c.is_whitespace() || "={}]".contains(c)) {
        return Some(format!("target `{selector}` contains {bad:?}"));
    }
    None
}

fn is_level(level: &str) -> bool {
    LEVELS.iter().any(|known| known.eq_ignore_ascii_case(level))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        let cases = [
            ("info", None),
            ("WARN", None),
            ("off", None),
            ("warn,lattice_bridge_irc=debug", None),
            ("info, hyper=warn ,sqlx::query=off", None),
            ("lattice_bridge_core", None),
            ("my-crate::module=trace", None),
            ("info,", None),
            ("lattice[portal{room=!a:b}]=debug", None),
            ("[request]", None),
            ("", Some("must not be empty")),
            ("   ", Some("must not be empty")),
            ("verbose=1", Some("`1` in `verbose=1` is not a level")),
            ("lattice=loud", Some("`loud` in `lattice=loud` is not a level")),
            ("=info", Some("has no target")),
            ("info,a=b=c", Some("`b=c` in `a=b=c` is not a level")),
            ("two words", Some("target `two words` contains ' '")),
            ("x[unclosed=info", Some("unclosed `[`")),
            ("x[span]junk", Some("has `junk` after `]`")),
            ("x[span]=loud", Some("`loud`")),
        ];
        for (filter, expected) in cases {
            let problem = check_filter(filter);
            match expected {
                None => assert_eq!(problem, None, "{filter:?}"),
                Some(needle) => {
                    let problem = problem.expect(filter);
                    assert!(problem.contains(needle), "{filter:?}: {problem}");
                }
            }
        }
    }

    #[test]
    fn validation_message_says_what_is_expected() {
        let config = LoggingConfig { filter: "x=y".into(), format: LogFormat::Json };
        let mut errors = Vec::new();
        config.validate(&mut errors);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "filter");
        assert!(errors[0].message.contains("level one of trace, debug"), "{}", errors[0]);
    }

    #[test]
    fn formats_parse_lowercase() {
        let cases = [("pretty", Some(LogFormat::Pretty)), ("json", Some(LogFormat::Json)), ("xml", None)];
        for (text, expected) in cases {
            assert_eq!(serde_yaml::from_str::<LogFormat>(text).ok(), expected, "{text}");
        }
    }
}
