//! Matrix `org.matrix.custom.html` (the `formatted_body` of `m.room.message`) to and from [`RichText`].
//!
//! See the client-server spec, "m.room.message msgtypes" for the HTML subset clients send, and "Rich replies" for
//! the `<mx-reply>` fallback that this parser drops. Parsing goes through html5ever (via `scraper`), so entities,
//! unclosed tags and misnested markup are handled as a browser would.

use std::fmt::Write as _;

use scraper::{ElementRef, Html, node::Node as HtmlNode};

use crate::formatting::{Mention, Node, Rgb, RichText};

/// Elements nested deeper than this are read as plain text, so that hostile input cannot exhaust the stack; no real
/// message comes close.
const MAX_DEPTH: usize = 100;

/// What [`parse_matrix_html`] prints for `<hr>`.
const HORIZONTAL_RULE: &str = "---";

/// Elements whose content is never shown: reply fallbacks, scripts, styles and document metadata.
const HIDDEN: &[&str] = &["mx-reply", "script", "style", "template", "head", "title", "iframe", "noembed", "noframes"];

/// Elements that start and end a line when flattened (`li`, `pre`, `blockquote` and `hr` are blocks too, handled on
/// their own).
#[rustfmt::skip]
const LINE_BLOCKS: &[&str] = &[
    "p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table", "caption", "tr", "details", "summary",
    "section", "article", "header", "footer", "aside", "nav", "main", "figure", "figcaption", "address", "dl", "dt",
    "dd",
];

/// Parses a Matrix `formatted_body` into the normalised IR.
///
/// Reply fallbacks (`<mx-reply>`), `<script>` and `<style>` content are dropped; unknown elements keep their text.
/// Links to matrix.to (or `matrix:`) permalinks of users, room aliases and room IDs become [`Node::Mention`]s. Colours
/// come from `data-mx-color`, `data-mx-bg-color` and `<font color>`. Paragraphs, headings, lists, tables and rules
/// are flattened into lines (see the [module docs](crate::formatting)). Newlines in the HTML source are whitespace,
/// not line breaks, except inside `<pre>` and `<code>`.
pub fn parse_matrix_html(html: &str) -> RichText {
    let fragment = Html::parse_fragment(html);
    let mut parser = Parser::new();
    parser.children(fragment.root_element(), 0);
    let mut rich = RichText { nodes: parser.finish() };
    rich.normalise();
    rich
}

/// Renders the IR as a Matrix `formatted_body`. For normalised input, [`parse_matrix_html`] gives the input back.
pub fn render_matrix_html(rich: &RichText) -> String {
    let mut html = String::new();
    render_nodes(&mut html, &rich.nodes);
    html
}

