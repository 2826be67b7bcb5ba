//! IRCv3 against InspIRCd: server-time → `ts`, msgid replies and reactions both ways, typing both ways, delivery
//! confirmed by echo (and refused lines reported to their Matrix sender), netsplits collapsed into one notice per
//! room.

use std::time::Duration;

use anyhow::Context as _;
use lattice_e2e::{
    HomeserverKind, MatrixUser, homeserver_tests,
    ircd::{IrcTestClient, Leaf},
};
use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    auth::{admin_room, command},
    fixture::{AuthMethod, Fixture, WAIT, alias, ghost, is_message, privmsg_from, untagged, wait_for_member},
};

homeserver_tests!(server_time_msgids_replies_reactions_and_typing_cross_both_ways);

/// What the test IRC people ask the server for.
const CAPS: &[&str] = &["message-tags", "server-time", "echo-message"];

/// A tag's value on a received IRC line (unescaped as far as these tests need: none of their values hold escapes).
fn tag(line: &str, key: &str) -> Option<String> {
    let tags = line.strip_prefix('@')?.split_once(' ')?.0;
    tags.split(';').find_map(|tag| match tag.split_once('=') {
        Some((name, value)) if name == key => Some(value.to_owned()),
        None if tag == key => Some(String::new()),
        _ => None,
    })
}

/// Whether `line` is a TAGMSG from `nick` to `target` (InspIRCd sends the target as a trailing parameter).
fn is_tagmsg_from(line: &str, nick: &str, target: &str) -> bool {
    let line = untagged(line);
    line.starts_with(&format!(":{nick}!"))
        && (line.ends_with(&format!(" TAGMSG {target}")) || line.ends_with(&format!(" TAGMSG :{target}")))
}

/// Milliseconds since the epoch of an IRCv3 `time` tag, as GNU date reads it.
fn epoch_ms(time: &str) -> anyhow::Result<u64> {
    let output = std::process::Command::new("date").args(["-u", "-d", time, "+%s%3N"]).output()?;
    Ok(String::from_utf8(output.stdout)?.trim().parse()?)
}

async fn set_typing(user: &MatrixUser, room: &str, typing: bool) -> anyhow::Result<Value> {
    let path = ["_matrix", "client", "v3", "rooms", room, "typing", user.user_id()];
    user.call(Method::PUT, &path, &[], Some(&json!({"typing": typing, "timeout": 30000}))).await
}

/// Waits until `user` sees the ghost of `nick` typing in `room`.
async fn wait_for_typing(user: &MatrixUser, room: &str, nick: &str) -> anyhow::Result<()> {
    user.wait_for_event(room, WAIT, |event| {
        event["type"] == "m.typing"
            && event["content"]["user_ids"].as_array().is_some_and(|ids| ids.iter().any(|id| *id == ghost(nick)))
    })
    .await
    .with_context(|| format!("waiting for {nick}'s typing in Matrix"))?;
    Ok(())
}

/// The `+typing` state of the next typing TAGMSG `irc` gets from `nick` to `target`.
async fn irc_typing(irc: &IrcTestClient, nick: &str, target: &str) -> anyhow::Result<Option<String>> {
    let line = irc
        .wait_for(WAIT, |line| is_tagmsg_from(line, nick, target) && tag(line, "+typing").is_some())
        .await
        .with_context(|| format!("waiting for {nick}'s typing on IRC"))?;
    Ok(tag(&line, "+typing"))
}

