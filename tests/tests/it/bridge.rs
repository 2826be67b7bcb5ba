//! The bridge runtime against a real homeserver, Synapse and Conduit: the bot answers in its admin room, alias
//! queries create portal rooms with bridge-info state, ghosts post in order with their own timestamps, media goes
//! both ways, and the homeserver reaches the bridge. Each test runs its own homeserver and bridge, with its own
//! registration.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use lattice_bridge_core::{
    BridgeHandle, Connector,
    connector::{BridgeInfoSpec, Capabilities, ConnectorInfo, ConnectorResult, GhostSpec, PortalSpec},
    event::{MatrixEvent, MatrixEventKind, MessageType, RemoteEvent, RemoteEventKind},
    store::Portal,
};
use lattice_config::PermissionsConfig;
use lattice_e2e::{
    Homeserver, HomeserverKind, MatrixUser,
    bridge::{RunningBridge, registration},
    homeserver_tests,
};
use serde_json::{Value, json};
use tokio::sync::Notify;

/// How long a user waits for what the bridge should make visible.
const WAIT: Duration = Duration::from_secs(30);
const APPSERVICE_ID: &str = "lattice-e2e";
const BOT: &str = "@_e2e_bot:localhost";

/// A Matrix event the connector received, with the key of its portal if it came through one.
type Received = (Option<String>, MatrixEvent);

/// What the test connector saw of Matrix, in arrival order.
#[derive(Clone, Default)]
struct Recorder {
    events: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<Notify>,
}

impl Recorder {
    /// Waits for an event `predicate` holds for, and returns it with its portal key.
    async fn wait_for(&self, timeout: Duration, predicate: impl Fn(&MatrixEvent) -> bool) -> anyhow::Result<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.arrived.notified();
            if let Some(found) = self.events.lock().unwrap().iter().find(|(_, event)| predicate(event)) {
                return Ok(found.clone());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let seen: Vec<String> =
                    self.events.lock().unwrap().iter().map(|(_, event)| event.event_type.clone()).collect();
                anyhow::bail!("the connector received no matching event within {timeout:?}; it got {seen:?}");
            }
        }
    }
}

/// A connector for a made-up network "E2E Net": every `@_e2e_*` user is a remote person, every `#_e2e_<name>`
/// alias a remote channel.
#[derive(Clone, Default)]
struct E2eConnector {
    recorder: Recorder,
}

fn ghost(user_id: &str) -> Option<GhostSpec> {
    let name = user_id.strip_prefix("@_e2e_")?.strip_suffix(":localhost")?;
    (!name.is_empty()).then(|| GhostSpec {
        user_id: user_id.to_owned(),
        remote_id: name.to_owned(),
        displayname: Some(format!("{name} (E2E)")),
        avatar_url: None,
    })
}

fn portal_spec(name: &str) -> PortalSpec {
    PortalSpec {
        remote_key: format!("e2e/{name}"),
        alias_localpart: Some(format!("_e2e_{name}")),
        name: Some(format!("{name} on E2E Net")),
        topic: None,
        bridge_info: BridgeInfoSpec {
            network_id: "e2e".into(),
            network_name: "E2E Net".into(),
            channel_id: name.into(),
            channel_name: name.into(),
        },
        public: true,
        direct: None,
        metadata: json!({}),
    }
}

impl Connector for E2eConnector {
    fn info(&self) -> ConnectorInfo {
        ConnectorInfo { protocol_id: "e2e", protocol_name: "E2E", command_prefix: "!e2e" }
    }

    async fn start(&self, _bridge: BridgeHandle) -> ConnectorResult<()> {
        Ok(())
    }

    fn capabilities(&self, _portal: &Portal) -> Capabilities {
        Capabilities { typing: true, ..Capabilities::default() }
    }

    lattice_bridge_core::record_every_matrix_event!();

    async fn resolve_user(&self, user_id: &str) -> ConnectorResult<Option<GhostSpec>> {
        Ok(ghost(user_id))
    }

    async fn resolve_alias(&self, alias: &str) -> ConnectorResult<Option<PortalSpec>> {
        let name = alias.strip_prefix("#_e2e_").and_then(|rest| rest.strip_suffix(":localhost"));
        Ok(name.filter(|name| !name.is_empty()).map(portal_spec))
    }
}

impl E2eConnector {
    /// Keeps `event` with the key of its portal, if it is in one, and wakes the waiters.
    fn record(&self, portal: Option<&Portal>, event: &MatrixEvent) {
        let key = portal.map(|portal| portal.remote_key.clone());
        self.recorder.events.lock().unwrap().push((key, event.clone()));
        self.recorder.arrived.notify_waiters();
    }
}

