//! Matrix → IRC: each Matrix event kind in a portal as the lines its sender's puppet writes.

use std::{collections::HashSet, time::Duration};

use lattice_bridge_core::{
    ConnectorError,
    connector::ConnectorResult,
    event::{MatrixEvent, MatrixEventKind, MessageType},
    formatting::{Mention, MentionTarget, render_plain, strip_reply_fallback},
    store::{MessageMapping, Portal},
};
use serde_json::json;

use crate::network::{
    JOIN_WAIT, LONG_PREVIEW_CHARS, Network, channels::Target, core_error, lock, render::irc_msgid, transient,
};
use crate::{
    client::{ChannelStatus, Connection},
    config::{EditStyle, RedactionStyle},
    delivery::{Confirmation, Sending},
    ids::{dm_key, unescape_nick},
    ircv3::echo::Sent,
    line::{Line, TextKind, text_lines},
    mirc, style,
};

mod message;

impl Network {
    /// Handles a Matrix event in one of this network's portals (or, with `portal` `None`, a room that may become
    /// one).
    pub(crate) async fn matrix_event(&self, portal: Option<&Portal>, event: &MatrixEvent) -> ConnectorResult<()> {
        if let (MatrixEventKind::Typing { user_ids }, Some(portal)) = (&event.kind, portal) {
            self.matrix_typing(portal, &event.room_id, user_ids).await;
            return Ok(());
        }
        let Some(sender) = event.sender.as_deref() else { return Ok(()) };
        let Some(portal) = portal else { return self.maybe_direct_chat(event, sender).await };
        if self.puppets.contains_key(sender)
            && matches!(
                event.kind,
                MatrixEventKind::Message(_) | MatrixEventKind::Edit { .. } | MatrixEventKind::Topic(_)
            )
        {
            self.touch(sender, Some(&event.room_id));
        }
        let Some(target) = Target::of(portal, sender) else { return Ok(()) };
        match &event.kind {
            MatrixEventKind::Message(message) => {
                let lines = render_plain(&message.text).lines().count();
                self.spam.admit(sender, lines)?;
                let puppet = self.puppet(sender, None).await?;
                if let Target::Channel(channel) = &target {
                    self.joined(&puppet, channel).await?;
                } else if !puppet.is_connected() {
                    puppet.changed(JOIN_WAIT).await;
                }
                let kind = match message.msgtype {
                    MessageType::Emote => TextKind::Action,
                    MessageType::Notice => TextKind::Notice,
                    _ => TextKind::Privmsg,
                };
                let mut text = mirc::render(&message.text, &|mention| self.nick_for_mention(mention));
                if let Some(media) = &message.media {
                    // Matrix media needs authentication to fetch: IRC people get an unguessable link on the bridge.
                    let url = self
                        .bridge
                        .publish_media(&media.url, &media.filename, media.mimetype.as_deref())
                        .await
                        .map_err(core_error)?;
                    text = format!("{} {url}", media.filename);
                }
                if let Some(reply) = &message.reply_to
                    && let Some(nick) = reply.remote_ids.first().and_then(|id| id.split_once('/')).map(|(n, _)| n)
                {
                    let quote_chars = self.config.messages.reply_quote_chars;
                    let quoted = match quote_chars {
                        0 => None,
                        _ => self
                            .event_text(&event.room_id, &reply.event_id)
                            .await
                            .map(|t| style::quote(&t, quote_chars)),
                    };
                    text = style::reply(nick, quoted.as_deref(), &text);
                }
                let mut lines = text_lines(target.name(), kind, &text, puppet.prefix_len())
                    .map_err(|error| ConnectorError::permanent(error.to_string()))?;
                let reply_msgid = message.reply_to.as_ref().and_then(|reply| irc_msgid(&reply.remote_ids));
                let sent = event.event_id.as_ref().filter(|_| puppet.has_cap("echo-message")).map(|event_id| Sent {
                    event_id: event_id.clone(),
                    room_id: event.room_id.clone(),
                    portal_key: portal.remote_key.clone(),
                    matrix_user: sender.to_owned(),
                });
                // draft/multiline, where offered, carries several lines as one message.
                let batch = match message.media.is_none() && lines.len() > 1 {
                    true => self.multiline_batch(
                        &puppet,
                        kind,
                        target.name(),
                        &text,
                        sent.as_ref(),
                        reply_msgid.as_deref(),
                    )?,
                    false => None,
                };
                if batch.is_none() && message.media.is_none() && lines.len() > self.config.max_lines.max(1) {
                    // Too long for the channel: one line with a link to the whole text.
                    let full = render_plain(&message.text);
                    let url = self.bridge.publish_text(&full, "message.txt").await.map_err(core_error)?;
                    let first = text.lines().next().unwrap_or_default();
                    let preview: String = first.chars().take(LONG_PREVIEW_CHARS).collect();
                    let ellipsis = if preview.len() < text.len() { "…" } else { "" };
                    let short = format!("{preview}{ellipsis} (full message: {url})");
                    lines = text_lines(target.name(), kind, &short, puppet.prefix_len())
                        .map_err(|error| ConnectorError::permanent(error.to_string()))?;
                }
                let lines = match batch {
                    Some(batch) => batch,
                    None => self.tag_lines(&puppet, lines, sent.as_ref(), reply_msgid.as_deref())?,
                };
                // Waited for before a line goes out, so an echo cannot come before anyone waits for it.
                let echo = sent.as_ref().map(|sent| lock(&self.echoes).confirmation(&sent.event_id));
                let confirmation = match self.send_lines(&puppet, lines, echo.is_none()).await {
                    Ok(receipt) => echo.map(Confirmation::Echo).or(receipt.map(Confirmation::Receipt)),
                    Err(error) => {
                        // The runtime sends the whole message again later: stop waiting for this attempt's echoes.
                        if let Some(event_id) = &event.event_id {
                            lock(&self.echoes).forget(event_id);
                        }
                        return Err(error);
                    }
                };
                self.touch(sender, Some(&event.room_id));
                let record = event.event_id.as_ref().zip(puppet.nick()).map(|(event_id, nick)| MessageMapping {
                    event_id: event_id.clone(),
                    room_id: portal.room_id.clone(),
                    portal_key: portal.remote_key.clone(),
                    remote_id: format!("{nick}/{event_id}"),
                });
                let Some(confirmation) = confirmation else { return Ok(()) };
                let sending =
                    Sending { confirmation, record, sender: sender.to_owned(), room_id: event.room_id.clone() };
                self.deliveries.confirm(sending).await
            }
            MatrixEventKind::Edit { target: edited, new_content } => {
                // IRC has no edits: one line, as people write corrections by hand, never the whole message again.
                let edit_style = self.config.messages.edits;
                if edit_style == EditStyle::Ignore {
                    return Ok(());
                }
                // An edit is one more line on IRC, so it counts against the sender's rate like a message.
                self.spam.admit(sender, 1)?;
                let puppet = self.puppet(sender, None).await?;
                if let Target::Channel(channel) = &target {
                    self.joined(&puppet, channel).await?;
                }
                let text = render_plain(&new_content.text);
                let first_line = text.lines().next().unwrap_or_default();
                let sed = match edit_style {
                    EditStyle::Sed => self
                        .event_text(&event.room_id, &edited.event_id)
                        .await
                        .and_then(|original| style::sed(&original, &text)),
                    _ => None,
                };
                let correction = sed.unwrap_or_else(|| format!("* {first_line}"));
                let lines = text_lines(target.name(), TextKind::Privmsg, &correction, puppet.prefix_len())
                    .map_err(|error| ConnectorError::permanent(error.to_string()))?;
                let first = lines.into_iter().take(1).collect();
                self.deliver(&puppet, first, sender, &event.room_id).await
            }
            MatrixEventKind::Reaction { target: reacted, key } => {
                // +draft/react (IRCv3 message-tags): a TAGMSG naming the message by its msgid.
                let Some(msgid) = irc_msgid(&reacted.remote_ids) else { return Ok(()) };
                let puppet = self.puppet(sender, None).await?;
                if let Target::Channel(channel) = &target {
                    self.joined(&puppet, channel).await?;
                } else if !puppet.is_connected() {
                    puppet.changed(JOIN_WAIT).await;
                }
                if !puppet.has_cap("message-tags") {
                    return Ok(());
                }
                let line = Line::new("TAGMSG", &[target.name()], None)
                    .map_err(|error| ConnectorError::permanent(error.to_string()))?
                    .tagged(&[("+draft/react", Some(key)), ("+draft/reply", Some(&msgid))])
                    .map_err(|error| ConnectorError::permanent(error.to_string()))?;
                self.deliver(&puppet, vec![line], sender, &event.room_id).await
            }
            MatrixEventKind::Redaction { target: redacted, reason } => {
                // draft/message-redaction, where the server offers it, removes the line on IRC too.
                if let Some(msgid) = irc_msgid(&redacted.remote_ids)
                    && let Some(puppet) = self.puppets.get(sender).map(|entry| entry.clone())
                    && puppet.has_cap("draft/message-redaction")
                {
                    let line = Line::new("REDACT", &[target.name(), &msgid], reason.as_deref())
                        .map_err(|error| ConnectorError::permanent(error.to_string()))?;
                    return self.deliver(&puppet, vec![line], sender, &event.room_id).await;
                }
                // IRC cannot unsay a line; a notice at most, and only for what reached IRC.
                if self.config.messages.redactions == RedactionStyle::Ignore || redacted.remote_ids.is_empty() {
                    return Ok(());
                }
                let Some(puppet) = self.puppets.get(sender).map(|entry| entry.clone()) else { return Ok(()) };
                let lines = text_lines(target.name(), TextKind::Notice, "deleted a message", puppet.prefix_len())
                    .map_err(|error| ConnectorError::permanent(error.to_string()))?;
                self.deliver(&puppet, lines, sender, &event.room_id).await
            }
            MatrixEventKind::Membership { user_id, membership, displayname, .. } => {
                let Target::Channel(channel) = &target else { return Ok(()) };
                match membership.as_str() {
                    "join" if user_id == sender && !self.bridge.is_bridge_user(user_id) => {
                        self.member_joined(user_id, displayname.as_deref(), &event.room_id, channel).await?;
                    }
                    "leave" | "ban" if !self.bridge.is_bridge_user(user_id) => {
                        if let Some(puppet) = self.puppets.get(user_id) {
                            puppet.part(channel, Some("Left the Matrix room"));
                        }
                    }
                    "leave" | "ban" if user_id != sender => {
                        // A Matrix user removed an IRC person: kick them on IRC if the puppet may.
                        let Some(ghost) = self.ghost_for_user_id(user_id).await else { return Ok(()) };
                        let Some(puppet) = self.puppets.get(sender).map(|entry| entry.clone()) else { return Ok(()) };
                        let nick = ghost.displayname.unwrap_or_default();
                        let reason = match &event.kind {
                            MatrixEventKind::Membership { reason: Some(reason), .. } => reason.clone(),
                            _ => format!("Kicked by {sender}"),
                        };
                        if membership == "ban"
                            && let Ok(line) = Line::new("MODE", &[channel, "+b", &format!("{nick}!*@*")], None)
                        {
                            puppet.send(line).await.map_err(|error| transient(error.to_string()))?;
                        }
                        if let Ok(line) = Line::new("KICK", &[channel, &nick], Some(&reason)) {
                            puppet.send(line).await.map_err(|error| transient(error.to_string()))?;
                        }
                    }
                    _ => {}
                }
                Ok(())
            }
            MatrixEventKind::Topic(topic) => {
                let Target::Channel(channel) = &target else { return Ok(()) };
                if portal.topic.as_deref() == Some(topic.as_str()) {
                    return Ok(());
                }
                let puppet = self.puppet(sender, None).await?;
                self.joined(&puppet, channel).await?;
                let line = Line::new("TOPIC", &[channel], Some(topic))
                    .map_err(|error| ConnectorError::permanent(error.to_string()))?;
                self.bridge.store().set_portal_topic(&portal.remote_key, Some(topic)).await?;
                self.deliver(&puppet, vec![line], sender, &event.room_id).await
            }
            _ => Ok(()),
        }
    }

