//! Matrix typing notifications and read receipts (ephemeral events) to XMPP: XEP-0085 chat states and XEP-0333
//! displayed markers, into the conversation of each kind of portal.

use lattice_bridge_core::{connector::ConnectorResult, store::Portal};
use tokio_xmpp::parsers::minidom::Element;

use super::{Messages, Receipt, RemoteId};
use crate::{
    gateway::{Gateway, PortalKind},
    xep::chat_states,
};

impl Messages<'_> {
    /// Sends an ephemeral payload (a chat state, a displayed marker) from a Matrix user into the conversation of a
    /// portal: to the XMPP account of a direct chat (from its Matrix user only), from the user's occupant in a MUC
    /// portal (only one already joined: ephemeral traffic never makes the gateway join), or from the user's nick to
    /// every occupant of a gateway MUC.
    async fn send_ephemeral(&self, portal: &Portal, user: &str, payload: Element) -> ConnectorResult<()> {
        match PortalKind::of(portal) {
            Some(PortalKind::Direct { account, matrix_user }) if matrix_user == user => {
                self.direct().send_chat(&account, user, None, vec![payload]).await?;
            }
            Some(PortalKind::GatewayMuc(room)) => self.gateway_mucs().send_ephemeral(&room, user, payload).await?,
            Some(PortalKind::Muc(room)) => self.muc().send_ephemeral(&room, user, payload).await?,
            _ => {}
        }
        Ok(())
    }
}

impl Gateway {
    /// `m.typing` in a portal: XEP-0085 chat states from the Matrix users who started or stopped typing.
    pub(crate) async fn on_matrix_typing(
        &self,
        portal: &Portal,
        room_id: &str,
        typing: &[String],
    ) -> ConnectorResult<()> {
        let people = typing.iter().filter(|user| self.is_matrix_person(user)).cloned().collect();
        let (started, stopped) = self.typing.change(room_id, people);
        let changes = started.into_iter().map(|user| (user, true)).chain(stopped.into_iter().map(|u| (u, false)));
        for (user, typing) in changes {
            self.messages().send_ephemeral(portal, &user, chat_states::state_of(typing).into()).await?;
        }
        Ok(())
    }

    /// `m.receipt` in a portal: XEP-0333 displayed markers for what Matrix users read (in a MUC named by its
    /// stanza-id, as XEP-0333 §3 asks). Sending moves the sender's own receipt too: only what others wrote gets a
    /// marker.
    pub(crate) async fn on_matrix_receipts(
        &self,
        portal: &Portal,
        room_id: &str,
        receipts: &[Receipt],
    ) -> ConnectorResult<()> {
        for (event_id, user) in receipts.iter().filter(|(_, user)| self.is_matrix_person(user)) {
            let mapped = self.bridge.messages().remotes_for(event_id).await?;
            let Some(read) = mapped.into_iter().rev().find(|mapping| {
                mapping.portal_key == portal.remote_key
                    && matches!(RemoteId::parse(&mapping.remote_id), RemoteId::Message(_))
            }) else {
                continue;
            };
            let messages = self.messages();
            if messages.author_of(room_id, event_id).await.as_deref() == Some(user.as_str()) {
                continue;
            }
            messages.send_ephemeral(portal, user, chat_states::displayed(&read.remote_id)).await?;
        }
        Ok(())
    }
}