/// A homeserver and a bridge registered with it; the bridge stops first when dropped.
struct Fixture {
    bridge: RunningBridge<E2eConnector>,
    homeserver: Homeserver,
}

impl Fixture {
    async fn start() -> anyhow::Result<Self> {
        Self::on(HomeserverKind::Synapse).await
    }

    async fn on(kind: HomeserverKind) -> anyhow::Result<Self> {
        let template = registration(APPSERVICE_ID, "_e2e_bot", "_e2e_", "e2e");
        let (homeserver, bridge) =
            RunningBridge::start(kind, template, &PermissionsConfig::default(), |_| E2eConnector::default()).await?;
        Ok(Self { bridge, homeserver })
    }

    async fn user(&self, localpart: &str) -> anyhow::Result<MatrixUser> {
        self.homeserver.register_user(localpart).await
    }

    fn handle(&self) -> &BridgeHandle {
        self.bridge.handle()
    }
}

fn is_message_from(event: &Value, sender: &str) -> bool {
    event["type"] == "m.room.message" && event["sender"] == sender
}

homeserver_tests!(
    invite_bot_then_help,
    alias_portal_with_bridge_info,
    ghost_posts_with_timestamp_in_order,
    remote_edits_redactions_kicks_and_bans_reach_matrix,
    media_round_trip,
    homeserver_ping_reaches_the_bridge,
    only_synapse_creates_the_registrations_bot_user,
    only_synapse_sends_typing_to_the_appservice,
    only_synapse_serves_room_history_to_the_appservice,
);

/// A difference between homeservers: Synapse serves `GET /rooms/{roomId}/messages` to the appservice's users;
/// Conduit 0.11 answers them with an empty 500 (it expects a device, which appservice users lack), so a gateway MUC
/// joined from XMPP comes without the room's recent history there.
async fn only_synapse_serves_room_history_to_the_appservice(homeserver: HomeserverKind) -> anyhow::Result<()> {
    let fixture = Fixture::on(homeserver).await?;
    let alice = fixture.user("alice").await?;
    let room = alice.join("#_e2e_history:localhost").await?;
    alice.send_text(&room, "for the record").await?;
    let as_token = &fixture.bridge.registration().registration().as_token;
    let bot = MatrixUser::new(fixture.homeserver.url(), BOT, as_token)?;
    let path = ["_matrix", "client", "v3", "rooms", &room, "messages"];
    let history = bot.call(reqwest::Method::GET, &path, &[("dir", "b"), ("limit", "10")], None).await;
    match homeserver {
        HomeserverKind::Synapse => {
            let chunk = history?["chunk"].as_array().cloned().unwrap_or_default();
            assert!(chunk.iter().any(|event| event["content"]["body"] == "for the record"), "{chunk:?}");
        }
        HomeserverKind::Conduit => {
            let error = history.expect_err("Conduit now serves history to appservices: update the README's table");
            let error = error.downcast_ref::<lattice_e2e::MatrixError>().context("a Matrix error")?;
            assert_eq!(error.status, 500, "{error}");
        }
    }
    Ok(())
}

/// A difference between homeservers: Synapse pushes ephemeral events (typing, receipts) to an appservice whose
/// registration asks for them (`receive_ephemeral`, MSC2409); Conduit pushes none, so Matrix typing and read
/// receipts cannot reach the remote network there. Checked against a message sent after the typing: on Conduit
/// the message arrives and no typing came before it.
async fn only_synapse_sends_typing_to_the_appservice(homeserver: HomeserverKind) -> anyhow::Result<()> {
    let fixture = Fixture::on(homeserver).await?;
    let alice = fixture.user("alice").await?;
    let room = alice.join("#_e2e_typing:localhost").await?;
    let path = ["_matrix", "client", "v3", "rooms", &room, "typing", alice.user_id()];
    alice.call(reqwest::Method::PUT, &path, &[], Some(&json!({"typing": true, "timeout": 30000}))).await?;
    alice.send_text(&room, "typed").await?;
    let recorder = &fixture.bridge.connector().recorder;
    recorder.wait_for(WAIT, |event| event.raw.pointer("/content/body") == Some(&json!("typed"))).await?;
    let is_typing =
        |event: &MatrixEvent| matches!(&event.kind, MatrixEventKind::Typing { user_ids } if !user_ids.is_empty());
    match homeserver {
        HomeserverKind::Synapse => drop(recorder.wait_for(WAIT, is_typing).await?),
        HomeserverKind::Conduit => {
            let typing = recorder.events.lock().unwrap().iter().any(|(_, event)| is_typing(event));
            assert!(!typing, "Conduit now sends typing to appservices: update the README's compatibility table");
        }
    }
    Ok(())
}

