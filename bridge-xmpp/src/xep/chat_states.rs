//! [XEP-0085: Chat State Notifications](https://xmpp.org/extensions/xep-0085.html) ⇄ Matrix typing
//! notifications (`m.typing`), and [XEP-0184: Message Delivery
//! Receipts](https://xmpp.org/extensions/xep-0184.html) / [XEP-0333: Displayed
//! Markers](https://xmpp.org/extensions/xep-0333.html) ⇄ Matrix read receipts.
//!
//! Typing is `composing`; every other state (`active`, `paused`, `inactive`, `gone`) means not typing. A Matrix read
//! receipt becomes a `<displayed/>` marker for the message read; an XMPP `<displayed/>` marker or `<received/>`
//! receipt becomes the reader's ghost's read receipt.

use xmpp_parsers::{chatstates::ChatState, minidom::Element, ns};

/// XEP-0333's namespace.
pub(crate) const NS_MARKERS: &str = "urn:xmpp:chat-markers:0";

/// Whether a chat state means the sender is typing.
pub(crate) fn is_typing(state: &ChatState) -> bool {
    matches!(state, ChatState::Composing)
}

/// The chat state that says `typing`.
pub(crate) fn state_of(typing: bool) -> ChatState {
    if typing { ChatState::Composing } else { ChatState::Active }
}

/// `<displayed id='…'/>` for the message read.
pub(crate) fn displayed(id: &str) -> Element {
    Element::builder("displayed", NS_MARKERS).attr(super::name("id"), id).build()
}

/// `<markable/>`: asks the recipient for displayed markers.
pub(crate) fn markable() -> Element {
    Element::builder("markable", NS_MARKERS).build()
}

/// The message a `<displayed/>` marker or a `<received/>` receipt acknowledges, if the payload is one.
pub(crate) fn acknowledged(element: &Element) -> Option<&str> {
    if element.is("displayed", NS_MARKERS) || element.is("received", ns::RECEIPTS) {
        element.attr("id").filter(|id| !id.is_empty())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn only_composing_is_typing() {
        for (state, typing) in [
            (ChatState::Composing, true),
            (ChatState::Active, false),
            (ChatState::Paused, false),
            (ChatState::Inactive, false),
            (ChatState::Gone, false),
        ] {
            assert_eq!(is_typing(&state), typing, "{state:?}");
        }
        assert!(is_typing(&state_of(true)) && !is_typing(&state_of(false)));
    }

    #[test]
    fn markers_and_receipts_name_the_message() {
        let table = [
            ("<displayed xmlns='urn:xmpp:chat-markers:0' id='m1'/>", Some("m1")),
            ("<received xmlns='urn:xmpp:receipts' id='m2'/>", Some("m2")),
            ("<received xmlns='urn:xmpp:receipts'/>", None),
            ("<markable xmlns='urn:xmpp:chat-markers:0'/>", None),
        ];
        for (xml, id) in table {
            assert_eq!(acknowledged(&Element::from_str(xml).unwrap()), id, "{xml}");
        }
        assert_eq!(acknowledged(&displayed("m3")), Some("m3"));
    }
}
