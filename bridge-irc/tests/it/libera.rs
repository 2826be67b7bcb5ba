//! Libera.Chat's rules end to end: a Matrix user whose IRC connection fails is removed from the portal (kicked, or
//! banned until it works) while everyone else keeps talking, and per-user spam limits hold messages back with a
//! notice saying why.

use std::time::Duration;

use anyhow::Context as _;
use lattice_bridge_irc::config::{PrivacyMode, SpamConfig};
use lattice_e2e::{
    MatrixUser,
    ircd::{IrcTestClient, Ircd},
};
use serde_json::json;

use crate::fixture::{BOT, Fixture, NET, WAIT, is_bot_notice, privmsg_from, wait_for_member};

/// How long a test waits to be sure something does not arrive.
const QUIET: Duration = Duration::from_secs(2);

/// A portal on a network that allows one puppet: alice (connected) in it, and bob on IRC.
async fn full_portal(
    privacy: PrivacyMode,
    channel: &str,
) -> anyhow::Result<(Fixture, IrcTestClient, MatrixUser, String)> {
    let fixture = Fixture::configured(|section| {
        let network = section.networks.get_mut(NET).expect("the test network");
        network.max_clients = 1;
        network.privacy = privacy;
    })
    .await?;
    let (bob, alice, room) = connected_portal(&fixture, channel).await?;
    Ok((fixture, bob, alice, room))
}

/// bob on IRC in `channel`, and alice in its portal with a working puppet.
async fn connected_portal(fixture: &Fixture, channel: &str) -> anyhow::Result<(IrcTestClient, MatrixUser, String)> {
    fixture.talking("bob", "alice", channel, "I am connected").await
}

/// IRC traffic after the removal reaches `connected` but not `removed`, and `connected` keeps talking to IRC.
async fn others_keep_talking(
    bob: &IrcTestClient,
    connected: &MatrixUser,
    removed: &MatrixUser,
    room: &str,
    channel: &str,
) -> anyhow::Result<()> {
    bob.send(&format!("PRIVMSG {channel} :only for connected people")).await?;
    connected.wait_for_message(room, WAIT, "only for connected people").await?;
    assert!(
        removed.wait_for_message(room, QUIET, "only for connected people").await.is_err(),
        "IRC traffic reached a Matrix user without an IRC connection"
    );
    connected.send_text(room, "still talking").await?;
    bob.wait_for(WAIT, privmsg_from("alice", &format!("PRIVMSG {channel} :still talking"))).await?;
    Ok(())
}

#[tokio::test]
async fn a_user_whose_connection_is_refused_is_kicked_while_the_others_keep_talking() -> anyhow::Result<()> {
    let (fixture, bob, alice, room) = full_portal(PrivacyMode::Kick, "#private").await?;
    let carol = fixture.user("carol").await?;
    carol.join(&room).await?;
    let kick = wait_for_member(&alice, &room, carol.user_id(), "leave").await?;
    assert_eq!(kick["sender"], BOT);
    let reason = kick["content"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("Not connected to Test IRC") && reason.contains("limit"), "{reason}");
    assert!(reason.contains("rejoin to try again"), "{reason}");
    others_keep_talking(&bob, &alice, &carol, &room, "#private").await
}

#[tokio::test]
async fn a_user_the_channel_refuses_is_kicked_from_its_portal() -> anyhow::Result<()> {
    let fixture = Fixture::start().await?;
    let (bob, alice, room) = connected_portal(&fixture, "#vip").await?;
    // bob opened #vip, so he is its operator; he bans carol's puppet before she arrives.
    bob.send("MODE #vip +b carol!*@*").await?;
    bob.wait_for(WAIT, |line| line.contains("MODE #vip +b carol!*@*")).await?;
    let carol = fixture.user("carol").await?;
    carol.join(&room).await?;
    let kick = wait_for_member(&alice, &room, carol.user_id(), "leave").await?;
    let reason = kick["content"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("IRC refused to let you into #vip") && reason.contains("+b"), "{reason}");
    others_keep_talking(&bob, &alice, &carol, &room, "#vip").await
}

#[tokio::test]
async fn an_idle_user_leaves_the_portal_with_their_connection() -> anyhow::Result<()> {
    let fixture = Fixture::configured(|section| {
        section.networks.get_mut(NET).expect("the test network").idle_timeout_secs = Some(3);
    })
    .await?;
    let (bob, alice, room) = connected_portal(&fixture, "#sleepy").await?;
    bob.wait_for(WAIT, |line| line.starts_with(":alice!") && line.contains(" QUIT ")).await?;
    alice
        .wait_for_event(&room, WAIT, |event| is_bot_notice(event, "you leave its rooms too"))
        .await
        .context("alice is told why she leaves")?;
    let kick = wait_for_member(&alice, &room, alice.user_id(), "leave").await?;
    let reason = kick["content"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("closed after 3 s unused"), "{reason}");

    // Rejoining reconnects her.
    alice.join(&room).await?;
    bob.wait_for(WAIT, |line| line.starts_with(":alice!") && line.contains(" JOIN ")).await?;
    Ok(())
}

#[tokio::test]
async fn after_a_restart_everyone_in_a_portal_is_connected_again() -> anyhow::Result<()> {
    let mut fixture = Fixture::start().await?;
    let (bob, _alice, _room) = connected_portal(&fixture, "#again").await?;
    fixture.restart_bridge().await?;
    bob.wait_for(WAIT, |line| line.starts_with(":alice!") && line.contains(" QUIT ")).await?;
    bob.wait_for(WAIT, |line| line.starts_with(":alice!") && line.contains(" JOIN "))
        .await
        .context("alice's puppet is back in the channel without her saying anything")?;
    Ok(())
}

