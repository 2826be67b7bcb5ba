//! mIRC formatting codes ⇄ the core rich-text IR.
//!
//! The codes (see <https://modern.ircdocs.horse/formatting>): `\x02` bold, `\x1d` italic, `\x1f` underline,
//! `\x1e` strikethrough, `\x11` monospace, `\x16` reverse, `\x03FG[,BG]` colours from the 16-colour palette,
//! `\x04RRGGBB[,RRGGBB]` hex colours, `\x0f` reset. Each toggles or sets a style that lasts until the end of the
//! line.

use lattice_bridge_core::formatting::{Mention, Node, Rgb, RichText};

/// The 16 colours every IRC client agrees on, by code.
const PALETTE: [Rgb; 16] = [
    Rgb(0xff, 0xff, 0xff),
    Rgb(0x00, 0x00, 0x00),
    Rgb(0x00, 0x00, 0x7f),
    Rgb(0x00, 0x93, 0x00),
    Rgb(0xff, 0x00, 0x00),
    Rgb(0x7f, 0x00, 0x00),
    Rgb(0x9c, 0x00, 0x9c),
    Rgb(0xfc, 0x7f, 0x00),
    Rgb(0xff, 0xff, 0x00),
    Rgb(0x00, 0xfc, 0x00),
    Rgb(0x00, 0x93, 0x93),
    Rgb(0x00, 0xff, 0xff),
    Rgb(0x00, 0x00, 0xfc),
    Rgb(0xff, 0x00, 0xff),
    Rgb(0x7f, 0x7f, 0x7f),
    Rgb(0xd2, 0xd2, 0xd2),
];

/// The style in force at a point of a line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Style {
    bold: bool,
    italic: bool,
    underline: bool,
    strike: bool,
    mono: bool,
    reverse: bool,
    fg: Option<Rgb>,
    bg: Option<Rgb>,
}

fn palette(code: u8) -> Option<Rgb> {
    PALETTE.get(usize::from(code)).copied()
}

/// The palette code closest to `rgb`.
fn nearest_code(rgb: Rgb) -> u8 {
    let distance = |other: &Rgb| {
        let d = |a: u8, b: u8| (i32::from(a) - i32::from(b)).pow(2);
        d(rgb.0, other.0) + d(rgb.1, other.1) + d(rgb.2, other.2)
    };
    let (code, _) = PALETTE.iter().enumerate().min_by_key(|(_, colour)| distance(colour)).expect("a full palette");
    code as u8
}

fn take_digits(bytes: &[u8], at: usize) -> (Option<u8>, usize) {
    let digits = bytes[at..].iter().take(2).take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return (None, at);
    }
    let value = std::str::from_utf8(&bytes[at..at + digits]).ok().and_then(|s| s.parse().ok());
    (value, at + digits)
}

fn take_hex(bytes: &[u8], at: usize) -> Option<(Rgb, usize)> {
    let hex = std::str::from_utf8(bytes.get(at..at + 6)?).ok()?;
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let channel = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
    Some((Rgb(channel(0)?, channel(2)?, channel(4)?), at + 6))
}

