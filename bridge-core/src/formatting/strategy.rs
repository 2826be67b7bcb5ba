//! Proptest strategies that generate arbitrary [`RichText`], for the property tests of the IR and its encodings.

use proptest::{option, prelude::*, sample::select};

use crate::formatting::{Mention, MentionTarget, Node, Rgb, RichText};

/// Text mixing arbitrary printable characters with those that need care: markup characters, entities, whitespace
/// runs, line endings, NUL, a byte order mark and an mIRC control code.
fn arb_string() -> impl Strategy<Value = String> {
    let tricky = select(vec![
        "<", ">", "&", "\"", "'", "&amp;", "<b>", "  ", "\t", "\n", "\r", "\r\n", "\0", "\u{feff}", "\u{a0}", "\x02",
    ]);
    let part = prop_oneof![3 => "\\PC{1,6}", 1 => tricky.prop_map(str::to_owned)];
    prop::collection::vec(part, 0..6).prop_map(|parts| parts.concat())
}

fn arb_target() -> impl Strategy<Value = MentionTarget> {
    prop_oneof![
        ("[a-z0-9._=/+-]{1,8}", "[a-z0-9.-]{1,8}(:[0-9]{1,4})?")
            .prop_map(|(local, server)| MentionTarget::User(format!("@{local}:{server}"))),
        ("[^:\\pC]\\PC{0,6}", "[a-z0-9.-]{1,8}")
            .prop_map(|(local, server)| MentionTarget::RoomAlias(format!("#{local}:{server}"))),
        "[A-Za-z0-9_-]{1,10}(:[a-z.]{1,6})?".prop_map(|opaque| MentionTarget::Room(format!("!{opaque}"))),
    ]
}

fn arb_url() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "https://example\\.org/[a-z0-9/?=&#%._~\"'<> -]{0,12}",
        1 => "mailto:[a-z]{1,5}@example\\.org",
        1 => arb_target().prop_map(|target| target.permalink()),
        1 => "matrix:u/[a-z]{1,4}:example\\.org",
    ]
}

fn arb_rgb() -> impl Strategy<Value = Rgb> {
    any::<(u8, u8, u8)>().prop_map(|(r, g, b)| Rgb(r, g, b))
}

fn arb_node() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        4 => arb_string().prop_map(Node::Text),
        1 => Just(Node::LineBreak),
        1 => arb_string().prop_map(Node::InlineCode),
        1 => (option::of(prop_oneof!["[a-z+#-]{1,8}", "\\PC{0,5}"]), arb_string())
            .prop_map(|(language, code)| Node::CodeBlock { language, code }),
        1 => (arb_target(), arb_string()).prop_map(|(target, display)| Node::Mention(Mention { target, display })),
    ];
    leaf.prop_recursive(4, 48, 4, |inner| {
        let children = prop::collection::vec(inner, 0..4);
        prop_oneof![
            children.clone().prop_map(Node::Bold),
            children.clone().prop_map(Node::Italic),
            children.clone().prop_map(Node::Underline),
            children.clone().prop_map(Node::Strikethrough),
            children.clone().prop_map(Node::Quote),
            (arb_url(), children.clone()).prop_map(|(url, children)| Node::Link { url, children }),
            (option::of(arb_rgb()), option::of(arb_rgb()), children.clone())
                .prop_map(|(foreground, background, children)| Node::Colour { foreground, background, children }),
            (option::of(arb_string()), children).prop_map(|(reason, children)| Node::Spoiler { reason, children }),
        ]
    })
}

/// Arbitrary messages, not normalised.
pub(super) fn arb_rich_text() -> impl Strategy<Value = RichText> {
    prop::collection::vec(arb_node(), 0..6).prop_map(|nodes| RichText { nodes })
}
