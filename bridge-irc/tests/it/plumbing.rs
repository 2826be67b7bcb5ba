//! Opt-in plumbing end to end: an admin asks to link a room with `!irc link #channel <op>`; the channel operator
//! (a raw IRC client) answers the bridge bot's private message yes, no, or not at all.

use std::time::Duration;

use anyhow::Context as _;
use lattice_e2e::{MatrixUser, ircd::IrcTestClient};

use crate::fixture::{ADMIN, Fixture, NET, WAIT, assert_bridged, is_bot_notice, privmsg_from, room_with_bot};

/// The answer window operators get, unless a test waits for the timeout.
const APPROVAL_SECS: u64 = 120;
/// The answer window of the timeout test.
const SHORT_APPROVAL_SECS: u64 = 3;

async fn fixture(approval_secs: u64) -> anyhow::Result<Fixture> {
    Fixture::configured(|section| {
        section.networks.get_mut(NET).expect("the test network").plumbing.approval_timeout_secs = approval_secs;
    })
    .await
}

/// Waits for the bridge bot's question to `op` about `channel`, with an answer window of `secs`.
async fn question(op: &IrcTestClient, channel: &str, secs: u64) -> anyhow::Result<String> {
    op.wait_for(WAIT, |line| {
        line.starts_with(":lattice!")
            && line.contains(&format!(" PRIVMSG {} :", op.nick()))
            && line.contains(&format!("to bridge {channel} to the Matrix room"))
            && line.ends_with(&format!("reply yes or no within {secs} s."))
    })
    .await
    .context("the operator is asked by private message")
}

async fn ask(admin: &MatrixUser, room: &str, channel: &str, op: &str) -> anyhow::Result<()> {
    admin.send_text(room, &format!("!irc link {NET} {channel} {op}")).await?;
    admin
        .wait_for_event(room, WAIT, |event| is_bot_notice(event, &format!("Asked {op}, an operator of {channel}")))
        .await
        .context("the requester hears that the operator was asked")?;
    Ok(())
}

#[tokio::test]
async fn an_operator_approves_a_link_by_private_message_and_a_non_operator_cannot() -> anyhow::Result<()> {
    let fixture = fixture(APPROVAL_SECS).await?;
    // carol creates the channel, so she is its operator; bob is a plain member.
    let carol = IrcTestClient::connect(fixture.ircd.port(), "carol").await?;
    carol.join("#plumbed").await?;
    let bob = IrcTestClient::connect(fixture.ircd.port(), "bob").await?;
    bob.join("#plumbed").await?;
    let admin = fixture.user("admin").await?;
    assert_eq!(admin.user_id(), ADMIN);
    let room = room_with_bot(&admin, "Plumbed").await?;

    admin.send_text(&room, &format!("!irc link {NET} #plumbed bob")).await?;
    admin
        .wait_for_event(&room, WAIT, |event| is_bot_notice(event, "bob is not an operator of #plumbed"))
        .await
        .context("a non-operator is refused as approver")?;
    admin.send_text(&room, &format!("!irc link {NET} #plumbed")).await?;
    admin
        .wait_for_event(&room, WAIT, |event| is_bot_notice(event, "name one of #plumbed's operators"))
        .await
        .context("a link without an operator is refused")?;

    ask(&admin, &room, "#plumbed", "carol").await?;
    let asked = question(&carol, "#plumbed", APPROVAL_SECS).await?;
    assert!(asked.contains(ADMIN) && asked.contains(&room), "{asked}");
    carol.send("PRIVMSG lattice :maybe").await?;
    carol.wait_for(WAIT, privmsg_from("lattice", "PRIVMSG carol :Please reply yes or no.")).await?;
    carol.send("PRIVMSG lattice :yes").await?;
    let approved = admin
        .wait_for_event(&room, WAIT, |event| {
            is_bot_notice(event, "carol approved") && is_bot_notice(event, "now bridged to #plumbed")
        })
        .await
        .context("the requester hears of the approval")?;
    let approved = approved["content"]["body"].as_str().unwrap_or_default();
    assert!(!approved.contains("cannot kick"), "the bot has the power to kick and ban: {approved}");
    carol
        .wait_for(
            WAIT,
            privmsg_from("lattice", &format!("PRIVMSG carol :Thank you: #plumbed is now bridged to {room}.")),
        )
        .await?;
    carol.wait_for(WAIT, |line| line.starts_with(":lattice!") && line.contains(" JOIN ")).await?;

    assert_bridged(&bob, &admin, &room, "#plumbed").await
}

