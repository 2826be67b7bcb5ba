//! Stored passwords: `storepass` in the admin room, then `reconnect`, logs the puppet in to its services account
//! with SASL PLAIN (InspIRCd + atheme).

use anyhow::Context as _;
use lattice_e2e::{MatrixUser, ircd::IrcTestClient};
use serde_json::json;

use crate::fixture::{AuthMethod, Fixture, WAIT, alias};

/// Opens the admin room (a DM with the bridge bot) and waits for the bot's welcome.
pub(crate) async fn admin_room(user: &MatrixUser) -> anyhow::Result<String> {
    let room =
        user.create_room(json!({"preset": "private_chat", "is_direct": true, "invite": ["@ircbot:localhost"]})).await?;
    user.wait_for_event(&room, WAIT, |event| {
        event["sender"] == "@ircbot:localhost"
            && event["content"]["body"].as_str().is_some_and(|body| body.contains("This is your admin room"))
    })
    .await
    .context("waiting for the bot's welcome in the admin room")?;
    Ok(room)
}

/// Runs a bot command in the admin room and returns the bot's answer.
pub(crate) async fn command(user: &MatrixUser, room: &str, line: &str) -> anyhow::Result<String> {
    user.send_text(room, line).await?;
    let answer = user
        .wait_for_event(room, WAIT, |event| event["sender"] == "@ircbot:localhost" && event["type"] == "m.room.message")
        .await
        .with_context(|| format!("waiting for the bot's answer to `{line}`"))?;
    Ok(answer["content"]["body"].as_str().unwrap_or_default().to_owned())
}

/// Whether the IRC server says `nick` is logged in to an account (WHOIS 330), asked until it does or `WAIT` passes:
/// a NickServ login reaches the server over the services link, after the puppet's JOIN.
async fn wait_until_logged_in(asker: &IrcTestClient, nick: &str) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        asker.send(&format!("WHOIS {nick}")).await?;
        asker.wait_for(WAIT, |line| line.split(' ').nth(1) == Some("318")).await?;
        if let Ok(account) =
            asker.wait_for(std::time::Duration::ZERO, |line| line.split(' ').nth(1) == Some("330")).await
        {
            return Ok(account);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "{nick} never logged in");
    }
}

#[tokio::test]
async fn storepass_then_reconnect_logs_in_with_sasl() -> anyhow::Result<()> {
    storepass_then_reconnect_logs_in(AuthMethod::Sasl).await
}

#[tokio::test]
async fn storepass_then_reconnect_logs_in_with_nickserv() -> anyhow::Result<()> {
    storepass_then_reconnect_logs_in(AuthMethod::Nickserv).await
}

async fn storepass_then_reconnect_logs_in(auth: AuthMethod) -> anyhow::Result<()> {
    let fixture = Fixture::inspircd(auth).await?;
    // The account exists before the bridge hears of it, registered as anyone would.
    let owner = IrcTestClient::connect(fixture.ircd.port(), "alice").await?;
    owner.register_account("s3cret-pass", "alice@example.com").await?;
    owner.quit("done").await?;
    let bob = IrcTestClient::connect(fixture.ircd.port(), "bob").await?;
    bob.join("#auth").await?;

    let alice = fixture.user("alice").await?;
    let portal = alice.join(&alias("#auth")).await?;
    alice.send_text(&portal, "not logged in yet").await?;
    bob.wait_for(WAIT, |line| line.starts_with(":alice!") && line.contains(" JOIN ")).await?;
    bob.wait_for(WAIT, |line| line.starts_with(":alice!") && line.ends_with("PRIVMSG #auth :not logged in yet"))
        .await?;
    bob.send("WHOIS alice").await?;
    let end = bob.wait_for(WAIT, |line| line.split(' ').nth(1) == Some("318")).await?;
    assert!(!bob.pending().iter().any(|line| line.split(' ').nth(1) == Some("330")), "logged in early: {end}");

    let admin = admin_room(&alice).await?;
    let answer = command(&alice, &admin, "storepass s3cret-pass").await?;
    assert!(answer.starts_with("Password stored"), "{answer}");
    let answer = command(&alice, &admin, "reconnect").await?;
    assert!(answer.starts_with("Reconnecting"), "{answer}");

    // The puppet comes back into the channel, logged in (with SASL before it registered).
    bob.wait_for(WAIT, |line| line.starts_with(":alice!") && line.contains(" QUIT ")).await?;
    bob.wait_for(WAIT, |line| line.starts_with(":alice!") && line.contains(" JOIN ")).await?;
    let account = if auth == AuthMethod::Sasl {
        bob.whois_account("alice").await?
    } else {
        wait_until_logged_in(&bob, "alice").await?
    };
    assert!(account.contains(" alice alice :"), "{account}");
    alice.send_text(&portal, "logged in now").await?;
    bob.wait_for(WAIT, |line| line.starts_with(":alice!") && line.ends_with("PRIVMSG #auth :logged in now")).await?;
    Ok(())
}