    /// The plain text of a Matrix event (reply fallback removed), as the bridge bot can read it.
    pub(in crate::network) async fn event_text(&self, room_id: &str, event_id: &str) -> Option<String> {
        let room: ruma::OwnedRoomId = room_id.try_into().ok()?;
        let event: ruma::OwnedEventId = event_id.try_into().ok()?;
        let fetched = self.bridge.matrix().bot().get_event(&room, &event).await;
        let event = fetched.inspect_err(|error| tracing::debug!(%error, event_id, "cannot read an event")).ok()??;
        let content = event.get("content")?;
        let body = content.pointer("/m.new_content/body").or_else(|| content.get("body"))?.as_str()?;
        Some(strip_reply_fallback(body).to_owned())
    }

    /// Queues lines on a puppet, in order; with `receipt`, returns what resolves once the server has read them.
    pub(in crate::network) async fn send_lines(
        &self,
        puppet: &Connection,
        lines: Vec<Line>,
        receipt: bool,
    ) -> ConnectorResult<Option<crate::receipt::Receipt>> {
        if receipt {
            return puppet.send_with_receipt(lines).await.map(Some).map_err(|error| transient(error.to_string()));
        }
        for line in lines {
            puppet.send(line).await.map_err(|error| transient(error.to_string()))?;
        }
        Ok(None)
    }

