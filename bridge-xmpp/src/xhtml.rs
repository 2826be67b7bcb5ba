//! Reading [XEP-0071: XHTML-IM](https://xmpp.org/extensions/xep-0071.html) into Matrix HTML.
//!
//! Some clients (Gajim, older Pidgin and Psi) send formatting as XHTML-IM beside a plain body instead of XEP-0393
//! styling in the body. When a message carries it, its first body is turned into HTML of the recommended
//! XHTML-IM profile only (XEP-0071 §7: `a blockquote br cite code em img li ol p pre q span strong ul`), with the
//! CSS that profile uses for emphasis (`font-weight`, `font-style`, `text-decoration`) written as the matching
//! tags, and read by bridge-core's Matrix HTML parser, which keeps only what it knows. Links keep `http`, `https`,
//! `xmpp` and `mailto` targets; images become their `alt` text, since fetching them would be a request on the
//! sender's behalf. Without XHTML-IM, the body is read as XEP-0393 styling ([`crate::styling`]).

use lattice_bridge_core::formatting::RichText;
use tokio_xmpp::parsers::minidom::{Element, Node};

use crate::styling::parse_styling;

/// The XHTML-IM wrapper's namespace.
pub(crate) const XHTML_IM: &str = "http://jabber.org/protocol/xhtml-im";
/// The namespace of the XHTML `<body/>` inside it.
pub(crate) const XHTML: &str = "http://www.w3.org/1999/xhtml";

/// The message's text for Matrix: `body` and `formatted_body`, from XHTML-IM when the payloads carry some with
/// content, else from `text` read as XEP-0393 styling.
pub(crate) fn incoming_text(payloads: &[Element], text: &str) -> (String, Option<String>) {
    if let Some(html) = xhtml_of(payloads) {
        let rich = RichText::from_message(text, Some(&html), Some(lattice_bridge_core::formatting::MATRIX_HTML_FORMAT));
        if !rich.is_empty() {
            return rich.to_message();
        }
    }
    parse_styling(text).to_message()
}

/// The first XHTML-IM body in `payloads`, as HTML of the XHTML-IM profile.
pub(crate) fn xhtml_of(payloads: &[Element]) -> Option<String> {
    let wrapper = payloads.iter().find(|payload| payload.is("html", XHTML_IM))?;
    let body = wrapper.children().find(|child| child.is("body", XHTML))?;
    let mut html = String::new();
    write_children(&mut html, body);
    (!html.trim().is_empty()).then_some(html)
}

fn write_children(html: &mut String, element: &Element) {
    for node in element.nodes() {
        match node {
            Node::Text(text) => html.push_str(&escape(text)),
            Node::Element(child) => write_element(html, child),
        }
    }
}

fn write_element(html: &mut String, element: &Element) {
    let name = element.name();
    let wraps = style_tags(element.attr("style"));
    for tag in &wraps {
        html.push_str(&format!("<{tag}>"));
    }
    match name {
        "br" => html.push_str("<br>"),
        "p" | "blockquote" | "code" | "em" | "li" | "ol" | "pre" | "strong" | "ul" => {
            html.push_str(&format!("<{name}>"));
            write_children(html, element);
            html.push_str(&format!("</{name}>"));
        }
        "cite" => {
            html.push_str("<em>");
            write_children(html, element);
            html.push_str("</em>");
        }
        "q" => {
            html.push('“');
            write_children(html, element);
            html.push('”');
        }
        "a" => match element.attr("href").filter(|href| is_safe_link(href)) {
            Some(href) => {
                html.push_str(&format!("<a href=\"{}\">", escape(href)));
                write_children(html, element);
                html.push_str("</a>");
            }
            None => write_children(html, element),
        },
        "img" => html.push_str(&escape(element.attr("alt").unwrap_or_default())),
        // Content no reader is meant to see.
        "script" | "style" | "head" | "title" => {}
        // `span`, `body` and anything outside the profile: only the content (and its style) is kept.
        _ => write_children(html, element),
    }
    for tag in wraps.iter().rev() {
        html.push_str(&format!("</{tag}>"));
    }
}

/// The tags that stand for an element's inline CSS: bold, italic, underline, strike-through.
fn style_tags(style: Option<&str>) -> Vec<&'static str> {
    let mut tags = Vec::new();
    for declaration in style.unwrap_or_default().split(';') {
        let Some((property, value)) = declaration.split_once(':') else { continue };
        let value = value.trim().to_ascii_lowercase();
        match property.trim().to_ascii_lowercase().as_str() {
            "font-weight" if value == "bold" || value == "bolder" || value.parse::<u32>().is_ok_and(|w| w >= 600) => {
                tags.push("strong");
            }
            "font-style" if value == "italic" || value == "oblique" => tags.push("em"),
            "text-decoration" | "text-decoration-line" => {
                if value.contains("underline") {
                    tags.push("u");
                }
                if value.contains("line-through") {
                    tags.push("del");
                }
            }
            _ => {}
        }
    }
    tags
}

fn is_safe_link(href: &str) -> bool {
    let scheme = href.split_once(':').map(|(scheme, _)| scheme.to_ascii_lowercase());
    matches!(scheme.as_deref(), Some("http" | "https" | "xmpp" | "mailto"))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn payload(inner: &str) -> Vec<Element> {
        let xml = format!("<html xmlns='{XHTML_IM}'><body xmlns='{XHTML}'>{inner}</body></html>");
        vec![Element::from_str(&xml).unwrap()]
    }

    #[test]
    fn xhtml_im_becomes_matrix_html() {
        for (inner, body, html) in [
            ("<p>a <strong>b</strong> <em>c</em></p>", "a b c", Some("a <strong>b</strong> <em>c</em>")),
            ("x <span style='font-weight: bold'>y</span>", "x y", Some("x <strong>y</strong>")),
            (
                "<span style='font-style:italic; text-decoration: line-through'>z</span>",
                "z",
                Some("<em><del>z</del></em>"),
            ),
            (
                "<a href='https://example.org/'>site</a>",
                "site (https://example.org/)",
                Some("<a href=\"https://example.org/\">site</a>"),
            ),
            ("<a href='javascript:alert(1)'>bad</a>", "bad", None),
            ("<img src='https://x/y.png' alt='a cat'/>", "a cat", None),
            ("1 &lt; 2 &amp; <b>3</b>", "1 < 2 & 3", None),
            ("a<script>alert(1)</script><style>p {}</style>", "a", None),
        ] {
            let (got_body, got_html) = incoming_text(&payload(inner), "ignored plain body");
            assert_eq!(got_body, body, "{inner}");
            assert_eq!(got_html.as_deref(), html, "{inner}");
        }
    }

    #[test]
    fn without_xhtml_im_the_body_is_styling() {
        assert_eq!(incoming_text(&[], "a *b*"), ("a b".to_owned(), Some("a <strong>b</strong>".to_owned())));
        // An empty XHTML-IM body is no formatting at all.
        assert_eq!(incoming_text(&payload(""), "a *b*").1.as_deref(), Some("a <strong>b</strong>"));
    }
}