fn render_nodes(html: &mut String, nodes: &[Node]) {
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

/// A style that an element puts on its content while it is being parsed.
enum Wrap {
    Bold,
    Italic,
    Underline,
    Strikethrough,
    Link(String),
    Colour(Option<Rgb>, Option<Rgb>),
    Spoiler(Option<String>),
    Quote,
}

impl Wrap {
    fn into_node(self, children: Vec<Node>) -> Node {
        match self {
            Self::Bold => Node::Bold(children),
            Self::Italic => Node::Italic(children),
            Self::Underline => Node::Underline(children),
            Self::Strikethrough => Node::Strikethrough(children),
            Self::Quote => Node::Quote(children),
            Self::Link(url) => Node::Link { url, children },
            Self::Colour(foreground, background) => Node::Colour { foreground, background, children },
            Self::Spoiler(reason) => Node::Spoiler { reason, children },
        }
    }

    /// The styles `element` puts on its content, outermost first.
    fn of(element: ElementRef<'_>) -> Vec<Self> {
        let mut wraps = Vec::new();
        let name = element.value().name();
        if let Some(reason) = element.attr("data-mx-spoiler") {
            wraps.push(Self::Spoiler(Some(reason.to_owned()).filter(|reason| !reason.is_empty())));
        }
        let colour = |attribute: &str| element.attr(attribute).and_then(|value| value.trim().parse::<Rgb>().ok());
        let foreground = colour("data-mx-color").or_else(|| colour("color").filter(|_| name == "font"));
        let background = colour("data-mx-bg-color");
        if foreground.is_some() || background.is_some() {
            wraps.push(Self::Colour(foreground, background));
        }
        match name {
            "b" | "strong" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => wraps.push(Self::Bold),
            "i" | "em" => wraps.push(Self::Italic),
            "u" | "ins" => wraps.push(Self::Underline),
            "del" | "s" | "strike" => wraps.push(Self::Strikethrough),
            "blockquote" => wraps.push(Self::Quote),
            "a" => {
                if let Some(href) = element.attr("href").filter(|href| !href.trim().is_empty()) {
                    wraps.push(Self::Link(href.to_owned()));
                }
            }
            _ => {}
        }
        wraps
    }
}

/// The list an `<li>` belongs to.
enum List {
    Bullets,
    Numbered(u64),
}

/// Walks the html5ever tree, building nodes and turning block structure into line breaks.
struct Parser {
    /// The top-level nodes gathered so far.
    root: Vec<Node>,
    /// The styled elements being parsed, outermost first, each with the content gathered for it so far.
    open: Vec<(Wrap, Vec<Node>)>,
    /// Open lists, innermost last.
    lists: Vec<List>,
    /// Nothing has been written on the current line yet.
    line_start: bool,
    /// Only a list item's marker has been written on the current line: blocks inside the item start on its line.
    after_marker: bool,
    /// A block ended, so the next content starts a new line. The number is the depth the line break goes in (see
    /// [`Parser::depth`]): the shallowest reached since, so the break lands before any element opened since.
    pending_break: Option<usize>,
}

impl Parser {
    fn new() -> Self {
        Self {
            root: Vec::new(),
            open: Vec::new(),
            lists: Vec::new(),
            line_start: true,
            after_marker: false,
            pending_break: None,
        }
    }

    /// The top-level nodes; every element opened during the walk has been closed by then.
    fn finish(self) -> Vec<Node> {
        self.root
    }

    fn children(&mut self, element: ElementRef<'_>, depth: usize) {
        for child in element.children() {
            match child.value() {
                HtmlNode::Text(text) => self.text(text),
                HtmlNode::Element(_) => {
                    if let Some(child) = ElementRef::wrap(child) {
                        self.element(child, depth + 1);
                    }
                }
                _ => {}
            }
        }
    }

    fn element(&mut self, element: ElementRef<'_>, depth: usize) {
        let name = element.value().name();
        if HIDDEN.contains(&name) {
            return;
        }
        if depth > MAX_DEPTH {
            self.text(&element.text().collect::<String>());
            return;
        }
        match name {
            "br" => self.emit(Node::LineBreak),
            "hr" => {
                self.block_boundary();
                self.emit(Node::Text(HORIZONTAL_RULE.to_owned()));
                self.block_boundary();
            }
            "pre" => self.code_block(element),
            "code" => self.emit(Node::InlineCode(element.text().collect())),
            "img" => {
                if let Some(alt) = element.attr("alt").or_else(|| element.attr("title")) {
                    self.text(alt);
                }
            }
            "ul" | "ol" => {
                let list = match element.attr("start").and_then(|start| start.trim().parse().ok()) {
                    Some(start) if name == "ol" => List::Numbered(start),
                    _ if name == "ol" => List::Numbered(1),
                    _ => List::Bullets,
                };
                self.lists.push(list);
                self.styled(element, depth);
                self.lists.pop();
            }
            "li" => {
                self.block_boundary();
                let indent = "  ".repeat(self.lists.len().saturating_sub(1));
                let marker = match self.lists.last_mut() {
                    Some(List::Numbered(number)) => {
                        let marker = format!("{indent}{number}. ");
                        *number += 1;
                        marker
                    }
                    Some(List::Bullets) | None => format!("{indent}• "),
                };
                self.emit(Node::Text(marker));
                self.after_marker = true;
                self.styled(element, depth);
                self.after_marker = false;
                self.block_boundary();
            }
            "td" | "th" => {
                let follows_cell = element
                    .prev_siblings()
                    .filter_map(ElementRef::wrap)
                    .any(|sibling| matches!(sibling.value().name(), "td" | "th"));
                if follows_cell {
                    self.emit(Node::Text(" | ".to_owned()));
                }
                self.styled(element, depth);
            }
            _ => self.styled(element, depth),
        }
    }

    /// Parses an element's content inside the styles it applies, on lines of its own if it is a block.
    fn styled(&mut self, element: ElementRef<'_>, depth: usize) {
        let line_block = LINE_BLOCKS.contains(&element.value().name());
        if line_block {
            self.block_boundary();
        }
        let wraps = Wrap::of(element);
        let opened = wraps.len();
        for wrap in wraps {
            self.open(wrap);
        }
        self.children(element, depth);
        for _ in 0..opened {
            self.close();
        }
        if line_block {
            self.block_boundary();
        }
    }

    fn code_block(&mut self, pre: ElementRef<'_>) {
        let language = pre
            .child_elements()
            .filter(|child| child.value().name() == "code")
            .chain([pre])
            .flat_map(|element| element.value().classes())
            .find_map(|class| class.strip_prefix("language-").filter(|language| !language.is_empty()))
            .map(str::to_owned);
        let mut code = pre.text().collect::<String>();
        if code.ends_with('\n') {
            code.pop();
        }
        self.pending_break = None;
        self.current().push(Node::CodeBlock { language, code });
        self.line_start = true;
    }

    /// How many node lists are being filled: 1 for the root, plus one per open styled element.
    fn depth(&self) -> usize {
        self.open.len() + 1
    }

    /// The node list at `depth`.
    fn nodes_at(&mut self, depth: usize) -> &mut Vec<Node> {
        match depth.checked_sub(2) {
            Some(index) => &mut self.open[index].1,
            None => &mut self.root,
        }
    }

    /// The innermost node list.
    fn current(&mut self) -> &mut Vec<Node> {
        self.nodes_at(self.depth())
    }

    /// Notes that a flattened block starts or ends here, dropping the whitespace that ends its line.
    fn block_boundary(&mut self) {
        if self.after_marker {
            return;
        }
        let current = self.current();
        if let Some(Node::Text(text)) = current.last_mut() {
            text.truncate(text.trim_end_matches(|c: char| c.is_ascii_whitespace()).len());
            if text.is_empty() {
                current.pop();
            }
        }
        if !self.line_start {
            let depth = self.depth();
            self.pending_break = Some(self.pending_break.map_or(depth, |pending| pending.min(depth)));
        }
    }

    /// Adds content, starting a new line first if a block ended before it.
    fn emit(&mut self, node: Node) {
        if let Some(depth) = self.pending_break.take() {
            self.nodes_at(depth).push(Node::LineBreak);
        }
        self.line_start = matches!(node, Node::LineBreak);
        self.after_marker = false;
        self.current().push(node);
    }

    /// Adds a text node's content. A run of whitespace holding a newline is a space, or nothing at the start of a
    /// line; whitespace between blocks is dropped.
    fn text(&mut self, raw: &str) {
        if self.pending_break.is_some() && raw.bytes().all(|b| b.is_ascii_whitespace()) {
            return;
        }
        let mut text = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(start) = rest.find(|c: char| c.is_ascii_whitespace()) {
            text.push_str(&rest[..start]);
            let run_len = rest[start..].find(|c: char| !c.is_ascii_whitespace()).unwrap_or(rest.len() - start);
            let run = &rest[start..start + run_len];
            if !run.contains('\n') {
                text.push_str(run);
            } else if !(text.is_empty() && (self.line_start || self.after_marker || self.pending_break.is_some())) {
                text.push(' ');
            }
            rest = &rest[start + run_len..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            self.emit(Node::Text(text));
        }
    }

    fn open(&mut self, wrap: Wrap) {
        if matches!(wrap, Wrap::Quote) {
            // A quote is a block of its own: it needs no line break before it.
            self.pending_break = None;
            self.line_start = true;
        }
        self.open.push((wrap, Vec::new()));
    }

    /// Closes the innermost open element, adding its node to the enclosing list.
    fn close(&mut self) {
        let Some((wrap, nodes)) = self.open.pop() else {
            return;
        };
        if matches!(wrap, Wrap::Quote) {
            self.pending_break = None;
            self.line_start = true;
        } else if let Some(pending) = &mut self.pending_break {
            *pending = (*pending).min(self.open.len() + 1);
        }
        self.current().push(wrap.into_node(nodes));
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::formatting::{MentionTarget, strategy::arb_rich_text};

    fn text(s: &str) -> Node {
        Node::Text(s.to_owned())
    }

    fn bold(children: Vec<Node>) -> Node {
        Node::Bold(children)
    }

    fn link(url: &str, children: Vec<Node>) -> Node {
        Node::Link { url: url.to_owned(), children }
    }

    fn mention(target: MentionTarget, display: &str) -> Node {
        Node::Mention(Mention { target, display: display.to_owned() })
    }

    fn colour(foreground: Option<Rgb>, background: Option<Rgb>, children: Vec<Node>) -> Node {
        Node::Colour { foreground, background, children }
    }

    fn code_block(language: Option<&str>, code: &str) -> Node {
        Node::CodeBlock { language: language.map(str::to_owned), code: code.to_owned() }
    }

    const BR: Node = Node::LineBreak;

    #[test]
    fn parses_inline_styles() {
        let cases: Vec<(&str, Vec<Node>)> = vec![
            ("plain", vec![text("plain")]),
            ("<b>b</b><strong>s</strong>", vec![bold(vec![text("b")]), bold(vec![text("s")])]),
            ("<i>i</i><em>e</em>", vec![Node::Italic(vec![text("i")]), Node::Italic(vec![text("e")])]),
            ("<u>u</u>", vec![Node::Underline(vec![text("u")])]),
            (
                "<del>d</del><s>s</s><strike>k</strike>",
                vec![
                    Node::Strikethrough(vec![text("d")]),
                    Node::Strikethrough(vec![text("s")]),
                    Node::Strikethrough(vec![text("k")]),
                ],
            ),
            ("a<code>x &lt; y</code>", vec![text("a"), Node::InlineCode("x < y".into())]),
            ("<code><b>raw</b>\n  text</code>", vec![Node::InlineCode("raw\n  text".into())]),
            (
                "<b>bold <i>both</i></b> <i>it</i>",
                vec![
                    bold(vec![text("bold "), Node::Italic(vec![text("both")])]),
                    text(" "),
                    Node::Italic(vec![text("it")]),
                ],
            ),
            ("a<br>b<br/>", vec![text("a"), BR, text("b"), BR]),
            ("x<sup>2</sup>H<sub>2</sub>O", vec![text("x2H2O")]),
            (
                "<span data-mx-spoiler>s</span><span data-mx-spoiler=\"plot\">t</span>",
                vec![
                    Node::Spoiler { reason: None, children: vec![text("s")] },
                    Node::Spoiler { reason: Some("plot".into()), children: vec![text("t")] },
                ],
            ),
            ("<blink>unknown</blink> <x-y>tags</x-y>", vec![text("unknown tags")]),
            ("<img src=\"mxc://a/b\" alt=\":cat:\" data-mx-emoticon> hi", vec![text(":cat: hi")]),
            ("<a href=\"https://example.org\">site</a>", vec![link("https://example.org", vec![text("site")])]),
            ("<a name=\"anchor\">no href</a><a href=\" \">blank</a>", vec![text("no hrefblank")]),
            (
                "<a href=\"https://example.org\"></a>",
                vec![link("https://example.org", vec![text("https://example.org")])],
            ),
        ];
        for (html, expected) in cases {
            assert_eq!(parse_matrix_html(html).nodes, expected, "{html}");
        }
    }

    #[test]
    fn parses_entities_and_whitespace() {
        let cases: Vec<(&str, Vec<Node>)> = vec![
            ("&lt;b&gt; &amp; &quot;&#39; &eacute;&#x1F600;&nbsp;", vec![text("<b> & \"' é😀\u{a0}")]),
            ("AT&T &bogus; &amp", vec![text("AT&T &bogus; &")]),
            ("two  spaces\tand tab", vec![text("two  spaces\tand tab")]),
            ("soft\nwrap \n here", vec![text("soft wrap here")]),
            ("line<br>\nnext", vec![text("line"), BR, text("next")]),
            ("\n  <b>x</b>\n", vec![bold(vec![text("x")]), text(" ")]),
            ("<p>one</p>\n<p>two</p>\n", vec![text("one"), BR, text("two")]),
            ("cr&#13;is a line break", vec![text("cr"), BR, text("is a line break")]),
        ];
        for (html, expected) in cases {
            assert_eq!(parse_matrix_html(html).nodes, expected, "{html:?}");
        }
    }

    #[test]
    fn flattens_blocks_into_lines() {
        let cases: Vec<(&str, Vec<Node>)> = vec![
            ("<p>a</p><p>b</p>", vec![text("a"), BR, text("b")]),
            ("intro<p>para</p>outro", vec![text("intro"), BR, text("para"), BR, text("outro")]),
            ("<p>a<br></p><p>b</p>", vec![text("a"), BR, text("b")]),
            ("<p>a</p><br><p>b</p>", vec![text("a"), BR, BR, text("b")]),
            ("<div><p>nested</p></div><div>blocks</div>", vec![text("nested"), BR, text("blocks")]),
            ("<h1>Title</h1>body", vec![bold(vec![text("Title")]), BR, text("body")]),
            ("<b><p>a</p><p>b</p></b>c", vec![bold(vec![text("a"), BR, text("b")]), BR, text("c")]),
            ("<p>a</p><b>b</b>", vec![text("a"), BR, bold(vec![text("b")])]),
            ("<ul>\n<li>one</li>\n<li>two</li>\n</ul>", vec![text("• one"), BR, text("• two")]),
            (
                "<ol start=\"3\"><li>c</li><li>d<ul><li>sub</li></ul></li></ol>after",
                vec![text("3. c"), BR, text("4. d"), BR, text("  • sub"), BR, text("after")],
            ),
            ("<ol><li><b>x</b></li></ol>", vec![text("1. "), bold(vec![text("x")])]),
            ("<ul>\n<li>\n<p>loose</p>\n</li>\n<li><p>two</p></li>\n</ul>", vec![text("• loose"), BR, text("• two")]),
            ("<ol><li><p>x</p><p>y</p></li></ol>", vec![text("1. x"), BR, text("y")]),
            ("<ul><li></li><li>b</li></ul>", vec![text("•"), BR, text("• b")]),
            ("<ul><li><ul><li>in</li></ul></li></ul>", vec![text("•   • in")]),
            ("a<hr>b", vec![text("a"), BR, text("---"), BR, text("b")]),
            (
                "<table><tr><th>h1</th><th>h2</th></tr><tr><td>1</td><td>2</td></tr></table>",
                vec![text("h1 | h2"), BR, text("1 | 2")],
            ),
        ];
        for (html, expected) in cases {
            assert_eq!(parse_matrix_html(html).nodes, expected, "{html}");
        }
    }

    #[test]
    fn parses_quotes_and_code_blocks_as_blocks() {
        let cases: Vec<(&str, Vec<Node>)> = vec![
            ("<blockquote>q</blockquote>reply", vec![Node::Quote(vec![text("q")]), text("reply")]),
            (
                "<p>a</p><blockquote><p>q1</p><p>q2</p></blockquote>\n<p>b</p>",
                vec![text("a"), Node::Quote(vec![text("q1"), BR, text("q2")]), text("b")],
            ),
            (
                "<blockquote>outer<blockquote>inner</blockquote></blockquote>",
                vec![Node::Quote(vec![text("outer"), Node::Quote(vec![text("inner")])])],
            ),
            (
                "<pre><code class=\"language-rust\">fn main() {\n    &lt;x&gt;\n}\n</code></pre>",
                vec![code_block(Some("rust"), "fn main() {\n    <x>\n}")],
            ),
            ("<pre>\nraw\n\n</pre>", vec![code_block(None, "raw\n")]),
            ("<pre class=\"language-sh\"><code class=\"other\">ls</code></pre>", vec![code_block(Some("sh"), "ls")]),
            ("<p>see</p><pre><code>x</code></pre><p>done</p>", vec![text("see"), code_block(None, "x"), text("done")]),
        ];
        for (html, expected) in cases {
            assert_eq!(parse_matrix_html(html).nodes, expected, "{html}");
        }
    }

    #[test]
    fn parses_mentions() {
        let alice = MentionTarget::User("@alice:example.org".into());
        let cases: Vec<(&str, Vec<Node>)> = vec![
            (
                "<a href=\"https://matrix.to/#/@alice:example.org\">Alice</a>: hi",
                vec![mention(alice.clone(), "Alice"), text(": hi")],
            ),
            (
                "<a href=\"https://matrix.to/#/%40alice%3Aexample.org\"><b>Al</b>ice</a>",
                vec![mention(alice.clone(), "Alice")],
            ),
            (
                "<a href=\"https://matrix.to/#/@alice:example.org\"></a>",
                vec![mention(alice.clone(), "@alice:example.org")],
            ),
            (
                "<a href=\"https://matrix.to/#/%23lattice%3Aexample.org?via=example.org\">#lattice</a>",
                vec![mention(MentionTarget::RoomAlias("#lattice:example.org".into()), "#lattice")],
            ),
            (
                "<a href=\"https://matrix.to/#/!room:example.org?via=a&amp;via=b\">room</a>",
                vec![mention(MentionTarget::Room("!room:example.org".into()), "room")],
            ),
            ("<a href=\"matrix:u/alice:example.org?action=chat\">A</a>", vec![mention(alice, "A")]),
            (
                "<a href=\"https://matrix.to/#/!room:example.org/$event\">an event</a>",
                vec![link("https://matrix.to/#/!room:example.org/$event", vec![text("an event")])],
            ),
        ];
        for (html, expected) in cases {
            assert_eq!(parse_matrix_html(html).nodes, expected, "{html}");
        }
    }

    #[test]
    fn parses_colours() {
        let red = Some(Rgb(255, 0, 0));
        let blue = Some(Rgb(0, 0, 255));
        let cases: Vec<(&str, Vec<Node>)> = vec![
            ("<font data-mx-color=\"#ff0000\">r</font>", vec![colour(red, None, vec![text("r")])]),
            ("<span data-mx-bg-color=\"#0000FF\">b</span>", vec![colour(None, blue, vec![text("b")])]),
            ("<font color=\"#ff0000\">legacy</font>", vec![colour(red, None, vec![text("legacy")])]),
            (
                "<font color=\"#0000ff\" data-mx-color=\"#ff0000\" data-mx-bg-color=\"#0000ff\">both</font>",
                vec![colour(red, blue, vec![text("both")])],
            ),
            ("<font color=\"red\">named</font><span color=\"#ff0000\">span</span>", vec![text("namedspan")]),
            (
                "<span data-mx-spoiler=\"why\" data-mx-color=\"#ff0000\">s</span>",
                vec![Node::Spoiler { reason: Some("why".into()), children: vec![colour(red, None, vec![text("s")])] }],
            ),
        ];
        for (html, expected) in cases {
            assert_eq!(parse_matrix_html(html).nodes, expected, "{html}");
        }
    }

    #[test]
    fn drops_hidden_content() {
        let cases: Vec<(&str, Vec<Node>)> = vec![
            (
                "<mx-reply><blockquote><a href=\"https://matrix.to/#/!r:s/$e\">In reply to</a> \
                 <a href=\"https://matrix.to/#/@bob:s\">@bob:s</a><br>original</blockquote></mx-reply>the reply",
                vec![text("the reply")],
            ),
            ("<script>alert(1)</script>safe<style>b{}</style>", vec![text("safe")]),
            ("<!-- comment -->shown", vec![text("shown")]),
            ("<b><script>x</script></b>", vec![]),
        ];
        for (html, expected) in cases {
            assert_eq!(parse_matrix_html(html).nodes, expected, "{html}");
        }
    }

    #[test]
    fn recovers_from_malformed_html() {
        let cases: Vec<(&str, Vec<Node>)> = vec![
            ("<b>unclosed", vec![bold(vec![text("unclosed")])]),
            (
                "<b>bold <i>both</b> italic</i>",
                vec![bold(vec![text("bold "), Node::Italic(vec![text("both")])]), Node::Italic(vec![text(" italic")])],
            ),
            ("stray</b> close", vec![text("stray close")]),
            ("a < b && c > d", vec![text("a < b && c > d")]),
            (
                "<a href=\"https://x.example\">one<a href=\"https://y.example\">two</a>",
                vec![link("https://x.example", vec![text("one")]), link("https://y.example", vec![text("two")])],
            ),
            ("<p>open <blockquote>q", vec![text("open"), Node::Quote(vec![text("q")])]),
            ("<", vec![text("<")]),
            ("", vec![]),
        ];
        for (html, expected) in cases {
            assert_eq!(parse_matrix_html(html).nodes, expected, "{html}");
        }
    }

    #[test]
    fn deep_nesting_is_read_as_text() {
        let depth = 10_000;
        let html = format!("{}deep{}", "<b>".repeat(depth), "</b>".repeat(depth));
        let mut nodes = parse_matrix_html(&html).nodes;
        let mut levels = 0;
        while let [Node::Bold(children)] = nodes.as_slice() {
            nodes = children.clone();
            levels += 1;
        }
        assert_eq!(nodes, [text("deep")]);
        assert!((MAX_DEPTH - 1..=MAX_DEPTH).contains(&levels), "{levels} levels");
    }

    #[test]
    fn renders_html() {
        let alias = MentionTarget::RoomAlias("#a/b:example.org".into());
        let cases: Vec<(Vec<Node>, &str)> = vec![
            (vec![text("\u{feff}<b> & \"q\" 'a'")], "&#65279;&lt;b&gt; &amp; &quot;q&quot; &#39;a&#39;"),
            (
                vec![bold(vec![text("b")]), Node::Italic(vec![text("i")]), BR, Node::Underline(vec![text("u")])],
                "<strong>b</strong><em>i</em><br><u>u</u>",
            ),
            (vec![Node::Strikethrough(vec![text("s")])], "<del>s</del>"),
            (vec![Node::InlineCode("a<b>".into())], "<code>a&lt;b&gt;</code>"),
            (
                vec![code_block(Some("r\"s"), "x &\ny")],
                "<pre><code class=\"language-r&quot;s\">x &amp;\ny\n</code></pre>",
            ),
            (vec![code_block(None, "z")], "<pre><code>z\n</code></pre>"),
            (
                vec![link("https://e.org/?a=1&b=\"2\"", vec![text("l")])],
                "<a href=\"https://e.org/?a=1&amp;b=&quot;2&quot;\">l</a>",
            ),
            (
                vec![mention(MentionTarget::User("@alice:example.org".into()), "Alice <3")],
                "<a href=\"https://matrix.to/#/@alice:example.org\">Alice &lt;3</a>",
            ),
            (vec![mention(alias, "#a/b")], "<a href=\"https://matrix.to/#/%23a%2Fb:example.org\">#a/b</a>"),
            (
                vec![colour(Some(Rgb(1, 2, 3)), Some(Rgb(255, 255, 255)), vec![text("c")])],
                "<font data-mx-color=\"#010203\" data-mx-bg-color=\"#ffffff\">c</font>",
            ),
            (vec![colour(None, Some(Rgb(0, 0, 0)), vec![text("c")])], "<font data-mx-bg-color=\"#000000\">c</font>"),
            (vec![Node::Quote(vec![text("q")]), text("r")], "<blockquote>q</blockquote>r"),
            (
                vec![Node::Spoiler { reason: Some("a\"b\rc".into()), children: vec![text("s")] }],
                "<span data-mx-spoiler=\"a&quot;b&#13;c\">s</span>",
            ),
            (vec![Node::Spoiler { reason: None, children: vec![text("s")] }], "<span data-mx-spoiler>s</span>"),
        ];
        for (nodes, expected) in cases {
            let rich = RichText { nodes };
            let html = render_matrix_html(&rich);
            assert_eq!(html, expected);
            assert_eq!(parse_matrix_html(&html), rich, "{html}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn html_round_trips(rich in arb_rich_text()) {
            let mut rich = rich;
            rich.normalise();
            let html = render_matrix_html(&rich);
            prop_assert_eq!(parse_matrix_html(&html), rich, "{}", html);
        }

        #[test]
        fn parsing_arbitrary_html_yields_normalised_text(html in "(<(/?)(b|i|p|a href=\"https://matrix\\.to/#/@a:b\"|a href=\"u\rv\"|pre|code|blockquote|br|li|ol|font color=\"#010203\"|mx-reply)>|[a-z &;<>\n])*") {
            let rich = parse_matrix_html(&html);
            let mut again = rich.clone();
            again.normalise();
            prop_assert_eq!(&again, &rich);
            prop_assert_eq!(parse_matrix_html(&render_matrix_html(&rich)), rich);
        }
    }
}
