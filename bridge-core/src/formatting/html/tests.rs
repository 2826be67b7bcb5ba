//! Table-driven and property tests of Matrix HTML parsing and rendering.

use proptest::prelude::*;

use super::{parse::MAX_DEPTH, *};
use crate::formatting::{Mention, MentionTarget, Node, Rgb, strategy::arb_rich_text};

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
        ("<a href=\"https://example.org\"></a>", vec![link("https://example.org", vec![text("https://example.org")])]),
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
        ("<a href=\"https://matrix.to/#/@alice:example.org\"></a>", vec![mention(alice.clone(), "@alice:example.org")]),
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
        (vec![code_block(Some("r\"s"), "x &\ny")], "<pre><code class=\"language-r&quot;s\">x &amp;\ny\n</code></pre>"),
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