/// A difference between homeservers: Synapse creates the registration's `sender_localpart` user when it loads the
/// registration, Conduit does not (the spec does not promise it), so calls as the bot answer `M_FORBIDDEN` there
/// until the bridge registers its bot at start ([`homeserver_ping_reaches_the_bridge`] checks that it does).
async fn only_synapse_creates_the_registrations_bot_user(homeserver: HomeserverKind) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // No bridge listens: only the homeserver's own view of the registration is looked at.
    let template = registration(APPSERVICE_ID, "_e2e_bot", "_e2e_", "e2e")("http://127.0.0.1:9".parse()?);
    let (server, registration) = Homeserver::start_for_appservice(homeserver, dir.path(), &template).await?;
    let bot = MatrixUser::new(server.url(), BOT, &registration.registration().as_token)?;
    let whoami = bot.call(reqwest::Method::GET, &["_matrix", "client", "v3", "account", "whoami"], &[], None).await;
    match homeserver {
        HomeserverKind::Synapse => assert_eq!(whoami?["user_id"], BOT),
        HomeserverKind::Conduit => {
            let error = whoami.expect_err("Conduit does not create the bot");
            let error = error.downcast_ref::<lattice_e2e::MatrixError>().context("a Matrix error")?;
            assert_eq!(error.errcode.as_deref(), Some("M_FORBIDDEN"), "{error}");
            assert!(error.error.contains("does not exist"), "{error}");
        }
    }
    Ok(())
}

async fn invite_bot_then_help(homeserver: HomeserverKind) -> anyhow::Result<()> {
    let fixture = Fixture::on(homeserver).await?;
    let alice = fixture.user("alice").await?;
    let room = alice.create_room(json!({"preset": "trusted_private_chat", "is_direct": true, "invite": [BOT]})).await?;

    alice
        .wait_for_event(&room, WAIT, |event| {
            event["type"] == "m.room.member" && event["state_key"] == BOT && event["content"]["membership"] == "join"
        })
        .await
        .context("waiting for the bot to accept the invite")?;
    let welcome = alice.wait_for_event(&room, WAIT, |event| is_message_from(event, BOT)).await?;
    assert_eq!(welcome["content"]["msgtype"], "m.notice");
    let welcome = welcome["content"]["body"].as_str().unwrap_or_default();
    assert!(welcome.contains("admin room") && welcome.contains("help"), "welcome notice: {welcome:?}");

    alice.send_text(&room, "help").await?;
    let reply = alice.wait_for_event(&room, WAIT, |event| is_message_from(event, BOT)).await?;
    assert_eq!(reply["content"]["msgtype"], "m.notice");
    let body = reply["content"]["body"].as_str().unwrap_or_default();
    assert!(body.starts_with("Lattice E2E bridge commands"), "help reply: {body:?}");
    assert!(body.contains("• help [command] — List the commands, or explain one"), "help reply: {body:?}");
    assert!(body.contains("• version — Show the bridge's name and version"), "help reply: {body:?}");
    assert!(!body.contains("portals"), "admin-only commands are hidden from users: {body:?}");
    Ok(())
}

async fn alias_portal_with_bridge_info(homeserver: HomeserverKind) -> anyhow::Result<()> {
    let fixture = Fixture::on(homeserver).await?;
    let alice = fixture.user("alice").await?;

    let room = alice.join("#_e2e_lobby:localhost").await.context("joining the portal by its alias")?;
    assert_eq!(alice.resolve_alias("#_e2e_lobby:localhost").await?.as_deref(), Some(room.as_str()));

    let state_key = format!("{APPSERVICE_ID}:/e2e/lobby");
    for event_type in ["m.bridge", "uk.half-shot.bridge"] {
        let info = alice
            .get_state(&room, event_type, &state_key)
            .await?
            .with_context(|| format!("no {event_type} state with key {state_key}"))?;
        assert_eq!(info["bridgebot"], BOT, "{event_type}: {info}");
        assert_eq!(info["protocol"], json!({"id": "e2e", "displayname": "E2E"}), "{event_type}: {info}");
        assert_eq!(info["network"], json!({"id": "e2e", "displayname": "E2E Net"}), "{event_type}: {info}");
        assert_eq!(info["channel"], json!({"id": "lobby", "displayname": "lobby"}), "{event_type}: {info}");
    }

    let sent = alice.send_text(&room, "hello, lobby").await?;
    let (portal, event) = fixture
        .bridge
        .connector()
        .recorder
        .wait_for(WAIT, |event| event.raw.pointer("/content/body") == Some(&json!("hello, lobby")))
        .await?;
    assert_eq!(portal.as_deref(), Some("e2e/lobby"));
    assert_eq!(event.event_id.as_deref(), Some(sent.as_str()));
    assert_eq!(event.sender.as_deref(), Some("@alice:localhost"));
    assert_eq!(event.room_id, room);
    Ok(())
}

