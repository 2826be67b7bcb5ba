//! Alias portals end to end: a Matrix user and an IRC user talk through `#irc_test_#channel:localhost`.

use anyhow::Context as _;
use lattice_bridge_irc::config::{EditStyle, RedactionStyle};
use lattice_e2e::{HomeserverKind, homeserver_tests, ircd::IrcTestClient};
use serde_json::json;

use crate::fixture::{Fixture, WAIT, change_nick, ghost, is_message, privmsg_from, wait_for_member};

homeserver_tests!(
    talk_both_ways_with_formatting_and_emotes,
    replies_edits_and_redactions_follow_the_configured_style,
    files_become_working_links_and_nicks_become_pills,
);

async fn talk_both_ways_with_formatting_and_emotes(homeserver: HomeserverKind) -> anyhow::Result<()> {
    let fixture = Fixture::on_homeserver(homeserver).await?;
    let (bob, alice, room) = fixture.meet("bob", "alice", "#lobby").await?;
    wait_for_member(&alice, &room, &ghost("bob"), "join").await?;

    // IRC → Matrix: formatting, /me and notices.
    bob.send("PRIVMSG #lobby :hello \x02bold\x02 and \x0304red\x03").await?;
    let seen = alice.wait_for_message(&room, WAIT, "hello bold and red").await?;
    assert_eq!(seen["sender"], ghost("bob"));
    assert_eq!(seen["content"]["msgtype"], "m.text");
    assert_eq!(
        seen["content"]["formatted_body"],
        "hello <strong>bold</strong> and <font data-mx-color=\"#ff0000\">red</font>"
    );
    bob.send("PRIVMSG #lobby :\x01ACTION waves\x01").await?;
    let seen = alice.wait_for_message(&room, WAIT, "waves").await?;
    assert_eq!(seen["content"]["msgtype"], "m.emote");
    bob.send("NOTICE #lobby :a notice").await?;
    let seen = alice.wait_for_message(&room, WAIT, "a notice").await?;
    assert_eq!(seen["content"]["msgtype"], "m.notice");

    // Matrix → IRC from alice's own puppet.
    alice
        .send_message(
            &room,
            json!({"msgtype": "m.text", "body": "hi irc", "format": "org.matrix.custom.html",
                   "formatted_body": "<b>hi</b> <i>irc</i>"}),
        )
        .await?;
    bob.wait_for(WAIT, privmsg_from("alice", "PRIVMSG #lobby :\x02hi\x02 \x1dirc\x1d")).await?;
    alice.send_message(&room, json!({"msgtype": "m.emote", "body": "dances"})).await?;
    bob.wait_for(WAIT, privmsg_from("alice", "PRIVMSG #lobby :\x01ACTION dances\x01")).await?;
    alice.send_message(&room, json!({"msgtype": "m.notice", "body": "noted"})).await?;
    bob.wait_for(WAIT, privmsg_from("alice", "NOTICE #lobby :noted")).await?;

    // A line break never starts a second IRC command.
    alice.send_text(&room, "one\r\nQUIT :x").await?;
    bob.wait_for(WAIT, privmsg_from("alice", "PRIVMSG #lobby :one")).await?;
    bob.wait_for(WAIT, privmsg_from("alice", "PRIVMSG #lobby :QUIT :x")).await?;
    alice.send_text(&room, "still here").await?;
    bob.wait_for(WAIT, privmsg_from("alice", "PRIVMSG #lobby :still here")).await?;
    assert!(
        !bob.pending().iter().any(|line| line.starts_with(":alice!") && line.contains(" QUIT ")),
        "alice's puppet quit: {:?}",
        bob.pending()
    );

    // A reply from IRC reaches Matrix, and the puppet's own lines were never bridged back as a ghost.
    bob.send("PRIVMSG #lobby :alice: ack").await?;
    let ack = alice.wait_for_message(&room, WAIT, "alice: ack").await?;
    assert_eq!(ack["sender"], ghost("bob"));
    assert!(
        alice
            .wait_for_event(&room, std::time::Duration::from_millis(500), |event| { event["sender"] == ghost("alice") })
            .await
            .is_err(),
        "the puppet's lines came back as a ghost"
    );
    Ok(())
}

