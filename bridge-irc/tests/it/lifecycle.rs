//! Puppet lifecycle and admin linking end to end: idle puppets are reaped and come back, and an admin bridges an
//! existing room to a channel with `!irc link` and stops it with `!irc unlink`.

use std::time::Duration;

use anyhow::Context as _;
use lattice_bridge_irc::config::PrivacyMode;
use lattice_e2e::{HomeserverKind, homeserver_tests, ircd::IrcTestClient};

use crate::fixture::{
    ADMIN, BOT, Fixture, NET, WAIT, alias, assert_bridged, change_nick, ghost, is_bot_notice, privmsg_from,
    room_with_bot, room_with_bot_at, wait_for_member,
};

homeserver_tests!(the_username_command_reconnects_the_puppet_with_the_new_ident);

#[tokio::test]
async fn an_idle_puppet_quits_after_a_notice_and_comes_back_on_the_next_message() -> anyhow::Result<()> {
    // With the privacy rule off, alice stays in the room while her puppet is closed (the privacy tests cover removal).
    let fixture = Fixture::configured(|section| {
        section.idle_timeout_secs = 3600;
        let network = section.networks.get_mut(NET).expect("the test network");
        network.idle_timeout_secs = Some(3);
        network.privacy = PrivacyMode::Off;
    })
    .await?;
    let (bob, alice, room) = fixture.talking("bob", "alice", "#idle", "first").await?;

    bob.wait_for(WAIT, |line| line.starts_with(":alice!") && line.contains(" QUIT "))
        .await
        .context("the idle puppet quits")?;
    alice
        .wait_for_event(&room, WAIT, |event| is_bot_notice(event, "is being closed"))
        .await
        .context("alice is told her puppet idled out")?;

    alice.send_text(&room, "back again").await?;
    bob.wait_for(WAIT, |line| line.starts_with(":alice!") && line.contains(" JOIN "))
        .await
        .context("the puppet rejoins")?;
    bob.wait_for(WAIT, privmsg_from("alice", "PRIVMSG #idle :back again")).await?;
    Ok(())
}

#[tokio::test]
async fn a_ghost_keeps_its_matrix_user_across_a_nick_change_and_a_bridge_restart() -> anyhow::Result<()> {
    let mut fixture = Fixture::start().await?;
    let (bob, alice, room) = fixture.meet("bob", "alice", "#persist").await?;
    wait_for_member(&alice, &room, &ghost("bob"), "join").await?;
    let bot_joins = |line: &str| line.starts_with(":lattice") && line.contains(" JOIN ");
    bob.wait_for(WAIT, bot_joins).await?;
    change_nick(&bob, "robert", &alice, &room).await?;

    fixture.restart_bridge().await?;
    bob.wait_for(WAIT, |line| line.starts_with(":lattice") && line.contains(" QUIT ")).await?;
    bob.wait_for(WAIT, bot_joins).await.context("the bot rejoins after the restart")?;
    bob.send("PRIVMSG #persist :still me").await?;
    let seen = alice.wait_for_message(&room, WAIT, "still me").await?;
    assert_eq!(seen["sender"], ghost("bob"), "robert is still bob's ghost after the restart");
    Ok(())
}

