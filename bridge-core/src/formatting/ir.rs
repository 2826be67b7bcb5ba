//! The rich-text intermediate representation every message passes through on its way between Matrix and a remote
//! network.
//!
//! The IR keeps only what a chat network can carry: inline styles, colours, links, mentions, inline and block code,
//! quotes, spoilers and line breaks. Document structure that no bridged network has — paragraphs, headings, lists,
//! tables, horizontal rules — is flattened by the parsers into text and [`Node::LineBreak`]s (headings become
//! [`Node::Bold`], list items become `• item` or `1. item` lines).
//!
//! [`Node::Quote`] and [`Node::CodeBlock`] are *blocks*: each starts and ends a line of its own, so the nodes around
//! one need no [`Node::LineBreak`] to be set apart from it. Renderers for line-based networks put the breaks in.

use std::{fmt, mem, str::FromStr};

use thiserror::Error;

/// A formatted message: a sequence of [`Node`]s.
///
/// [`RichText::normalise`] brings a value into the canonical form the parsers produce. In that form:
/// - [`Node::Text`] is never empty, never next to another `Text`, and holds no `\r`, `\n` (a [`Node::LineBreak`]
///   stands for each line ending) or NUL; code has `\n` line endings only;
/// - no styled node, quote, spoiler or link is empty; a [`Node::Colour`] has at least one colour; a
///   [`Node::CodeBlock`] language is one non-empty word;
/// - links never nest, and a link holds no mention: HTML cannot express either;
/// - a link to a matrix.to (or `matrix:`) permalink of a user, room or alias is a [`Node::Mention`], whose display
///   text is one non-empty line; a mention whose target is not a valid identifier of its kind is plain text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RichText {
    /// The top-level nodes, in reading order.
    pub nodes: Vec<Node>,
}

/// One piece of a [`RichText`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// Unstyled text, on one line.
    Text(String),
    /// Bold (`<strong>`, `<b>`, and headings).
    Bold(Vec<Node>),
    /// Italic (`<em>`, `<i>`).
    Italic(Vec<Node>),
    /// Underlined (`<u>`).
    Underline(Vec<Node>),
    /// Struck through (`<del>`, `<s>`, `<strike>`).
    Strikethrough(Vec<Node>),
    /// Monospaced code within a line, kept verbatim.
    InlineCode(String),
    /// A block of preformatted code, kept verbatim, with the language it is written in when known.
    CodeBlock {
        /// The language, as in Markdown's ```` ```rust ````.
        language: Option<String>,
        /// The code, without a trailing newline.
        code: String,
    },
    /// A hyperlink around some content.
    Link {
        /// Where the link points.
        url: String,
        /// What the link shows.
        children: Vec<Node>,
    },
    /// Coloured content; either colour may be absent.
    Colour {
        /// The text colour.
        foreground: Option<Rgb>,
        /// The background colour.
        background: Option<Rgb>,
        /// The coloured content.
        children: Vec<Node>,
    },
    /// A mention ("pill") of a Matrix user or room.
    Mention(Mention),
    /// Quoted content, as a block.
    Quote(Vec<Node>),
    /// The end of a line.
    LineBreak,
    /// Content hidden until the reader chooses to see it.
    Spoiler {
        /// Why the content is hidden, shown in its place.
        reason: Option<String>,
        /// The hidden content.
        children: Vec<Node>,
    },
}

/// A mention of a Matrix user or room, with the text shown for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mention {
    /// Who or what is mentioned.
    pub target: MentionTarget,
    /// The text shown in place of the mention: usually the display name of a user, or the alias of a room.
    pub display: String,
}

/// The Matrix identifier a [`Mention`] points at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MentionTarget {
    /// A user ID, such as `@alice:example.org`.
    User(String),
    /// A room alias, such as `#lattice:example.org`.
    RoomAlias(String),
    /// A room ID, such as `!abc123:example.org`.
    Room(String),
}

/// A colour as 8-bit red, green and blue components, written `#rrggbb` in Matrix HTML.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rgb(pub u8, pub u8, pub u8);

/// A string that is not a colour of the form `#rrggbb`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParseRgbError {
    /// The string is not `#` followed by six hexadecimal digits.
    #[error("{input:?} is not a colour of the form #rrggbb")]
    NotHex {
        /// The rejected string.
        input: String,
    },
}