#[tokio::test]
async fn nick_change_part_and_kick_are_reflected() -> anyhow::Result<()> {
    let fixture = Fixture::start().await?;
    // carol creates the channel, so she is its operator.
    let carol = IrcTestClient::connect(fixture.ircd.port(), "carol").await?;
    carol.join("#hall").await?;
    let (bob, alice, room) = fixture.meet("bob", "alice", "#hall").await?;
    wait_for_member(&alice, &room, &ghost("bob"), "join").await?;
    let carol_member = wait_for_member(&alice, &room, &ghost("carol"), "join").await?;
    assert_eq!(carol_member["content"]["displayname"], "carol");
    alice
        .wait_for_event(&room, WAIT, |event| {
            event["type"] == "m.room.power_levels" && event["content"]["users"][ghost("carol")] == 50
        })
        .await
        .context("carol's op becomes power level 50")?;

    change_nick(&bob, "robert", &alice, &room).await?;
    bob.send("PRIVMSG #hall :renamed").await?;
    let seen = alice.wait_for_message(&room, WAIT, "renamed").await?;
    assert_eq!(seen["sender"], ghost("bob"), "the ghost keeps its identity across nicks");
    bob.send("PART #hall :gone").await?;
    wait_for_member(&alice, &room, &ghost("bob"), "leave").await?;
    let dave = IrcTestClient::connect(fixture.ircd.port(), "dave").await?;
    dave.join("#hall").await?;
    wait_for_member(&alice, &room, &ghost("dave"), "join").await?;
    dave.send("QUIT :see you").await?;
    wait_for_member(&alice, &room, &ghost("dave"), "leave").await.context("a QUIT leaves the room")?;

    // Alice's puppet joins when she speaks; carol kicks it; alice leaves the room.
    alice.send_text(&room, "hello hall").await?;
    carol.wait_for(WAIT, privmsg_from("alice", "PRIVMSG #hall :hello hall")).await?;
    carol.send("KICK #hall alice :out").await?;
    wait_for_member(&alice, &room, alice.user_id(), "leave").await?;
    Ok(())
}

#[tokio::test]
async fn messages_sent_during_an_ircd_restart_arrive_in_order() -> anyhow::Result<()> {
    // IRC keeps nothing for the absent: bob must be back in the channel before alice's puppet reconnects and
    // delivers. The first reconnect waits at least 3 s, far longer than bob needs to rejoin.
    let mut fixture = Fixture::configured(|section| {
        for network in section.networks.values_mut() {
            network.reconnect.initial_delay_ms = 6_000;
            network.reconnect.max_delay_secs = 8;
        }
    })
    .await?;
    let (_bob, alice, room) = fixture.talking("bob", "alice", "#ops", "before").await?;

    fixture.ircd.stop();
    for i in 0..5 {
        alice.send_text(&room, &format!("during {i}")).await?;
    }
    fixture.ircd.start().await?;
    let bob = IrcTestClient::connect(fixture.ircd.port(), "bob").await?;
    bob.join("#ops").await?;
    for i in 0..5 {
        let line =
            bob.wait_for(WAIT, |line| line.starts_with(":alice!") && line.contains("PRIVMSG #ops :during")).await?;
        assert!(line.ends_with(&format!("during {i}")), "message {i} out of order: {line}");
    }
    alice.send_text(&room, "after").await?;
    bob.wait_for(WAIT, privmsg_from("alice", "PRIVMSG #ops :after")).await?;
    // Bob's ghost is bridged again once the listener is back in the channel (IRC keeps nothing for the absent).
    bob.wait_for(WAIT, |line| {
        (line.starts_with(":lattice!") && line.contains(" JOIN "))
            || (line.split(' ').nth(1) == Some("353")
                && line.split([' ', ':']).any(|word| word.trim_start_matches(['@', '+']) == "lattice"))
    })
    .await
    .context("the bridge bot rejoins after the restart")?;
    bob.send("PRIVMSG #ops :welcome back").await?;
    let seen = alice.wait_for_message(&room, WAIT, "welcome back").await?;
    assert!(is_message(&seen, &ghost("bob"), "welcome back"));
    Ok(())
}

#[tokio::test]
async fn a_long_message_becomes_one_line_with_a_working_link() -> anyhow::Result<()> {
    let fixture = Fixture::start().await?;
    let (bob, alice, room) = fixture.talking("bob", "alice", "#long", "short").await?;

    // Five lines: more than the default limit of three.
    let text = "first line of a long story\nsecond\nthird\nfourth ünïcödé\nfifth and last";
    alice.send_text(&room, text).await?;
    let line = bob.wait_for(WAIT, |line| line.starts_with(":alice!") && line.contains("PRIVMSG #long :first")).await?;
    alice.send_text(&room, "after").await?;
    bob.wait_for(WAIT, privmsg_from("alice", "PRIVMSG #long :after")).await?;
    let stray: Vec<String> =
        bob.pending().into_iter().filter(|line| line.starts_with(":alice!") && line.contains(" PRIVMSG ")).collect();
    assert!(stray.is_empty(), "the long message took more than one line: {stray:?}");

    let url = line
        .split(' ')
        .find(|word| word.starts_with("http"))
        .with_context(|| format!("no link in {line:?}"))?
        .trim_end_matches(')');
    assert!(url.contains("/_lattice/media/"), "{url}");
    let response = reqwest::get(url).await?.error_for_status()?;
    assert_eq!(response.text().await?, text);
    Ok(())
}

