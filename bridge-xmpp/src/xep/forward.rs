//! Forwarded stanzas ([XEP-0297: Stanza Forwarding](https://xmpp.org/extensions/xep-0297.html)) between the
//! component's namespace and the client's: archives (XEP-0313) forward messages inside messages, and the inner
//! stanza is in the namespace of the stream it was first sent on.

use xmpp_parsers::minidom::{Element, Node};

/// The component build serialises stanzas in `jabber:component:accept`; a stanza forwarded to a client inside
/// another (XEP-0297) must be in `jabber:client`, the namespace clients parse it in.
pub(crate) fn in_client_namespace(element: Element) -> Element {
    renamespace(element, COMPONENT_NS, CLIENT_NS)
}

/// A forwarded stanza from a server's archive is in `jabber:client`; the component build parses stanzas in
/// `jabber:component:accept`.
pub(crate) fn in_component_namespace(element: Element) -> Element {
    renamespace(element, CLIENT_NS, COMPONENT_NS)
}

fn renamespace(element: Element, from: &str, to: &str) -> Element {
    let namespace = if element.ns() == from { to.to_owned() } else { element.ns() };
    let mut rewritten = Element::bare(element.name(), namespace);
    *rewritten.attrs_mut() = element.attrs().clone();
    for node in element.nodes() {
        match node {
            Node::Element(child) => {
                rewritten.append_child(renamespace(child.clone(), from, to));
            }
            Node::Text(text) => rewritten.append_text_node(text.clone()),
        }
    }
    rewritten
}

const COMPONENT_NS: &str = "jabber:component:accept";
const CLIENT_NS: &str = "jabber:client";

#[cfg(test)]
mod tests {
    use xmpp_parsers::{
        forwarding::Forwarded,
        jid::Jid,
        message::{Lang, Message},
    };

    use super::*;

    #[test]
    fn forwarded_stanzas_are_in_the_client_namespace() {
        let message = Message::groupchat(None::<Jid>).with_body(Lang::new(), "hi".into());
        let forwarded = Forwarded { delay: None, message };
        let element = in_client_namespace(forwarded.into());
        let inner = element.get_child("message", CLIENT_NS).expect("the message is in jabber:client");
        assert_eq!(inner.get_child("body", CLIENT_NS).map(Element::text).as_deref(), Some("hi"));
        assert_eq!(element.ns(), "urn:xmpp:forward:0", "other namespaces stay");
        let back = Forwarded::try_from(in_component_namespace(element)).expect("parses in the component build");
        assert_eq!(back.message.bodies.values().next().map(String::as_str), Some("hi"));
    }
}