impl RichText {
    /// An empty message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Unformatted text; each line ending (`\n`, `\r\n` or `\r`) becomes a [`Node::LineBreak`].
    pub fn plain(text: &str) -> Self {
        let mut rich = Self::new();
        rich.push_text(text);
        rich
    }

    /// Whether the message has no content at all.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether the message carries no formatting: only text and line breaks.
    pub fn is_plain(&self) -> bool {
        self.nodes.iter().all(|node| matches!(node, Node::Text(_) | Node::LineBreak))
    }

    /// Appends text, merging it into a preceding [`Node::Text`]; each line ending (`\n`, `\r\n` or `\r`)
    /// becomes a [`Node::LineBreak`] and NUL characters are dropped.
    pub fn push_text(&mut self, text: &str) {
        push_text(&mut self.nodes, text);
    }

    /// Appends a node; a [`Node::Text`] is appended as by [`RichText::push_text`].
    pub fn push(&mut self, node: Node) {
        match node {
            Node::Text(text) => push_text(&mut self.nodes, &text),
            other => self.nodes.push(other),
        }
    }

    /// Brings the message into the canonical form described on [`RichText`], the form the parsers produce.
    pub fn normalise(&mut self) {
        self.nodes = normalise_nodes(mem::take(&mut self.nodes), false);
    }
}

impl Node {
    /// The nodes nested in this one; empty for nodes that hold no other nodes.
    pub fn children(&self) -> &[Node] {
        match self {
            Node::Bold(children)
            | Node::Italic(children)
            | Node::Underline(children)
            | Node::Strikethrough(children)
            | Node::Quote(children)
            | Node::Link { children, .. }
            | Node::Colour { children, .. }
            | Node::Spoiler { children, .. } => children,
            Node::Text(_) | Node::InlineCode(_) | Node::CodeBlock { .. } | Node::Mention(_) | Node::LineBreak => &[],
        }
    }
}

impl MentionTarget {
    /// Classifies a Matrix identifier by its sigil: `@user:server`, `#alias:server` or `!room` (room IDs of room
    /// version 12 and later carry no server name). `None` for anything else.
    pub fn from_id(id: &str) -> Option<Self> {
        let mut chars = id.chars();
        let sigil = chars.next()?;
        let rest = chars.as_str();
        let has_server = || rest.split_once(':').is_some_and(|(local, server)| !local.is_empty() && !server.is_empty());
        match sigil {
            '@' if has_server() => Some(Self::User(id.to_owned())),
            '#' if has_server() => Some(Self::RoomAlias(id.to_owned())),
            '!' if !rest.is_empty() => Some(Self::Room(id.to_owned())),
            _ => None,
        }
    }

    /// The identifier, sigil included.
    pub fn id(&self) -> &str {
        match self {
            Self::User(id) | Self::RoomAlias(id) | Self::Room(id) => id,
        }
    }
}

impl FromStr for Rgb {
    type Err = ParseRgbError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let not_hex = || ParseRgbError::NotHex { input: s.to_owned() };
        let hex = s.strip_prefix('#').ok_or_else(not_hex)?;
        if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(not_hex());
        }
        let component = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| not_hex());
        Ok(Self(component(0)?, component(2)?, component(4)?))
    }
}

impl fmt::Display for Rgb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }
}

/// Appends `text` to `nodes` as [`RichText::push_text`] does.
fn push_text(nodes: &mut Vec<Node>, text: &str) {
    let text = normalise_line_endings(text);
    let mut lines = text.split('\n').peekable();
    while let Some(line) = lines.next() {
        append_line(nodes, line);
        if lines.peek().is_some() {
            nodes.push(Node::LineBreak);
        }
    }
}

/// Turns every line ending (`\r\n`, `\r` or `\n`) into `\n` and drops NUL characters, which neither HTML nor
/// the networks carry.
fn normalise_line_endings(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n").replace('\0', "")
}