async fn ghost_posts_with_timestamp_in_order(homeserver: HomeserverKind) -> anyhow::Result<()> {
    const BOB: &str = "@_e2e_bob:localhost";
    const COUNT: u64 = 20;
    const START_MS: u64 = 1_600_000_000_000;

    let fixture = Fixture::on(homeserver).await?;
    let alice = fixture.user("alice").await?;
    let portal = fixture.handle().ensure_portal(&portal_spec("plaza")).await?;
    alice.join(&portal.room_id).await?;

    let bob = ghost(BOB).context("bob is a ghost")?;
    for i in 0..COUNT {
        fixture
            .handle()
            .push(RemoteEvent {
                portal: portal.remote_key.clone(),
                sender: Some(bob.clone()),
                remote_id: Some(format!("bob-{i}")),
                timestamp_ms: Some(START_MS + i),
                kind: RemoteEventKind::Message {
                    msgtype: MessageType::Text,
                    body: format!("message {i} from bob"),
                    html: None,
                    reply_to: None,
                },
            })
            .await?;
    }

    // Each wait takes the earliest matching event alice has not seen yet, so the i-th one must be message i.
    for i in 0..COUNT {
        let seen = alice.wait_for_event(&portal.room_id, WAIT, |event| is_message_from(event, BOB)).await?;
        assert_eq!(seen["content"]["body"], format!("message {i} from bob"), "message {i}: {seen}");
        assert_eq!(seen["content"]["msgtype"], "m.text");
        assert_eq!(seen["origin_server_ts"], START_MS + i, "message {i} keeps the remote timestamp: {seen}");
    }

    let member = alice.get_state(&portal.room_id, "m.room.member", BOB).await?.context("bob is not a member")?;
    assert_eq!(member["membership"], "join");
    assert_eq!(member["displayname"], "bob (E2E)");
    Ok(())
}

