//! Matrix membership (`m.room.member`) → IRC: a Matrix user joining a portal gets a puppet in its channel, leaving
//! parts it; a Matrix user removing an IRC person's ghost kicks (and for a ban, bans) them on IRC if the puppet may.

use lattice_bridge_core::connector::{ConnectorResult, InPortal, MembershipChange, Sent};

use crate::{
    line::Line,
    network::{Network, channels::Target, transient},
};

impl Network {
    /// A membership change in a channel portal.
    pub(crate) async fn matrix_membership(
        &self,
        at: InPortal<'_>,
        change: MembershipChange<'_>,
    ) -> ConnectorResult<Sent> {
        let Some(Target::Channel(channel)) = self.target_of(at, false) else { return Ok(Sent::Nothing) };
        let ours = self.bridge.is_bridge_user(change.user_id);
        match change.membership {
            "join" if change.user_id == at.sender && !ours => {
                self.member_joined(change.user_id, change.displayname, &at.event.room_id, &channel).await?;
            }
            "leave" | "ban" if !ours => {
                if let Some(puppet) = self.puppets.get(change.user_id) {
                    puppet.part(&channel, Some("Left the Matrix room"));
                }
            }
            "leave" | "ban" if change.user_id != at.sender => self.kick_ghost(at, change, &channel).await?,
            _ => {}
        }
        Ok(Sent::Nothing)
    }

    /// A Matrix user removed an IRC person's ghost from `channel`'s portal: their puppet kicks the person on IRC.
    async fn kick_ghost(&self, at: InPortal<'_>, change: MembershipChange<'_>, channel: &str) -> ConnectorResult<()> {
        let Some(ghost) = self.ghost_for_user_id(change.user_id).await else { return Ok(()) };
        let Some(puppet) = self.puppets.get(at.sender).map(|entry| entry.clone()) else { return Ok(()) };
        let nick = ghost.displayname.unwrap_or_default();
        let reason = change.reason.map_or_else(|| format!("Kicked by {}", at.sender), str::to_owned);
        if change.membership == "ban"
            && let Ok(line) = Line::new("MODE", &[channel, "+b", &format!("{nick}!*@*")], None)
        {
            puppet.send(line).await.map_err(|error| transient(error.to_string()))?;
        }
        if let Ok(line) = Line::new("KICK", &[channel, &nick], Some(&reason)) {
            puppet.send(line).await.map_err(|error| transient(error.to_string()))?;
        }
        Ok(())
    }
}
