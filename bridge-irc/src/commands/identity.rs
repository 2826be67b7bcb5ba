//! Bot commands about who the Matrix user is on IRC: nick, username, and the stored login (password or CertFP).

use lattice_bridge_core::connector::ConnectorResult;

use super::fail;
use crate::{
    ids::{is_valid_nick, sanitise_nick, sanitise_username},
    network::{Network, account_setting, certfp_credential, nick_setting, username_setting},
};

/// `nick <nick>`: changes the user's nick, remembered for next time.
pub(super) async fn nick(network: &Network, sender: &str, args: &[String]) -> ConnectorResult<String> {
    let bridge = network.bridge();
    let [nick] = args else { return Err(fail("usage: nick [network] <nick>")) };
    let nick = sanitise_nick(nick, usize::MAX);
    if !is_valid_nick(&nick) {
        return Err(fail(format!("`{nick}` is not a valid IRC nick")));
    }
    bridge.settings().set(sender, &nick_setting(network.id()), Some(&nick)).await?;
    network.puppet(sender, None).await?.set_nick(&nick);
    Ok(format!("Your nick on {} is now {nick} (if the server agrees).", network.config().name))
}

/// `username <username>`: sets the username (ident) of the user's connection, which starts again with it.
pub(super) async fn username(network: &Network, sender: &str, args: &[String]) -> ConnectorResult<String> {
    let bridge = network.bridge();
    let [username] = args else { return Err(fail("usage: username [network] <username>")) };
    let username = sanitise_username(username);
    bridge.settings().set(sender, &username_setting(network.id()), Some(&username)).await?;
    // The username is sent once, at registration: a new connection is the only way to change it.
    if let Some(puppet) = network.take_puppet(sender) {
        puppet.quit("Changing username");
    }
    network.puppet(sender, None).await?;
    Ok(format!("Your username on {} is now {username}; your connection is starting again.", network.config().name))
}

/// `storepass [account:]<password>`: stores the user's password (encrypted); the connection logs in with it.
pub(super) async fn storepass(network: &Network, sender: &str, args: &[String]) -> ConnectorResult<String> {
    let bridge = network.bridge();
    let [secret] = args else { return Err(fail("usage: storepass [network] [account:]<password>")) };
    let (account, password) = match secret.split_once(':') {
        Some((account, password)) if !account.is_empty() => (Some(account), password),
        _ => (None, secret.as_str()),
    };
    bridge.credentials().set(sender, network.id(), password).await?;
    bridge.settings().set(sender, &account_setting(network.id()), account).await?;
    if let Some(puppet) = network.existing_puppet(sender) {
        puppet.set_login(network.login(sender, None).await?);
        puppet.reconnect();
    }
    Ok(format!("Password stored (encrypted) for {}; your connection logs in with it.", network.config().name))
}

/// `removepass`: forgets the user's stored password.
pub(super) async fn removepass(network: &Network, sender: &str, _args: &[String]) -> ConnectorResult<String> {
    let bridge = network.bridge();
    let removed = bridge.credentials().delete(sender, network.id()).await?;
    bridge.settings().set(sender, &account_setting(network.id()), None).await?;
    if let Some(puppet) = network.existing_puppet(sender) {
        puppet.set_login(None);
    }
    Ok(if removed { "Password removed." } else { "No password was stored." }.into())
}

/// `certfp`: makes (once) the user's TLS client certificate for SASL EXTERNAL and shows its fingerprint.
pub(super) async fn certfp(network: &Network, sender: &str, args: &[String]) -> ConnectorResult<String> {
    let bridge = network.bridge();
    let [] = args else { return Err(fail("usage: certfp [network]")) };
    let key = certfp_credential(network.id());
    let pem = match bridge.credentials().get(sender, &key).await? {
        Some(pem) => pem,
        None => {
            let name = sender.trim_start_matches('@').split(':').next().unwrap_or("matrix");
            let pem = crate::ircv3::certfp::generate(name).map_err(|error| fail(error.to_string()))?;
            bridge.credentials().set(sender, &key, &pem).await?;
            pem
        }
    };
    let fingerprint = crate::ircv3::certfp::fingerprint(&pem).map_err(|error| fail(error.to_string()))?;
    if let Some(puppet) = network.existing_puppet(sender) {
        puppet.set_login(network.login(sender, None).await?);
    }
    Ok(format!(
        "Your certificate for {} has the fingerprint {fingerprint}. Add it to your account \
         (/msg NickServ CERT ADD {fingerprint}); over TLS your connection then logs in with SASL EXTERNAL \
         (`reconnect` to use it now).",
        network.config().name
    ))
}
