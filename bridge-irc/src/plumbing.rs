//! Opt-in plumbing, Libera.Chat's rule that a channel is bridged to an existing Matrix room only with its operators'
//! consent (as matrix-appservice-irc's provisioning did: the op answers the bot's private message "yes" in time).
//!
//! A link request (the admin-room `link` command or `POST /_matrix/provision/link`) names the channel and one of its
//! operators. The bridge bot checks with `NAMES` (RFC 2812 §3.2.5) that the nick holds `+o` (or `+h` where the
//! network allows half-ops) there, then asks them by `PRIVMSG` to reply `yes` or `no` within the timeout; `yes`
//! links, `no` refuses, silence times out, and the requester is told the outcome in the room.

use std::{sync::Arc, time::Duration};

use irc::proto::{Command, Message, Response};
use lattice_bridge_core::{
    ConnectorError, bridge_info,
    connector::{BridgeInfoSpec, ConnectorResult},
    store::Portal,
};

use crate::{
    IrcConnector,
    ids::{PortalKind, casefold, is_valid_channel, is_valid_nick},
    line::Line,
    network::Network,
};

/// How long the bot waits for the server's answer to `NAMES`.
const NAMES_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a link or unlink cannot go ahead. Each kind maps onto matrix-appservice-irc's provisioning error codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum PlumbingError {
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// No such network.
    #[error("no IRC network `{0}` here")]
    UnknownNetwork(String),
    /// The room or the channel is bridged already.
    #[error("{0}")]
    DoubleBridge(String),
    /// That operator already has a request to answer.
    #[error("{op} has a link request to answer already (for {room}); wait for it to end")]
    ExistingRequest { op: String, room: String },
    /// The nick named is no operator of the channel.
    #[error("{0}")]
    BadOperator(String),
    /// The requester may not change the room's bridging.
    #[error("{0}")]
    NotEnoughPower(String),
    /// The room or channel is not bridged.
    #[error("{0}")]
    NotLinked(String),
    /// The bridge cannot ask right now (IRC connection down, homeserver unreachable); try later.
    #[error("{0}")]
    Unavailable(String),
}

impl From<ConnectorError> for PlumbingError {
    fn from(error: ConnectorError) -> Self {
        match error {
            ConnectorError::Permanent { message } => Self::Invalid(message),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

impl From<lattice_bridge_core::store::Error> for PlumbingError {
    fn from(error: lattice_bridge_core::store::Error) -> Self {
        Self::from(ConnectorError::from(error))
    }
}

impl From<PlumbingError> for ConnectorError {
    fn from(error: PlumbingError) -> Self {
        match error {
            PlumbingError::Unavailable(message) => Self::transient(message),
            other => Self::permanent(other.to_string()),
        }
    }
}

/// A request to bridge `room_id` to `channel`.
#[derive(Debug, Clone)]
pub(crate) struct LinkRequest {
    pub(crate) room_id: String,
    pub(crate) channel: String,
    /// The operator to ask; needed when the network requires approval.
    pub(crate) op_nick: Option<String>,
    /// The Matrix user asking.
    pub(crate) requester: String,
}

/// What a link request came to at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Requested {
    /// Linked without asking (approval not required).
    Linked(String),
    /// The operator was asked; the outcome is told in the room later.
    Asked { op: String, timeout: Duration },
}

/// What the operator answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Approved,
    Refused,
    TimedOut,
}

/// The network a provisioning request names: by ID, or by a server host as matrix-appservice-irc's
/// `remote_room_server` does.
pub(crate) fn network_named(connector: &IrcConnector, name: &str) -> Result<Arc<Network>, PlumbingError> {
    let networks = connector.networks()?;
    networks
        .get(name)
        .or_else(|| networks.values().find(|network| network.config().servers.iter().any(|server| server.host == name)))
        .cloned()
        .ok_or_else(|| PlumbingError::UnknownNetwork(name.to_owned()))
}

/// The members of `channel` with their prefixes (`@`, `%`, `+`, …), from a fresh `NAMES` by the bridge bot.
pub(crate) async fn names(network: &Network, channel: &str) -> Result<Vec<(String, String)>, PlumbingError> {
    let mut tap = network.hear();
    let line = Line::new("NAMES", &[channel], None).map_err(|error| PlumbingError::Invalid(error.to_string()))?;
    network.bot().send(line).await.map_err(|error| PlumbingError::Unavailable(error.to_string()))?;
    let folded = casefold(channel);
    let mut members = Vec::new();
    let deadline = tokio::time::Instant::now() + NAMES_TIMEOUT;
    loop {
        let message = match tokio::time::timeout_at(deadline, tap.recv()).await {
            Ok(Ok(message)) => message,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(_)) | Err(_) => {
                return Err(PlumbingError::Unavailable(format!("the IRC server did not answer NAMES {channel}")));
            }
        };
        match &message.command {
            Command::Response(Response::RPL_NAMREPLY, params)
                if params.len() >= 4 && casefold(&params[2]) == folded =>
            {
                members.extend(params[3].split_whitespace().map(names_entry));
            }
            Command::Response(Response::RPL_ENDOFNAMES, params)
                if params.get(1).map(|c| casefold(c)) == Some(folded.clone()) =>
            {
                return Ok(members);
            }
            _ => {}
        }
    }
}

