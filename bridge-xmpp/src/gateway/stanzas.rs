//! Stanzas from the server, each handed to the feature it is for: gateway MUCs, presence subscriptions, MUC
//! portals, direct chats, avatars and IQ answers. Called in the server's order within each conversation (its
//! [lane](super::lanes)).

use tokio_xmpp::{
    Stanza,
    parsers::{
        jid::BareJid,
        message::{Message, MessageType},
    },
};

use super::{Gateway, direct::subscription::is_subscription, lanes};

impl Gateway {
    /// Whether a stanza is addressed to a gateway MUC (or one of its occupants).
    fn addresses_gateway_muc(&self, stanza: &Stanza) -> bool {
        match stanza {
            Stanza::Message(message) => message.to.as_ref(),
            Stanza::Presence(presence) => presence.to.as_ref(),
            Stanza::Iq(iq) => iq.to(),
        }
        .is_some_and(|to| self.gateway_mucs().is_gateway_muc_jid(to))
    }

    /// The conversation whose lane a stanza is handled in ([`lanes`]).
    pub(crate) fn lane_of(&self, stanza: &Stanza) -> Option<BareJid> {
        lanes::lane_of(stanza, self.addresses_gateway_muc(stanza))
    }

    /// Handles one stanza from the server. Called in the server's order within each conversation (its lane).
    pub(crate) async fn handle_stanza(&self, stanza: Stanza) {
        let gateway_muc = self.addresses_gateway_muc(&stanza);
        self.muc().note_heard(&stanza);
        let outcome = match stanza {
            Stanza::Message(message) if gateway_muc => self.gateway_mucs().on_message(message).await,
            Stanza::Presence(presence) if gateway_muc => self.gateway_mucs().on_presence(presence).await,
            Stanza::Iq(iq) if gateway_muc => {
                self.gateway_mucs().on_iq(iq).await;
                Ok(())
            }
            Stanza::Presence(presence) if is_subscription(&presence.type_) => {
                self.direct().on_subscription(presence).await
            }
            Stanza::Message(message) => self.on_message(message).await,
            Stanza::Presence(presence) => self.muc().on_presence(presence).await,
            Stanza::Iq(iq) => self.on_iq(iq).await,
        };
        if let Err(error) = outcome {
            tracing::warn!(%error, "cannot bridge a stanza from XMPP");
        }
    }

    /// A message not to a gateway MUC: an archive result or avatar event the gateway waits for, an error, a MUC's
    /// groupchat message, or a 1:1 chat message.
    async fn on_message(&self, message: Message) -> lattice_bridge_core::Result<()> {
        if message.from.is_none() || self.muc().collect_archived(&message) || self.avatars().on_event(&message).await {
            return Ok(());
        }
        match message.type_ {
            MessageType::Error => {
                self.muc().on_error(&message);
                Ok(())
            }
            MessageType::Chat | MessageType::Normal => self.direct().on_message(message).await,
            MessageType::Groupchat => self.muc().on_message(message).await,
            MessageType::Headline => Ok(()),
        }
    }
}
