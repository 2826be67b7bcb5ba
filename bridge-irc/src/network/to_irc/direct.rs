//! A Matrix user opens a direct chat with an IRC person's ghost: the ghost joins and the room becomes the DM portal.

use lattice_bridge_core::{ConnectorError, connector::ConnectorResult, event::MatrixEvent, store::Portal};
use serde_json::json;

use crate::{ids::dm_key, network::Network};

impl Network {
    /// A Matrix user invited one of our ghosts to a direct chat: the ghost joins and the room becomes the DM portal.
    pub(crate) async fn matrix_direct_invite(
        &self,
        event: &MatrixEvent,
        sender: &str,
        invitee: &str,
    ) -> ConnectorResult<()> {
        let Some(ghost) = self.ghost_for_user_id(invitee).await else { return Ok(()) };
        let nick = ghost.displayname.clone().unwrap_or_default();
        let intent = self.bridge.sync_ghost(&ghost).await?;
        let room: ruma::OwnedRoomId = event.room_id.parse().map_err(|_| ConnectorError::permanent("bad room ID"))?;
        intent.ensure_joined(&room).await?;
        self.bridge
            .portals()
            .upsert(&Portal {
                remote_key: dm_key(&self.id, sender, &nick),
                room_id: event.room_id.clone(),
                alias: None,
                name: None,
                topic: None,
                metadata: json!({"network": self.id, "nick": nick}),
            })
            .await?;
        self.puppet(sender, None).await?;
        Ok(())
    }
}