/// One entry of a `RPL_NAMREPLY` as nick and prefixes: `@+alice` (IRCv3 `multi-prefix`), or `@alice!a@host` (IRCv3
/// `userhost-in-names`).
fn names_entry(entry: &str) -> (String, String) {
    let nick = entry.trim_start_matches(['~', '&', '@', '%', '+']);
    let prefixes = entry[..entry.len() - nick.len()].to_owned();
    (nick.split('!').next().unwrap_or(nick).to_owned(), prefixes)
}

/// Whether a member with these channel prefixes may approve links: operators and above, half-operators if allowed.
fn may_approve(prefixes: &str, halfops: bool) -> bool {
    prefixes.contains(['~', '&', '@']) || (halfops && prefixes.contains('%'))
}

/// The nicks that may approve links to `channel`: operators and above, and half-operators where allowed. The bridge
/// bot is left out.
pub(crate) async fn operators(network: &Network, channel: &str) -> Result<Vec<String>, PlumbingError> {
    let halfops = network.config().plumbing.halfops_may_approve;
    let own = network.bot().nick().map(|nick| casefold(&nick));
    Ok(names(network, channel)
        .await?
        .into_iter()
        .filter(|(_, prefixes)| may_approve(prefixes, halfops))
        .filter(|(nick, _)| own.as_deref() != Some(casefold(nick).as_str()))
        .map(|(nick, _)| nick)
        .collect())
}

/// Why `channel` cannot be linked to `room_id`, if it cannot: an invalid name, a room or channel bridged already,
/// an admin room.
async fn check_link(network: &Network, room_id: &str, channel: &str) -> Result<(), PlumbingError> {
    if !is_valid_channel(channel) {
        return Err(PlumbingError::Invalid(format!("`{channel}` is not a valid channel name")));
    }
    let bridge = network.bridge();
    if let Some(portal) = bridge.portals().by_room(room_id).await? {
        return Err(PlumbingError::DoubleBridge(format!(
            "this room already bridges {}; unlink it first",
            portal.remote_key
        )));
    }
    if bridge.settings().admin_room_owner(room_id).await?.is_some() {
        return Err(PlumbingError::Invalid("this is an admin room; link a room of its own".into()));
    }
    let spec = network.portal_spec(channel);
    if let Some(existing) = bridge.portals().by_key(&spec.remote_key).await? {
        return Err(PlumbingError::DoubleBridge(format!(
            "{channel} is already bridged to {}; unlink it there first",
            existing.alias.unwrap_or(existing.room_id)
        )));
    }
    Ok(())
}

/// Asks for `request` to be linked: checks it, then links at once or asks the operator (answered in the
/// background; the requester hears the outcome in the room).
pub(crate) async fn request_link(network: Arc<Network>, request: LinkRequest) -> Result<Requested, PlumbingError> {
    let LinkRequest { room_id, channel, op_nick, requester } = request;
    check_link(&network, &room_id, &channel).await?;
    let config = network.config().plumbing;
    if !config.require_approval {
        return Ok(Requested::Linked(link_room(&network, &room_id, &channel).await?));
    }
    let Some(op) = op_nick.filter(|nick| is_valid_nick(nick)) else {
        return Err(PlumbingError::BadOperator(format!(
            "{} links a channel only with an operator's approval: name one of {channel}'s operators",
            network.config().name
        )));
    };
    let ops = operators(&network, &channel).await?;
    if !ops.iter().any(|nick| casefold(nick) == casefold(&op)) {
        let kind = if config.halfops_may_approve { "an operator or half-operator" } else { "an operator" };
        return Err(PlumbingError::BadOperator(format!("{op} is not {kind} of {channel}")));
    }
    let key = casefold(&op);
    match network.link_requests().entry(key.clone()) {
        dashmap::Entry::Occupied(entry) => {
            return Err(PlumbingError::ExistingRequest { op, room: entry.get().clone() });
        }
        dashmap::Entry::Vacant(entry) => {
            entry.insert(room_id.clone());
        }
    }
    let timeout = Duration::from_secs(config.approval_timeout_secs.max(1));
    let tap = network.hear();
    let question = format!(
        "{requester} asks to bridge {channel} to the Matrix room {room_id}. As an operator of {channel}, reply yes or \
         no within {} s.",
        timeout.as_secs()
    );
    if let Err(error) = say(&network, &op, &question).await {
        network.link_requests().remove(&key);
        return Err(error);
    }
    tracing::info!(network = %network.id(), %channel, %room_id, %op, %requester, "asked a channel operator to approve a link");
    let asked = op.clone();
    let asking = Asking { key, op: asked, room_id, channel, requester, timeout };
    tokio::spawn(conclude_link(network, tap, asking));
    Ok(Requested::Asked { op, timeout })
}