async fn remote_edits_redactions_kicks_and_bans_reach_matrix(homeserver: HomeserverKind) -> anyhow::Result<()> {
    const BOB: &str = "@_e2e_bob:localhost";
    let fixture = Fixture::on(homeserver).await?;
    let alice = fixture.user("alice").await?;
    let carol = fixture.user("carol").await?;
    let portal = fixture.handle().ensure_portal(&portal_spec("moderated")).await?;
    alice.join(&portal.room_id).await?;
    carol.join(&portal.room_id).await?;
    let bob = ghost(BOB).context("bob is a ghost")?;
    let push = |remote_id: Option<&str>, kind: RemoteEventKind| {
        fixture.handle().push(RemoteEvent {
            portal: portal.remote_key.clone(),
            sender: Some(bob.clone()),
            remote_id: remote_id.map(Into::into),
            timestamp_ms: None,
            kind,
        })
    };
    push(
        Some("m1"),
        RemoteEventKind::Message { msgtype: MessageType::Text, body: "helo".into(), html: None, reply_to: None },
    )
    .await?;
    push(None, RemoteEventKind::Edit { target: "m1".into(), body: "hello".into(), html: None }).await?;
    push(None, RemoteEventKind::Redaction { target: "m1".into(), reason: Some("oops".into()) }).await?;
    push(None, RemoteEventKind::Kick { user_id: alice.user_id().into(), reason: Some("flood".into()) }).await?;
    push(None, RemoteEventKind::Ban { user_id: carol.user_id().into(), reason: Some("spam".into()) }).await?;

    let original = carol.wait_for_event(&portal.room_id, WAIT, |event| is_message_from(event, BOB)).await?;
    let edit = carol.wait_for_event(&portal.room_id, WAIT, |event| is_message_from(event, BOB)).await?;
    assert_eq!(edit["content"]["m.new_content"]["body"], "hello", "{edit}");
    assert_eq!(edit["content"]["m.relates_to"]["rel_type"], "m.replace");
    assert_eq!(edit["content"]["m.relates_to"]["event_id"], original["event_id"]);
    let redaction = carol.wait_for_event(&portal.room_id, WAIT, |event| event["type"] == "m.room.redaction").await?;
    let redacts = redaction["content"]["redacts"].as_str().or(redaction["redacts"].as_str());
    assert_eq!(redacts, original["event_id"].as_str(), "{redaction}");

    let membership = |user: &str| {
        let user = user.to_owned();
        move |event: &Value| {
            event["type"] == "m.room.member"
                && event["state_key"] == user.as_str()
                && event["content"]["membership"] == "leave"
        }
    };
    let kicked = carol.wait_for_event(&portal.room_id, WAIT, membership(alice.user_id())).await?;
    assert_eq!(kicked["content"]["reason"], "flood", "{kicked}");
    assert_ne!(kicked["sender"], alice.user_id(), "alice was kicked, she did not leave: {kicked}");
    // Carol's own sync no longer shows the room once she is banned: read the state as the bot, until the deadline.
    let room: ruma::OwnedRoomId = portal.room_id.as_str().try_into()?;
    let bot = fixture.handle().matrix().bot();
    let deadline = tokio::time::Instant::now() + WAIT;
    let banned = loop {
        let member = bot.get_state_event(&room, "m.room.member", carol.user_id()).await?;
        if member.as_ref().is_some_and(|member| member["membership"] == "ban") || tokio::time::Instant::now() > deadline
        {
            break member;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let banned = banned.context("carol has no member event")?;
    assert_eq!(banned["membership"], "ban", "{banned}");
    assert_eq!(banned["reason"], "spam");
    Ok(())
}

async fn media_round_trip(homeserver: HomeserverKind) -> anyhow::Result<()> {
    let fixture = Fixture::on(homeserver).await?;
    let alice = fixture.user("alice").await?;
    let matrix = fixture.handle().matrix();
    matrix.bot().ensure_registered().await?;

    // Bridge → Matrix user.
    let from_bridge: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let mxc = matrix.upload_media(from_bridge.clone().into(), "application/octet-stream", Some("blob.bin")).await?;
    assert!(mxc.as_str().starts_with("mxc://localhost/"), "{mxc}");
    assert_eq!(alice.download(mxc.as_str()).await?, from_bridge);

    // Matrix user → bridge.
    let from_alice = b"\x89PNG\r\n\x1a\n not really a picture".to_vec();
    let mxc = alice.upload(from_alice.clone(), "image/png", "picture.png").await?;
    let (bytes, content_type) = matrix.download_media(mxc.as_str().into()).await?;
    assert_eq!(bytes.as_ref(), from_alice.as_slice());
    assert_eq!(content_type.as_deref(), Some("image/png"));
    Ok(())
}

#[tokio::test]
async fn published_text_is_served_through_the_bridge() -> anyhow::Result<()> {
    let fixture = Fixture::start().await?;
    fixture.handle().matrix().bot().ensure_registered().await?;
    let text = "line one\nline two <b>not html</b>\n".repeat(50);
    let url = fixture.handle().publish_text(&text, "long message.txt").await?;
    assert!(
        url.starts_with(&format!("{}/_lattice/media/", fixture.bridge.url())) && url.ends_with("/long%20message.txt"),
        "{url}"
    );
    let response = reqwest::get(&url).await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert_eq!(response.text().await?, text);

    // A guessed token finds nothing.
    let guessed = url.replace("/media/", "/media/0").replace("/long%20message.txt", "x/long%20message.txt");
    assert_eq!(reqwest::get(&guessed).await?.status(), 404);
    Ok(())
}

async fn homeserver_ping_reaches_the_bridge(homeserver: HomeserverKind) -> anyhow::Result<()> {
    let fixture = Fixture::on(homeserver).await?;
    let started = Instant::now();
    let deadline = started + WAIT;
    while !fixture.handle().homeserver_reachable() {
        anyhow::ensure!(Instant::now() < deadline, "the homeserver did not reach the bridge within {WAIT:?}");
        // Polling a flag the runtime sets; nothing to wait on instead.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("the appservice ping succeeded {:.1?} after the bridge started", started.elapsed());
    // The self-check registered the bot before the ping, on every homeserver: it exists with nothing else done.
    assert_eq!(fixture.handle().matrix().whoami().await?, BOT);
    Ok(())
}
