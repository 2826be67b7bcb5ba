//! The IRC bridge's bot commands, typed in the admin room (the DM with the bot) or after `!irc` in a portal.
//! Each takes an optional network ID first; it defaults to the portal's network, or the only network.

use std::{sync::Arc, time::Duration};

use lattice_bridge_core::{
    ConnectorError,
    connector::{CommandContext, CommandSpec, ConnectorResult},
};
use lattice_config::PermissionLevel;
use tokio::sync::mpsc;

use crate::{
    IrcConnector,
    ids::{is_valid_channel, is_valid_nick, sanitise_nick, sanitise_username},
    line::Line,
    network::{Network, account_setting, certfp_credential, nick_setting, username_setting},
    plumbing::{self, LinkRequest, Requested},
};

const fn user(name: &'static str, usage: &'static str, summary: &'static str) -> CommandSpec {
    CommandSpec { name, usage, summary, level: PermissionLevel::User }
}

const fn admin(name: &'static str, usage: &'static str, summary: &'static str) -> CommandSpec {
    CommandSpec { name, usage, summary, level: PermissionLevel::Admin }
}

/// The commands, for `help`.
pub(crate) const SPECS: &[CommandSpec] = &[
    user("nick", "[network] <nick>", "Change your IRC nick (remembered for next time)"),
    user("username", "[network] <username>", "Set the username (ident) of your IRC connection; it reconnects"),
    user("join", "[network] <#channel>", "Join an IRC channel: you are invited to its room"),
    user("part", "[network] <#channel>", "Leave an IRC channel"),
    user("whois", "[network] <nick>", "Ask the IRC server about a nick"),
    user("storepass", "[network] [account:]<password>", "Store your IRC password (encrypted) and log in with it"),
    user("removepass", "[network]", "Forget your stored IRC password"),
    user("certfp", "[network]", "Make (once) your TLS client certificate for SASL EXTERNAL and show its fingerprint"),
    user("reconnect", "[network]", "Drop and re-establish your IRC connection"),
    user("quit", "[network]", "Close your IRC connection until you next speak"),
    user("listrooms", "[network]", "List the channels your IRC connection is in"),
    user(
        "cmd",
        "[network] <COMMAND> [args…]",
        "Send a raw IRC command (JOIN, PART, MODE, TOPIC, INVITE, KICK, AWAY, WHOIS, NAMES)",
    ),
    user("bridgeversion", "", "Show the IRC bridge's version"),
    admin(
        "link",
        "[network] <#channel> [operator nick]",
        "Bridge this room to an IRC channel (invite the bot first); the operator named is asked to approve",
    ),
    admin("unlink", "", "Stop bridging this room to its IRC channel"),
];

/// Raw commands `cmd` lets through.
const CMD_ALLOWLIST: &[&str] = &["JOIN", "PART", "MODE", "TOPIC", "INVITE", "KICK", "AWAY", "WHOIS", "NAMES"];

fn fail(message: impl Into<String>) -> ConnectorError {
    ConnectorError::permanent(message)
}