/// A link request waiting for an operator's answer.
struct Asking {
    key: String,
    op: String,
    room_id: String,
    channel: String,
    requester: String,
    timeout: Duration,
}

/// Waits for the operator's answer to a link request, links if they approve, and tells the requester in the room.
async fn conclude_link(network: Arc<Network>, mut tap: tokio::sync::broadcast::Receiver<Arc<Message>>, asking: Asking) {
    let Asking { key, op: asked, room_id, channel, requester, timeout } = asking;
    let decision = wait_for_answer(&network, &mut tap, &asked, timeout).await;
    network.link_requests().remove(&key);
    let outcome = match decision {
        Decision::Approved => match link_room(&network, &room_id, &channel).await {
            Ok(text) => {
                let _ = say(&network, &asked, &format!("Thank you: {channel} is now bridged to {room_id}.")).await;
                format!("{requester}: {asked} approved. {text}")
            }
            Err(error) => format!("{requester}: {asked} approved, but linking failed: {error}"),
        },
        Decision::Refused => {
            let _ = say(&network, &asked, &format!("Understood: {channel} stays unbridged.")).await;
            format!("{requester}: {asked} refused to bridge {channel} to this room.")
        }
        Decision::TimedOut => format!(
            "{requester}: {asked} did not answer within {} s; {channel} is not bridged. Ask again when they are \
             around.",
            timeout.as_secs()
        ),
    };
    tracing::info!(network = %network.id(), %channel, %room_id, op = %asked, ?decision, "link request ended");
    if let Err(error) = network.bridge().notice(&room_id, &outcome).await {
        tracing::warn!(network = %network.id(), %room_id, %error, "cannot tell the requester how a link request ended");
    }
}

/// Sends a private message from the bridge bot.
async fn say(network: &Network, nick: &str, text: &str) -> Result<(), PlumbingError> {
    let line = Line::new("PRIVMSG", &[nick], Some(text)).map_err(|error| PlumbingError::Invalid(error.to_string()))?;
    network.bot().send(line).await.map_err(|error| PlumbingError::Unavailable(error.to_string()))
}

/// Waits for `op` to tell the bot yes or no; anything else gets a reminder.
async fn wait_for_answer(
    network: &Network,
    tap: &mut tokio::sync::broadcast::Receiver<Arc<Message>>,
    op: &str,
    timeout: Duration,
) -> Decision {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let message = match tokio::time::timeout_at(deadline, tap.recv()).await {
            Ok(Ok(message)) => message,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(_)) | Err(_) => return Decision::TimedOut,
        };
        let Command::PRIVMSG(target, text) = &message.command else { continue };
        let from_op = message.source_nickname().is_some_and(|nick| casefold(nick) == casefold(op));
        if !from_op || is_valid_channel(target) {
            continue;
        }
        match answer(text) {
            Some(decision) => return decision,
            None => {
                let _ = say(network, op, "Please reply yes or no.").await;
            }
        }
    }
}

/// An operator's reply as a decision: `yes`/`y` or `no`/`n`, any case, with trailing punctuation.
fn answer(text: &str) -> Option<Decision> {
    match text.trim().trim_end_matches(['.', '!']).to_ascii_lowercase().as_str() {
        "yes" | "y" => Some(Decision::Approved),
        "no" | "n" => Some(Decision::Refused),
        _ => None,
    }
}

/// Makes `room_id` the portal of `channel`: stores it, the bot joins the channel, the room gets bridge-info state,
/// and the room's Matrix members get IRC connections (or are removed under the privacy rule).
pub(crate) async fn link_room(network: &Network, room_id: &str, channel: &str) -> ConnectorResult<String> {
    let spec = network.portal_spec(channel);
    let portal = Portal {
        remote_key: spec.remote_key.clone(),
        room_id: room_id.to_owned(),
        alias: None,
        name: None,
        topic: None,
        metadata: spec.metadata.clone(),
    };
    network.bridge().portals().upsert(&portal).await?;
    network.add_channel(&portal, channel);
    let info = IrcConnector::info_static();
    let content = bridge_info::content(&network.bridge().bot_user_id(), &info, &spec.bridge_info);
    let mut reply = format!("This room is now bridged to {channel} on {}.", network.config().name);
    if let Err(error) = set_bridge_info(network, room_id, &spec.bridge_info, &content).await {
        reply.push_str(&format!(
            " (The bridge-info state could not be set: {error}. Give the bot power to send state events.)"
        ));
    }
    if network.privacy_enabled() && !bot_may_remove(network, room_id).await {
        reply.push_str(
            " (The bot cannot kick or ban here: give it the power to, or people without an IRC connection cannot be \
             removed as the network's privacy rule requires.)",
        );
    }
    network.connect_members(room_id, channel).await;
    Ok(reply)
}

