//! The IRC bridge's bot commands, typed in the admin room (the DM with the bot) or after `!irc` in a portal.
//! Each takes an optional network ID first; it defaults to the portal's network, or the only network.

use std::sync::Arc;

use lattice_bridge_core::{
    ConnectorError,
    connector::{CommandContext, CommandSpec, ConnectorResult},
};
use lattice_config::PermissionLevel;

mod connection;
mod identity;

use crate::{
    IrcConnector,
    network::Network,
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
    match name {
        "nick" => identity::nick(&network, sender, args).await,
        "username" => identity::username(&network, sender, args).await,
        "storepass" => identity::storepass(&network, sender, args).await,
        "removepass" => identity::removepass(&network, sender, args).await,
        "certfp" => identity::certfp(&network, sender, args).await,
        "join" => connection::join(&network, sender, args).await,
        "part" => connection::part(&network, sender, args).await,
        "whois" => connection::whois(&network, sender, args).await,
        "reconnect" => connection::reconnect(&network, sender, args).await,
        "quit" => connection::quit(&network, sender, args).await,
        "listrooms" => connection::listrooms(&network, sender, args).await,
        "cmd" => connection::cmd_raw(&network, sender, args).await,
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
