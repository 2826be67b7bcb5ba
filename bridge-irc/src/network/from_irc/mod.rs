//! IRC → Matrix: what the bridge bot hears in bridged channels, as Matrix events pushed to the runtime.

use std::time::Duration;

use irc::proto::{ChannelMode, Command, Message, Mode, Response};
use lattice_bridge_core::{
    event::RemoteEventKind,
    formatting::{Mention, MentionTarget, RichText},
};

use crate::network::{
    Network, lock,
    render::{classify, mask_matches, power_level},
};
use crate::{
    ghosts,
    ids::casefold,
    ircv3::{chathistory, netsplit::split_servers, server_time, tags},
    message_id::MessageId,
    mirc,
};

mod puppet;

impl Network {
    /// What the bridge bot hears in its channels.
    pub(in crate::network) async fn on_listener(&self, own_nick: &str, message: Message) {
        let source = message.source_nickname().map(str::to_owned);
        let from_ours = source.as_deref().is_none_or(|nick| self.is_ours(nick));
        if let Some(nick) = source.as_deref().filter(|_| {
            !from_ours
                && message.prefix.as_ref().is_some_and(|prefix| matches!(prefix, irc::proto::Prefix::Nickname(..)))
        }) {
            self.note_person(nick, &message).await;
        }
        match &message.command {
            Command::PRIVMSG(target, text) | Command::NOTICE(target, text) if !from_ours => {
                let Some(portal) = self.portals.get(&casefold(target)).map(|entry| entry.clone()) else { return };
                let nick = source.unwrap_or_default();
                let notice = matches!(message.command, Command::NOTICE(..));
                let Some((msgtype, text)) = classify(text, notice) else { return };
                let (body, html) = self.irc_to_matrix(text);
                let remote_id = MessageId::of_line(&nick, &message).to_string();
                if let Some(msgid) = tags::get(&message, "msgid") {
                    self.last_msgid.insert(casefold(target), msgid.to_owned());
                }
                let reply_to = self.replied_to(&portal, &message).await;
                let kind = RemoteEventKind::Message { msgtype, body, html, reply_to };
                let at = server_time::timestamp_ms(&message);
                self.push_at(&portal, Some(self.ghost(&nick).await), Some(remote_id), at, kind).await;
            }
            Command::Raw(command, params) if command == "TAGMSG" && !from_ours => {
                let Some(portal) = params.first().and_then(|target| self.portal_of(target)) else { return };
                let nick = source.unwrap_or_default();
                let at = server_time::timestamp_ms(&message);
                self.irc_typing(&portal, &nick, &message).await;
                if let Some(key) = tags::get(&message, "+draft/react").filter(|key| !key.is_empty())
                    && let Some(target) = self.replied_to(&portal, &message).await
                {
                    let kind = RemoteEventKind::Reaction { target, key: key.to_owned() };
                    let remote_id = MessageId::of_line(&nick, &message).to_string();
                    self.push_at(&portal, Some(self.ghost(&nick).await), Some(remote_id), at, kind).await;
                }
            }
            Command::Raw(command, params) if command == "REDACT" && !from_ours && params.len() >= 2 => {
                // draft/message-redaction: `REDACT <target> <msgid> [:reason]`.
                let Some(portal) = self.portal_of(&params[0]) else { return };
                let found = self.bridge.store().remote_id_by_suffix(&portal, &MessageId::suffix_of(&params[1])).await;
                let Ok(Some(target)) = found else { return };
                let kind = RemoteEventKind::Redaction { target, reason: params.get(2).cloned() };
                self.push(&portal, Some(self.ghost(&source.unwrap_or_default()).await), None, kind).await;
            }
            Command::JOIN(channel, _, _) if from_ours => {
                if let Some(irc::proto::Prefix::Nickname(nick, user, host)) = &message.prefix {
                    self.puppet_masks.insert(casefold(nick), format!("{nick}!{user}@{host}"));
                }
                // The bridge bot (re)joined a bridged channel: ask for what was said meanwhile, where offered.
                if source.as_deref().is_some_and(|nick| casefold(nick) == casefold(own_nick))
                    && self.portal_of(channel).is_some()
                    && self.listener.has_cap("draft/chathistory")
                {
                    let after = self.last_msgid.get(&casefold(channel)).map(|entry| entry.clone());
                    if let Ok(line) = chathistory::request(channel, after.as_deref()) {
                        let _ = self.listener.send(line).await;
                    }
                }
            }
            Command::JOIN(channel, _, _) if !from_ours => {
                let Some(portal) = self.portals.get(&casefold(channel)).map(|entry| entry.clone()) else { return };
                let nick = source.unwrap_or_default();
                lock(&self.members).entry(casefold(channel)).or_default().insert(casefold(&nick));
                if lock(&self.netsplits).rejoin(&casefold(&nick), &casefold(channel), tokio::time::Instant::now()) {
                    // Back from a netsplit: the ghost never left.
                    return;
                }
                self.push(&portal, Some(self.ghost(&nick).await), None, RemoteEventKind::Join).await;
            }
            Command::PART(channel, reason) if !from_ours => {
                let Some(portal) = self.portals.get(&casefold(channel)).map(|entry| entry.clone()) else { return };
                let nick = source.unwrap_or_default();
                let still_seen = {
                    let mut members = lock(&self.members);
                    if let Some(members) = members.get_mut(&casefold(channel)) {
                        members.remove(&casefold(&nick));
                    }
                    members.values().any(|members| members.contains(&casefold(&nick)))
                };
                if !still_seen {
                    // Out of every bridged channel: the bridge hears no more about them.
                    lock(&self.people).remove(&casefold(&nick));
                }
                let kind = RemoteEventKind::Leave { reason: reason.clone() };
                self.push(&portal, Some(self.ghost(&nick).await), None, kind).await;
            }
            Command::QUIT(reason) if !from_ours => {
                if let Some((from, to)) = reason.as_deref().and_then(split_servers) {
                    self.split_quit(source.as_deref().unwrap_or_default(), &format!("{from} {to}"));
                    return;
                }
                let nick = casefold(&source.unwrap_or_default());
                lock(&self.people).remove(&nick);
                let channels: Vec<String> = lock(&self.members)
                    .iter_mut()
                    .filter_map(|(channel, members)| members.remove(&nick).then(|| channel.clone()))
                    .collect();
                let ghost = self.ghost(&nick).await;
                for channel in channels {
                    if let Some(portal) = self.portals.get(&channel).map(|entry| entry.clone()) {
                        let reason = reason.as_ref().map(|reason| format!("Quit: {reason}"));
                        self.push(&portal, Some(ghost.clone()), None, RemoteEventKind::Leave { reason }).await;
                    }
                }
            }
            Command::KICK(channel, kicked, reason) => {
                let Some(portal) = self.portals.get(&casefold(channel)).map(|entry| entry.clone()) else { return };
                if casefold(kicked) == casefold(own_nick) {
                    tracing::warn!(network = %self.id, %channel, ?reason, "the bridge bot was kicked; rejoining");
                    let listener = self.listener.clone();
                    let channel = channel.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        listener.want_channel(&channel);
                    });
                    return;
                }
                let kicker = match source.filter(|nick| !self.is_ours(nick)) {
                    Some(nick) => Some(self.ghost(&nick).await),
                    None => None,
                };
                let user_id = match self.puppet_nicks.get(&casefold(kicked)) {
                    Some(matrix_user) => matrix_user.clone(),
                    None => {
                        if let Some(members) = lock(&self.members).get_mut(&casefold(channel)) {
                            members.remove(&casefold(kicked));
                        }
                        self.ghost(kicked).await.user_id
                    }
                };
                self.push(&portal, kicker, None, RemoteEventKind::Kick { user_id, reason: reason.clone() }).await;
            }
            Command::NICK(new) if !from_ours => {
                let old = casefold(&source.unwrap_or_default());
                lock(&self.people).rename(&old, &casefold(new));
                let mut ghost = self.ghost(&old).await;
                ghost.displayname = Some(new.clone());
                ghost.remote_id = ghosts::remote_id(&self.id, new);
                {
                    let mut ghosts = lock(&self.ghosts);
                    ghosts.remove(&old);
                    ghosts.insert(casefold(new), ghost.clone());
                }
                if let Err(error) = ghosts::follow_nick(self.bridge.store(), &ghost).await {
                    tracing::warn!(network = %self.id, %new, %error, "cannot record a nick change in the store");
                }
                let first_channel = {
                    let mut members = lock(&self.members);
                    let mut first = None;
                    for (channel, nicks) in members.iter_mut() {
                        if nicks.remove(&old) {
                            nicks.insert(casefold(new));
                            first.get_or_insert_with(|| channel.clone());
                        }
                    }
                    first
                };
                if let Some(portal) = first_channel.and_then(|channel| self.portals.get(&channel).map(|e| e.clone())) {
                    self.push(&portal, Some(ghost), None, RemoteEventKind::Profile).await;
                }
            }
            Command::TOPIC(channel, Some(topic)) if !from_ours => {
                let Some(portal) = self.portals.get(&casefold(channel)).map(|entry| entry.clone()) else { return };
                let ghost = match source {
                    Some(nick) => Some(self.ghost(&nick).await),
                    None => None,
                };
                self.push(&portal, ghost, None, RemoteEventKind::Topic { topic: topic.clone() }).await;
            }
            Command::Response(Response::RPL_TOPIC, params) if params.len() >= 3 => {
                let Some(portal) = self.portals.get(&casefold(&params[1])).map(|entry| entry.clone()) else { return };
                let known = self.bridge.store().portal_by_key(&portal).await.ok().flatten();
                if known.and_then(|portal| portal.topic).as_deref() != Some(params[2].as_str()) {
                    self.push(&portal, None, None, RemoteEventKind::Topic { topic: params[2].clone() }).await;
                }
            }
            Command::Response(Response::RPL_NAMREPLY, params) if params.len() >= 4 => {
                let channel = &params[2];
                let Some(portal) = self.portals.get(&casefold(channel)).map(|entry| entry.clone()) else { return };
                for entry in params[3].split_whitespace() {
                    let nick = entry.trim_start_matches(['~', '&', '@', '%', '+']);
                    if nick.is_empty() || self.is_ours(nick) {
                        continue;
                    }
                    let modes = &entry[..entry.len() - nick.len()];
                    let fresh = lock(&self.members).entry(casefold(channel)).or_default().insert(casefold(nick));
                    let ghost = self.ghost(nick).await;
                    // Back from a netsplit (seen in the names after our own reconnect): the ghost never left.
                    let returned = fresh
                        && lock(&self.netsplits).rejoin(
                            &casefold(nick),
                            &casefold(channel),
                            tokio::time::Instant::now(),
                        );
                    if fresh && !returned {
                        self.push(&portal, Some(ghost.clone()), None, RemoteEventKind::Join).await;
                    }
                    let level = power_level(modes);
                    if level > 0 {
                        let kind = RemoteEventKind::PowerLevel { user_id: ghost.user_id, level };
                        self.push(&portal, None, None, kind).await;
                    }
                }
            }
            Command::ChannelMODE(channel, modes) => {
                let Some(portal) = self.portals.get(&casefold(channel)).map(|entry| entry.clone()) else { return };
                for mode in modes {
                    let (plus, mode, Some(nick)) = (match mode {
                        Mode::Plus(mode, nick) => (true, mode, nick),
                        Mode::Minus(mode, nick) => (false, mode, nick),
                        Mode::NoPrefix(mode) => (true, mode, &None),
                    }) else {
                        continue;
                    };
                    if *mode == ChannelMode::Ban {
                        if plus {
                            self.ban_puppets(&portal, nick, source.as_deref()).await;
                        }
                        continue;
                    }
                    let prefix = match mode {
                        ChannelMode::Founder => "~",
                        ChannelMode::Admin => "&",
                        ChannelMode::Oper => "@",
                        ChannelMode::Halfop => "%",
                        ChannelMode::Voice => "+",
                        _ => continue,
                    };
                    if self.listener.nick().is_some_and(|own| casefold(&own) == casefold(nick)) {
                        continue;
                    }
                    let user_id = match self.puppet_nicks.get(&casefold(nick)) {
                        Some(matrix_user) => matrix_user.clone(),
                        None => self.ghost(nick).await.user_id,
                    };
                    let level = if plus { power_level(prefix) } else { 0 };
                    self.push(&portal, None, None, RemoteEventKind::PowerLevel { user_id, level }).await;
                }
            }
            _ => {}
        }
    }

    /// The message-map ID of the message a received line names in `+draft/reply` (IRCv3 `message-tags`).
    pub(in crate::network) async fn replied_to(&self, portal: &str, message: &Message) -> Option<String> {
        let msgid = tags::get(message, "+draft/reply").filter(|msgid| !msgid.is_empty())?;
        let found = self.bridge.store().remote_id_by_suffix(portal, &MessageId::suffix_of(msgid)).await;
        found.inspect_err(|error| tracing::warn!(network = %self.id, %error, "cannot look up a reply target")).ok()?
    }

    /// A `+typing` client tag on a TAGMSG from `nick` (IRCv3 typing) as typing in `portal`: a channel's or a DM's.
    pub(in crate::network) async fn irc_typing(&self, portal: &str, nick: &str, message: &Message) {
        let Some(state) = tags::get(message, "+typing") else { return };
        // `paused` (text typed, not being typed now) is not typing for Matrix either.
        let kind = RemoteEventKind::Typing { typing: state == "active" };
        let at = server_time::timestamp_ms(message);
        self.push_at(portal, Some(self.ghost(nick).await), None, at, kind).await;
    }

    /// An IRC message's text as a Matrix body and HTML; nicks of Matrix users become pills.
    pub(in crate::network) fn irc_to_matrix(&self, text: &str) -> (String, Option<String>) {
        let mut rich = mirc::parse(text);
        self.pill_puppet_nicks(&mut rich);
        rich.to_message()
    }

    /// Replaces a puppet's nick at the start of a message (`alice: hi`) with a pill of its Matrix user.
    pub(in crate::network) fn pill_puppet_nicks(&self, rich: &mut RichText) {
        let Some(lattice_bridge_core::formatting::Node::Text(first)) = rich.nodes.first() else { return };
        let Some((word, rest)) = first.split_once([':', ',']) else { return };
        let Some(user) = self.puppet_nicks.get(&casefold(word)).map(|entry| entry.clone()) else { return };
        let mention = Mention { target: MentionTarget::User(user), display: word.to_owned() };
        let rest = rest.to_owned();
        let separator = first[word.len()..].chars().next().unwrap_or(':');
        rich.nodes[0] = lattice_bridge_core::formatting::Node::Mention(mention);
        rich.nodes.insert(1, lattice_bridge_core::formatting::Node::Text(format!("{separator}{rest}")));
    }

    /// An IRC ban (`MODE +b mask`) that matches puppets bans their Matrix users from the portal room.
    pub(in crate::network) async fn ban_puppets(&self, portal: &str, mask: &str, by: Option<&str>) {
        let banned: Vec<String> = self
            .puppet_masks
            .iter()
            .filter(|entry| mask_matches(mask, entry.value()))
            .filter_map(|entry| self.puppet_nicks.get(entry.key()).map(|user| user.clone()))
            .collect();
        if banned.is_empty() {
            return;
        }
        let room = match self.bridge.store().portal_by_key(portal).await {
            Ok(Some(portal)) => portal.room_id,
            _ => return,
        };
        let Ok(room) = room.parse::<ruma::OwnedRoomId>() else { return };
        let reason = format!("Banned on IRC by {} ({mask})", by.unwrap_or("the server"));
        for user in banned {
            let Ok(user) = user.parse::<ruma::OwnedUserId>() else { continue };
            if let Err(error) = self.bridge.matrix().bot().ban(&room, &user, Some(&reason)).await {
                tracing::warn!(network = %self.id, %portal, %user, %error, "cannot ban a Matrix user banned on IRC");
            }
        }
    }
}
