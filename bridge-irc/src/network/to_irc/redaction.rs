//! Matrix redactions → IRC: `REDACT` where the server offers
//! [draft/message-redaction](https://ircv3.net/specs/extensions/message-redaction), else at most a notice that a
//! message was deleted (IRC cannot unsay a line).

use lattice_bridge_core::{
    ConnectorError,
    connector::{ConnectorResult, InPortal, Sent},
    event::Relation,
};

use crate::{
    config::RedactionStyle,
    line::{Line, TextKind, text_lines},
    message_id::MessageId,
    network::Network,
};

impl Network {
    /// A redaction of a message that reached IRC, by the sender's puppet if it is connected.
    pub(crate) async fn matrix_redaction(
        &self,
        at: InPortal<'_>,
        redacted: &Relation,
        reason: Option<&str>,
    ) -> ConnectorResult<Sent> {
        let Some(target) = self.target_of(at, false) else { return Ok(Sent::Nothing) };
        let puppet = self.puppets.get(at.sender).map(|entry| entry.clone());
        if let Some(msgid) = MessageId::latest_msgid(&redacted.remote_ids)
            && let Some(puppet) = puppet.as_ref().filter(|puppet| puppet.has_cap("draft/message-redaction"))
        {
            let line = Line::new("REDACT", &[target.name(), &msgid], reason)
                .map_err(|error| ConnectorError::permanent(error.to_string()))?;
            return self.deliver(puppet, vec![line], at).await;
        }
        if self.config.messages.redactions == RedactionStyle::Ignore || redacted.remote_ids.is_empty() {
            return Ok(Sent::Nothing);
        }
        let Some(puppet) = puppet else { return Ok(Sent::Nothing) };
        let lines = text_lines(target.name(), TextKind::Notice, "deleted a message", puppet.prefix_len())
            .map_err(|error| ConnectorError::permanent(error.to_string()))?;
        self.deliver(&puppet, lines, at).await
    }
}