/// The network a command is about, and the arguments left.
fn pick<'a>(connector: &IrcConnector, context: &'a CommandContext) -> ConnectorResult<(Arc<Network>, &'a [String])> {
    let networks = connector.networks()?;
    if let Some((first, rest)) = context.args.split_first()
        && let Some(network) = networks.get(first)
    {
        return Ok((Arc::clone(network), rest));
    }
    if let Some(portal) = &context.portal
        && let Some(network) = connector.network_of(&portal.remote_key)?
    {
        return Ok((network, &context.args));
    }
    match networks.values().collect::<Vec<_>>().as_slice() {
        [only] => Ok((Arc::clone(only), &context.args)),
        _ => Err(fail(format!(
            "name the network first; one of: {}",
            networks.keys().cloned().collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Runs one command.
pub(crate) async fn run(connector: &IrcConnector, name: &str, context: CommandContext) -> ConnectorResult<String> {
    if name == "bridgeversion" {
        return Ok(format!("lattice-irc {}", env!("CARGO_PKG_VERSION")));
    }
    let (network, args) = pick(connector, &context)?;
    let sender = context.sender.as_str();
    let store = network.bridge().store();
    match name {
        "nick" => {
            let [nick] = args else { return Err(fail("usage: nick [network] <nick>")) };
            let nick = sanitise_nick(nick, usize::MAX);
            if !is_valid_nick(&nick) {
                return Err(fail(format!("`{nick}` is not a valid IRC nick")));
            }
            store.set_user_setting(sender, &nick_setting(&network.id), Some(&nick)).await?;
            network.puppet(sender, None).await?.set_nick(&nick);
            Ok(format!("Your nick on {} is now {nick} (if the server agrees).", network.config.name))
        }
        "username" => {
            let [username] = args else { return Err(fail("usage: username [network] <username>")) };
            let username = sanitise_username(username);
            store.set_user_setting(sender, &username_setting(&network.id), Some(&username)).await?;
            // The username is sent once, at registration: a new connection is the only way to change it.
            if let Some((_, puppet)) = network.puppets.remove(sender) {
                puppet.quit("Changing username");
            }
            network.puppet(sender, None).await?;
            Ok(format!(
                "Your username on {} is now {username}; your connection is starting again.",
                network.config.name
            ))
        }
        "join" => {
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
        "part" => {
            let [channel] = args else { return Err(fail("usage: part [network] <#channel>")) };
            match network.puppets.get(sender) {
                Some(puppet) => {
                    puppet.part(channel, Some("Leaving"));
                    Ok(format!("Left {channel}."))
                }
                None => Err(fail("you have no IRC connection on this network")),
            }
        }
        "whois" => {
            let [nick] = args else { return Err(fail("usage: whois [network] <nick>")) };
            let puppet = network.puppet(sender, None).await?;
            let (replies, mut receiver) = mpsc::channel(32);
            network.pending_replies.insert(sender.to_owned(), replies);
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
            network.pending_replies.remove(sender);
            sent.map_err(|error| ConnectorError::transient(error.to_string()))?;
            if let Some(known) = network.describe_person(nick) {
                answer.push(format!("The bridge knows {nick} as: {known}"));
            }
            Ok(if answer.is_empty() { format!("No answer about {nick}.") } else { answer.join("\n") })
        }
        "certfp" => {
            let [] = args else { return Err(fail("usage: certfp [network]")) };
            let key = certfp_credential(&network.id);
            let pem = match store.credential(sender, &key).await? {
                Some(pem) => pem,
                None => {
                    let name = sender.trim_start_matches('@').split(':').next().unwrap_or("matrix");
                    let pem = crate::ircv3::certfp::generate(name).map_err(|error| fail(error.to_string()))?;
                    store.store_credential(sender, &key, &pem).await?;
                    pem
                }
            };
            let fingerprint = crate::ircv3::certfp::fingerprint(&pem).map_err(|error| fail(error.to_string()))?;
            if let Some(puppet) = network.puppets.get(sender).map(|entry| entry.clone()) {
                puppet.set_login(network.login(sender, None).await?);
            }
            Ok(format!(
                "Your certificate for {} has the fingerprint {fingerprint}. Add it to your account \
                 (/msg NickServ CERT ADD {fingerprint}); over TLS your connection then logs in with SASL EXTERNAL \
                 (`reconnect` to use it now).",
                network.config.name
            ))
        }
        "storepass" => {
            let [secret] = args else { return Err(fail("usage: storepass [network] [account:]<password>")) };
            let (account, password) = match secret.split_once(':') {
                Some((account, password)) if !account.is_empty() => (Some(account), password),
                _ => (None, secret.as_str()),
            };
            store.store_credential(sender, &network.id, password).await?;
            store.set_user_setting(sender, &account_setting(&network.id), account).await?;
            if let Some(puppet) = network.puppets.get(sender).map(|entry| entry.clone()) {
                puppet.set_login(network.login(sender, None).await?);
                puppet.reconnect();
            }
            Ok(format!("Password stored (encrypted) for {}; your connection logs in with it.", network.config.name))
        }
        "removepass" => {
            let removed = store.delete_credential(sender, &network.id).await?;
            store.set_user_setting(sender, &account_setting(&network.id), None).await?;
            if let Some(puppet) = network.puppets.get(sender) {
                puppet.set_login(None);
            }
            Ok(if removed { "Password removed." } else { "No password was stored." }.into())
        }
        "reconnect" => {
            network.puppet(sender, None).await?.reconnect();
            Ok(format!("Reconnecting to {}.", network.config.name))
        }
        "quit" => match network.puppets.remove(sender) {
            Some((_, puppet)) => {
                puppet.quit("Disconnected from Matrix");
                network.puppet_closed(sender, &puppet, "you closed your connection").await;
                Ok("Disconnected.".into())
            }
            None => Ok("You were not connected.".into()),
        },
        "listrooms" => match network.puppets.get(sender) {
            Some(puppet) => {
                let mut channels = puppet.channels();
                channels.sort();
                Ok(if channels.is_empty() { "You are in no channels.".into() } else { channels.join("\n") })
            }
            None => Ok("You have no IRC connection on this network.".into()),
        },
        "cmd" => {
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
        "link" => link(&network, args, &context).await,
        "unlink" => unlink(&network, &context).await,
        other => Err(fail(format!("unknown command `{other}`"))),
    }
}

/// `link`: asks for the room the command was typed in to become the portal of a channel; with approval required,
/// the operator named is asked and the outcome is told in the room later.
async fn link(network: &Arc<Network>, args: &[String], context: &CommandContext) -> ConnectorResult<String> {
    let (channel, op_nick) = match args {
        [channel] => (channel, None),
        [channel, op] => (channel, Some(op.clone())),
        _ => return Err(fail("usage: link [network] <#channel> [operator nick]")),
    };
    let request = LinkRequest {
        room_id: context.room_id.clone(),
        channel: channel.clone(),
        op_nick,
        requester: context.sender.clone(),
    };
    match plumbing::request_link(Arc::clone(network), request).await? {
        Requested::Linked(reply) => Ok(reply),
        Requested::Asked { op, timeout } => Ok(format!(
            "Asked {op}, an operator of {channel}, to approve; they have {} s to answer.",
            timeout.as_secs()
        )),
    }
}

/// `unlink`: the room the command was typed in stops bridging its channel.
async fn unlink(network: &Network, context: &CommandContext) -> ConnectorResult<String> {
    let Some(portal) = &context.portal else { return Err(fail("this room is not bridged")) };
    plumbing::unlink_room(network, portal).await
}