async fn server_time_msgids_replies_reactions_and_typing_cross_both_ways(
    homeserver: HomeserverKind,
) -> anyhow::Result<()> {
    let mut fixture = Fixture::inspircd_on(homeserver, AuthMethod::None).await?;
    let bob = IrcTestClient::connect_with_caps(fixture.ircd.port(), "bob", CAPS).await?;
    bob.join("#v3").await?;
    let alice = fixture.user("alice").await?;
    let room = alice.join(&alias("#v3")).await?;

    // Matrix → IRC: alice's line carries the server's msgid.
    let from_alice = alice.send_text(&room, "hello from matrix").await?;
    let line = bob.wait_for(WAIT, privmsg_from("alice", "PRIVMSG #v3 :hello from matrix")).await?;
    let alice_msgid = tag(&line, "msgid").context("no msgid on alice's line")?;

    // IRC → Matrix: a reply by msgid becomes m.in_reply_to, and the event's ts is the server's time.
    bob.send(&format!("@+draft/reply={alice_msgid} PRIVMSG #v3 :hi alice")).await?;
    let echo = bob.wait_for(WAIT, privmsg_from("bob", "PRIVMSG #v3 :hi alice")).await?;
    let bob_msgid = tag(&echo, "msgid").context("no msgid on bob's echo")?;
    let time = tag(&echo, "time").context("no time on bob's echo")?;
    let event = alice.wait_for_event(&room, WAIT, |event| is_message(event, &ghost("bob"), "hi alice")).await?;
    assert_eq!(event["content"]["m.relates_to"]["m.in_reply_to"]["event_id"], from_alice, "{event}");
    assert_eq!(event["origin_server_ts"].as_u64(), Some(epoch_ms(&time)?), "{event}");
    let bob_event = event["event_id"].as_str().context("no event ID")?.to_owned();

    // Matrix → IRC: a reply names bob's msgid.
    let reply = json!({
        "msgtype": "m.text",
        "body": "> <@irc_test_bob:localhost> hi alice\n\nhi bob",
        "m.relates_to": {"m.in_reply_to": {"event_id": bob_event}},
    });
    alice.send_message(&room, reply).await?;
    let line =
        bob.wait_for(WAIT, |line| privmsg_from("alice", "hi bob")(line) && line.contains(" PRIVMSG #v3 :")).await?;
    assert_eq!(tag(&line, "+draft/reply").as_deref(), Some(bob_msgid.as_str()), "{line}");

    // Reactions both ways.
    bob.send(&format!("@+draft/react=👍;+draft/reply={alice_msgid} TAGMSG #v3")).await?;
    let reaction = alice
        .wait_for_event(&room, WAIT, |event| event["type"] == "m.reaction" && event["sender"] == ghost("bob"))
        .await?;
    assert_eq!(reaction["content"]["m.relates_to"]["event_id"], from_alice, "{reaction}");
    assert_eq!(reaction["content"]["m.relates_to"]["key"], "👍", "{reaction}");
    let annotation = json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": bob_event, "key": "🎉"}});
    alice.send_event(&room, "m.reaction", annotation).await?;
    let line =
        bob.wait_for(WAIT, |line| is_tagmsg_from(line, "alice", "#v3") && line.contains("+draft/react=")).await?;
    assert_eq!(tag(&line, "+draft/react").as_deref(), Some("🎉"), "{line}");
    assert_eq!(tag(&line, "+draft/reply").as_deref(), Some(bob_msgid.as_str()), "{line}");

    // Typing both ways.
    bob.send("@+typing=active TAGMSG #v3").await?;
    wait_for_typing(&alice, &room, "bob").await?;
    set_typing(&alice, &room, true).await?;
    if homeserver == HomeserverKind::Synapse {
        // Conduit sends appservices no ephemeral events (`bridge::only_synapse_sends_typing_to_the_appservice`).
        assert_eq!(irc_typing(&bob, "alice", "#v3").await?.as_deref(), Some("active"));
    }

    // The msgid map is in the store: after a restart, a reply to alice's first line still finds it.
    let bot_joins = |line: &str| untagged(line).starts_with(":lattice!") && line.contains(" JOIN ");
    bob.wait_for(WAIT, bot_joins).await.context("the bot joined before the restart")?;
    fixture.restart_bridge().await?;
    bob.wait_for(WAIT, bot_joins).await.context("the bot rejoins after the restart")?;
    bob.send(&format!("@+draft/reply={alice_msgid} PRIVMSG #v3 :still there?")).await?;
    let event = alice.wait_for_event(&room, WAIT, |event| is_message(event, &ghost("bob"), "still there?")).await?;
    assert_eq!(event["content"]["m.relates_to"]["m.in_reply_to"]["event_id"], from_alice, "{event}");
    Ok(())
}

