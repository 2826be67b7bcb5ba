//! Matrix → MUC: a Matrix user's messages, subjects and moderation requests, sent from their occupant; a message
//! is delivered once the MUC reflects it.

use lattice_bridge_core::{
    ConnectorError,
    connector::{ConnectorResult, Sent},
    store::Portal,
};
use tokio::sync::oneshot;
use tokio_xmpp::parsers::{
    iq::Iq,
    jid::{BareJid, Jid},
    message::{Id, Lang, Message},
    minidom::Element,
    stanza_error::DefinedCondition,
};

use super::{AckWaiter, MucPortals, Reflection, error_text};
use crate::{
    gateway::{
        messages::{Outgoing, RemoteId},
        new_id, outgoing, transient,
    },
    xep::retract::ModerateRequest,
};

impl MucPortals<'_> {
    /// A Matrix message, edit, reaction or redaction (`outgoing`) from `sender`: a groupchat message from their
    /// occupant, delivered once the MUC reflects it, or a moderation request.
    pub(crate) async fn send_content(
        &self,
        room: &BareJid,
        portal: &Portal,
        sender: &str,
        event_id: Option<&str>,
        outgoing: Outgoing,
    ) -> ConnectorResult<Sent> {
        let (body, payloads, map_as) = match outgoing {
            Outgoing::Message { body, payloads, map_as } => (body, payloads, map_as),
            Outgoing::Moderate(request) => {
                self.request_moderation(room, portal, sender, request).await?;
                return Ok(Sent::Nothing);
            }
        };
        let reflection = self.send_groupchat(room, portal, sender, event_id, (body, payloads)).await?;
        // Delivered once the MUC reflects it; the room's next messages go out meanwhile.
        Ok(Sent::later(async move {
            let id = reflection.await?;
            Ok(Some(map_as.unwrap_or(RemoteId::Message(id)).into()))
        }))
    }

    /// Sends a groupchat message (`body` and `payloads`) of Matrix event `event_id` from a Matrix user. The
    /// returned future waits for the MUC to reflect it and comes to its remote ID: the stanza-id the MUC stamped (the
    /// bridge's own ID recorded as its alias), else the bridge's own ID.
    async fn send_groupchat(
        &self,
        room: &BareJid,
        portal: &Portal,
        user_id: &str,
        event_id: Option<&str>,
        (body, mut payloads): (Option<String>, Vec<Element>),
    ) -> ConnectorResult<impl Future<Output = ConnectorResult<String>> + Send + 'static> {
        let groupchat = Message::groupchat(Some(Jid::from(room.clone())));
        if body.is_some() {
            // XEP-0333: readers' clients send displayed markers, which become the sender's read receipts.
            payloads.push(crate::xep::chat_states::markable());
        }
        let (mut message, id) = outgoing(&self.section, groupchat, body, payloads, event_id)?;
        let (occupant, _) = self.ensure_puppet(room, portal, user_id, None).await?;
        message.from = Some(occupant.into());
        let reflection = self.send_for_reflection(message, &id).await?;
        let (gateway, room, user_id, portal_key) =
            (self.arc(), room.clone(), user_id.to_owned(), portal.remote_key.clone());
        Ok(async move {
            let Some(stanza_id) = gateway.muc().await_reflection(&room, &user_id, &id, reflection).await? else {
                return Ok(id);
            };
            gateway.bridge.messages().alias(&portal_key, &id, &stanza_id);
            Ok(stanza_id)
        })
    }

    /// Sends a subject change from a Matrix user.
    pub(crate) async fn send_subject(
        &self,
        room: &BareJid,
        portal: &Portal,
        user_id: &str,
        topic: &str,
    ) -> ConnectorResult<()> {
        let (occupant, _) = self.ensure_puppet(room, portal, user_id, None).await?;
        let mut message = Message::groupchat(Some(Jid::from(room.clone())));
        message.from = Some(occupant.into());
        message.id = Some(Id(new_id()));
        message.subjects.insert(Lang::new(), topic.to_owned());
        if let Some(state) = self.rooms().get_mut(room) {
            state.topic = Some(topic.to_owned());
        }
        self.send(message).await
    }

    /// Sends `message` (whose ID is `id`), ready to hear of its reflection.
    async fn send_for_reflection(&self, message: Message, id: &str) -> ConnectorResult<Reflection> {
        let (sender, receiver) = oneshot::channel();
        self.mucs.acks.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(id.to_owned(), sender);
        if let Err(error) = self.send(message).await {
            self.mucs.acks.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(id);
            return Err(error);
        }
        Ok(receiver)
    }

    /// Waits for the reflection of the message `id` that `user_id` sent to `room`; comes to the stanza-id the MUC
    /// stamped on it, if any.
    async fn await_reflection(
        &self,
        room: &BareJid,
        user_id: &str,
        id: &str,
        reflection: Reflection,
    ) -> ConnectorResult<Option<String>> {
        match tokio::time::timeout(self.timeout, reflection).await {
            Ok(Ok(Ok(stanza_id))) => Ok(stanza_id),
            Ok(Ok(Err(error))) => {
                // Not (or no longer) an occupant: join again on the next attempt.
                if matches!(error.defined_condition, DefinedCondition::NotAcceptable | DefinedCondition::ItemNotFound) {
                    if let Some(puppet) = self.rooms().get_mut(room).and_then(|state| state.puppets.get_mut(user_id)) {
                        puppet.joined_generation = None;
                    }
                    return Err(transient(format!("the MUC {room} did not take the message: {}", error_text(&error))));
                }
                Err(ConnectorError::permanent(format!("the MUC {room} refused the message: {}", error_text(&error))))
            }
            _ => {
                self.mucs.acks.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(id);
                Err(transient(format!("the MUC {room} did not reflect the message in time")))
            }
        }
    }

    /// The message waiting for its reflection under `id`.
    pub(super) fn take_ack(&self, id: &str) -> Option<AckWaiter> {
        self.mucs.acks.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(id)
    }

    /// Asks a MUC to retract an occupant's message for a Matrix user with the power to (XEP-0425). The MUC
    /// announces the retraction to everyone, the bridge included, when it grants the request.
    async fn request_moderation(
        &self,
        room: &BareJid,
        portal: &Portal,
        user_id: &str,
        request: ModerateRequest,
    ) -> ConnectorResult<()> {
        let (occupant, _) = self.ensure_puppet(room, portal, user_id, None).await?;
        let iq = Iq::Set {
            from: Some(occupant.into()),
            to: Some(room.clone().into()),
            id: new_id(),
            payload: request.into(),
        };
        self.send(iq).await
    }

    /// An ephemeral payload (a chat state, a displayed marker) from a Matrix user's occupant, if it is joined on the
    /// current connection: ephemeral traffic never makes the gateway join.
    pub(crate) async fn send_ephemeral(&self, room: &BareJid, user_id: &str, payload: Element) -> ConnectorResult<()> {
        let Some(occupant) = self.joined_occupant(room, user_id) else { return Ok(()) };
        let mut message = Message::groupchat(Some(room.clone().into()));
        message.from = Some(occupant.into());
        message.id = Some(Id(new_id()));
        message.payloads.push(payload);
        self.send(message).await
    }
}
