//! XMPP → Matrix in gateway MUCs: an occupant's groupchat message goes into the Matrix room from their ghost, and
//! back to every occupant as the MUC's reflection, stamped with the gateway's stanza-id.

use tokio_xmpp::parsers::{
    jid::{BareJid, FullJid},
    message::{Message, MessageType as XmppMessageType},
    minidom::Element,
    ns,
    stanza_error::DefinedCondition,
    stanza_id::StanzaId,
};

use super::{GatewayMucs, stanza_error};
use crate::{
    gateway::{messages::Inbound, new_id, portal::gateway_muc_key},
    xep::ids::{MessageIds, gateway_muc_occupant_id as occupant_id},
};

impl GatewayMucs<'_> {
    /// A groupchat message from an XMPP occupant: into Matrix from their ghost, and reflected to every occupant.
    /// A message from someone who is not an occupant, or longer than the bridge takes, is refused.
    pub(crate) async fn on_message(&self, message: Message) -> lattice_bridge_core::Result<()> {
        let (Some(from), Some(to)) = (message.from.clone(), message.to.clone()) else { return Ok(()) };
        let Ok(from) = from.try_into_full() else { return Ok(()) };
        let room = to.to_bare();
        if message.type_ != XmppMessageType::Groupchat {
            return Ok(());
        }
        let joined = self.rooms().get(&room).and_then(|state| {
            let nick = state.occupants.get(&from)?.clone();
            Some((nick, state.room_id.clone(), state.occupants.keys().cloned().collect::<Vec<_>>()))
        });
        let Some((nick, room_id, occupants)) = joined else {
            return self.refuse(&room, &from, &message, "join the room first").await;
        };
        let Ok(occupant) = room.with_resource_str(&nick) else { return Ok(()) };
        if let Some((_, body)) = message.get_best_body_cloned(vec![])
            && body.len() > self.section.max_message_bytes
        {
            let text = format!("the message is longer than {} bytes", self.section.max_message_bytes);
            return self.refuse(&room, &from, &message, &text).await;
        }
        // The gateway is the MUC: it stamps the stanza-id (XEP-0359) everyone refers to the message by, and
        // reflects the message with its payloads (corrections, replies, reactions, retractions, chat states).
        let mut ids = MessageIds::of(&message, None);
        let stanza_id = new_id();
        ids.stanza_id = Some(stanza_id.clone());
        let payloads = reflected_payloads(&message.payloads, &room, stanza_id, from.to_bare().as_str());
        for jid in occupants {
            let mut reflection = Message::groupchat(Some(jid.into()));
            reflection.bodies = message.bodies.clone();
            reflection.from = Some(occupant.clone().into());
            reflection.id = message.id.clone();
            reflection.payloads = payloads.clone();
            let _ = self.send(reflection).await;
        }
        let portal = gateway_muc_key(&room_id);
        let inbound = Inbound { portal: &portal, sender: self.ghost_of(&from, &nick), timestamp_ms: None };
        self.messages().push_inbound(inbound, &message, &ids).await
    }

    /// Refuses a message with a `not-acceptable` error saying why.
    async fn refuse(
        &self,
        room: &BareJid,
        to: &FullJid,
        message: &Message,
        why: &str,
    ) -> lattice_bridge_core::Result<()> {
        let mut error = Message::new(Some(to.clone().into()));
        error.type_ = XmppMessageType::Error;
        error.from = Some(room.clone().into());
        error.id = message.id.clone();
        error.payloads.push(stanza_error(DefinedCondition::NotAcceptable, why).into());
        let _ = self.send(error).await;
        Ok(())
    }
}

/// The payloads of an occupant's message as the gateway MUC reflects it: the sender's own stanza-ids and
/// occupant-ids are not the MUC's and are replaced (XEP-0359 §4, XEP-0421 §4) by the gateway's stanza-id and the
/// sender's occupant-id.
fn reflected_payloads(payloads: &[Element], room: &BareJid, stanza_id: String, sender: &str) -> Vec<Element> {
    let mut reflected: Vec<Element> = payloads
        .iter()
        .filter(|element| !element.is("stanza-id", ns::SID) && !element.is("occupant-id", ns::OID))
        .cloned()
        .collect();
    reflected.push(StanzaId { id: stanza_id, by: room.clone().into() }.into());
    reflected.push(occupant_id(room, sender).into());
    reflected
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use tokio_xmpp::parsers::occupant_id::OccupantId;

    use super::*;

    #[test]
    fn reflections_carry_the_gateways_ids_not_the_senders() {
        let room = BareJid::from_str("#r#hs.org@bridge.example.org").unwrap();
        let parse = |xml: &str| Element::from_str(xml).unwrap();
        let sent = [
            parse("<stanza-id xmlns='urn:xmpp:sid:0' id='forged' by='#r#hs.org@bridge.example.org'/>"),
            parse("<occupant-id xmlns='urn:xmpp:occupant-id:0' id='forged'/>"),
            parse("<active xmlns='http://jabber.org/protocol/chatstates'/>"),
        ];
        let reflected = reflected_payloads(&sent, &room, "s1".into(), "x@example.org");
        assert_eq!(reflected.len(), 3);
        assert!(reflected[0].is("active", ns::CHATSTATES), "other payloads stay");
        let stanza_id = StanzaId::try_from(reflected[1].clone()).unwrap();
        assert_eq!((stanza_id.id.as_str(), stanza_id.by.as_str()), ("s1", room.as_str()));
        let occupant = OccupantId::try_from(reflected[2].clone()).unwrap();
        assert_eq!(occupant, occupant_id(&room, "x@example.org"));
        assert_ne!(occupant.id, "forged");
    }
}