/// Typing in a DM crosses both ways, as in a channel: bob's `+typing` TAGMSG to alice's puppet shows in their DM
/// room, and alice typing there reaches bob as a TAGMSG from her puppet, `active` then `done`.
#[tokio::test]
async fn typing_in_a_direct_chat_crosses_both_ways() -> anyhow::Result<()> {
    let fixture = Fixture::inspircd(AuthMethod::None).await?;
    let bob = IrcTestClient::connect_with_caps(fixture.ircd.port(), "bob", CAPS).await?;
    bob.join("#dmtyping").await?;
    let alice = fixture.user("alice").await?;
    let room = alice.join(&alias("#dmtyping")).await?;
    alice.send_text(&room, "first words").await?;
    bob.wait_for(WAIT, privmsg_from("alice", "PRIVMSG #dmtyping :first words")).await?;

    bob.send("PRIVMSG alice :a word in private").await?;
    let dm = alice.wait_for_invite(WAIT).await?;
    alice.join(&dm).await?;
    alice.wait_for_message(&dm, WAIT, "a word in private").await?;

    bob.send("@+typing=active TAGMSG alice").await?;
    wait_for_typing(&alice, &dm, "bob").await?;

    set_typing(&alice, &dm, true).await?;
    assert_eq!(irc_typing(&bob, "alice", "bob").await?.as_deref(), Some("active"));
    set_typing(&alice, &dm, false).await?;
    assert_eq!(irc_typing(&bob, "alice", "bob").await?.as_deref(), Some("done"));
    Ok(())
}

#[tokio::test]
async fn a_line_the_server_refuses_is_reported_to_its_matrix_sender() -> anyhow::Result<()> {
    let fixture = Fixture::inspircd(AuthMethod::None).await?;
    let (bob, alice, room) = talking(&fixture, "bob", "#quiet").await?;
    // Delivered (echoed): no failure notice for it.
    bob.send("MODE #quiet +m").await?;
    bob.wait_for(WAIT, |line| line.contains(" MODE #quiet ") && line.ends_with("+m")).await?;

    alice.send_text(&room, "muted words").await?;
    let notice = alice
        .wait_for_event(&room, WAIT, |event| {
            event["sender"] == "@ircbot:localhost"
                && event["content"]["body"].as_str().is_some_and(|body| body.contains("not delivered"))
        })
        .await
        .context("waiting for the failure notice")?;
    let body = notice["content"]["body"].as_str().unwrap_or_default();
    assert!(body.contains("@alice:localhost") && body.contains("+m (moderated)"), "{body}");
    assert_eq!(notice["content"]["msgtype"], "m.notice");
    // Only one notice: the earlier, delivered message raised none.
    assert!(
        alice
            .wait_for_event(&room, Duration::ZERO, |event| event["content"]["body"]
                .as_str()
                .is_some_and(|body| body.contains("not delivered")))
            .await
            .is_err()
    );
    assert!(!bob.pending().iter().any(|line| line.contains("muted words")));
    Ok(())
}

#[tokio::test]
async fn quits_naming_two_servers_are_one_notice_per_room_each_way() -> anyhow::Result<()> {
    netsplit_is_collapsed(false).await
}

#[tokio::test]
async fn a_leaf_server_splitting_off_is_one_notice_per_room_each_way() -> anyhow::Result<()> {
    netsplit_is_collapsed(true).await
}

/// Three people in two channels split off and come back: on a `linked` leaf InspIRCd that is stopped and started
/// again, or by quitting with two server names as their reason (servers without netsplit batches).
async fn netsplit_is_collapsed(linked: bool) -> anyhow::Result<()> {
    let fixture = Fixture::inspircd(AuthMethod::None).await?;
    let mut leaf = if linked { Some(fixture.ircd.start_leaf().await?) } else { None };
    let port = leaf.as_ref().map_or(fixture.ircd.port(), Leaf::port);
    let nicks = ["split1", "split2", "split3"];
    let channels = ["#ns1", "#ns2"];
    let alice = fixture.user("alice").await?;
    let mut rooms = Vec::new();
    for channel in channels {
        rooms.push(alice.join(&alias(channel)).await?);
    }
    let connect_all = || async {
        let clients = futures_join(nicks.iter().map(|nick| IrcTestClient::connect(port, nick))).await?;
        for client in &clients {
            for channel in channels {
                client.join(channel).await?;
            }
        }
        anyhow::Ok(clients)
    };
    let clients = connect_all().await?;
    for room in &rooms {
        for nick in nicks {
            wait_for_member(&alice, room, &ghost(nick), "join").await?;
        }
    }

    // The link to the leaf breaks: everyone behind it quits with the two server names.
    let servers = match &mut leaf {
        Some(leaf) => {
            leaf.stop();
            "irc.localhost leaf.localhost"
        }
        None => {
            for client in &clients {
                client.send("QUIT :irc.hub.example irc.leaf.example").await?;
            }
            "irc.hub.example irc.leaf.example"
        }
    };
    for room in &rooms {
        let body = body_starting(&alice, room, "netsplit").await?;
        assert!(body.starts_with(&format!("netsplit ({servers}): ")), "{body}");
        assert!(nicks.iter().all(|nick| body.contains(nick)), "{body}");
    }

    // They come back.
    if let Some(leaf) = &mut leaf {
        leaf.start().await?;
    }
    let _clients = connect_all().await?;
    for room in &rooms {
        let body = body_starting(&alice, room, "netjoin").await?;
        assert!(nicks.iter().all(|nick| body.contains(nick)) && body.ends_with("are back"), "{body}");
        // Nobody left or joined again on Matrix meanwhile: two notices were all.
        let membership = alice
            .wait_for_event(room, Duration::ZERO, |event| {
                event["type"] == "m.room.member" && nicks.iter().any(|nick| event["state_key"] == ghost(nick))
            })
            .await;
        assert!(membership.is_err(), "a ghost's membership changed: {membership:?}");
    }
    Ok(())
}

