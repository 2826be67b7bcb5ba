//! [XEP-0084: User Avatar](https://xmpp.org/extensions/xep-0084.html): pictures published by PEP
//! ([XEP-0163](https://xmpp.org/extensions/xep-0163.html)) on an account's `urn:xmpp:avatar:metadata` and
//! `urn:xmpp:avatar:data` nodes, items named by the picture's SHA-1.
//!
//! Matrix → XMPP: a gateway user JID answers `items` queries on both nodes with the Matrix user's picture (the same
//! fetch and cache as the XEP-0153 vCard, [`super::avatar`]), and `item-not-found` when there is none.
//!
//! XMPP → Matrix: the gateway asks an account's metadata node, then the data item the metadata names, and the
//! picture becomes the account's ghost's avatar, uploaded once per SHA-1. The metadata is asked when the account is
//! first seen (a direct message, a MUC occupant whose real JID is known, a gateway MUC occupant) and again after
//! [`RECHECK`]; a `+notify` event from the account's server (the gateway user JIDs advertise
//! `urn:xmpp:avatar:metadata+notify` in their caps) is taken at once.

use std::time::Duration;

use xmpp_parsers::{
    avatar::{Data, Info, Metadata},
    hashes::Algo,
    iq::Iq,
    message::Message,
    minidom::Element,
    ns,
    pubsub::{self, ItemId, NodeName, PubSub, pubsub::Items},
};

use super::avatar::{Avatar, MAX_AVATAR_BYTES, hex};

/// The feature asking the account's server for metadata notifications (XEP-0163 §4).
pub(crate) const NOTIFY_METADATA: &str = "urn:xmpp:avatar:metadata+notify";
/// How long an account's metadata is trusted before it is asked again.
pub(crate) const RECHECK: Duration = Duration::from_secs(600);

/// What an `items` query to a gateway user JID asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    /// The metadata node.
    Metadata,
    /// The data node; the item IDs named, if any.
    Data(Vec<String>),
}

impl Request {
    /// Reads an IQ payload; `None` when it is not an `items` query on one of the avatar nodes.
    pub(crate) fn of(payload: &Element) -> Option<Self> {
        let PubSub::Items(items) = PubSub::try_from(payload.clone()).ok()? else { return None };
        match items.node.0.as_str() {
            ns::AVATAR_METADATA => Some(Self::Metadata),
            ns::AVATAR_DATA => Some(Self::Data(items.items.into_iter().filter_map(|item| Some(item.id?.0)).collect())),
            _ => None,
        }
    }

    /// The answer with `avatar`: the node's one item, or `None` when there is nothing to give (no picture, or
    /// another picture than the one named).
    pub(crate) fn answer(&self, avatar: Option<&Avatar>) -> Option<PubSub> {
        let avatar = avatar?;
        let id = hex(&avatar.sha1);
        let (node, payload): (&str, Element) = match self {
            Self::Metadata => (ns::AVATAR_METADATA, metadata_of(avatar).into()),
            Self::Data(named) if named.is_empty() || named.contains(&id) => {
                (ns::AVATAR_DATA, Data { data: avatar.bytes.to_vec() }.into())
            }
            Self::Data(_) => return None,
        };
        let item = pubsub::pubsub::Item { id: Some(ItemId(id)), publisher: None, payload: Some(payload) };
        Some(PubSub::Items(Items { max_items: None, node: NodeName(node.to_owned()), subid: None, items: vec![item] }))
    }
}

/// The metadata describing a Matrix picture.
pub(crate) fn metadata_of(avatar: &Avatar) -> Metadata {
    let info = Info {
        bytes: u32::try_from(avatar.bytes.len()).unwrap_or(u32::MAX),
        width: None,
        height: None,
        id: hex(&avatar.sha1).parse().expect("40 hex digits are a SHA-1"),
        type_: avatar.mimetype.clone(),
        url: None,
    };
    Metadata { infos: vec![info] }
}

/// The picture a metadata item describes that can be fetched from the data node: the first `info` without a URL
/// (XEP-0084 §4.2.1: that one is published in the data node), not larger than the bridge takes.
pub(crate) fn published(metadata: &Metadata) -> Option<&Info> {
    metadata.infos.iter().find(|info| {
        info.url.is_none()
            && info.id.algo == Algo::Sha_1
            && usize::try_from(info.bytes).is_ok_and(|n| n <= MAX_AVATAR_BYTES)
    })
}

/// The metadata a `+notify` event message carries, if it is one about the avatar.
pub(crate) fn notified(message: &Message) -> Option<Metadata> {
    let event = message.payloads.iter().find_map(|element| pubsub::Event::try_from(element.clone()).ok())?;
    let pubsub::event::Payload::Items { node, published, .. } = event.payload else { return None };
    if node.0 != ns::AVATAR_METADATA {
        return None;
    }
    published.into_iter().rev().find_map(|item| Metadata::try_from(item.payload?).ok())
}

/// The metadata in an `items` result.
pub(crate) fn metadata_in(answer: Iq) -> Option<Metadata> {
    let Iq::Result { payload: Some(payload), .. } = answer else { return None };
    let PubSub::Items(items) = PubSub::try_from(payload).ok()? else { return None };
    items.items.into_iter().rev().find_map(|item| Metadata::try_from(item.payload?).ok())
}