#[tokio::test]
async fn a_certificate_made_by_certfp_logs_in_with_sasl_external() -> anyhow::Result<()> {
    let fixture = Fixture::inspircd_tls(AuthMethod::Sasl).await?;
    let owner = IrcTestClient::connect(fixture.ircd.port(), "alice").await?;
    owner.register_account("s3cret-pass", "alice@example.com").await?;
    let alice = fixture.user("alice").await?;
    let admin = admin_room(&alice).await?;
    let answer = command(&alice, &admin, "certfp").await?;
    let fingerprint = answer
        .split(|c: char| !c.is_ascii_hexdigit())
        .find(|word| word.len() == 64)
        .with_context(|| format!("no fingerprint in {answer:?}"))?
        .to_owned();
    // The account's owner adds it, from a client logged in to the account.
    owner.send(&format!("PRIVMSG NickServ :CERT ADD {fingerprint}")).await?;
    owner
        .wait_for(WAIT, |line| line.starts_with(":NickServ!") && line.to_lowercase().contains(&fingerprint))
        .await
        .context("waiting for NickServ to add the fingerprint")?;
    owner.quit("done").await?;

    let bob = IrcTestClient::connect(fixture.ircd.port(), "bob").await?;
    bob.join("#certfp").await?;
    let portal = alice.join(&alias("#certfp")).await?;
    alice.send_text(&portal, "logged in by certificate").await?;
    bob.wait_for(WAIT, |line| {
        line.starts_with(":alice!") && line.ends_with("PRIVMSG #certfp :logged in by certificate")
    })
    .await?;
    let account = bob.whois_account("alice").await?;
    assert!(account.contains(" alice alice :"), "{account}");
    let certfp = bob.wait_for(WAIT, |line| line.split(' ').nth(1) == Some("276")).await?;
    assert!(certfp.contains(&fingerprint), "{certfp}");
    Ok(())
}

/// A password stored before the user's first IRC connection logs the new puppet in under its nick: the account name
/// is the nick the puppet starts with, not a form of the Matrix ID.
#[tokio::test]
async fn a_password_stored_before_the_first_connection_logs_in_under_the_nick() -> anyhow::Result<()> {
    let fixture = Fixture::inspircd(AuthMethod::Sasl).await?;
    let owner = IrcTestClient::connect(fixture.ircd.port(), "alice").await?;
    owner.register_account("s3cret-pass", "alice@example.com").await?;
    owner.quit("done").await?;
    let bob = IrcTestClient::connect(fixture.ircd.port(), "bob").await?;
    bob.join("#early").await?;

    let alice = fixture.user("alice").await?;
    let admin = admin_room(&alice).await?;
    let answer = command(&alice, &admin, "storepass s3cret-pass").await?;
    assert!(answer.starts_with("Password stored"), "{answer}");
    let portal = alice.join(&alias("#early")).await?;
    alice.send_text(&portal, "first words, logged in").await?;
    bob.wait_for(WAIT, |line| line.starts_with(":alice!") && line.ends_with("PRIVMSG #early :first words, logged in"))
        .await?;
    let account = bob.whois_account("alice").await?;
    assert!(account.contains(" alice alice :"), "{account}");
    Ok(())
}
