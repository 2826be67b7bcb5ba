//! IRC → Matrix for what a puppet hears about itself: echoes of its lines, private messages (Matrix DMs) and
//! server replies to commands its user gave.

use irc::proto::{Command, Message};
use lattice_bridge_core::{
    connector::{BridgeInfoSpec, DirectChat, PortalSpec},
    event::RemoteEventKind,
    store::MessageMapping,
};
use serde_json::json;

use crate::network::{Network, lock, render::classify};
use crate::{
    ids::{casefold, dm_key, is_valid_nick},
    ircv3::{echo::Outgoing, tags},
    message_id::MessageId,
};

impl Network {
    /// What a puppet hears about itself: private messages become Matrix DMs, server replies go to whoever asked.
    pub(in crate::network) async fn on_puppet(&self, matrix_user: &str, own_nick: &str, message: Message) {
        if self.settle_echo(matrix_user, own_nick, &message).await {
            return;
        }
        self.heard_by_puppet(matrix_user, own_nick, message).await;
    }

    /// What a line tells about the puppet's own lines (their echo, an `ACK`, an error reply to a labelled line);
    /// `true` when that is all it is.
    async fn settle_echo(&self, matrix_user: &str, own_nick: &str, message: &Message) -> bool {
        let label = tags::get(message, "label");
        let from_self = message.source_nickname().is_some_and(|nick| casefold(nick) == casefold(own_nick));
        match &message.command {
            // The echo of a draft/multiline batch: its opener carries the label and the msgid.
            Command::BATCH(reference, ..) if from_self => {
                let sent = match reference.starts_with('+') {
                    true => label.and_then(|label| lock(&self.echoes).echoed(matrix_user, Some(label), "", "")),
                    false => None,
                };
                if let (Some(sent), Some(msgid)) = (sent, tags::get(message, "msgid")) {
                    self.record_echo(sent, own_nick, msgid);
                }
                true
            }
            // echo-message: our own line came back, so it was delivered; its msgid names it from now on.
            Command::PRIVMSG(target, text) | Command::NOTICE(target, text) if from_self => {
                let sent = lock(&self.echoes).echoed(matrix_user, label, target, text);
                if let (Some(sent), Some(msgid)) = (sent, tags::get(message, "msgid")) {
                    self.record_echo(sent, own_nick, msgid);
                }
                true
            }
            // labeled-response: `ACK` means the server took the line and has nothing to say (no echo will come).
            Command::Raw(command, _) if command == "ACK" && label.is_some() => {
                lock(&self.echoes).echoed(matrix_user, label, "", "");
                true
            }
            Command::Raw(_, _) | Command::Response(..) if !from_self && label.is_some() => {
                // labeled-response: an error reply to a labelled line (404 ERR_CANNOTSENDTOCHAN, FAIL …).
                let reason = match &message.command {
                    Command::Response(_, params) | Command::Raw(_, params) => params.last().cloned(),
                    _ => None,
                };
                let reason = reason.as_deref().unwrap_or("the IRC server refused it");
                let failed = lock(&self.echoes).failed(label.unwrap_or_default(), reason);
                let Some(sent) = failed else { return false };
                self.tell_undelivered(&sent, reason).await;
                true
            }
            _ => false,
        }
    }

    /// Everything else a puppet hears: its nick changing, private messages (Matrix DMs), typing in DMs, the server
    /// closing the connection, and replies to commands its user gave.
    async fn heard_by_puppet(&self, matrix_user: &str, own_nick: &str, message: Message) {
        match &message.command {
            Command::NICK(new) => {
                self.puppet_nicks.remove(&casefold(own_nick));
                self.puppet_nicks.insert(casefold(new), matrix_user.to_owned());
            }
            Command::PRIVMSG(_, text) | Command::NOTICE(_, text) => {
                let Some(nick) = message.source_nickname().map(str::to_owned) else { return };
                if self.is_ours(&nick) || !is_valid_nick(&nick) {
                    return;
                }
                let notice = matches!(message.command, Command::NOTICE(..));
                let Some((msgtype, text)) = classify(text, notice) else { return };
                let ghost = self.ghost(&nick).await;
                let spec = PortalSpec {
                    remote_key: dm_key(&self.id, matrix_user, &nick),
                    alias_localpart: None,
                    name: None,
                    topic: None,
                    bridge_info: BridgeInfoSpec {
                        network_id: self.id.clone(),
                        network_name: self.config.name.clone(),
                        channel_id: casefold(&nick),
                        channel_name: nick.clone(),
                    },
                    public: false,
                    direct: Some(DirectChat { ghost: ghost.clone(), matrix_user: matrix_user.to_owned() }),
                    metadata: json!({"network": self.id, "nick": nick}),
                };
                let portal = match self.bridge.ensure_portal(&spec).await {
                    Ok(portal) => portal,
                    Err(error) => {
                        tracing::error!(network = %self.id, %error, "cannot create a DM room");
                        return;
                    }
                };
                let (body, html) = self.irc_to_matrix(text);
                let kind = RemoteEventKind::Message { msgtype, body, html, reply_to: None };
                self.push(&portal.remote_key, Some(ghost), Some(MessageId::of_line(&nick, &message).to_string()), kind)
                    .await;
            }
            // Typing in a DM: only where the DM room exists already (typing alone does not open one).
            Command::Raw(command, _) if command == "TAGMSG" => {
                let Some(nick) = message.source_nickname().filter(|nick| !self.is_ours(nick)) else { return };
                let key = dm_key(&self.id, matrix_user, nick);
                if let Ok(Some(_)) = self.bridge.portals().by_key(&key).await {
                    self.irc_typing(&key, nick, &message).await;
                }
            }
            Command::ERROR(reason) => self.privacy.closed_by_server(matrix_user, reason),
            Command::Response(..) => {
                if let Some(sender) = self.pending_replies.get(matrix_user).map(|entry| entry.clone()) {
                    let _ = sender.try_send(message);
                }
            }
            _ => {}
        }
    }

    /// Records the msgid a delivered Matrix message got on IRC, so IRC replies and reactions can name it.
    pub(in crate::network) fn record_echo(&self, sent: Outgoing, own_nick: &str, msgid: &str) {
        let mapping = MessageMapping {
            event_id: sent.event_id,
            room_id: sent.room_id,
            portal_key: sent.portal_key,
            remote_id: MessageId::new(own_nick, msgid).to_string(),
        };
        self.bridge.messages().also_known_as(mapping);
    }
}