async fn replies_edits_and_redactions_follow_the_configured_style(homeserver: HomeserverKind) -> anyhow::Result<()> {
    let fixture = Fixture::configured_on(homeserver, |section| {
        for network in section.networks.values_mut() {
            network.messages.edits = EditStyle::Sed;
            network.messages.redactions = RedactionStyle::Notice;
        }
    })
    .await?;
    let (bob, alice, room) = fixture.meet("bob", "alice", "#style").await?;
    wait_for_member(&alice, &room, &ghost("bob"), "join").await?;

    bob.send("PRIVMSG #style :shall we meet at noon on the bridge?").await?;
    let original = alice.wait_for_message(&room, WAIT, "shall we meet at noon on the bridge?").await?;
    alice
        .send_message(
            &room,
            json!({"msgtype": "m.text", "body": "yes, see you there",
                   "m.relates_to": {"m.in_reply_to": {"event_id": original["event_id"]}}}),
        )
        .await?;
    bob.wait_for(
        WAIT,
        privmsg_from("alice", "PRIVMSG #style :bob: \"shall we meet at noon on the bridge?\" yes, see you there"),
    )
    .await
    .context("a reply names the nick and quotes the message")?;

    let mine = alice.send_text(&room, "I will bring teh map").await?;
    bob.wait_for(WAIT, privmsg_from("alice", "PRIVMSG #style :I will bring teh map")).await?;
    alice
        .send_message(
            &room,
            json!({"msgtype": "m.text", "body": "* I will bring the map",
                   "m.new_content": {"msgtype": "m.text", "body": "I will bring the map"},
                   "m.relates_to": {"rel_type": "m.replace", "event_id": mine}}),
        )
        .await?;
    bob.wait_for(WAIT, privmsg_from("alice", "PRIVMSG #style :s/teh/the/"))
        .await
        .context("an edit is one sed-style line, not the whole message again")?;

    alice.redact(&room, &mine, None).await?;
    bob.wait_for(WAIT, privmsg_from("alice", "NOTICE #style :deleted a message"))
        .await
        .context("a redaction is announced as configured")?;
    Ok(())
}

async fn files_become_working_links_and_nicks_become_pills(homeserver: HomeserverKind) -> anyhow::Result<()> {
    let fixture = Fixture::on_homeserver(homeserver).await?;
    let (bob, alice, room) = fixture.meet("bob", "alice", "#files").await?;
    wait_for_member(&alice, &room, &ghost("bob"), "join").await?;

    // A Matrix file reaches IRC as its name and a link on the bridge that works without Matrix credentials.
    let bytes = b"%PDF-1.4 not really a pdf".to_vec();
    let mxc = alice.upload(bytes.clone(), "application/pdf", "agenda.pdf").await?;
    alice
        .send_message(
            &room,
            json!({"msgtype": "m.file", "body": "agenda.pdf", "url": mxc, "info": {"mimetype": "application/pdf"}}),
        )
        .await?;
    let line =
        bob.wait_for(WAIT, |line| line.starts_with(":alice!") && line.contains("PRIVMSG #files :agenda.pdf ")).await?;
    let url = line.rsplit(' ').next().context("a link at the end of the line")?;
    assert!(url.contains("/_lattice/media/"), "{line}");
    let fetched = reqwest::get(url).await?;
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.bytes().await?.as_ref(), bytes.as_slice());

    // A pill of an IRC person's ghost becomes their nick on IRC…
    alice
        .send_message(
            &room,
            json!({"msgtype": "m.text", "body": "bob: ready?", "format": "org.matrix.custom.html",
                   "formatted_body": format!("<a href=\"https://matrix.to/#/{}\">bob</a>: ready?", ghost("bob"))}),
        )
        .await?;
    bob.wait_for(WAIT, privmsg_from("alice", "PRIVMSG #files :bob: ready?")).await?;
    // …and an IRC line addressed to a puppet's nick becomes a pill of its Matrix user.
    bob.send("PRIVMSG #files :alice: yes").await?;
    let seen = alice.wait_for_message(&room, WAIT, "alice: yes").await?;
    let html = seen["content"]["formatted_body"].as_str().unwrap_or_default();
    assert!(
        html.contains(&format!("https://matrix.to/#/{}", alice.user_id().replace('@', "%40")))
            || html.contains(&format!("https://matrix.to/#/{}", alice.user_id())),
        "{seen}"
    );
    Ok(())
}
