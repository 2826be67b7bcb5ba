//! Matrix reactions (`m.annotation`) → IRC: a TAGMSG with `+draft/react`, naming the message by its msgid
//! ([IRCv3 react](https://ircv3.net/specs/client-tags/react), over message-tags).

use lattice_bridge_core::{
    ConnectorError,
    connector::{ConnectorResult, InPortal, Sent},
    event::Relation,
};

use crate::{line::Line, message_id::MessageId, network::Network};

impl Network {
    /// A reaction with `key` to a message that has an IRC msgid; nothing where the server has no message-tags.
    pub(crate) async fn matrix_reaction(
        &self,
        at: InPortal<'_>,
        reacted: &Relation,
        key: &str,
    ) -> ConnectorResult<Sent> {
        let Some(target) = self.target_of(at, false) else { return Ok(Sent::Nothing) };
        let Some(msgid) = MessageId::latest_msgid(&reacted.remote_ids) else { return Ok(Sent::Nothing) };
        let puppet = self.present_puppet(at.sender, &target).await?;
        if !puppet.has_cap("message-tags") {
            return Ok(Sent::Nothing);
        }
        let line = Line::new("TAGMSG", &[target.name()], None)
            .map_err(|error| ConnectorError::permanent(error.to_string()))?
            .tagged(&[("+draft/react", Some(key)), ("+draft/reply", Some(&msgid))])
            .map_err(|error| ConnectorError::permanent(error.to_string()))?;
        self.deliver(&puppet, vec![line], at).await
    }
}
