//! Plain text to and from [`RichText`]: the `body` of `m.room.message`, which every formatted message carries as
//! a fallback, and which is all an unformatted message has.
//!
//! See the client-server spec, "m.room.message msgtypes" and "Rich replies › Fallbacks for rich replies".

use crate::formatting::{Node, RichText};

/// Parses unformatted text: each `\n` (or `\r\n`) becomes a [`Node::LineBreak`]. The same as [`RichText::plain`],
/// named to pair with [`parse_matrix_html`](crate::formatting::parse_matrix_html).
pub fn parse_plain(text: &str) -> RichText {
    RichText::plain(text)
}

/// Renders the text a reader of the `body` fallback sees: styles drop away, mentions show their display text, a link
/// shows as `text (url)` (or just the URL when that is its text), quotes become `> ` lines, code blocks their code on
/// lines of their own, and spoilers `||hidden||` after any `(reason)`.
///
/// For plain input this undoes [`parse_plain`], line endings aside.
pub fn render_plain(rich: &RichText) -> String {
    let mut writer = PlainWriter::default();
    writer.nodes(&rich.nodes);
    writer.out
}

/// Returns `body` without a leading plain-text reply fallback: a first line `> <@sender:server> …` (or
/// `> * <@sender:server> …` for emotes), more lines starting with `> ` (or just `>`), then an empty line. Anything
/// else — notably a message that merely starts with a quote of the sender's own making — is returned whole.
pub fn strip_reply_fallback(body: &str) -> &str {
    if !(body.starts_with("> <") || body.starts_with("> * <")) {
        return body;
    }
    let mut rest = body;
    while let Some((line, after)) = rest.split_once('\n') {
        if line.is_empty() {
            return after;
        }
        if !(line.starts_with("> ") || line == ">") {
            break;
        }
        rest = after;
    }
    body
}

/// Writes nodes as plain text, keeping blocks on lines of their own.
#[derive(Default)]
struct PlainWriter {
    out: String,
    /// A block was just written, so the next content starts a new line.
    after_block: bool,
}

impl PlainWriter {
    /// Renders `nodes` on their own, as the content of a quote, link or spoiler.
    fn render(nodes: &[Node]) -> String {
        let mut writer = Self::default();
        writer.nodes(nodes);
        writer.out
    }

    fn nodes(&mut self, nodes: &[Node]) {
        for node in nodes {
            self.node(node);
        }
    }

    fn node(&mut self, node: &Node) {
        match node {
            Node::Text(text) | Node::InlineCode(text) => self.write(text),
            Node::Mention(mention) => self.write(&mention.display),
            Node::LineBreak => self.write("\n"),
            Node::Link { url, children } => {
                let text = Self::render(children);
                if text.is_empty() || text == *url {
                    self.write(url);
                } else {
                    self.write(&format!("{text} ({url})"));
                }
            }
            Node::Spoiler { reason, children } => {
                if let Some(reason) = reason {
                    self.write(&format!("({reason}) "));
                }
                self.write(&format!("||{}||", Self::render(children)));
            }
            Node::CodeBlock { code, .. } => {
                self.start_block();
                self.out.push_str(code);
                self.after_block = true;
            }
            Node::Quote(children) => {
                self.start_block();
                for (i, line) in Self::render(children).split('\n').enumerate() {
                    if i > 0 {
                        self.out.push('\n');
                    }
                    self.out.push('>');
                    if !line.is_empty() {
                        self.out.push(' ');
                        self.out.push_str(line);
                    }
                }
                self.after_block = true;
            }
            Node::Bold(_) | Node::Italic(_) | Node::Underline(_) | Node::Strikethrough(_) | Node::Colour { .. } => {
                self.nodes(node.children());
            }
        }
    }

    fn write(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        if self.after_block {
            self.out.push('\n');
            self.after_block = false;
        }
        self.out.push_str(text);
    }

