//! Parsing html5ever's tree into the IR: styles become nodes, hidden elements are dropped, blocks are flattened
//! into lines, and nesting deeper than [`MAX_DEPTH`] is read as text.

use scraper::{ElementRef, node::Node as HtmlNode};

use crate::formatting::{Node, Rgb};

/// Elements nested deeper than this are read as plain text, so that hostile input cannot exhaust the stack; no real
/// message comes close.
pub(super) const MAX_DEPTH: usize = 100;

/// What [`parse_matrix_html`](super::parse_matrix_html) prints for `<hr>`.
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
pub(super) struct Parser {
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
    pub(super) fn new() -> Self {
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
    pub(super) fn finish(self) -> Vec<Node> {
        self.root
    }

    /// Parses the children of `element`, which is `depth` levels deep.
    pub(super) fn children(&mut self, element: ElementRef<'_>, depth: usize) {
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