/// Walks `text`, calling `on_text` with each run of text and the style it is in; returns the style at the end.
fn scan(text: &str, mut on_text: impl FnMut(&str, &Style)) -> Style {
    let bytes = text.as_bytes();
    let mut style = Style::default();
    let mut run_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let code = bytes[i];
        if !matches!(code, 0x02 | 0x03 | 0x04 | 0x0f | 0x11 | 0x16 | 0x1d | 0x1e | 0x1f) {
            i += 1;
            continue;
        }
        if run_start < i {
            on_text(&text[run_start..i], &style);
        }
        i += 1;
        match code {
            0x02 => style.bold = !style.bold,
            0x1d => style.italic = !style.italic,
            0x1f => style.underline = !style.underline,
            0x1e => style.strike = !style.strike,
            0x11 => style.mono = !style.mono,
            0x16 => style.reverse = !style.reverse,
            0x0f => style = Style::default(),
            0x03 => {
                let (fg, after_fg) = take_digits(bytes, i);
                match fg {
                    None => (style.fg, style.bg) = (None, None),
                    Some(fg) => {
                        style.fg = palette(fg);
                        i = after_fg;
                        if bytes.get(i) == Some(&b',')
                            && let (Some(bg), after_bg) = take_digits(bytes, i + 1)
                        {
                            style.bg = palette(bg);
                            i = after_bg;
                        }
                    }
                }
            }
            _ => match take_hex(bytes, i) {
                None => (style.fg, style.bg) = (None, None),
                Some((fg, after_fg)) => {
                    style.fg = Some(fg);
                    i = after_fg;
                    if bytes.get(i) == Some(&b',')
                        && let Some((bg, after_bg)) = take_hex(bytes, i + 1)
                    {
                        style.bg = Some(bg);
                        i = after_bg;
                    }
                }
            },
        }
        run_start = i;
    }
    if run_start < bytes.len() {
        on_text(&text[run_start..], &style);
    }
    style
}

/// Appends `node`, merging it into the previous node when both are the same style, so that
/// `\x02a\x1db\x1d\x02` reads as one bold node holding an italic one.
fn push_merged(nodes: &mut Vec<Node>, node: Node) {
    let merge = |into: &mut Vec<Node>, from: Vec<Node>| {
        for child in from {
            push_merged(into, child);
        }
    };
    match (nodes.last_mut(), node) {
        (Some(Node::Text(a)), Node::Text(b)) => a.push_str(&b),
        (Some(Node::InlineCode(a)), Node::InlineCode(b)) => a.push_str(&b),
        (Some(Node::Bold(a)), Node::Bold(b))
        | (Some(Node::Italic(a)), Node::Italic(b))
        | (Some(Node::Underline(a)), Node::Underline(b))
        | (Some(Node::Strikethrough(a)), Node::Strikethrough(b)) => merge(a, b),
        (
            Some(Node::Colour { foreground: f1, background: b1, children: a }),
            Node::Colour { foreground: f2, background: b2, children: b },
        ) if *f1 == f2 && *b1 == b2 => merge(a, b),
        (_, node) => nodes.push(node),
    }
}

/// Reads an IRC message's text, formatting codes and all.
pub(crate) fn parse(text: &str) -> RichText {
    let mut nodes = Vec::new();
    scan(text, |run, style| {
        let mut node = if style.mono { Node::InlineCode(run.to_owned()) } else { Node::Text(run.to_owned()) };
        for (on, wrap) in [
            (style.strike, Node::Strikethrough as fn(Vec<Node>) -> Node),
            (style.underline, Node::Underline),
            (style.italic, Node::Italic),
            (style.bold, Node::Bold),
        ] {
            if on {
                node = wrap(vec![node]);
            }
        }
        let (fg, bg) = if style.reverse { (style.bg, style.fg) } else { (style.fg, style.bg) };
        if fg.is_some() || bg.is_some() {
            node = Node::Colour { foreground: fg, background: bg, children: vec![node] };
        }
        push_merged(&mut nodes, node);
    });
    let mut rich = RichText { nodes };
    rich.normalise();
    rich
}

/// The text without formatting codes.
pub(crate) fn strip(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    scan(text, |run, _| out.push_str(run));
    out
}

fn colour_code(fg: Option<Rgb>, bg: Option<Rgb>) -> String {
    let fg = fg.map_or(99, nearest_code);
    match bg {
        Some(bg) => format!("\x03{fg:02},{:02}", nearest_code(bg)),
        None => format!("\x03{fg:02}"),
    }
}

/// The codes that put a fresh line into the style `text` ends in, so a split message keeps its formatting.
pub(crate) fn codes_to_restore(text: &str) -> String {
    let style = scan(text, |_, _| {});
    let mut codes = String::new();
    for (on, code) in [
        (style.bold, '\x02'),
        (style.italic, '\x1d'),
        (style.underline, '\x1f'),
        (style.strike, '\x1e'),
        (style.mono, '\x11'),
        (style.reverse, '\x16'),
    ] {
        if on {
            codes.push(code);
        }
    }
    if style.fg.is_some() || style.bg.is_some() {
        codes.push_str(&colour_code(style.fg, style.bg));
    }
    codes
}

