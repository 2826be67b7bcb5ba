//! IRC → Matrix messages in bridged channels: `PRIVMSG` and `NOTICE` (CTCP ACTION as emotes), `TAGMSG` with
//! [typing](https://ircv3.net/specs/client-tags/typing) and [react](https://ircv3.net/specs/client-tags/react) tags,
//! and [`REDACT`](https://ircv3.net/specs/extensions/message-redaction).

use irc::proto::Message;
use lattice_bridge_core::event::RemoteEventKind;

use crate::{
    ids::casefold,
    ircv3::{server_time, tags},
    message_id::MessageId,
    network::{Network, render::classify},
};

impl Network {
    /// `PRIVMSG`/`NOTICE <channel> :text` from an IRC person.
    pub(super) async fn irc_message(&self, message: &Message, nick: &str, target: &str, text: &str, notice: bool) {
        let Some(portal) = self.portal_of(target) else { return };
        let Some((msgtype, text)) = classify(text, notice) else { return };
        let (body, html) = self.irc_to_matrix(text);
        let remote_id = MessageId::of_line(nick, message).to_string();
        if let Some(msgid) = tags::get(message, "msgid") {
            self.last_msgid.insert(casefold(target), msgid.to_owned());
        }
        let reply_to = self.replied_to(&portal, message).await;
        let kind = RemoteEventKind::Message { msgtype, body, html, reply_to };
        let at = server_time::timestamp_ms(message);
        self.push_at(&portal, Some(self.ghost(nick).await), Some(remote_id), at, kind).await;
    }

    /// `TAGMSG <channel>`: typing, and reactions to a message the bridge knows.
    pub(super) async fn irc_tagmsg(&self, message: &Message, nick: &str, params: &[String]) {
        let Some(portal) = params.first().and_then(|target| self.portal_of(target)) else { return };
        let at = server_time::timestamp_ms(message);
        self.irc_typing(&portal, nick, message).await;
        if let Some(key) = tags::get(message, "+draft/react").filter(|key| !key.is_empty())
            && let Some(target) = self.replied_to(&portal, message).await
        {
            let kind = RemoteEventKind::Reaction { target, key: key.to_owned() };
            let remote_id = MessageId::of_line(nick, message).to_string();
            self.push_at(&portal, Some(self.ghost(nick).await), Some(remote_id), at, kind).await;
        }
    }

    /// `REDACT <target> <msgid> [:reason]` (draft/message-redaction) of a message the bridge knows.
    pub(super) async fn irc_redact(&self, nick: &str, params: &[String]) {
        let [target, msgid, rest @ ..] = params else { return };
        let Some(portal) = self.portal_of(target) else { return };
        let found = self.bridge.messages().remote_by_suffix(&portal, &MessageId::suffix_of(msgid)).await;
        let Ok(Some(target)) = found else { return };
        let kind = RemoteEventKind::Redaction { target, reason: rest.first().cloned() };
        self.push(&portal, Some(self.ghost(nick).await), None, kind).await;
    }

    /// A `+typing` client tag on a TAGMSG from `nick` (IRCv3 typing) as typing in `portal`: a channel's or a DM's.
    pub(in crate::network) async fn irc_typing(&self, portal: &str, nick: &str, message: &Message) {
        let Some(state) = tags::get(message, "+typing") else { return };
        // `paused` (text typed, not being typed now) is not typing for Matrix either.
        let kind = RemoteEventKind::Typing { typing: state == "active" };
        let at = server_time::timestamp_ms(message);
        self.push_at(portal, Some(self.ghost(nick).await), None, at, kind).await;
    }

    /// The message-map ID of the message a received line names in `+draft/reply` (IRCv3 `message-tags`).
    pub(in crate::network) async fn replied_to(&self, portal: &str, message: &Message) -> Option<String> {
        let msgid = tags::get(message, "+draft/reply").filter(|msgid| !msgid.is_empty())?;
        let found = self.bridge.messages().remote_by_suffix(portal, &MessageId::suffix_of(msgid)).await;
        found.inspect_err(|error| tracing::warn!(network = %self.id, %error, "cannot look up a reply target")).ok()?
    }
}
