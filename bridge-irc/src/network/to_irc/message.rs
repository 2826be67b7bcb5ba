//! Matrix → IRC messages: tagging lines for replies and echoes, and `draft/multiline` batches.

use lattice_bridge_core::{ConnectorError, connector::ConnectorResult};

use crate::network::{Network, lock, render::sent_text};
use crate::{
    client::Connection,
    ircv3::{echo::Sent, multiline},
    line::{Line, TextKind},
};

impl Network {
    /// Tags a Matrix message's lines: the first with `+draft/reply` (message-tags), each with a `label` when the
    /// puppet's echoes are awaited (echo-message, labeled-response; without labels they are matched by text).
    pub(in crate::network) fn tag_lines(
        &self,
        puppet: &Connection,
        lines: Vec<Line>,
        sent: Option<&Sent>,
        reply_msgid: Option<&str>,
    ) -> ConnectorResult<Vec<Line>> {
        let owner = sent.map(|sent| sent.matrix_user.as_str()).unwrap_or_default();
        let mut tagged = Vec::with_capacity(lines.len());
        for (index, line) in lines.into_iter().enumerate() {
            let mut line_tags: Vec<(&str, Option<&str>)> = Vec::new();
            if index == 0
                && puppet.has_cap("message-tags")
                && let Some(msgid) = reply_msgid
            {
                line_tags.push(("+draft/reply", Some(msgid)));
            }
            let label = match (sent, sent_text(&line)) {
                (Some(sent), Some((to, text))) => lock(&self.echoes).expect(
                    owner,
                    &to,
                    &text,
                    sent.clone(),
                    puppet.has_cap("labeled-response"),
                    self.line_interval(),
                    tokio::time::Instant::now(),
                ),
                _ => None,
            };
            if let Some(label) = &label {
                line_tags.push(("label", Some(label)));
            }
            tagged.push(line.tagged(&line_tags).map_err(|error| ConnectorError::permanent(error.to_string()))?);
        }
        Ok(tagged)
    }

    /// A Matrix message of several lines as one `draft/multiline` batch, when the puppet's server offers it and the
    /// text is within its limits; its echo is awaited by the opener's label.
    pub(in crate::network) fn multiline_batch(
        &self,
        puppet: &Connection,
        kind: TextKind,
        target: &str,
        text: &str,
        sent: Option<&Sent>,
        reply_msgid: Option<&str>,
    ) -> ConnectorResult<Option<Vec<Line>>> {
        let command = match kind {
            TextKind::Privmsg => "PRIVMSG",
            TextKind::Notice => "NOTICE",
            // CTCP ACTION has no multiline form.
            TextKind::Action => return Ok(None),
        };
        let Some(limits) = multiline::limits(puppet.cap_value("draft/multiline").as_deref()) else { return Ok(None) };
        if !puppet.has_cap("batch") {
            return Ok(None);
        }
        let label = match sent {
            Some(sent) if puppet.has_cap("labeled-response") => lock(&self.echoes).expect(
                &sent.matrix_user,
                target,
                text,
                sent.clone(),
                true,
                self.line_interval(),
                tokio::time::Instant::now(),
            ),
            // An echoed batch cannot be matched without a label: send the usual way.
            Some(_) => return Ok(None),
            None => None,
        };
        let mut opener: Vec<(&str, Option<&str>)> = Vec::new();
        if let Some(msgid) = reply_msgid.filter(|_| puppet.has_cap("message-tags")) {
            opener.push(("+draft/reply", Some(msgid)));
        }
        if let Some(label) = &label {
            opener.push(("label", Some(label)));
        }
        let reference = format!("ml{:08x}", rand::random::<u32>());
        let built = multiline::batch(command, target, text, puppet.prefix_len(), &reference, limits, &opener);
        let batch = built.map_err(|error| ConnectorError::permanent(error.to_string()))?;
        if batch.is_none()
            && let Some(sent) = sent
        {
            lock(&self.echoes).forget(&sent.event_id);
        }
        Ok(batch)
    }
}
