//! [XEP-0461: Message Replies](https://xmpp.org/extensions/xep-0461.html) with
//! [XEP-0428: Fallback Indication](https://xmpp.org/extensions/xep-0428.html) ⇄ Matrix `m.in_reply_to`.
//!
//! A reply names the message it answers (`<reply id='…' to='…'/>`: the sender's ID in a chat, the stanza-id in a
//! MUC). For clients that know no replies the body starts with a quote of the original, marked as fallback by a
//! `<fallback for='urn:xmpp:reply:0'><body start='0' end='n'/></fallback>` range counted in Unicode code points
//! (XEP-0426). Incoming, the marked range is cut out, so Matrix shows the reply alone; outgoing, a quote is put in
//! front of the text and marked.

use xmpp_parsers::{jid::Jid, minidom::Element};

use super::{ElementError, expect, required};

/// XEP-0461's namespace.
pub(crate) const NS_REPLY: &str = "urn:xmpp:reply:0";
/// XEP-0428's namespace.
pub(crate) const NS_FALLBACK: &str = "urn:xmpp:fallback:0";
/// Longest quote put in front of a reply, in characters: enough to recognise the message.
const MAX_QUOTE_CHARS: usize = 200;

/// `<reply/>`: which message this one answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The author of the answered message (a full occupant JID in a MUC), if known.
    pub to: Option<Jid>,
    /// The answered message's ID.
    pub id: String,
}

impl TryFrom<Element> for Reply {
    type Error = ElementError;

    fn try_from(element: Element) -> Result<Self, Self::Error> {
        expect(&element, "reply", NS_REPLY)?;
        let id = required(&element, "reply", "id")?.to_owned();
        let to = match element.attr("to") {
            Some(to) => Some(Jid::new(to).map_err(|_| ElementError::BadAttribute {
                element: "reply",
                attribute: "to",
                value: to.to_owned(),
            })?),
            None => None,
        };
        Ok(Self { to, id })
    }
}

impl From<Reply> for Element {
    fn from(reply: Reply) -> Self {
        let mut builder = Element::builder("reply", NS_REPLY).attr(super::name("id"), reply.id);
        if let Some(to) = reply.to {
            builder = builder.attr(super::name("to"), to.to_string());
        }
        builder.build()
    }
}

/// `<fallback/>`: which parts of the body exist only for clients that do not know the feature `for_ns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    /// The namespace of the feature the fallback stands in for.
    pub for_ns: String,
    /// Code-point ranges `[start, end)` of the body; empty means the whole body.
    pub body_ranges: Vec<(usize, usize)>,
}

fn position(element: &Element, attribute: &'static str) -> Result<Option<usize>, ElementError> {
    element
        .attr(attribute)
        .map(|value| {
            value.parse().map_err(|_| ElementError::BadAttribute {
                element: "body",
                attribute,
                value: value.to_owned(),
            })
        })
        .transpose()
}

impl TryFrom<Element> for Fallback {
    type Error = ElementError;

    fn try_from(element: Element) -> Result<Self, Self::Error> {
        expect(&element, "fallback", NS_FALLBACK)?;
        let for_ns = required(&element, "fallback", "for")?.to_owned();
        let mut body_ranges = Vec::new();
        for body in element.children().filter(|child| child.is("body", NS_FALLBACK)) {
            match (position(body, "start")?, position(body, "end")?) {
                (Some(start), Some(end)) if start <= end => body_ranges.push((start, end)),
                (None, None) => {}
                _ => {
                    return Err(ElementError::BadAttribute {
                        element: "body",
                        attribute: "end",
                        value: body.attr("end").unwrap_or_default().to_owned(),
                    });
                }
            }
        }
        Ok(Self { for_ns, body_ranges })
    }
}

impl From<Fallback> for Element {
    fn from(fallback: Fallback) -> Self {
        let mut builder = Element::builder("fallback", NS_FALLBACK).attr(super::name("for"), fallback.for_ns);
        for (start, end) in fallback.body_ranges {
            builder = builder.append(
                Element::builder("body", NS_FALLBACK)
                    .attr(super::name("start"), start.to_string())
                    .attr(super::name("end"), end.to_string())
                    .build(),
            );
        }
        builder.build()
    }
}

