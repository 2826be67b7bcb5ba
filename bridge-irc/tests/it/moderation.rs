//! Kicks, bans and topics both ways between a portal room and its channel.

use anyhow::Context as _;
use lattice_e2e::ircd::IrcTestClient;
use reqwest::Method;
use serde_json::json;

use crate::fixture::{Fixture, WAIT, alias, ghost, privmsg_from, wait_for_member};

#[tokio::test]
async fn topics_kicks_and_bans_both_ways() -> anyhow::Result<()> {
    let fixture = Fixture::start().await?;
    // bob creates the channel, so he is its operator.
    let bob = IrcTestClient::connect(fixture.ircd.port(), "bob").await?;
    bob.join("#mod").await?;
    let (carol, dave) = tokio::try_join!(
        IrcTestClient::connect(fixture.ircd.port(), "carol"),
        IrcTestClient::connect(fixture.ircd.port(), "dave")
    )?;
    carol.join("#mod").await?;
    dave.join("#mod").await?;
    let alice = fixture.user("alice").await?;
    let room = alice.join(&alias("#mod")).await?;
    wait_for_member(&alice, &room, &ghost("dave"), "join").await?;
    alice.send_text(&room, "hello").await?;
    bob.wait_for(WAIT, privmsg_from("alice", "PRIVMSG #mod :hello")).await?;

    // IRC → Matrix topic.
    bob.send("TOPIC #mod :set on irc").await?;
    alice
        .wait_for_event(&room, WAIT, |event| {
            event["type"] == "m.room.topic" && event["content"]["topic"] == "set on irc"
        })
        .await
        .context("the IRC topic reaches Matrix")?;

    // Op on IRC gives alice the power to moderate the room.
    bob.send("MODE #mod +o alice").await?;
    alice
        .wait_for_event(&room, WAIT, |event| {
            event["type"] == "m.room.power_levels" && event["content"]["users"][alice.user_id()] == 50
        })
        .await
        .context("alice's op becomes power level 50")?;

    // Matrix → IRC topic.
    alice.send_state(&room, "m.room.topic", "", json!({"topic": "set on matrix"})).await?;
    bob.wait_for(WAIT, privmsg_from("alice", "TOPIC #mod :set on matrix")).await?;

    // Matrix → IRC kick and ban.
    alice
        .call(
            Method::POST,
            &["_matrix", "client", "v3", "rooms", &room, "kick"],
            &[],
            Some(&json!({"user_id": ghost("carol"), "reason": "calm down"})),
        )
        .await?;
    bob.wait_for(WAIT, privmsg_from("alice", "KICK #mod carol :calm down")).await?;
    alice
        .call(
            Method::POST,
            &["_matrix", "client", "v3", "rooms", &room, "ban"],
            &[],
            Some(&json!({"user_id": ghost("dave"), "reason": "spam"})),
        )
        .await?;
    bob.wait_for(WAIT, privmsg_from("alice", "MODE #mod +b dave!*@*")).await?;
    bob.wait_for(WAIT, privmsg_from("alice", "KICK #mod dave :spam")).await?;
    dave.send("JOIN #mod").await?;
    dave.wait_for(WAIT, |line| line.split(' ').nth(1) == Some("474")).await.context("dave is banned on IRC")?;

    // IRC → Matrix ban of alice's puppet.
    bob.send("MODE #mod +b alice!*@*").await?;
    wait_for_member(&alice, &room, alice.user_id(), "ban").await?;
    Ok(())
}