#[tokio::test]
async fn block_messages_bans_a_user_until_their_connection_works() -> anyhow::Result<()> {
    let (fixture, bob, alice, room) = full_portal(PrivacyMode::BlockMessages, "#blocked").await?;
    let carol = fixture.user("carol").await?;
    carol.join(&room).await?;
    let ban = wait_for_member(&alice, &room, carol.user_id(), "ban").await?;
    let reason = ban["content"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("limit") && reason.contains("send `reconnect`"), "{reason}");
    others_keep_talking(&bob, &alice, &carol, &room, "#blocked").await?;

    // alice closes her connection, which frees the only slot and, under the rule, bans her too.
    let alice_admin = crate::auth::admin_room(&alice).await?;
    assert_eq!(crate::auth::command(&alice, &alice_admin, "quit").await?, "Disconnected.");
    let ban = wait_for_member(&alice, &room, alice.user_id(), "ban").await.context("alice is banned after quitting")?;
    let reason = ban["content"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("you closed your connection"), "{reason}");

    // carol's `reconnect` connects her, which lifts her ban: she can join and read again.
    let carol_admin = crate::auth::admin_room(&carol).await?;
    crate::auth::command(&carol, &carol_admin, "reconnect").await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while let Err(error) = carol.join(&room).await {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "carol's ban was never lifted: {error:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bob.send("PRIVMSG #blocked :welcome back").await?;
    carol.wait_for_message(&room, WAIT, "welcome back").await?;
    Ok(())
}

#[tokio::test]
async fn spam_limits_hold_messages_back_with_a_notice_saying_why() -> anyhow::Result<()> {
    let fixture = Fixture::configured(|section| {
        section.networks.get_mut(NET).expect("the test network").spam =
            SpamConfig { messages_per_minute: 1.0, burst: 2, max_lines_per_message: 3 };
    })
    .await?;
    let (bob, alice, room) = fixture.meet("bob", "alice", "#spam").await?;

    alice.send_text(&room, "line 1\nline 2\nline 3\nline 4").await?;
    let notice = alice
        .wait_for_event(&room, WAIT, |event| is_bot_notice(event, "not delivered to IRC"))
        .await
        .context("a message of too many lines is held back with a notice")?;
    let body = notice["content"]["body"].as_str().unwrap_or_default();
    assert!(body.contains(alice.user_id()) && body.contains("it has 4 lines and Test IRC takes at most 3"), "{body}");

    let first_event = alice.send_text(&room, "first").await?;
    for text in ["second", "third"] {
        alice.send_text(&room, text).await?;
    }
    bob.wait_for(WAIT, privmsg_from("alice", "PRIVMSG #spam :first")).await?;
    bob.wait_for(WAIT, privmsg_from("alice", "PRIVMSG #spam :second")).await?;
    let notice = alice
        .wait_for_event(&room, WAIT, |event| is_bot_notice(event, "not delivered to IRC"))
        .await
        .context("a message over the rate is held back with a notice")?;
    let body = notice["content"]["body"].as_str().unwrap_or_default();
    assert!(body.contains("more than 2 messages in a row") && body.contains("1 per minute"), "{body}");
    // An edit is one more IRC line: it counts against the rate too.
    alice
        .send_message(
            &room,
            json!({"msgtype": "m.text", "body": "* first!", "m.new_content": {"msgtype": "m.text", "body": "first!"},
                   "m.relates_to": {"rel_type": "m.replace", "event_id": first_event}}),
        )
        .await?;
    alice
        .wait_for_event(&room, WAIT, |event| is_bot_notice(event, "more than 2 messages in a row"))
        .await
        .context("an edit over the rate is held back with a notice")?;
    assert!(
        bob.wait_for(QUIET, |line| line.contains("third") || line.contains("line 1") || line.contains("first!"))
            .await
            .is_err()
    );
    Ok(())
}

#[tokio::test]
async fn a_user_whose_connection_is_k_lined_is_kicked_with_the_servers_reason() -> anyhow::Result<()> {
    // Matrix users named `banned` get the IRC username `banned`, which this server K-lines.
    let ircd = Ircd::inspircd_with(r#"<badhost host="*banned@*" reason="No Matrix bans wanted here">"#).await?;
    // The bridge reaches the server through a relay that counts its connection attempts.
    let counter = ConnectionCounter::to(ircd.port()).await?;
    let fixture = Fixture::on(ircd, |section| {
        let network = section.networks.get_mut(NET).expect("the test network");
        network.servers[0].port = counter.port;
        network.privacy = PrivacyMode::Kick;
        network.privacy_grace_secs = 2;
    })
    .await?;
    let (bob, alice, room) = connected_portal(&fixture, "#kline").await?;

    let banned = fixture.user("banned").await?;
    banned.join(&room).await?;
    let kick = wait_for_member(&alice, &room, banned.user_id(), "leave").await?;
    assert_eq!(kick["sender"], BOT);
    let reason = kick["content"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("the IRC server closed your connection") && reason.contains("No Matrix bans wanted here"),
        "{reason}"
    );
    others_keep_talking(&bob, &alice, &banned, &room, "#kline").await?;

    // The failed puppet is closed rather than knocking at the K-line forever: no more connection attempts.
    let before = counter.count();
    tokio::time::sleep(QUIET + Duration::from_secs(1)).await;
    assert_eq!(counter.count(), before, "the K-lined puppet kept reconnecting");
    Ok(())
}

/// A TCP relay to the IRC server that counts the connections made through it.
struct ConnectionCounter {
    port: u16,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl ConnectionCounter {
    async fn to(server_port: u16) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = std::sync::Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", server_port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Ok(Self { port, connections })
    }

    fn count(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}