/// Whether the bridge bot has the power to kick and ban in `room_id`, which the privacy rule needs.
async fn bot_may_remove(network: &Network, room_id: &str) -> bool {
    let Ok(room) = room_id.parse::<ruma::OwnedRoomId>() else { return false };
    let bot = network.bridge().matrix().bot();
    match bot.power_levels(&room).await {
        Ok(levels) => {
            let own = levels.user_level(bot.user_id());
            own >= levels.action_level("kick") && own >= levels.action_level("ban")
        }
        Err(error) => {
            tracing::warn!(network = %network.id(), %room_id, %error, "cannot read a linked room's power levels");
            false
        }
    }
}

/// Stops `portal` bridging its channel: the store forgets it, the bot parts, the bridge-info state is emptied.
pub(crate) async fn unlink_room(network: &Network, portal: &Portal) -> ConnectorResult<String> {
    let Some(key_channel) = PortalKind::parse(&portal.remote_key).and_then(PortalKind::channel) else {
        return Err(ConnectorError::permanent("this room is a direct chat, not a channel portal"));
    };
    let channel = portal.metadata.get("channel").and_then(|value| value.as_str()).unwrap_or(key_channel).to_owned();
    network.bridge().portals().delete(&portal.remote_key).await?;
    network.remove_channel(&channel);
    let spec = network.portal_spec(&channel);
    // Empty content removes the bridge-info state; a room the bot cannot change keeps it.
    let _ = set_bridge_info(network, &portal.room_id, &spec.bridge_info, &serde_json::json!({})).await;
    Ok(format!("This room no longer bridges {channel} on {}.", network.config().name))
}

/// Sets both bridge-info state events (MSC2346) of a room as the bot.
async fn set_bridge_info(
    network: &Network,
    room_id: &str,
    spec: &BridgeInfoSpec,
    content: &serde_json::Value,
) -> ConnectorResult<()> {
    let room: ruma::OwnedRoomId =
        room_id.parse().map_err(|_| ConnectorError::permanent(format!("`{room_id}` is not a room ID")))?;
    let bot = network.bridge().matrix().bot();
    // The runtime names the bridge in the state key by its appservice ID, which connectors do not see; the bot's
    // localpart is as unique (a state key starting with `@` is reserved for that user's own events).
    let bot_id = network.bridge().bot_user_id();
    let localpart = bot_id.trim_start_matches('@').split(':').next().unwrap_or_default();
    let state_key = bridge_info::state_key(localpart, spec);
    for event_type in bridge_info::EVENT_TYPES {
        bot.send_state_event(&room, event_type, &state_key, content, None).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_answers_are_read_leniently() {
        for (text, expected) in [
            ("yes", Some(Decision::Approved)),
            (" Yes. ", Some(Decision::Approved)),
            ("y", Some(Decision::Approved)),
            ("NO!", Some(Decision::Refused)),
            ("n", Some(Decision::Refused)),
            ("maybe", None),
            ("yes please", None),
        ] {
            assert_eq!(answer(text), expected, "{text:?}");
        }
    }

    #[test]
    fn names_entries_give_nick_and_prefixes_and_only_operators_approve() {
        for (entry, nick, prefixes, op, halfop) in [
            ("@carol", "carol", "@", true, true),
            ("@+carol", "carol", "@+", true, true),
            ("~founder", "founder", "~", true, true),
            ("%helper!h@host", "helper", "%", false, true),
            ("+voiced", "voiced", "+", false, false),
            ("plain!p@127.0.0.1", "plain", "", false, false),
        ] {
            let (parsed_nick, parsed_prefixes) = names_entry(entry);
            assert_eq!((parsed_nick.as_str(), parsed_prefixes.as_str()), (nick, prefixes), "{entry}");
            assert_eq!(may_approve(&parsed_prefixes, false), op, "{entry} without half-ops");
            assert_eq!(may_approve(&parsed_prefixes, true), halfop, "{entry} with half-ops");
        }
    }

    #[test]
    fn plumbing_errors_keep_their_kind_as_connector_errors() {
        assert!(ConnectorError::from(PlumbingError::Unavailable("down".into())).is_transient());
        let refused = ConnectorError::from(PlumbingError::BadOperator("bob is not an operator of #x".into()));
        assert!(!refused.is_transient());
        assert_eq!(refused.to_string(), "bob is not an operator of #x");
    }
}