/// Renders the IR as mIRC-formatted text, lines separated by `\n`; `mention` gives the text for a pill (the nick of
/// the person it names, on IRC).
pub(crate) fn render(rich: &RichText, mention: &dyn Fn(&Mention) -> String) -> String {
    let mut writer = Writer { out: String::new(), colour_open: false, mention };
    writer.nodes(&rich.nodes, Style::default());
    writer.out
}

struct Writer<'a> {
    out: String,
    /// The last thing written was a colour code that a following digit or comma would extend.
    colour_open: bool,
    mention: &'a dyn Fn(&Mention) -> String,
}

impl Writer<'_> {
    fn code(&mut self, code: &str) {
        self.out.push_str(code);
        self.colour_open = code.starts_with('\x03');
    }

    fn text(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        if self.colour_open && text.starts_with(|c: char| c.is_ascii_digit() || c == ',') {
            // A bold toggle twice ends the colour code without changing the style.
            self.out.push_str("\x02\x02");
        }
        self.out.push_str(text);
        self.colour_open = false;
    }

    fn toggled(&mut self, code: &str, on: bool, children: &[Node], style: Style) {
        if on {
            self.nodes(children, style);
        } else {
            self.code(code);
            self.nodes(children, style);
            self.code(code);
        }
    }

    fn nodes(&mut self, nodes: &[Node], style: Style) {
        for node in nodes {
            self.node(node, style);
        }
    }

    fn node(&mut self, node: &Node, style: Style) {
        match node {
            Node::Text(text) => self.text(text),
            Node::Bold(children) => self.toggled("\x02", style.bold, children, Style { bold: true, ..style }),
            Node::Italic(children) => self.toggled("\x1d", style.italic, children, Style { italic: true, ..style }),
            Node::Underline(children) => {
                self.toggled("\x1f", style.underline, children, Style { underline: true, ..style })
            }
            Node::Strikethrough(children) => {
                self.toggled("\x1e", style.strike, children, Style { strike: true, ..style })
            }
            Node::InlineCode(code) if style.mono => self.text(code),
            Node::InlineCode(code) => {
                self.code("\x11");
                self.text(code);
                self.code("\x11");
            }
            Node::CodeBlock { code, .. } => {
                self.block_break();
                self.text(code);
                self.out.push('\n');
            }
            Node::Link { url, children } => {
                let start = self.out.len();
                self.nodes(children, style);
                let shown = strip(&self.out[start..]);
                let bare = url.strip_prefix("mailto:").unwrap_or(url);
                if shown != *url && shown != bare {
                    self.text(&format!(" ({url})"));
                }
            }
            Node::Colour { foreground, background, children } => {
                let inner = Style { fg: foreground.or(style.fg), bg: background.or(style.bg), ..style };
                self.code(&colour_code(inner.fg, inner.bg));
                self.nodes(children, inner);
                self.code("\x03");
                if style.fg.is_some() || style.bg.is_some() {
                    self.code(&colour_code(style.fg, style.bg));
                }
            }
            Node::Mention(mention) => {
                let text = (self.mention)(mention);
                self.text(&text);
            }
            Node::Quote(children) => {
                self.block_break();
                let mut inner = Writer { out: String::new(), colour_open: false, mention: self.mention };
                inner.nodes(children, style);
                for line in inner.out.trim_end_matches('\n').split('\n') {
                    self.text("> ");
                    self.out.push_str(line);
                    self.out.push('\n');
                }
            }
            Node::LineBreak => {
                self.out.push('\n');
                self.colour_open = false;
            }
            Node::Spoiler { reason, children } => {
                if let Some(reason) = reason {
                    self.text(&format!("({reason}) "));
                }
                self.code("\x0301,01");
                self.nodes(children, Style { fg: Some(PALETTE[1]), bg: Some(PALETTE[1]), ..style });
                self.code("\x03");
            }
        }
    }

    fn block_break(&mut self) {
        if !self.out.is_empty() && !self.out.ends_with('\n') {
            self.out.push('\n');
        }
        self.colour_open = false;
    }
}

