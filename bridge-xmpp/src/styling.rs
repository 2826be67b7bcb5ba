//! [XEP-0393: Message Styling](https://xmpp.org/extensions/xep-0393.html) to and from the core rich-text IR.
//!
//! Blocks: a line starting with ```` ``` ```` opens a preformatted block that runs to a line of just ```` ``` ````
//! (or the end); lines starting with `>` form a quotation, whose content is styled text again. Spans, within one
//! line: `*strong*`, `_emphasis_`, `~strike~` and `` `pre` ``; an opening directive stands at the start of the line or
//! after whitespace or another opening directive and is followed by a non-space, a closing one follows a non-space,
//! and nothing inside `` `pre` `` is styled.

use lattice_bridge_core::formatting::{Node, RichText};

const DIRECTIVES: [char; 4] = ['*', '_', '~', '`'];

/// Parses a styled `<body/>` into rich text.
pub(crate) fn parse_styling(body: &str) -> RichText {
    let body = body.replace("\r\n", "\n");
    let lines: Vec<&str> = body.split('\n').collect();
    let mut rich = RichText { nodes: parse_blocks(&lines) };
    rich.normalise();
    rich
}

fn parse_blocks(lines: &[&str]) -> Vec<Node> {
    let mut nodes = Vec::new();
    let mut index = 0;
    let line_break = |nodes: &mut Vec<Node>| {
        if !nodes.is_empty() && !matches!(nodes.last(), Some(Node::CodeBlock { .. } | Node::Quote(_))) {
            nodes.push(Node::LineBreak);
        }
    };
    while index < lines.len() {
        let line = lines[index];
        if let Some(info) = line.strip_prefix("```") {
            let end = lines[index + 1..].iter().position(|line| *line == "```").map(|offset| index + 1 + offset);
            let code_end = end.unwrap_or(lines.len());
            let language = info.split_whitespace().next().map(str::to_owned);
            nodes.push(Node::CodeBlock { language, code: lines[index + 1..code_end].join("\n") });
            index = end.map_or(lines.len(), |end| end + 1);
        } else if line.starts_with('>') {
            let count = lines[index..].iter().take_while(|line| line.starts_with('>')).count();
            let quoted: Vec<&str> = lines[index..index + count]
                .iter()
                .map(|line| {
                    let inner = &line[1..];
                    inner.strip_prefix(' ').unwrap_or(inner)
                })
                .collect();
            nodes.push(Node::Quote(parse_blocks(&quoted)));
            index += count;
        } else {
            line_break(&mut nodes);
            nodes.extend(parse_spans(line));
            index += 1;
        }
    }
    nodes
}

/// Parses the spans of one line.
fn parse_spans(line: &str) -> Vec<Node> {
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut nodes = Vec::new();
    let mut text_start = 0;
    let mut position = 0;
    while position < chars.len() {
        let (offset, character) = chars[position];
        let opens = DIRECTIVES.contains(&character)
            && (position == 0 || {
                let previous = chars[position - 1].1;
                previous.is_whitespace() || DIRECTIVES.contains(&previous)
            })
            && chars.get(position + 1).is_some_and(|(_, next)| !next.is_whitespace());
        let close = opens
            .then(|| {
                (position + 2..chars.len())
                    .find(|&candidate| chars[candidate].1 == character && !chars[candidate - 1].1.is_whitespace())
            })
            .flatten();
        let Some(close) = close else {
            position += 1;
            continue;
        };
        if text_start < offset {
            nodes.push(Node::Text(line[text_start..offset].to_owned()));
        }
        let inner = &line[chars[position + 1].0..chars[close].0];
        nodes.push(match character {
            '*' => Node::Bold(parse_spans(inner)),
            '_' => Node::Italic(parse_spans(inner)),
            '~' => Node::Strikethrough(parse_spans(inner)),
            _ => Node::InlineCode(inner.to_owned()),
        });
        position = close + 1;
        text_start = chars.get(position).map_or(line.len(), |(offset, _)| *offset);
    }
    if text_start < line.len() {
        nodes.push(Node::Text(line[text_start..].to_owned()));
    }
    nodes
}

/// Renders rich text as a styled `<body/>`: what XMPP clients show formatted, and plain readers still understand.
/// Styles without a XEP-0393 equivalent (underline, colour) keep their text; links show as `text <url>` unless the
/// text is the URL; mentions show their display text.
pub(crate) fn render_styling(rich: &RichText) -> String {
    let mut out = String::new();
    render_nodes(&rich.nodes, &mut out);
    out
}

fn at_line_start(out: &str) -> bool {
    out.is_empty() || out.ends_with('\n')
}