    /// Sends a Matrix event's lines (an edit, a reaction, a topic) and leaves its queue item until the server has
    /// read them.
    pub(in crate::network) async fn deliver(
        &self,
        puppet: &Connection,
        lines: Vec<Line>,
        sender: &str,
        room_id: &str,
    ) -> ConnectorResult<()> {
        let Some(receipt) = self.send_lines(puppet, lines, true).await? else { return Ok(()) };
        let confirmation = Confirmation::Receipt(receipt);
        let sending = Sending { confirmation, record: None, sender: sender.to_owned(), room_id: room_id.to_owned() };
        self.deliveries.confirm(sending).await
    }

    /// How long the flood throttle of a connection on this network takes per line.
    pub(in crate::network) fn line_interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.config.flood.lines_per_second.max(0.01))
    }

    /// The nick to show for a Matrix pill on IRC: a ghost's nick, a puppet's nick, or the display text.
    pub(in crate::network) fn nick_for_mention(&self, mention: &Mention) -> String {
        let MentionTarget::User(user_id) = &mention.target else { return mention.display.clone() };
        if let Some(ghost) = lock(&self.ghosts).iter().find(|(_, ghost)| ghost.user_id == *user_id) {
            return ghost.1.displayname.clone().unwrap_or_else(|| ghost.0.clone());
        }
        if let Some(nick) = self.users.extract(user_id).and_then(unescape_nick) {
            return nick;
        }
        if let Some(puppet) = self.puppets.get(user_id)
            && let Some(nick) = puppet.nick()
        {
            return nick;
        }
        mention.display.clone()
    }

    /// Matrix typing (`m.typing`) as `+typing` TAGMSGs (IRCv3 typing client tag) from the puppets of those who
    /// started or stopped, to the channel or, in a DM portal, to the nick; only puppets already in the channel (or
    /// connected, for a DM) take part, no connection is made for typing.
    pub(in crate::network) async fn matrix_typing(&self, portal: &Portal, room_id: &str, user_ids: &[String]) {
        let now: HashSet<String> = user_ids.iter().filter(|user| self.puppets.contains_key(*user)).cloned().collect();
        let before = lock(&self.typing).insert(room_id.to_owned(), now.clone()).unwrap_or_default();
        let started = now.difference(&before).map(|user| (user, "active"));
        let stopped = before.difference(&now).map(|user| (user, "done"));
        for (user, state) in started.chain(stopped) {
            let Some(target) = Target::of(portal, user) else { continue };
            let Some(puppet) = self.puppets.get(user).map(|entry| entry.clone()) else { continue };
            let there = match &target {
                Target::Channel(channel) => puppet.channel_status(channel) == ChannelStatus::Joined,
                Target::Nick(_) => puppet.is_connected(),
            };
            if !puppet.has_cap("message-tags") || !there {
                continue;
            }
            let line = Line::new("TAGMSG", &[target.name()], None).map(|line| line.tagged(&[("+typing", Some(state))]));
            if let Ok(Ok(line)) = line {
                // Typing is a hint: a connection that is down just misses it.
                let _ = puppet.send(line).await;
            }
        }
    }

    /// A Matrix user invited one of our ghosts to a direct chat: the ghost joins and the room becomes the DM portal.
    pub(in crate::network) async fn maybe_direct_chat(&self, event: &MatrixEvent, sender: &str) -> ConnectorResult<()> {
        let MatrixEventKind::Membership { user_id, membership, is_direct: true, .. } = &event.kind else {
            return Ok(());
        };
        if membership != "invite" {
            return Ok(());
        }
        let Some(ghost) = self.ghost_for_user_id(user_id).await else { return Ok(()) };
        let nick = ghost.displayname.clone().unwrap_or_default();
        let intent = self.bridge.sync_ghost(&ghost).await.map_err(core_error)?;
        let room: ruma::OwnedRoomId = event.room_id.parse().map_err(|_| ConnectorError::permanent("bad room ID"))?;
        intent.ensure_joined(&room).await?;
        self.bridge
            .store()
            .upsert_portal(&Portal {
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