#[cfg(test)]
mod tests {
    use lattice_bridge_core::formatting::{MentionTarget, parse_matrix_html, render_matrix_html};

    use super::*;

    fn text(s: &str) -> Node {
        Node::Text(s.to_owned())
    }

    fn no_mentions(mention: &Mention) -> String {
        mention.display.clone()
    }

    #[test]
    fn irc_codes_become_html() {
        let cases = [
            ("plain", "plain"),
            ("\x02bold\x02 then plain", "<strong>bold</strong> then plain"),
            ("\x1ditalic\x0f \x1funder\x1f \x1estrike", "<em>italic</em> <u>under</u> <del>strike</del>"),
            ("\x02b\x1dbi\x02i", "<strong>b<em>bi</em></strong><em>i</em>"),
            ("\x11code\x11", "<code>code</code>"),
            ("\x0304red\x03 \x0302,08blue on yellow", "<font data-mx-color=\"#ff0000\">red</font> "),
            ("\x04ff8800hex", "<font data-mx-color=\"#ff8800\">hex</font>"),
            ("\x03123", "<font data-mx-color=\"#0000fc\">3</font>"),
            ("a<b>&", "a&lt;b&gt;&amp;"),
        ];
        for (irc, html) in cases {
            let rendered = render_matrix_html(&parse(irc));
            assert!(rendered.starts_with(html), "{irc:?}: {rendered}");
        }
    }

    #[test]
    fn html_becomes_irc_codes() {
        let cases = [
            ("<b>bold</b> and <i>it</i>", "\x02bold\x02 and \x1dit\x1d"),
            ("<b>x<b>y</b></b>", "\x02xy\x02"),
            ("<font data-mx-color=\"#ff0000\">red</font>1", "\x0304red\x03\x02\x021"),
            ("<font data-mx-color=\"#ff0000\">1</font>", "\x0304\x02\x021\x03"),
            ("<code>c</code> <del>s</del> <u>u</u>", "\x11c\x11 \x1es\x1e \x1fu\x1f"),
            ("<a href=\"https://x.org\">site</a>", "site (https://x.org)"),
            ("<a href=\"https://x.org\">https://x.org</a>", "https://x.org"),
            ("a<br>b", "a\nb"),
            ("<blockquote>q</blockquote>after", "> q\nafter"),
            ("<pre><code>l1\nl2</code></pre>", "l1\nl2\n"),
        ];
        for (html, irc) in cases {
            assert_eq!(render(&parse_matrix_html(html), &no_mentions), irc, "{html}");
        }
    }

    #[test]
    fn mentions_render_through_the_callback() {
        let rich = RichText {
            nodes: vec![
                Node::Mention(Mention { target: MentionTarget::User("@a:hs".into()), display: "Alice".into() }),
                text(": hi"),
            ],
        };
        assert_eq!(render(&rich, &|_| "alice_irc".into()), "alice_irc: hi");
    }

    #[test]
    fn formatting_round_trips_through_irc() {
        let htmls = [
            "<strong>bold</strong> text",
            "<strong>it <em>both</em></strong>",
            "<u>under</u><del>struck</del>",
            "<code>x = 1</code>",
            "<font data-mx-color=\"#ff0000\">red <strong>bold red</strong></font> plain",
        ];
        for html in htmls {
            let rich = parse_matrix_html(html);
            let irc = render(&rich, &no_mentions);
            assert_eq!(parse(&irc), rich, "{html} → {irc:?}");
        }
    }

    #[test]
    fn strip_and_restore() {
        assert_eq!(strip("\x02a\x0304,05b\x0fc\x04aabbccd"), "abcd");
        assert_eq!(codes_to_restore("\x02a\x0304b"), "\x02\x0304");
        assert_eq!(codes_to_restore("\x02a\x02"), "");
        assert_eq!(codes_to_restore("\x1d\x0302,04x"), "\x1d\x0302,04");
    }
}
