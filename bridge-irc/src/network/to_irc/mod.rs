//! Matrix → IRC: one handler per Matrix event kind in a portal, each writing its sender's puppet's lines and
//! telling the runtime what the event came to ([`Sent`]): what the puppet wrote stays in the runtime's queue until
//! the server has it (see [`crate::delivery`]).

use std::time::Duration;

use lattice_bridge_core::{
    connector::{ConnectorResult, InPortal, Sent},
    formatting::{Mention, MentionTarget, strip_reply_fallback},
};

use crate::{
    conn::{Connection, Keyed},
    delivery::{Confirmation, Sending},
    ids::unescape_nick,
    line::Line,
    network::{JOIN_WAIT, Network, channels::Target, lock, transient},
};

mod direct;
mod edit;
mod membership;
mod message;
mod reaction;
mod redaction;
mod topic;
mod typing;

#[cfg(test)]
mod tests;

impl Network {
    /// Where what `at.sender` does in the portal goes on IRC, if anywhere; with `used`, notes that the sender just
    /// used their puppet (if they have one), which keeps it from being closed as idle.
    fn target_of(&self, at: InPortal<'_>, used: bool) -> Option<Target> {
        if used && self.puppets.contains_key(at.sender) {
            self.touch(at.sender, Some(&at.event.room_id));
        }
        Target::of(at.portal, at.sender)
    }

    /// The sender's puppet, in the channel (or connected, for a DM) — waiting a little for it.
    async fn present_puppet(&self, sender: &str, target: &Target) -> ConnectorResult<Connection> {
        let puppet = self.puppet(sender, None).await?;
        match target {
            Target::Channel(channel) => self.joined(&puppet, channel).await?,
            Target::Nick(_) if !puppet.is_connected() => puppet.changed(JOIN_WAIT).await,
            Target::Nick(_) => {}
        }
        Ok(puppet)
    }

    /// Sends a Matrix event's lines (an edit, a reaction, a topic): the event is settled once the server has read
    /// them; nothing is recorded for it in the message map.
    async fn deliver(&self, puppet: &Connection, lines: Vec<Line>, at: InPortal<'_>) -> ConnectorResult<Sent> {
        let key = at.event.event_id.as_deref();
        let Some(receipt) = self.send_lines(puppet, lines, true, key).await?.read else { return Ok(Sent::Nothing) };
        let sending = Sending {
            confirmation: Confirmation::Receipt(receipt),
            remote_id: None,
            sender: at.sender.to_owned(),
            room_id: at.event.room_id.clone(),
        };
        Ok(self.deliveries.sending(sending))
    }

    /// The plain text of a Matrix event (reply fallback removed), as the bridge bot can read it.
    async fn event_text(&self, room_id: &str, event_id: &str) -> Option<String> {
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
        key: Option<&str>,
    ) -> ConnectorResult<Keyed> {
        let not_connected = |error: crate::conn::NotConnected| transient(error.to_string());
        if let Some(key) = key {
            return puppet.send_keyed(lines, key, receipt).await.map_err(not_connected);
        }
        if receipt {
            let read = puppet.send_with_receipt(lines).await.map_err(not_connected)?;
            return Ok(Keyed { read: Some(read), earlier: None });
        }
        for line in lines {
            puppet.send(line).await.map_err(not_connected)?;
        }
        Ok(Keyed { read: None, earlier: None })
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
}
