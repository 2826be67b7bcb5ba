//! Rendering the IR as a Matrix `formatted_body`: one element per style, permalinks for mentions, `data-mx-color`
//! for colours, escaped text.

use std::fmt::Write as _;

use crate::formatting::{Mention, Node};

/// Appends the HTML of `nodes`.
pub(super) fn render_nodes(html: &mut String, nodes: &[Node]) {
    for node in nodes {
        render_node(html, node);
    }
}

fn render_node(html: &mut String, node: &Node) {
    let mut wrap = |open: &str, children: &[Node], close: &str| {
        html.push_str(open);
        render_nodes(html, children);
        html.push_str(close);
    };
    match node {
        Node::Text(text) => escape_into(html, text),
        Node::Bold(children) => wrap("<strong>", children, "</strong>"),
        Node::Italic(children) => wrap("<em>", children, "</em>"),
        Node::Underline(children) => wrap("<u>", children, "</u>"),
        Node::Strikethrough(children) => wrap("<del>", children, "</del>"),
        Node::Quote(children) => wrap("<blockquote>", children, "</blockquote>"),
        Node::LineBreak => html.push_str("<br>"),
        Node::InlineCode(code) => {
            html.push_str("<code>");
            escape_into(html, code);
            html.push_str("</code>");
        }
        Node::CodeBlock { language, code } => {
            html.push_str("<pre><code");
            if let Some(language) = language {
                html.push_str(" class=\"language-");
                escape_into(html, language);
                html.push('"');
            }
            html.push('>');
            escape_into(html, code);
            // Like CommonMark, end the block with a newline; the parser takes one off.
            html.push_str("\n</code></pre>");
        }
        Node::Link { url, children } => {
            html.push_str("<a href=\"");
            escape_into(html, url);
            html.push_str("\">");
            render_nodes(html, children);
            html.push_str("</a>");
        }
        Node::Mention(Mention { target, display }) => {
            html.push_str("<a href=\"");
            escape_into(html, &target.permalink());
            html.push_str("\">");
            escape_into(html, display);
            html.push_str("</a>");
        }
        Node::Colour { foreground, background, children } => {
            html.push_str("<font");
            if let Some(colour) = foreground {
                write!(html, " data-mx-color=\"{colour}\"").expect("writing to a String cannot fail");
            }
            if let Some(colour) = background {
                write!(html, " data-mx-bg-color=\"{colour}\"").expect("writing to a String cannot fail");
            }
            html.push('>');
            render_nodes(html, children);
            html.push_str("</font>");
        }
        Node::Spoiler { reason, children } => {
            html.push_str("<span data-mx-spoiler");
            if let Some(reason) = reason {
                html.push_str("=\"");
                escape_into(html, reason);
                html.push('"');
            }
            html.push('>');
            render_nodes(html, children);
            html.push_str("</span>");
        }
    }
}

/// Escapes text for use both between tags and in a quoted attribute value. A carriage return and a byte order mark
/// are written as character references because HTML parsing turns a literal CR into a line feed and drops a leading
/// BOM.
fn escape_into(html: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => html.push_str("&amp;"),
            '<' => html.push_str("&lt;"),
            '>' => html.push_str("&gt;"),
            '"' => html.push_str("&quot;"),
            '\'' => html.push_str("&#39;"),
            '\r' => html.push_str("&#13;"),
            '\u{feff}' => html.push_str("&#65279;"),
            c => html.push(c),
        }
    }
}