fn render_nodes(nodes: &[Node], out: &mut String) {
    for node in nodes {
        match node {
            Node::Text(text) => out.push_str(text),
            Node::Bold(children) => wrap('*', children, out),
            Node::Italic(children) => wrap('_', children, out),
            Node::Strikethrough(children) => wrap('~', children, out),
            Node::Underline(children) | Node::Colour { children, .. } => render_nodes(children, out),
            Node::InlineCode(code) => {
                out.push('`');
                out.push_str(code);
                out.push('`');
            }
            Node::CodeBlock { language, code } => {
                if !at_line_start(out) {
                    out.push('\n');
                }
                out.push_str("```");
                out.push_str(language.as_deref().unwrap_or_default());
                out.push('\n');
                if !code.is_empty() {
                    out.push_str(code);
                    out.push('\n');
                }
                out.push_str("```\n");
            }
            Node::Link { url, children } => {
                let mut text = String::new();
                render_nodes(children, &mut text);
                if text == *url {
                    out.push_str(url);
                } else {
                    out.push_str(&text);
                    out.push_str(" <");
                    out.push_str(url);
                    out.push('>');
                }
            }
            Node::Mention(mention) => out.push_str(&mention.display),
            Node::Quote(children) => {
                if !at_line_start(out) {
                    out.push('\n');
                }
                let mut inner = String::new();
                render_nodes(children, &mut inner);
                for line in inner.trim_end_matches('\n').split('\n') {
                    out.push('>');
                    if !line.is_empty() && !line.starts_with('>') {
                        out.push(' ');
                    }
                    out.push_str(line);
                    out.push('\n');
                }
            }
            Node::LineBreak => out.push('\n'),
            Node::Spoiler { reason, children } => {
                if let Some(reason) = reason {
                    out.push_str(&format!("({reason}) "));
                }
                render_nodes(children, out);
            }
        }
    }
    // A block ends its own line; a message does not end in a line break.
    if out.ends_with('\n') && matches!(nodes.last(), Some(Node::CodeBlock { .. } | Node::Quote(_))) {
        out.pop();
    }
}

fn wrap(directive: char, children: &[Node], out: &mut String) {
    out.push(directive);
    render_nodes(children, out);
    out.push(directive);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &str) -> Node {
        Node::Text(value.to_owned())
    }

    #[test]
    fn parses_xep_0393_examples() {
        let cases: Vec<(&str, Vec<Node>)> = vec![
            ("plain", vec![text("plain")]),
            ("*strong*", vec![Node::Bold(vec![text("strong")])]),
            ("an _emphasis_ here", vec![text("an "), Node::Italic(vec![text("emphasis")]), text(" here")]),
            (
                "~gone~ `*no*`",
                vec![Node::Strikethrough(vec![text("gone")]), text(" "), Node::InlineCode("*no*".into())],
            ),
            ("*_both_*", vec![Node::Bold(vec![Node::Italic(vec![text("both")])])]),
            ("not * strong*", vec![text("not * strong*")]),
            ("2*3*4", vec![text("2*3*4")]),
            ("**", vec![text("**")]),
            ("*a\nb*", vec![text("*a"), Node::LineBreak, text("b*")]),
            ("> quoted *bold*", vec![Node::Quote(vec![text("quoted "), Node::Bold(vec![text("bold")])])]),
            (
                "hi\n```rust\nlet *x* = 1;\n```\nbye",
                vec![
                    text("hi"),
                    Node::CodeBlock { language: Some("rust".into()), code: "let *x* = 1;".into() },
                    text("bye"),
                ],
            ),
            ("> a\n>> b", vec![Node::Quote(vec![text("a"), Node::Quote(vec![text("b")])])]),
            ("<b>not html</b> & \"x\"", vec![text("<b>not html</b> & \"x\"")]),
        ];
        for (body, nodes) in cases {
            assert_eq!(parse_styling(body).nodes, nodes, "parsing {body:?}");
        }
    }

    #[test]
    fn renders_and_round_trips() {
        let cases = [
            "plain",
            "*strong* and _em_ and ~del~ and `code`",
            "*_nested_*",
            "line one\nline two",
            "> quoted\nafter",
            "before\n```rust\nfn main() {}\n```\nafter",
            "> outer\n>> inner",
        ];
        for body in cases {
            let rich = parse_styling(body);
            assert_eq!(render_styling(&rich), body, "rendering {rich:?}");
        }
    }

    #[test]
    fn renders_what_styling_cannot_express() {
        let rich = RichText {
            nodes: vec![
                Node::Underline(vec![text("under")]),
                text(" "),
                Node::Link { url: "https://example.org".into(), children: vec![text("site")] },
                text(" "),
                Node::Link { url: "https://example.org".into(), children: vec![text("https://example.org")] },
            ],
        };
        assert_eq!(render_styling(&rich), "under site <https://example.org> https://example.org");
    }
}
