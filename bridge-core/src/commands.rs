//! The bridge bot's command framework: built-in commands plus those a connector registers, typed in a user's admin
//! room (the DM with the bot) as-is, or in a portal after the connector's prefix (`!irc nick alice`).

use lattice_config::PermissionLevel;

use crate::connector::{CommandSpec, ConnectorInfo};

/// Commands every bridge has.
pub(crate) const BUILT_IN: &[CommandSpec] = &[
    CommandSpec {
        name: "help",
        usage: "[command]",
        summary: "List the commands, or explain one",
        level: PermissionLevel::User,
    },
    CommandSpec {
        name: "version",
        usage: "",
        summary: "Show the bridge's name and version",
        level: PermissionLevel::User,
    },
    CommandSpec { name: "portals", usage: "", summary: "List every bridged room", level: PermissionLevel::Admin },
];

/// Why a command line could not be split into words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SplitError {
    /// A quote was opened and never closed.
    #[error("unterminated {0} quote")]
    UnterminatedQuote(char),
}

/// Splits a command line into words, shell-style: whitespace separates, `"…"` and `'…'` group, `\` escapes the next
/// character outside single quotes.
pub fn split_words(line: &str) -> Result<Vec<String>, SplitError> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(character) = chars.next() {
        match (quote, character) {
            (Some(open), c) if c == open => quote = None,
            (Some('"') | None, '\\') => {
                if let Some(escaped) = chars.next() {
                    current.push(escaped);
                }
                in_word = true;
            }
            (Some(_), c) => current.push(c),
            (None, '"' | '\'') => {
                quote = Some(character);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            (None, c) => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if let Some(open) = quote {
        return Err(SplitError::UnterminatedQuote(open));
    }
    if in_word {
        words.push(current);
    }
    Ok(words)
}

/// The `help` text for someone at `level`: every command they may run, or the one they asked about.
pub(crate) fn help(
    info: &ConnectorInfo,
    commands: &[CommandSpec],
    level: PermissionLevel,
    topic: Option<&str>,
) -> String {
    let visible = commands.iter().filter(|command| command.level <= level);
    if let Some(topic) = topic {
        return match visible.clone().find(|command| command.name == topic) {
            Some(command) => format!("{} {} — {}", command.name, command.usage, command.summary).replace("  ", " "),
            None => format!("Unknown command `{topic}`. Send `help` for the list."),
        };
    }
    let mut text = format!(
        "Lattice {} bridge commands (in this room as-is; in a bridged room after `{}`):\n",
        info.protocol_name, info.command_prefix
    );
    for command in visible {
        let synopsis = if command.usage.is_empty() {
            command.name.to_owned()
        } else {
            format!("{} {}", command.name, command.usage)
        };
        text.push_str(&format!("• {synopsis} — {}\n", command.summary));
    }
    text.trim_end().to_owned()
}

/// Where a message is a command, the command line without the prefix.
pub(crate) fn command_line<'a>(body: &'a str, prefix: &str, in_admin_room: bool) -> Option<&'a str> {
    let body = body.trim();
    if in_admin_room {
        return Some(body.strip_prefix(prefix).map_or(body, str::trim_start)).filter(|line| !line.is_empty());
    }
    let rest = body.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with(char::is_whitespace))
        .then(|| rest.trim_start())
        .filter(|line| !line.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_like_a_shell() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("help", &["help"]),
            ("  nick   alice ", &["nick", "alice"]),
            (r#"cmd "PRIVMSG x :hello there""#, &["cmd", "PRIVMSG x :hello there"]),
            ("say 'it''s'", &["say", "its"]),
            (r#"say "a \"quoted\" word""#, &["say", r#"a "quoted" word"#]),
            (r"a\ b c", &["a b", "c"]),
            (r#"empty """#, &["empty", ""]),
        ];
        for (line, expected) in cases {
            assert_eq!(split_words(line).unwrap(), *expected, "{line:?}");
        }
        assert_eq!(split_words("say \"oops"), Err(SplitError::UnterminatedQuote('"')));
    }

    #[test]
    fn command_lines_need_the_prefix_outside_admin_rooms() {
        let cases = [
            ("help", true, Some("help")),
            ("!irc help", true, Some("help")),
            ("help", false, None),
            ("!irc nick bob", false, Some("nick bob")),
            ("!ircx nick", false, None),
            ("!irc", false, None),
            ("   ", true, None),
        ];
        for (body, admin, expected) in cases {
            assert_eq!(command_line(body, "!irc", admin), expected, "{body:?} admin={admin}");
        }
    }

    #[test]
    fn help_lists_only_what_the_level_allows() {
        let info = ConnectorInfo { protocol_id: "irc", protocol_name: "IRC", command_prefix: "!irc" };
        let user = help(&info, BUILT_IN, PermissionLevel::User, None);
        assert!(user.contains("• help [command]") && user.contains("• version"), "{user}");
        assert!(!user.contains("portals"), "{user}");
        let admin = help(&info, BUILT_IN, PermissionLevel::Admin, None);
        assert!(admin.contains("• portals — List every bridged room"), "{admin}");
        assert_eq!(
            help(&info, BUILT_IN, PermissionLevel::User, Some("version")),
            "version — Show the bridge's name and version"
        );
        assert!(help(&info, BUILT_IN, PermissionLevel::User, Some("portals")).starts_with("Unknown command"));
    }
}
