//! IQs to a gateway MUC: disco#info as a public, open, non-anonymous text conference
//! ([XEP-0030](https://xmpp.org/extensions/xep-0030.html)), an empty disco#items, self-pings of its occupants
//! ([XEP-0410](https://xmpp.org/extensions/xep-0410.html)), archive queries ([`super::archive`]), and an error for
//! anything else.

use tokio_xmpp::parsers::{
    disco::{DiscoInfoResult, DiscoItemsResult, Identity},
    iq::Iq,
    jid::{BareJid, FullJid, Jid},
    ns,
    stanza_error::{DefinedCondition, ErrorType, StanzaError},
};

use super::{GatewayMucs, alias_of_room, stanza_error};

impl GatewayMucs<'_> {
    /// disco#info on a gateway MUC: a public, open, non-anonymous text conference.
    pub(crate) fn disco_info(&self, room: &BareJid) -> DiscoInfoResult {
        let alias = room.node().and_then(|node| alias_of_room(node.as_str())).unwrap_or_default();
        // What Gajim, Dino and Conversations look for; `muc#stable_id` because a reflection keeps the sender's
        // message ID; MAM because the room's Matrix history is served as its archive; occupant-id because every
        // occupant's presence and message carries one (XEP-0421).
        let features = [
            ns::DISCO_INFO,
            ns::DISCO_ITEMS,
            ns::MUC,
            "http://jabber.org/protocol/muc#stable_id",
            ns::PING,
            "muc_public",
            "muc_open",
            "muc_unmoderated",
            "muc_nonanonymous",
            "muc_persistent",
            "muc_unsecured",
            ns::MAM,
            ns::OID,
        ];
        DiscoInfoResult {
            node: None,
            identities: vec![Identity::new("conference", "text", "en", alias)],
            features: features.into_iter().map(str::to_owned).collect(),
            extensions: Vec::new(),
        }
    }

    /// Replies to an IQ to a gateway MUC.
    pub(crate) async fn on_iq(&self, iq: Iq) {
        if let Iq::Set { from: Some(from), to: Some(to), id, payload } = &iq
            && payload.is("query", ns::MAM)
        {
            return self.serve_archive(from, to, id, payload).await;
        }
        if let Iq::Set { from: Some(from), to: Some(to), id, payload } = &iq {
            // Every set gets an answer (RFC 6120 §8.2.3). XMPP occupants cannot moderate: their ghosts hold no
            // power in the Matrix room.
            let error = if payload.is("moderate", crate::xep::retract::NS_MODERATE) {
                stanza_error(DefinedCondition::Forbidden, "only Matrix moderators moderate this room")
            } else {
                stanza_error(DefinedCondition::ServiceUnavailable, "not supported")
            };
            let reply =
                Iq::Error { from: Some(to.clone()), to: Some(from.clone()), id: id.clone(), error, payload: None };
            let _ = self.send(reply).await;
            return;
        }
        let Iq::Get { from: Some(from), to: Some(to), id, payload } = iq else { return };
        let reply = if payload.is("query", ns::DISCO_INFO) {
            Iq::from_result(id, Some(self.disco_info(&to.to_bare()))).with_from(to).with_to(from)
        } else if payload.is("query", ns::DISCO_ITEMS) {
            // XEP-0045 §6.5 lets a room keep its occupant list private; joining shows it.
            let items = DiscoItemsResult { node: None, items: Vec::new(), rsm: None };
            Iq::from_result(id, Some(items)).with_from(to).with_to(from)
        } else if payload.is("ping", ns::PING) {
            match from.try_into_full() {
                Ok(from) => self.ping_reply(&from, &to, id),
                Err(from) => Iq::Result { from: Some(to), to: Some(from.into()), id, payload: None },
            }
        } else {
            let error = stanza_error(DefinedCondition::ServiceUnavailable, "not supported");
            Iq::Error { from: Some(to), to: Some(from), id, error, payload: None }
        };
        let _ = self.send(reply).await;
    }

    /// The answer to a ping sent to an occupant of a gateway MUC (`#room#server@gateway/nick`) or to the room: a
    /// result when `from` is an occupant and the target exists, `not-acceptable` when `from` is not an occupant
    /// (XEP-0410: the client then joins again), `item-not-found` for a nick nobody has.
    fn ping_reply(&self, from: &FullJid, to: &Jid, id: String) -> Iq {
        let room = to.to_bare();
        let condition = {
            let rooms = self.rooms();
            let state = rooms.get(&room);
            let sender_nick = state.and_then(|state| state.occupants.get(from));
            match (sender_nick, to.resource()) {
                (None, _) => Some((DefinedCondition::NotAcceptable, "You are not currently connected to this chat")),
                (Some(_), None) => None,
                (Some(own), Some(nick)) if own == nick.as_str() => None,
                (Some(_), Some(nick)) => {
                    let state = state.expect("the sender's nick came from it");
                    let present = state.occupants.values().any(|other| other == nick.as_str())
                        || state.members.values().any(|name| name == nick.as_str());
                    (!present).then_some((DefinedCondition::ItemNotFound, "Recipient not in room"))
                }
            }
        };
        match condition {
            None => Iq::Result { from: Some(to.clone()), to: Some(from.clone().into()), id, payload: None },
            Some((condition, text)) => Iq::Error {
                from: Some(to.clone()),
                to: Some(from.clone().into()),
                id,
                error: StanzaError::new(ErrorType::Cancel, condition, "en", text),
                payload: None,
            },
        }
    }
}