/// Appends text known to hold no line break, merging it into a preceding [`Node::Text`].
fn append_line(nodes: &mut Vec<Node>, line: &str) {
    if line.is_empty() {
        return;
    }
    match nodes.last_mut() {
        Some(Node::Text(last)) => last.push_str(line),
        _ => nodes.push(Node::Text(line.to_owned())),
    }
}

/// Appends already normalised nodes, merging text at the seam.
fn extend_normalised(out: &mut Vec<Node>, nodes: Vec<Node>) {
    for node in nodes {
        match node {
            Node::Text(text) => append_line(out, &text),
            other => out.push(other),
        }
    }
}

fn normalise_nodes(nodes: Vec<Node>, in_link: bool) -> Vec<Node> {
    let mut out = Vec::with_capacity(nodes.len());
    for node in nodes {
        normalise_into(&mut out, node, in_link);
    }
    out
}

/// Normalises `node` and appends the result, if any, to `out`. `in_link` says whether an enclosing node is a link,
/// in which case links and mentions dissolve into their content.
fn normalise_into(out: &mut Vec<Node>, node: Node, in_link: bool) {
    let styled = |out: &mut Vec<Node>, wrap: fn(Vec<Node>) -> Node, children: Vec<Node>| {
        let children = normalise_nodes(children, in_link);
        if !children.is_empty() {
            out.push(wrap(children));
        }
    };
    match node {
        Node::Text(text) => push_text(out, &text),
        Node::LineBreak => out.push(Node::LineBreak),
        Node::Bold(children) => styled(out, Node::Bold, children),
        Node::Italic(children) => styled(out, Node::Italic, children),
        Node::Underline(children) => styled(out, Node::Underline, children),
        Node::Strikethrough(children) => styled(out, Node::Strikethrough, children),
        Node::Quote(children) => styled(out, Node::Quote, children),
        Node::InlineCode(code) => {
            let code = normalise_line_endings(&code);
            if !code.is_empty() {
                out.push(Node::InlineCode(code));
            }
        }
        Node::CodeBlock { language, code } => {
            let code = normalise_line_endings(&code);
            if !code.is_empty() {
                let language = language
                    .as_deref()
                    .and_then(|language| language.replace('\0', "").split_ascii_whitespace().next().map(str::to_owned));
                out.push(Node::CodeBlock { language, code });
            }
        }
        Node::Colour { foreground, background, children } => {
            let children = normalise_nodes(children, in_link);
            if foreground.is_none() && background.is_none() {
                extend_normalised(out, children);
            } else if !children.is_empty() {
                out.push(Node::Colour { foreground, background, children });
            }
        }
        Node::Spoiler { reason, children } => {
            let children = normalise_nodes(children, in_link);
            if !children.is_empty() {
                let reason = reason.map(|reason| reason.replace('\0', "")).filter(|reason| !reason.is_empty());
                out.push(Node::Spoiler { reason, children });
            }
        }
        Node::Link { url, children } => {
            let url = url.replace('\0', "").trim().to_owned();
            let children = normalise_nodes(children, true);
            if in_link || url.is_empty() {
                extend_normalised(out, children);
            } else if let Some(target) = MentionTarget::from_permalink(&url) {
                out.push(Node::Mention(normalise_mention(target, &inline_text(&children))));
            } else {
                let mut children = children;
                if children.is_empty() {
                    push_text(&mut children, &url);
                }
                out.push(Node::Link { url, children });
            }
        }
        Node::Mention(Mention { target, display }) => {
            // Re-classifying the identifier catches a target built with the wrong variant or a malformed ID,
            // which no permalink could carry.
            match MentionTarget::from_id(target.id()) {
                Some(target) if !in_link => out.push(Node::Mention(normalise_mention(target, &display))),
                Some(target) => append_line(out, &normalise_mention(target, &display).display),
                None => push_text(out, &display),
            }
        }
    }
}

/// A mention shows one line of text; with none, it shows its identifier.
fn normalise_mention(target: MentionTarget, display: &str) -> Mention {
    let display = normalise_line_endings(display).replace('\n', " ");
    let display = if display.is_empty() { target.id().to_owned() } else { display };
    Mention { target, display }
}