/// The body without the ranges the reply fallbacks mark. A fallback without ranges marks no part of a reply's body
/// (it would leave nothing), so it is ignored; ranges past the end are clipped.
pub(crate) fn strip_reply_fallback(body: &str, fallbacks: &[Fallback]) -> String {
    let ranges: Vec<(usize, usize)> = fallbacks
        .iter()
        .filter(|fallback| fallback.for_ns == NS_REPLY)
        .flat_map(|fallback| fallback.body_ranges.iter().copied())
        .collect();
    if ranges.is_empty() {
        return body.to_owned();
    }
    let kept: String = body
        .chars()
        .enumerate()
        .filter(|(index, _)| !ranges.iter().any(|(start, end)| (*start..*end).contains(index)))
        .map(|(_, c)| c)
        .collect();
    kept
}

/// `text` with a quote of the answered message in front, and the fallback that marks the quote.
pub(crate) fn with_quote(author: &str, quoted: &str, text: &str) -> (String, Fallback) {
    let mut quoted: String = quoted.chars().take(MAX_QUOTE_CHARS).collect();
    if quoted.chars().count() == MAX_QUOTE_CHARS {
        quoted.push('…');
    }
    let mut quote = String::new();
    for (index, line) in quoted.lines().enumerate() {
        match index {
            0 => quote.push_str(&format!("> {author}: {line}\n")),
            _ => quote.push_str(&format!("> {line}\n")),
        }
    }
    if quote.is_empty() {
        quote = format!("> {author}:\n");
    }
    let end = quote.chars().count();
    (format!("{quote}{text}"), Fallback { for_ns: NS_REPLY.to_owned(), body_ranges: vec![(0, end)] })
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn replies_parse_and_round_trip() {
        let element = Element::from_str("<reply xmlns='urn:xmpp:reply:0' to='room@muc/Ann' id='s1'/>").unwrap();
        let reply = Reply::try_from(element).unwrap();
        assert_eq!(reply, Reply { to: Some(Jid::new("room@muc/Ann").unwrap()), id: "s1".into() });
        assert_eq!(Reply::try_from(Element::from(reply.clone())), Ok(reply));
        let missing = Element::from_str("<reply xmlns='urn:xmpp:reply:0'/>").unwrap();
        assert!(Reply::try_from(missing).is_err());
    }

    #[test]
    fn fallback_ranges_are_cut_by_code_point() {
        let fallback = Fallback::try_from(
            Element::from_str(
                "<fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'><body start='0' end='9'/></fallback>",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(strip_reply_fallback("> Ann: é\nyes", std::slice::from_ref(&fallback)), "yes");
        let other = Fallback { for_ns: "urn:other".into(), body_ranges: vec![(0, 3)] };
        assert_eq!(strip_reply_fallback("abcdef", &[other]), "abcdef");
        let past_end = Fallback { for_ns: NS_REPLY.into(), body_ranges: vec![(2, 100)] };
        assert_eq!(strip_reply_fallback("abcdef", &[past_end]), "ab");
        let bad = Element::from_str(
            "<fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'><body start='5' end='1'/></fallback>",
        )
        .unwrap();
        assert!(Fallback::try_from(bad).is_err());
    }

    proptest! {
        /// Whatever the quoted text, cutting the marked quote out of an outgoing reply gives back the reply text.
        #[test]
        fn quotes_are_cut_exactly(author in "[^\n]{0,20}", quoted in "\\PC{0,300}", text in "\\PC{0,50}") {
            let (body, fallback) = with_quote(&author, &quoted, &text);
            let element = Element::from(fallback);
            let parsed = Fallback::try_from(element).unwrap();
            prop_assert_eq!(strip_reply_fallback(&body, &[parsed]), text);
        }
    }
}
