//! Matrix edits (`m.replace`) → IRC, which has none: one correction line, as people write them by hand (`s/old/new/`
//! where it fits, else `* new text`), never the whole message again.

use lattice_bridge_core::{
    ConnectorError,
    connector::{ConnectorResult, InPortal, Sent},
    event::{Message, Relation},
    formatting::render_plain,
};

use crate::{
    config::EditStyle,
    line::{TextKind, text_lines},
    network::Network,
    style,
};

impl Network {
    /// An edit of an earlier message, as its sender's correction line.
    pub(crate) async fn matrix_edit(
        &self,
        at: InPortal<'_>,
        edited: &Relation,
        new_content: &Message,
    ) -> ConnectorResult<Sent> {
        let Some(target) = self.target_of(at, true) else { return Ok(Sent::Nothing) };
        let edit_style = self.config.messages.edits;
        if edit_style == EditStyle::Ignore {
            return Ok(Sent::Nothing);
        }
        // An edit is one more line on IRC, so it counts against the sender's rate like a message.
        self.spam.admit(at.sender, 1)?;
        let puppet = self.present_puppet(at.sender, &target).await?;
        let text = render_plain(&new_content.text);
        let first_line = text.lines().next().unwrap_or_default();
        let sed = match edit_style {
            EditStyle::Sed => self
                .event_text(&at.event.room_id, &edited.event_id)
                .await
                .and_then(|original| style::sed(&original, &text)),
            _ => None,
        };
        let correction = sed.unwrap_or_else(|| format!("* {first_line}"));
        let lines = text_lines(target.name(), TextKind::Privmsg, &correction, puppet.prefix_len())
            .map_err(|error| ConnectorError::permanent(error.to_string()))?;
        let first = lines.into_iter().take(1).collect();
        self.deliver(&puppet, first, at).await
    }
}