/// The text a reader sees in `nodes`, on one line: what a link shows when it becomes a mention.
fn inline_text(nodes: &[Node]) -> String {
    let mut text = String::new();
    for node in nodes {
        match node {
            Node::Text(part) | Node::InlineCode(part) | Node::CodeBlock { code: part, .. } => text.push_str(part),
            Node::Mention(mention) => text.push_str(&mention.display),
            Node::LineBreak => text.push(' '),
            other => text.push_str(&inline_text(other.children())),
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::formatting::strategy::arb_rich_text;

    fn text(s: &str) -> Node {
        Node::Text(s.to_owned())
    }

    fn user(id: &str, display: &str) -> Node {
        Node::Mention(Mention { target: MentionTarget::User(id.to_owned()), display: display.to_owned() })
    }

    #[test]
    fn rgb_parses_and_formats() {
        let cases = [
            ("#ff0000", Some(Rgb(255, 0, 0))),
            ("#00Ff7f", Some(Rgb(0, 255, 127))),
            ("#123456", Some(Rgb(0x12, 0x34, 0x56))),
            ("ff0000", None),
            ("#ff000", None),
            ("#ff00000", None),
            ("#gg0000", None),
            ("#+f0000", None),
            ("#ééé", None),
            ("red", None),
            ("", None),
        ];
        for (input, expected) in cases {
            let parsed = input.parse::<Rgb>();
            assert_eq!(parsed.as_ref().ok(), expected.as_ref(), "{input:?}");
            match (parsed, expected) {
                (Ok(rgb), Some(_)) => assert_eq!(rgb.to_string(), input.to_ascii_lowercase()),
                (Err(error), None) => {
                    assert_eq!(error.to_string(), format!("{input:?} is not a colour of the form #rrggbb"))
                }
                (parsed, expected) => panic!("{input:?}: {parsed:?} vs {expected:?}"),
            }
        }
    }

    #[test]
    fn mention_targets_are_classified_by_sigil() {
        let cases = [
            ("@alice:example.org", Some(MentionTarget::User("@alice:example.org".into()))),
            ("#room:example.org", Some(MentionTarget::RoomAlias("#room:example.org".into()))),
            ("!abc:example.org", Some(MentionTarget::Room("!abc:example.org".into()))),
            ("!v12RoomIdWithoutServer", Some(MentionTarget::Room("!v12RoomIdWithoutServer".into()))),
            ("@alice", None),
            ("@:example.org", None),
            ("@alice:", None),
            ("#room", None),
            ("!", None),
            ("+group:example.org", None),
            ("", None),
        ];
        for (id, expected) in cases {
            let target = MentionTarget::from_id(id);
            assert_eq!(target, expected, "{id:?}");
            if let Some(target) = target {
                assert_eq!(target.id(), id);
            }
        }
    }

    #[test]
    fn plain_splits_lines() {
        let cases: [(&str, Vec<Node>); 7] = [
            ("", vec![]),
            ("hello", vec![text("hello")]),
            ("a\nb", vec![text("a"), Node::LineBreak, text("b")]),
            ("a\r\nb\n", vec![text("a"), Node::LineBreak, text("b"), Node::LineBreak]),
            ("\n\n", vec![Node::LineBreak, Node::LineBreak]),
            ("nul\0 gone\r", vec![text("nul gone"), Node::LineBreak]),
            ("old\rmac", vec![text("old"), Node::LineBreak, text("mac")]),
        ];
        for (input, nodes) in cases {
            let rich = RichText::plain(input);
            assert_eq!(rich.nodes, nodes, "{input:?}");
            assert!(rich.is_plain());
        }
    }

    #[test]
    fn push_merges_adjacent_text() {
        let mut rich = RichText::new();
        assert!(rich.is_empty());
        rich.push_text("a");
        rich.push(text("b"));
        rich.push(Node::Bold(vec![text("c")]));
        rich.push_text("d\ne");
        rich.push(text("f"));
        assert_eq!(rich.nodes, [text("ab"), Node::Bold(vec![text("c")]), text("d"), Node::LineBreak, text("ef"),]);
        assert!(!rich.is_plain());
        assert!(!rich.is_empty());
    }

    #[test]
    fn children_exposes_nested_nodes() {
        let inner = vec![text("x")];
        let cases = [
            (Node::Bold(inner.clone()), inner.as_slice()),
            (Node::Quote(inner.clone()), &inner),
            (Node::Link { url: "https://example.org".into(), children: inner.clone() }, &inner),
            (Node::Spoiler { reason: None, children: inner.clone() }, &inner),
            (text("x"), &[]),
            (Node::InlineCode("x".into()), &[]),
            (Node::LineBreak, &[]),
        ];
        for (node, children) in cases {
            assert_eq!(node.children(), children, "{node:?}");
        }
    }

    #[test]
    fn normalise_canonicalises() {
        let link = |url: &str, children: Vec<Node>| Node::Link { url: url.to_owned(), children };
        let cases: Vec<(&str, Vec<Node>, Vec<Node>)> = vec![
            ("merges text", vec![text("a"), text(""), text("b")], vec![text("ab")]),
            ("splits lines", vec![text("a\r\nb")], vec![text("a"), Node::LineBreak, text("b")]),
            (
                "drops empty styles",
                vec![
                    text("a"),
                    Node::Bold(vec![Node::Italic(vec![text("")])]),
                    Node::Quote(vec![]),
                    Node::InlineCode(String::new()),
                    text("b"),
                ],
                vec![text("ab")],
            ),
            (
                "unwraps colourless colour",
                vec![text("a"), Node::Colour { foreground: None, background: None, children: vec![text("b")] }],
                vec![text("ab")],
            ),
            (
                "flattens nested links",
                vec![link(
                    "https://a.example",
                    vec![
                        text("x "),
                        Node::Bold(vec![link("https://b.example", vec![text("y")])]),
                        user("@u:example.org", "Zed"),
                    ],
                )],
                vec![link("https://a.example", vec![text("x "), Node::Bold(vec![text("y")]), text("Zed")])],
            ),
            (
                "turns permalinks into mentions",
                vec![link(
                    "https://matrix.to/#/@alice:example.org",
                    vec![Node::Bold(vec![text("Alice")]), Node::LineBreak, text("A.")],
                )],
                vec![user("@alice:example.org", "Alice A.")],
            ),
            (
                "fills empty links and mentions",
                vec![
                    link(" https://example.org ", vec![]),
                    link("https://e.org/a\nb", vec![]),
                    link("", vec![text("no url")]),
                    user("@bob:example.org", ""),
                ],
                vec![
                    link("https://example.org", vec![text("https://example.org")]),
                    link("https://e.org/a\nb", vec![text("https://e.org/a"), Node::LineBreak, text("b")]),
                    text("no url"),
                    user("@bob:example.org", "@bob:example.org"),
                ],
            ),
            (
                "cleans code and spoilers",
                vec![
                    Node::CodeBlock { language: Some("  rust extra".into()), code: "a\r\nb\rc\0".into() },
                    Node::CodeBlock { language: Some(" ".into()), code: "c".into() },
                    Node::Spoiler { reason: Some(String::new()), children: vec![text("s")] },
                ],
                vec![
                    Node::CodeBlock { language: Some("rust".into()), code: "a\nb\nc".into() },
                    Node::CodeBlock { language: None, code: "c".into() },
                    Node::Spoiler { reason: None, children: vec![text("s")] },
                ],
            ),
            (
                "keeps one-line mention text",
                vec![user("@u:example.org", "two\nlines")],
                vec![user("@u:example.org", "two lines")],
            ),
            (
                "checks mention targets",
                vec![
                    Node::Mention(Mention {
                        target: MentionTarget::Room("#alias:example.org".into()),
                        display: "A".into(),
                    }),
                    user("bogus", "B"),
                ],
                vec![
                    Node::Mention(Mention {
                        target: MentionTarget::RoomAlias("#alias:example.org".into()),
                        display: "A".into(),
                    }),
                    text("B"),
                ],
            ),
        ];
        for (name, input, expected) in cases {
            let mut rich = RichText { nodes: input };
            rich.normalise();
            assert_eq!(rich.nodes, expected, "{name}");
        }
    }

    proptest! {
        #[test]
        fn normalise_is_idempotent(rich in arb_rich_text()) {
            let mut once = rich;
            once.normalise();
            let mut twice = once.clone();
            twice.normalise();
            prop_assert_eq!(once, twice);
        }
    }
}