/// The picture data in an `items` result.
pub(crate) fn data_in(answer: Iq) -> Option<Vec<u8>> {
    let Iq::Result { payload: Some(payload), .. } = answer else { return None };
    let PubSub::Items(items) = PubSub::try_from(payload).ok()? else { return None };
    items.items.into_iter().find_map(|item| Data::try_from(item.payload?).ok()).map(|data| data.data)
}

/// The `items` query for one node (and item).
pub(crate) fn items_query(node: &str, item: Option<String>) -> PubSub {
    let items = item.map(|id| pubsub::pubsub::Item { id: Some(ItemId(id)), publisher: None, payload: None });
    PubSub::Items(Items {
        max_items: Some(1).filter(|_| items.is_none()),
        node: NodeName(node.to_owned()),
        subid: None,
        items: items.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use bytes::Bytes;

    use super::*;
    use crate::xep::avatar::sha1;

    fn avatar() -> Avatar {
        Avatar::new(Bytes::from_static(b"abc"), Some("image/png".into()))
    }

    const ABC: &str = "a9993e364706816aba3e25717850c26c9cd0d89d";

    #[test]
    fn queries_on_the_avatar_nodes_are_read() {
        let table = [
            (
                "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:avatar:metadata' \
                 max_items='1'/></pubsub>",
                Some(Request::Metadata),
            ),
            (
                "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:avatar:data'>\
                 <item id='x1'/></items></pubsub>",
                Some(Request::Data(vec!["x1".into()])),
            ),
            ("<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:microblog:0'/></pubsub>", None),
            ("<vCard xmlns='vcard-temp'/>", None),
        ];
        for (xml, expected) in table {
            assert_eq!(Request::of(&Element::from_str(xml).unwrap()), expected, "{xml}");
        }
    }

    #[test]
    fn answers_carry_the_picture_named_by_its_sha1() {
        let avatar = avatar();
        let PubSub::Items(metadata) = Request::Metadata.answer(Some(&avatar)).unwrap() else { panic!() };
        assert_eq!(metadata.items[0].id.as_ref().map(|id| id.0.as_str()), Some(ABC));
        let parsed = Metadata::try_from(metadata.items[0].payload.clone().unwrap()).unwrap();
        let info = published(&parsed).unwrap();
        assert_eq!((info.bytes, info.type_.as_str(), info.id.hash.clone()), (3, "image/png", sha1(b"abc").to_vec()));

        let PubSub::Items(data) = Request::Data(vec![ABC.into()]).answer(Some(&avatar)).unwrap() else { panic!() };
        assert_eq!(Data::try_from(data.items[0].payload.clone().unwrap()).unwrap().data, b"abc");
        assert!(Request::Data(vec![]).answer(Some(&avatar)).is_some(), "no item named: the current one");
        assert!(Request::Data(vec!["0".repeat(40)]).answer(Some(&avatar)).is_none(), "another picture");
        assert!(Request::Metadata.answer(None).is_none());
    }

    #[test]
    fn results_and_events_are_read() {
        let answer = |xml: &str| Iq::Result {
            from: None,
            to: None,
            id: "1".into(),
            payload: Some(Element::from_str(xml).unwrap()),
        };
        let metadata = metadata_in(answer(&format!(
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:avatar:metadata'>\
             <item id='{ABC}'><metadata xmlns='urn:xmpp:avatar:metadata'>\
             <info url='https://example.org/a.png' bytes='3' id='{ABC}' type='image/png'/>\
             <info bytes='3' id='{ABC}' type='image/gif'/></metadata></item></items></pubsub>"
        )))
        .unwrap();
        assert_eq!(published(&metadata).map(|info| info.type_.as_str()), Some("image/gif"), "the URL one is skipped");
        let too_large = format!(
            "<metadata xmlns='urn:xmpp:avatar:metadata'><info bytes='{}' id='{ABC}' type='image/png'/></metadata>",
            MAX_AVATAR_BYTES + 1
        );
        assert!(published(&Metadata::try_from(Element::from_str(&too_large).unwrap()).unwrap()).is_none());
        let data = data_in(answer(&format!(
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:avatar:data'>\
             <item id='{ABC}'><data xmlns='urn:xmpp:avatar:data'>YWJj</data></item></items></pubsub>"
        )));
        assert_eq!(data.as_deref(), Some(&b"abc"[..]));

        let event = Message::try_from(
            Element::from_str(&format!(
                "<message xmlns='jabber:component:accept' from='x@localhost' to='bridge.localhost' type='headline'>\
                 <event xmlns='http://jabber.org/protocol/pubsub#event'><items node='urn:xmpp:avatar:metadata'>\
                 <item id='{ABC}'><metadata xmlns='urn:xmpp:avatar:metadata'>\
                 <info bytes='3' id='{ABC}' type='image/png'/></metadata></item></items></event></message>"
            ))
            .unwrap(),
        )
        .unwrap();
        assert_eq!(notified(&event).and_then(|m| published(&m).map(|info| info.bytes)), Some(3));
        let other = Message::try_from(
            Element::from_str(
                "<message xmlns='jabber:component:accept'><event xmlns='http://jabber.org/protocol/pubsub#event'>\
                 <items node='urn:xmpp:tune'/></event></message>",
            )
            .unwrap(),
        )
        .unwrap();
        assert!(notified(&other).is_none());
    }
}
