//! XMPP → Matrix in gateway MUCs: an occupant's groupchat message goes into the Matrix room from their ghost, and
//! back to every occupant as the MUC's reflection, stamped with the gateway's stanza-id.

use tokio_xmpp::parsers::{
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
            let mut error = Message::new(Some(from.clone().into()));
            error.type_ = XmppMessageType::Error;
            error.from = Some(room.into());
            error.id = message.id.clone();
            error.payloads.push(stanza_error(DefinedCondition::NotAcceptable, "join the room first").into());
            let _ = self.send(error).await;
            return Ok(());
        };
        let Ok(occupant) = room.with_resource_str(&nick) else { return Ok(()) };
        if let Some((_, body)) = message.get_best_body_cloned(vec![])
            && body.len() > self.section.max_message_bytes
        {
            let mut error = Message::new(Some(from.clone().into()));
            error.type_ = XmppMessageType::Error;
            error.from = Some(room.into());
            error.id = message.id.clone();
            let text = format!("the message is longer than {} bytes", self.section.max_message_bytes);
            error.payloads.push(stanza_error(DefinedCondition::NotAcceptable, &text).into());
            let _ = self.send(error).await;
            return Ok(());
        }
        // The gateway is the MUC: it stamps the stanza-id (XEP-0359) everyone refers to the message by, and
        // reflects the message with its payloads (corrections, replies, reactions, retractions, chat states).
        let mut ids = MessageIds::of(&message, None);
        let stanza_id = new_id();
        ids.stanza_id = Some(stanza_id.clone());
        // The sender's own stanza-ids and occupant-ids are not the MUC's: replaced (XEP-0359 §4, XEP-0421 §4).
        let mut payloads: Vec<Element> = message
            .payloads
            .iter()
            .filter(|element| !element.is("stanza-id", ns::SID) && !element.is("occupant-id", ns::OID))
            .cloned()
            .collect();
        payloads.push(StanzaId { id: stanza_id, by: room.clone().into() }.into());
        payloads.push(occupant_id(&room, from.to_bare().as_str()).into());
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
}