#[tokio::test]
async fn a_refused_link_request_leaves_the_room_unbridged() -> anyhow::Result<()> {
    let Asked { fixture: _fixture, op: carol, admin, room: refused } = asked_about_closed(APPROVAL_SECS).await?;
    // A second request to the same operator waits for the first to end.
    let second = room_with_bot(&admin, "Second").await?;
    admin.send_text(&second, &format!("!irc link {NET} #closed carol")).await?;
    admin
        .wait_for_event(&second, WAIT, |event| is_bot_notice(event, "carol has a link request to answer already"))
        .await?;
    carol.send("PRIVMSG lattice :no").await?;
    admin
        .wait_for_event(&refused, WAIT, |event| is_bot_notice(event, "carol refused to bridge #closed"))
        .await
        .context("the requester hears of the refusal")?;
    carol.wait_for(WAIT, privmsg_from("lattice", "PRIVMSG carol :Understood: #closed stays unbridged.")).await?;
    assert_unbridged(&carol, &admin, &refused).await
}

#[tokio::test]
async fn an_unanswered_link_request_times_out_and_the_requester_is_told() -> anyhow::Result<()> {
    let Asked { fixture: _fixture, op: carol, admin, room: unanswered } =
        asked_about_closed(SHORT_APPROVAL_SECS).await?;
    let ended = admin
        .wait_for_event(&unanswered, WAIT, |event| {
            is_bot_notice(event, &format!("carol did not answer within {SHORT_APPROVAL_SECS} s"))
        })
        .await
        .context("the requester hears of the timeout")?;
    assert!(ended["content"]["body"].as_str().is_some_and(|body| body.contains("#closed is not bridged")));
    // A late answer changes nothing.
    carol.send("PRIVMSG lattice :yes").await?;
    assert_unbridged(&carol, &admin, &unanswered).await
}

/// A link request the operator `op` (carol, who opened `#closed`) has just been asked about.
struct Asked {
    fixture: Fixture,
    op: IrcTestClient,
    admin: MatrixUser,
    room: String,
}

async fn asked_about_closed(approval_secs: u64) -> anyhow::Result<Asked> {
    let fixture = fixture(approval_secs).await?;
    let op = IrcTestClient::connect(fixture.ircd.port(), "carol").await?;
    op.join("#closed").await?;
    let admin = fixture.user("admin").await?;
    let room = room_with_bot(&admin, "Asking").await?;
    ask(&admin, &room, "#closed", "carol").await?;
    question(&op, "#closed", approval_secs).await?;
    Ok(Asked { fixture, op, admin, room })
}

/// The room is no portal: the bot never joined the channel, and the channel does not reach the room.
async fn assert_unbridged(op: &IrcTestClient, admin: &MatrixUser, room: &str) -> anyhow::Result<()> {
    op.send("PRIVMSG #closed :nobody bridges this").await?;
    let quiet = Duration::from_secs(2);
    assert!(admin.wait_for_message(room, quiet, "nobody bridges this").await.is_err(), "{room} got IRC traffic");
    assert!(
        !op.pending().iter().any(|line| line.starts_with(":lattice!") && line.contains(" JOIN ")),
        "the bot joined #closed: {:?}",
        op.pending()
    );
    Ok(())
}