    /// Moves to the start of a line, unless already there.
    fn start_block(&mut self) {
        self.after_block = false;
        if !self.out.is_empty() && !self.out.ends_with('\n') {
            self.out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::formatting::{Mention, MentionTarget, Rgb};

    fn text(s: &str) -> Node {
        Node::Text(s.to_owned())
    }

    fn link(url: &str, children: Vec<Node>) -> Node {
        Node::Link { url: url.to_owned(), children }
    }

    #[test]
    fn renders_plain_fallback() {
        let cases: Vec<(Vec<Node>, &str)> = vec![
            (vec![text("a"), Node::LineBreak, text("b")], "a\nb"),
            (
                vec![
                    Node::Bold(vec![text("b")]),
                    Node::Italic(vec![text("i")]),
                    Node::Underline(vec![text("u")]),
                    Node::Strikethrough(vec![text("s")]),
                    Node::Colour { foreground: Some(Rgb(1, 2, 3)), background: None, children: vec![text("c")] },
                ],
                "biusc",
            ),
            (vec![text("run "), Node::InlineCode("ls -l".into())], "run ls -l"),
            (
                vec![
                    text("hi "),
                    Node::Mention(Mention {
                        target: MentionTarget::User("@alice:example.org".into()),
                        display: "Alice".into(),
                    }),
                ],
                "hi Alice",
            ),
            (vec![link("https://e.org", vec![Node::Bold(vec![text("site")])])], "site (https://e.org)"),
            (vec![link("https://e.org", vec![text("https://e.org")])], "https://e.org"),
            (vec![link("https://e.org", vec![])], "https://e.org"),
            (
                vec![
                    text("said:"),
                    Node::Quote(vec![text("one"), Node::LineBreak, Node::LineBreak, text("two")]),
                    text("reply"),
                ],
                "said:\n> one\n>\n> two\nreply",
            ),
            (vec![Node::Quote(vec![text("outer"), Node::Quote(vec![text("inner")])])], "> outer\n> > inner"),
            (vec![Node::Quote(vec![text("a")]), Node::Quote(vec![text("b")])], "> a\n> b"),
            (vec![Node::Quote(vec![text("q")]), Node::LineBreak, text("r")], "> q\n\nr"),
            (
                vec![
                    text("code:"),
                    Node::CodeBlock { language: Some("rust".into()), code: "fn f() {}\n// end".into() },
                    text("after"),
                ],
                "code:\nfn f() {}\n// end\nafter",
            ),
            (vec![text("x"), Node::LineBreak, Node::CodeBlock { language: None, code: "y".into() }], "x\ny"),
            (
                vec![
                    Node::Spoiler { reason: None, children: vec![text("s")] },
                    text(" "),
                    Node::Spoiler { reason: Some("plot".into()), children: vec![text("t")] },
                ],
                "||s|| (plot) ||t||",
            ),
            (vec![], ""),
        ];
        for (nodes, expected) in cases {
            assert_eq!(render_plain(&RichText { nodes }), expected);
        }
    }

    #[test]
    fn strips_reply_fallbacks() {
        let cases = [
            ("> <@alice:example.org> original\n\nreply", "reply"),
            ("> <@alice:example.org> line one\n> line two\n>\n> \n\nreply\n\nmore", "reply\n\nmore"),
            ("> * <@alice:example.org> waves\n\n", ""),
            ("> <@alice:example.org> no blank line\nreply", "> <@alice:example.org> no blank line\nreply"),
            ("> <@alice:example.org> only the fallback", "> <@alice:example.org> only the fallback"),
            ("> my own quote\n\nmy answer", "> my own quote\n\nmy answer"),
            ("plain\n\ntext", "plain\n\ntext"),
            ("", ""),
        ];
        for (body, expected) in cases {
            assert_eq!(strip_reply_fallback(body), expected, "{body:?}");
        }
    }

    proptest! {
        #[test]
        fn plain_text_round_trips(body in "[\\PC\t\n]*") {
            let rich = parse_plain(&body);
            prop_assert!(rich.is_plain());
            prop_assert_eq!(render_plain(&rich), body.as_str());
            prop_assert_eq!(parse_plain(&render_plain(&rich)), rich);
        }
    }
}
