//! Matrix messages → IRC: the text rendered for IRC (mIRC formatting, pills as nicks, media as links, replies
//! quoted), split into lines or sent as one [draft/multiline](https://ircv3.net/specs/extensions/multiline) batch,
//! tagged for replies and echoes, and confirmed by their echo or the server's reading of them.

use lattice_bridge_core::{
    ConnectorError,
    connector::{ConnectorResult, InPortal, Sent},
    event::{Message, MessageType},
    formatting::render_plain,
};

use crate::{
    conn::Connection,
    delivery::{Confirmation, Sending},
    ircv3::{echo::Outgoing, multiline},
    line::{Line, TextKind, text_lines},
    message_id::MessageId,
    mirc,
    network::{LONG_PREVIEW_CHARS, Network, channels::Target, lock, render::sent_text},
    style,
};

impl Network {
    /// A new message, written by its sender's puppet; settled once the server echoed it or read it.
    pub(crate) async fn matrix_message(&self, at: InPortal<'_>, message: &Message) -> ConnectorResult<Sent> {
        let Some(target) = self.target_of(at, true) else { return Ok(Sent::Nothing) };
        self.spam.admit(at.sender, render_plain(&message.text).lines().count())?;
        let puppet = self.present_puppet(at.sender, &target).await?;
        let text = self.message_text(at, message).await?;
        let reply_msgid = message.reply_to.as_ref().and_then(|reply| MessageId::latest_msgid(&reply.remote_ids));
        let event_id = at.event.event_id.as_ref();
        let outgoing = event_id.filter(|_| puppet.has_cap("echo-message")).map(|event_id| Outgoing {
            event_id: event_id.clone(),
            room_id: at.event.room_id.clone(),
            portal_key: at.portal.remote_key.clone(),
            matrix_user: at.sender.to_owned(),
        });
        let lines = self.message_lines(&puppet, &target, message, &text, outgoing.as_ref(), reply_msgid.as_deref());
        let lines = lines.await?;
        // Waited for before a line goes out, so an echo cannot come before anyone waits for it.
        let echo = outgoing.as_ref().map(|outgoing| lock(&self.echoes).confirmation(&outgoing.event_id));
        let confirmation = match self.send_lines(&puppet, lines, echo.is_none(), event_id.map(String::as_str)).await {
            Ok(keyed) => match echo {
                Some(echo) => Some(Confirmation::Echo { echo, earlier: keyed.earlier }),
                None => keyed.read.map(Confirmation::Receipt),
            },
            Err(error) => {
                // The runtime sends the whole message again later: stop waiting for this attempt's echoes.
                if let Some(event_id) = event_id {
                    lock(&self.echoes).forget(event_id);
                }
                return Err(error);
            }
        };
        self.touch(at.sender, Some(&at.event.room_id));
        let Some(confirmation) = confirmation else { return Ok(Sent::Nothing) };
        let remote_id = event_id.zip(puppet.nick()).map(|(event_id, nick)| MessageId::delivered(&nick, event_id));
        Ok(self.deliveries.sending(Sending {
            confirmation,
            remote_id: remote_id.map(|id| id.remote_id()),
            sender: at.sender.to_owned(),
            room_id: at.event.room_id.clone(),
        }))
    }

    /// A message's text for IRC: mIRC formatting with pills as nicks; media as a link on the bridge (Matrix media
    /// needs authentication to fetch); a reply with its quote.
    async fn message_text(&self, at: InPortal<'_>, message: &Message) -> ConnectorResult<String> {
        let mut text = mirc::render(&message.text, &|mention| self.nick_for_mention(mention));
        if let Some(media) = &message.media {
            let url = self.bridge.publish_media(&media.url, &media.filename, media.mimetype.as_deref()).await?;
            text = format!("{} {url}", media.filename);
        }
        if let Some(reply) = &message.reply_to
            && let Some(replied) = reply.remote_ids.first().and_then(|id| MessageId::parse(id))
        {
            let quote_chars = self.config.messages.reply_quote_chars;
            let quoted = match quote_chars {
                0 => None,
                _ => self.event_text(&at.event.room_id, &reply.event_id).await.map(|t| style::quote(&t, quote_chars)),
            };
            text = style::reply(replied.nick(), quoted.as_deref(), &text);
        }
        Ok(text)
    }

    /// A message's lines as they go out: one `draft/multiline` batch where offered, else tagged lines — or, when
    /// longer than the network allows, one line with a link to the whole text.
    async fn message_lines(
        &self,
        puppet: &Connection,
        target: &Target,
        message: &Message,
        text: &str,
        outgoing: Option<&Outgoing>,
        reply_msgid: Option<&str>,
    ) -> ConnectorResult<Vec<Line>> {
        let kind = match message.msgtype {
            MessageType::Emote => TextKind::Action,
            MessageType::Notice => TextKind::Notice,
            _ => TextKind::Privmsg,
        };
        let permanent = |error: crate::line::LineError| ConnectorError::permanent(error.to_string());
        let mut lines = text_lines(target.name(), kind, text, puppet.prefix_len()).map_err(permanent)?;
        let batch = match message.media.is_none() && lines.len() > 1 {
            true => self.multiline_batch(puppet, kind, target.name(), text, outgoing, reply_msgid)?,
            false => None,
        };
        if let Some(batch) = batch {
            return Ok(batch);
        }
        if message.media.is_none() && lines.len() > self.config.max_lines.max(1) {
            let url = self.bridge.publish_text(&render_plain(&message.text), "message.txt").await?;
            let first = text.lines().next().unwrap_or_default();
            let preview: String = first.chars().take(LONG_PREVIEW_CHARS).collect();
            let ellipsis = if preview.len() < text.len() { "…" } else { "" };
            let short = format!("{preview}{ellipsis} (full message: {url})");
            lines = text_lines(target.name(), kind, &short, puppet.prefix_len()).map_err(permanent)?;
        }
        self.tag_lines(puppet, lines, outgoing, reply_msgid)
    }

    /// Tags a Matrix message's lines: the first with `+draft/reply` (message-tags), each with a `label` when the
    /// puppet's echoes are awaited (echo-message, labeled-response; without labels they are matched by text).
    pub(in crate::network) fn tag_lines(
        &self,
        puppet: &Connection,
        lines: Vec<Line>,
        sent: Option<&Outgoing>,
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
        sent: Option<&Outgoing>,
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
