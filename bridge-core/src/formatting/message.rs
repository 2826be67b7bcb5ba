//! The `body` / `formatted_body` pair of an `m.room.message` event as one [`RichText`], for connectors.
//!
//! See the client-server spec, "m.room.message msgtypes": `body` is always present, and `formatted_body` is
//! HTML when `format` is `org.matrix.custom.html`.

use crate::formatting::{
    RichText, parse_matrix_html, parse_plain, render_matrix_html, render_plain, strip_reply_fallback,
};

/// The `format` value of a `formatted_body` in Matrix HTML.
pub const MATRIX_HTML_FORMAT: &str = "org.matrix.custom.html";

impl RichText {
    /// Reads a message from an `m.room.message` event's `body`, `formatted_body` and `format`.
    ///
    /// The HTML is used when `format` is [`MATRIX_HTML_FORMAT`] and it holds any content; otherwise (say, an
    /// unknown format, or HTML that was all reply fallback) the `body` is read as plain text, without its reply
    /// fallback.
    pub fn from_message(body: &str, formatted_body: Option<&str>, format: Option<&str>) -> Self {
        if format == Some(MATRIX_HTML_FORMAT)
            && let Some(html) = formatted_body
        {
            let rich = parse_matrix_html(html);
            if !rich.is_empty() {
                return rich;
            }
        }
        parse_plain(strip_reply_fallback(body))
    }

    /// Writes the message as an `m.room.message` `body` and, unless it is plain, a `formatted_body` whose `format`
    /// is [`MATRIX_HTML_FORMAT`].
    pub fn to_message(&self) -> (String, Option<String>) {
        let formatted_body = (!self.is_plain()).then(|| render_matrix_html(self));
        (render_plain(self), formatted_body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formatting::{Mention, MentionTarget, Node};

    fn text(s: &str) -> Node {
        Node::Text(s.to_owned())
    }

    #[test]
    fn reads_messages() {
        let html = Some(MATRIX_HTML_FORMAT);
        // body, formatted_body, format, what the message reads as
        type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Vec<Node>);
        let cases: Vec<Case<'_>> = vec![
            ("hello\nworld", None, None, vec![text("hello"), Node::LineBreak, text("world")]),
            ("*hi*", Some("<em>hi</em>"), html, vec![Node::Italic(vec![text("hi")])]),
            ("*hi*", Some("<em>hi</em>"), Some("com.example.other"), vec![text("*hi*")]),
            ("*hi*", None, html, vec![text("*hi*")]),
            ("> <@bob:example.org> earlier\n\nmy reply", None, None, vec![text("my reply")]),
            (
                "> <@bob:example.org> earlier\n\nmy reply",
                Some("<mx-reply><blockquote>earlier</blockquote></mx-reply>my <b>reply</b>"),
                html,
                vec![text("my "), Node::Bold(vec![text("reply")])],
            ),
            (
                "> <@bob:example.org> earlier\n\nfrom body",
                Some("<mx-reply><blockquote>earlier</blockquote></mx-reply>"),
                html,
                vec![text("from body")],
            ),
        ];
        for (body, formatted_body, format, expected) in cases {
            assert_eq!(RichText::from_message(body, formatted_body, format).nodes, expected, "{body:?}");
        }
    }

    #[test]
    fn writes_messages() {
        let mention = Node::Mention(Mention {
            target: MentionTarget::User("@alice:example.org".into()),
            display: "Alice".into(),
        });
        let cases: Vec<(Vec<Node>, &str, Option<&str>)> = vec![
            (vec![text("a <b>"), Node::LineBreak, text("c")], "a <b>\nc", None),
            (
                vec![mention, text(": "), Node::Bold(vec![text("hi")])],
                "Alice: hi",
                Some("<a href=\"https://matrix.to/#/@alice:example.org\">Alice</a>: <strong>hi</strong>"),
            ),
            (vec![], "", None),
        ];
        for (nodes, body, formatted_body) in cases {
            let rich = RichText { nodes };
            let (written_body, written_html) = rich.to_message();
            assert_eq!(written_body, body);
            assert_eq!(written_html.as_deref(), formatted_body);
            assert_eq!(RichText::from_message(&written_body, written_html.as_deref(), Some(MATRIX_HTML_FORMAT)), rich);
        }
    }
}
