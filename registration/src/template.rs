//! Namespace regexes built from Matrix ID templates such as `@irc_{network}_{nick}:{server_name}`.

/// The placeholder that [`template_regex`] replaces by the homeserver's name.
const SERVER_NAME: &str = "server_name";

/// Turns an ID template into an anchored namespace regex.
///
/// Literal text is escaped with [`regex::escape`], `{server_name}` becomes the escaped
/// `server_name`, and every other `{placeholder}` (ASCII letters, digits and `_` between braces)
/// becomes `.+`. A brace that does not open such a placeholder is kept as literal text. The
/// result is wrapped in `^` … `$`, so it matches whole IDs only, whichever way the homeserver
/// anchors it.
///
/// ```
/// use lattice_registration::template_regex;
///
/// assert_eq!(
///     template_regex("@irc_{network}_{nick}:{server_name}", "example.org"),
///     r"^@irc_.+_.+:example\.org$",
/// );
/// ```
pub fn template_regex(template: &str, server_name: &str) -> String {
    let mut regex = String::from("^");
    let mut literal = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after_open = &rest[open + 1..];
        let placeholder =
            after_open.find('}').map(|close| &after_open[..close]).filter(|name| is_placeholder_name(name));
        match placeholder {
            Some(name) => {
                literal.push_str(&rest[..open]);
                regex.push_str(&regex::escape(&literal));
                literal.clear();
                if name == SERVER_NAME {
                    regex.push_str(&regex::escape(server_name));
                } else {
                    regex.push_str(".+");
                }
                rest = &after_open[name.len() + 1..];
            }
            None => {
                literal.push_str(&rest[..=open]);
                rest = after_open;
            }
        }
    }
    literal.push_str(rest);
    regex.push_str(&regex::escape(&literal));
    regex.push('$');
    regex
}

fn is_placeholder_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use regex::Regex;

    use super::*;

    #[test]
    fn templates_become_anchored_regexes() {
        let cases = [
            ("@irc_{network}_{nick}:{server_name}", "example.org", r"^@irc_.+_.+:example\.org$"),
            ("#_xmpp_{room}:{server_name}", "example.org", r"^\#_xmpp_.+:example\.org$"),
            ("@bot:{server_name}", "localhost:8448", r"^@bot:localhost:8448$"),
            ("@{user}:{server_name}", "[::1]", r"^@.+:\[::1\]$"),
            ("@a.b+c:{server_name}", "x", r"^@a\.b\+c:x$"),
            ("@lone{brace:{server_name}", "x", r"^@lone\{brace:x$"),
            ("@{}:{server_name}", "x", r"^@\{\}:x$"),
            ("@{not valid}:{server_name}", "x", r"^@\{not valid\}:x$"),
            ("@closing}{nick}", "x", r"^@closing\}.+$"),
            ("no placeholders", "x", r"^no placeholders$"),
            ("", "x", "^$"),
        ];
        for (template, server, expected) in cases {
            let regex = template_regex(template, server);
            assert_eq!(regex, expected, "template {template:?}");
            assert!(Regex::new(&regex).is_ok(), "{regex} must compile");
        }
    }

    #[test]
    fn matches_and_rejects_ids() {
        let regex =
            Regex::new(&template_regex("@irc_{network}_{nick}:{server_name}", "example.org")).expect("valid regex");
        let cases = [
            ("@irc_libera_alice:example.org", true),
            ("@irc_libera_:example.org", false),
            ("@irc__alice:example.org", false),
            ("@irc_libera_alice:example.org.evil", false),
            ("x@irc_libera_alice:example.org", false),
            ("@irc_libera_alice:exampleXorg", false),
        ];
        for (id, expected) in cases {
            assert_eq!(regex.is_match(id), expected, "{id}");
        }
    }

    /// A template piece: literal text (without braces) or a named placeholder.
    #[derive(Clone, Debug)]
    enum Piece {
        Literal(String),
        Placeholder(String),
    }

    fn piece() -> impl Strategy<Value = Piece> {
        prop_oneof![
            "[^{}]{1,8}".prop_map(Piece::Literal),
            "[a-z][a-z0-9_]{0,7}".prop_filter("reserved", |name| name != SERVER_NAME).prop_map(Piece::Placeholder),
        ]
    }

    fn server_name() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,10}(\\.[a-z0-9]{1,10}){0,2}"
    }

    /// A template shaped like a Matrix ID: sigil, pieces, `:{server_name}`, with arbitrary
    /// non-empty (single-line, as Matrix IDs are) values for its placeholders.
    fn template_and_values() -> impl Strategy<Value = (String, Vec<Piece>, Vec<String>)> {
        (prop_oneof![Just("@"), Just("#"), Just("!")], prop::collection::vec(piece(), 1..6)).prop_flat_map(
            |(sigil, pieces)| {
                let values = prop::collection::vec("[^\n\r]{1,12}", pieces.len());
                (Just(sigil.to_owned()), Just(pieces), values)
            },
        )
    }

    fn render(sigil: &str, pieces: &[Piece], values: &[String], server: &str) -> (String, String) {
        let mut template = sigil.to_owned();
        let mut id = sigil.to_owned();
        for (piece, value) in pieces.iter().zip(values) {
            match piece {
                Piece::Literal(text) => {
                    template.push_str(text);
                    id.push_str(text);
                }
                Piece::Placeholder(name) => {
                    template.push_str(&format!("{{{name}}}"));
                    id.push_str(value);
                }
            }
        }
        template.push_str(":{server_name}");
        id.push(':');
        id.push_str(server);
        (template, id)
    }

    proptest! {
        #[test]
        fn rendered_ids_match_only_their_server(
            (sigil, pieces, values) in template_and_values(),
            server in server_name(),
            other_server in server_name(),
        ) {
            prop_assume!(server != other_server);
            let (template, id) = render(&sigil, &pieces, &values, &server);

            let own = Regex::new(&template_regex(&template, &server)).expect("valid regex");
            prop_assert!(own.is_match(&id), "{} should match {}", own, id);

            let other = Regex::new(&template_regex(&template, &other_server)).expect("valid regex");
            prop_assert!(!other.is_match(&id), "{} should not match {}", other, id);
        }
    }
}