#[tokio::test]
async fn an_admin_links_an_existing_room_to_a_channel_and_unlinks_it() -> anyhow::Result<()> {
    // Without operator approval (the plumbing tests cover approval).
    let fixture = Fixture::configured(|section| {
        section.networks.get_mut(NET).expect("the test network").plumbing.require_approval = false;
    })
    .await?;
    let bob = IrcTestClient::connect(fixture.ircd.port(), "bob").await?;
    bob.join("#linked").await?;
    let admin = fixture.user("admin").await?;
    assert_eq!(admin.user_id(), ADMIN);
    let room = room_with_bot(&admin, "Our own room").await?;

    // A user who is no admin may not link.
    let alice = fixture.user("alice").await?;
    admin.invite(&room, alice.user_id()).await?;
    alice.join(&room).await?;
    alice.send_text(&room, "!irc link test #linked").await?;
    admin.wait_for_event(&room, WAIT, |event| is_bot_notice(event, "admins only")).await?;

    admin.send_text(&room, "!irc link test #linked").await?;
    admin.wait_for_event(&room, WAIT, |event| is_bot_notice(event, "now bridged to #linked")).await?;
    admin
        .wait_for_event(&room, WAIT, |event| {
            event["type"] == "m.bridge" && event["content"]["channel"]["id"] == "#linked"
        })
        .await
        .context("the room gets bridge-info state")?;
    bob.wait_for(WAIT, |line| line.starts_with(":lattice!") && line.contains(" JOIN ")).await?;

    assert_bridged(&bob, &admin, &room, "#linked").await?;

    admin.send_text(&room, "!irc unlink").await?;
    admin.wait_for_event(&room, WAIT, |event| is_bot_notice(event, "no longer bridges #linked")).await?;
    bob.wait_for(WAIT, |line| line.starts_with(":lattice!") && line.contains(" PART #linked")).await?;
    bob.send("PRIVMSG #linked :after unlink").await?;
    admin.send_text(&room, "matrix after unlink").await?;
    let quiet = Duration::from_secs(2);
    assert!(admin.wait_for_message(&room, quiet, "after unlink").await.is_err(), "IRC still reaches the room");
    assert!(
        bob.wait_for(quiet, |line| line.contains("matrix after unlink")).await.is_err(),
        "the room still reaches IRC"
    );

    // A room where the bot cannot remove people is linked with a warning: the privacy rule needs that power.
    let weak = room_with_bot_at(&admin, "Bot without power", 0).await?;
    admin.send_text(&weak, "!irc link test #weak").await?;
    admin
        .wait_for_event(&weak, WAIT, |event| {
            is_bot_notice(event, "now bridged to #weak") && is_bot_notice(event, "The bot cannot kick or ban here")
        })
        .await
        .context("the admin is warned that the bot lacks power")?;
    Ok(())
}

async fn the_username_command_reconnects_the_puppet_with_the_new_ident(
    homeserver: HomeserverKind,
) -> anyhow::Result<()> {
    let fixture = Fixture::on_homeserver(homeserver).await?;
    let (bob, alice, room) = fixture.meet("bob", "alice", "#names").await?;
    alice.send_text(&room, "first").await?;
    bob.wait_for(WAIT, |line| line.starts_with(":alice!~alice@") && line.ends_with("PRIVMSG #names :first")).await?;

    let admin = crate::auth::admin_room(&alice).await?;
    let answer = crate::auth::command(&alice, &admin, "username lattix").await?;
    assert!(answer.contains("now lattix"), "{answer}");
    alice.send_text(&room, "second").await?;
    bob.wait_for(WAIT, |line| line.starts_with(":alice!~lattix@") && line.ends_with("PRIVMSG #names :second"))
        .await
        .context("the new connection carries the chosen username")?;
    Ok(())
}

#[tokio::test]
async fn a_user_beyond_the_connection_limit_is_told_why() -> anyhow::Result<()> {
    // With the privacy rule off, carol stays in the room (the privacy tests cover removal).
    let fixture = Fixture::configured(|section| {
        for network in section.networks.values_mut() {
            network.max_clients = 1;
            network.privacy = PrivacyMode::Off;
        }
    })
    .await?;
    let bob = IrcTestClient::connect(fixture.ircd.port(), "bob").await?;
    bob.join("#full").await?;
    let alice = fixture.user("alice").await?;
    let carol = fixture.user("carol").await?;
    let room = alice.join(&alias("#full")).await?;
    alice.send_text(&room, "I fit").await?;
    bob.wait_for(WAIT, |line| line.starts_with(":alice!") && line.ends_with("PRIVMSG #full :I fit")).await?;
    carol.join(&room).await?;
    carol.send_text(&room, "and me?").await?;
    let notice = carol
        .wait_for_event(&room, WAIT, |event| {
            event["sender"] == BOT
                && event["content"]["msgtype"] == "m.notice"
                && event["content"]["body"].as_str().is_some_and(|body| body.contains(&carol.user_id().to_owned()))
        })
        .await
        .context("carol is told her message was not delivered")?;
    let body = notice["content"]["body"].as_str().unwrap_or_default();
    assert!(body.contains("not delivered") && body.contains("limit"), "{body}");
    assert!(
        bob.wait_for(Duration::from_millis(500), |line| line.contains("and me?")).await.is_err(),
        "carol's message must not reach IRC"
    );
    Ok(())
}
