//! XMPP → Matrix in direct chats: an XMPP account's `chat` message to a Matrix user's gateway JID becomes a Matrix
//! DM from the account's ghost, inviting the Matrix user back first if they left.

use lattice_bridge_core::{connector::GhostSpec, store::Portal};
use tokio_xmpp::parsers::message::Message;

use super::{Direct, direct_spec, ghost_of};
use crate::{gateway::messages::Inbound, xep::ids::MessageIds};

impl Direct<'_> {
    /// A `chat` (or `normal`) message from an XMPP account to a Matrix user's gateway JID.
    pub(crate) async fn on_message(&self, message: Message) -> lattice_bridge_core::Result<()> {
        let (Some(from), Some(to)) = (message.from.clone(), message.to.clone()) else { return Ok(()) };
        let sender = from.to_bare();
        // Never bridge the gateway's own JIDs back, and leave MUC private messages to the MUC side.
        if self.addressing.is_gateway_domain(sender.domain().as_str())
            || sender.node().is_none()
            || self.muc().is_bridged_muc(&sender)
        {
            return Ok(());
        }
        let Some(matrix_user) = self.addressing.matrix_user_of(&to.to_bare()) else { return Ok(()) };
        let Some(ghost) = ghost_of(self, &sender) else { return Ok(()) };
        let portal = self.bridge.ensure_portal(&direct_spec(&sender, &matrix_user, ghost.clone())).await?;
        self.ensure_dm_member(&portal, &ghost, &matrix_user).await?;
        let ids = MessageIds::of(&message, None);
        let inbound = Inbound { portal: &portal.remote_key, sender: Some(ghost.clone()), timestamp_ms: None };
        self.messages().push_inbound(inbound, &message, &ids).await?;
        // The contact's XEP-0084 picture, asked once in a while (after the message: it must not wait for this).
        self.avatars().check_user_avatar(ghost, to, sender).await;
        Ok(())
    }

    /// rather than cached: a leave that the bridge has not processed yet must not swallow the message.
    async fn ensure_dm_member(
        &self,
        portal: &Portal,
        ghost: &GhostSpec,
        matrix_user: &str,
    ) -> lattice_bridge_core::Result<()> {
        let intent = self.bridge.sync_ghost(ghost).await?;
        let (Ok(room), Ok(user)) =
            (ruma::OwnedRoomId::try_from(portal.room_id.as_str()), ruma::OwnedUserId::try_from(matrix_user))
        else {
            return Ok(());
        };
        let membership = intent
            .get_state_event(&room, "m.room.member", matrix_user)
            .await?
            .and_then(|content| content.get("membership").and_then(|m| m.as_str()).map(str::to_owned));
        if !matches!(membership.as_deref(), Some("join" | "invite")) {
            tracing::info!(room_id = %portal.room_id, %matrix_user, "inviting the Matrix user back into the DM");
            intent.invite(&room, &user).await?;
        }
        Ok(())
    }
}
