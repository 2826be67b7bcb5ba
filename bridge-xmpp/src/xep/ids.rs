//! Message identity: [XEP-0359: Unique and Stable Stanza IDs](https://xmpp.org/extensions/xep-0359.html) and
//! [XEP-0421: Anonymous unique occupant identifiers for MUCs](https://xmpp.org/extensions/xep-0421.html).
//!
//! A message can have three names: the sender's `id` attribute, the sender's `<origin-id/>` and the `<stanza-id/>`
//! the MUC (or the account's archive) stamped on it. The bridge maps a message under its *remote ID* — the stanza-id
//! the MUC stamped when it stamps one (Prosody's `muc_mam` does), else the origin-id, else the `id` — and records the
//! sender's name as an alias of it, because XEP-0308 corrections name the sender's ID while retractions, reactions
//! and replies in a MUC name the stanza-id.
//!
//! An occupant of a semi-anonymous MUC that stamps XEP-0421 occupant-ids (and says so in its disco#info: only then
//! is an occupant-id the MUC's and not the sender's forgery) is known by it: their ghost is named after the
//! occupant-id, so a nick change keeps the ghost, and with it their reactions and the right to retract their
//! messages. The MUC derives the ID from the account, so it is the same after any restart of either side, and the
//! ghost with it. Gateway MUCs stamp their own ([`gateway_muc_occupant_id`]).

use xmpp_parsers::{
    caps,
    hashes::Algo,
    jid::BareJid,
    message::Message,
    occupant_id::OccupantId,
    stanza_id::{OriginId, StanzaId},
};

use super::payload;

/// The names of one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MessageIds {
    /// The `<stanza-id/>` stamped by the entity the caller trusts (the MUC, for groupchat).
    pub stanza_id: Option<String>,
    /// The sender's `<origin-id/>`, or else its `id` attribute.
    pub sender_id: Option<String>,
    /// The MUC's stable identifier of the sending occupant (XEP-0421).
    pub occupant_id: Option<String>,
}

impl MessageIds {
    /// Reads a message's names. Only a stanza-id stamped `by` the given JID counts: anyone else's could be forged
    /// by the sender (XEP-0359 §4).
    pub(crate) fn of(message: &Message, stamped_by: Option<&BareJid>) -> Self {
        let stanza_id = stamped_by.and_then(|by| {
            message
                .payloads
                .iter()
                .filter_map(|element| StanzaId::try_from(element.clone()).ok())
                .find(|stanza_id| stanza_id.by.to_bare() == *by)
                .map(|stanza_id| stanza_id.id)
        });
        let sender_id = payload::<OriginId>(&message.payloads)
            .map(|origin| origin.id)
            .or_else(|| message.id.as_ref().map(|id| id.0.clone()));
        let occupant_id = payload::<OccupantId>(&message.payloads).map(|occupant| occupant.id);
        Self { stanza_id, sender_id, occupant_id }
    }

    /// The ID the message is mapped under.
    pub(crate) fn remote_id(&self) -> Option<&str> {
        self.stanza_id.as_deref().or(self.sender_id.as_deref())
    }

    /// The sender's own name when it differs from the remote ID: recorded as an alias.
    pub(crate) fn alias(&self) -> Option<&str> {
        match (&self.stanza_id, &self.sender_id) {
            (Some(stanza_id), Some(sender_id)) if stanza_id != sender_id => Some(sender_id),
            _ => None,
        }
    }
}

/// The occupant-id a gateway MUC gives one of its occupants: stable per room and person (a Matrix user ID, or an
/// XMPP account's bare JID), whatever their nick or client. Gateway MUCs are non-anonymous, so the ID need not
/// hide who it stands for; it is a hash only to be opaque and of fixed length.
pub(crate) fn gateway_muc_occupant_id(room: &BareJid, person: &str) -> OccupantId {
    use base64::Engine as _;
    let digest = caps::hash_caps(format!("{room}\0{person}").as_bytes(), Algo::Sha_256)
        .expect("SHA-256 is one of the caps algorithms")
        .hash;
    OccupantId { id: base64::engine::general_purpose::STANDARD_NO_PAD.encode(&digest[..18]) }
}

/// The `<origin-id/>` of a message the bridge sends, so a MUC that rewrites `id` still reflects the bridge's name.
pub(crate) fn origin_id(id: &str) -> OriginId {
    OriginId { id: id.to_owned() }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use xmpp_parsers::minidom::Element;

    use super::*;

    fn message(xml: &str) -> Message {
        Message::try_from(Element::from_str(xml).unwrap()).unwrap()
    }

    #[test]
    fn the_muc_stamp_wins_and_the_sender_id_is_its_alias() {
        let room = BareJid::from_str("room@muc.example").unwrap();
        let xml = "<message xmlns='jabber:component:accept' type='groupchat' id='m1'>\
            <origin-id xmlns='urn:xmpp:sid:0' id='o1'/>\
            <stanza-id xmlns='urn:xmpp:sid:0' by='evil@example' id='forged'/>\
            <stanza-id xmlns='urn:xmpp:sid:0' by='room@muc.example' id='s1'/>\
            <occupant-id xmlns='urn:xmpp:occupant-id:0' id='occ'/></message>";
        let ids = MessageIds::of(&message(xml), Some(&room));
        assert_eq!(ids.remote_id(), Some("s1"));
        assert_eq!(ids.alias(), Some("o1"));
        assert_eq!(ids.occupant_id.as_deref(), Some("occ"));
    }

    #[test]
    fn gateway_mucs_give_each_person_one_stable_occupant_id() {
        let room = BareJid::from_str("#r#localhost@bridge.localhost").unwrap();
        let other_room = BareJid::from_str("#s#localhost@bridge.localhost").unwrap();
        let id = gateway_muc_occupant_id(&room, "@alice:localhost").id;
        assert_eq!(gateway_muc_occupant_id(&room, "@alice:localhost").id, id);
        assert_eq!(id.len(), 24);
        assert_ne!(gateway_muc_occupant_id(&room, "x@localhost").id, id);
        assert_ne!(gateway_muc_occupant_id(&other_room, "@alice:localhost").id, id);
    }

    #[test]
    fn without_a_trusted_stamp_the_sender_id_is_the_remote_id() {
        let xml = "<message xmlns='jabber:component:accept' type='chat' id='m1'>\
            <stanza-id xmlns='urn:xmpp:sid:0' by='room@muc.example' id='s1'/></message>";
        let ids = MessageIds::of(&message(xml), None);
        assert_eq!((ids.remote_id(), ids.alias()), (Some("m1"), None));
        let bare = MessageIds::of(&message("<message xmlns='jabber:component:accept'/>"), None);
        assert_eq!(bare.remote_id(), None);
    }
}