/// `nick` on IRC and alice in the portal of `channel`, alice's puppet in the channel: her first line reached `nick`.
async fn talking(fixture: &Fixture, nick: &str, channel: &str) -> anyhow::Result<(IrcTestClient, MatrixUser, String)> {
    fixture.talking(nick, "alice", channel, "first words").await
}

/// The body of the next event in `room` whose body starts with `start`.
async fn body_starting(user: &MatrixUser, room: &str, start: &str) -> anyhow::Result<String> {
    let event = user
        .wait_for_event(room, WAIT, |event| {
            event["content"]["body"].as_str().is_some_and(|body| body.starts_with(start))
        })
        .await?;
    Ok(event["content"]["body"].as_str().unwrap_or_default().to_owned())
}

/// Runs the connections at once: InspIRCd takes about a second to register each.
async fn futures_join<F>(connects: impl Iterator<Item = F>) -> anyhow::Result<Vec<IrcTestClient>>
where
    F: Future<Output = anyhow::Result<IrcTestClient>> + Send + 'static,
{
    let tasks: Vec<_> = connects.map(tokio::spawn).collect();
    let mut clients = Vec::new();
    for task in tasks {
        clients.push(task.await??);
    }
    Ok(clients)
}

#[tokio::test]
async fn accounts_and_away_messages_reach_whois() -> anyhow::Result<()> {
    let fixture = Fixture::inspircd(AuthMethod::None).await?;
    let (carol, alice, room) = talking(&fixture, "carol", "#acc").await?;

    // account-notify and away-notify tell the bridge, in order, before carol's next line.
    carol.register_account("carol-pass-1", "carol@example.com").await?;
    carol.send("AWAY :at lunch").await?;
    carol.send("PRIVMSG #acc :back soon").await?;
    alice.wait_for_message(&room, WAIT, "back soon").await?;
    let admin = admin_room(&alice).await?;
    let answer = command(&alice, &admin, "whois carol").await?;
    assert!(answer.contains("The bridge knows carol as: logged in as carol, away (at lunch)"), "{answer}");
    Ok(())
}

#[tokio::test]
async fn on_a_server_without_capabilities_the_conversation_is_plain_irc() -> anyhow::Result<()> {
    let fixture = Fixture::start().await?;
    let (bob, alice, room) = talking(&fixture, "bob", "#plain").await?;
    assert!(!bob.pending().iter().any(|line| line.starts_with('@')), "tags from ngircd: {:?}", bob.pending());

    bob.send("PRIVMSG #plain :hi alice").await?;
    let event = alice.wait_for_event(&room, WAIT, |event| is_message(event, &ghost("bob"), "hi alice")).await?;
    let bob_event = event["event_id"].as_str().context("no event ID")?.to_owned();
    // No msgid to name: reactions and typing stay on Matrix; a reply falls back to quoting.
    let annotation = json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": bob_event, "key": "👍"}});
    alice.send_event(&room, "m.reaction", annotation).await?;
    set_typing(&alice, &room, true).await?;
    let reply = json!({
        "msgtype": "m.text",
        "body": "> <@irc_test_bob:localhost> hi alice\n\nhi bob",
        "m.relates_to": {"m.in_reply_to": {"event_id": bob_event}},
    });
    alice.send_message(&room, reply).await?;
    let line = bob.wait_for(WAIT, |line| privmsg_from("alice", "hi bob")(line)).await?;
    assert!(line.starts_with(":alice!") && line.contains("PRIVMSG #plain :bob"), "{line}");
    assert!(!bob.pending().iter().any(|line| line.contains("TAGMSG")), "{:?}", bob.pending());

    Ok(())
}
