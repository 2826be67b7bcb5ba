//! Bot commands about the Matrix user's IRC connection: joining and leaving channels, `whois`, reconnecting,
//! quitting, listing channels, and raw commands from an allowlist.

use std::time::Duration;

use lattice_bridge_core::{ConnectorError, connector::ConnectorResult};

use super::{CMD_ALLOWLIST, fail};
use crate::{ids::is_valid_channel, line::Line, network::Network};

/// `join <#channel>`: the user's puppet joins a channel and the user is invited to its portal.
pub(super) async fn join(network: &Network, sender: &str, args: &[String]) -> ConnectorResult<String> {
    let [channel] = args else { return Err(fail("usage: join [network] <#channel>")) };
    if !is_valid_channel(channel) {
        return Err(fail(format!("`{channel}` is not a valid channel name")));
    }
    let spec = network.portal_spec(channel);
    let portal = network.bridge().ensure_portal(&spec).await?;
    network.add_channel(&portal, channel);
    network.puppet(sender, None).await?.want_channel(channel);
    if let (Ok(room), Ok(user)) = (portal.room_id.parse(), sender.parse()) {
        let room: ruma::OwnedRoomId = room;
        let user: ruma::OwnedUserId = user;
        let bot = network.bridge().matrix().bot();
        bot.invite(&room, &user).await?;
    }
    Ok(format!("Joining {channel}: you are invited to {}.", portal.alias.unwrap_or(portal.room_id)))
}

/// `part <#channel>`: the user's puppet leaves a channel.
pub(super) async fn part(network: &Network, sender: &str, args: &[String]) -> ConnectorResult<String> {
    let [channel] = args else { return Err(fail("usage: part [network] <#channel>")) };
    match network.existing_puppet(sender) {
        Some(puppet) => {
            puppet.part(channel, Some("Leaving"));
            Ok(format!("Left {channel}."))
        }
        None => Err(fail("you have no IRC connection on this network")),
    }
}

/// `whois <nick>`: what the server (and the bridge) knows about a nick.
pub(super) async fn whois(network: &Network, sender: &str, args: &[String]) -> ConnectorResult<String> {
    let [nick] = args else { return Err(fail("usage: whois [network] <nick>")) };
    let puppet = network.puppet(sender, None).await?;
    let mut receiver = network.expect_replies(sender);
    let line = Line::new("WHOIS", &[nick], None).map_err(|error| fail(error.to_string()))?;
    let sent = puppet.send(line).await;
    let mut answer = Vec::new();
    if sent.is_ok() {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Ok(Some(message)) = tokio::time::timeout_at(deadline, receiver.recv()).await {
            let irc::proto::Command::Response(response, params) = &message.command else { continue };
            answer.push(params.iter().skip(1).cloned().collect::<Vec<_>>().join(" "));
            if matches!(response, irc::proto::Response::RPL_ENDOFWHOIS | irc::proto::Response::ERR_NOSUCHNICK) {
                break;
            }
        }
    }
    network.stop_replies(sender);
    sent.map_err(|error| ConnectorError::transient(error.to_string()))?;
    if let Some(known) = network.describe_person(nick) {
        answer.push(format!("The bridge knows {nick} as: {known}"));
    }
    Ok(if answer.is_empty() { format!("No answer about {nick}.") } else { answer.join("\n") })
}

/// `reconnect`: drops and re-establishes the user's connection.
pub(super) async fn reconnect(network: &Network, sender: &str, _args: &[String]) -> ConnectorResult<String> {
    network.puppet(sender, None).await?.reconnect();
    Ok(format!("Reconnecting to {}.", network.config().name))
}

/// `quit`: closes the user's connection until they next speak.
pub(super) async fn quit(network: &Network, sender: &str, _args: &[String]) -> ConnectorResult<String> {
    match network.take_puppet(sender) {
        Some(puppet) => {
            puppet.quit("Disconnected from Matrix");
            network.puppet_closed(sender, &puppet, "you closed your connection").await;
            Ok("Disconnected.".into())
        }
        None => Ok("You were not connected.".into()),
    }
}

/// `listrooms`: the channels the user's connection is in.
pub(super) async fn listrooms(network: &Network, sender: &str, _args: &[String]) -> ConnectorResult<String> {
    match network.existing_puppet(sender) {
        Some(puppet) => {
            let mut channels = puppet.channels();
            channels.sort();
            Ok(if channels.is_empty() { "You are in no channels.".into() } else { channels.join("\n") })
        }
        None => Ok("You have no IRC connection on this network.".into()),
    }
}

/// `cmd <COMMAND> [args…]`: a raw IRC command from the allowlist.
pub(super) async fn cmd_raw(network: &Network, sender: &str, args: &[String]) -> ConnectorResult<String> {
    let Some((command, params)) = args.split_first() else {
        return Err(fail("usage: cmd [network] <COMMAND> [args…]"));
    };
    let command = command.to_ascii_uppercase();
    if !CMD_ALLOWLIST.contains(&command.as_str()) {
        return Err(fail(format!("`{command}` is not allowed; allowed: {}", CMD_ALLOWLIST.join(", "))));
    }
    let (middle, trailing) = match params.split_last() {
        Some((last, middle)) if last.contains(' ') || last.starts_with(':') => {
            (middle.iter().map(String::as_str).collect::<Vec<_>>(), Some(last.trim_start_matches(':')))
        }
        _ => (params.iter().map(String::as_str).collect(), None),
    };
    let line = Line::new(&command, &middle, trailing).map_err(|error| fail(error.to_string()))?;
    let puppet = network.puppet(sender, None).await?;
    puppet.send(line).await.map_err(|error| ConnectorError::transient(error.to_string()))?;
    Ok(format!("Sent {command}."))
}
