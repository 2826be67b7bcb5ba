//! Unit tests of the Matrix → IRC handlers, one or more per Matrix event kind, against a fake IRC server on
//! loopback (registration, JOIN echoes, PING answers, capabilities on request) and the runtime's fake homeserver.
//! The real servers (ngircd, InspIRCd) are in the end-to-end suite.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use lattice_bridge_core::{
    connector::{InPortal, MembershipChange, RemoteId, Sent},
    event::{MatrixEvent, MatrixEventKind, Relation},
    store::Portal,
    testing::{FakeHomeserver, matrix_event, settled},
};
use serde_json::json;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};

use crate::{
    IrcConnector,
    config::{IrcSection, NetworkConfig, RedactionStyle, ServerConfig},
    ident::IdentRegistry,
    network::Network,
};

const ALICE: &str = "@alice:example.org";
const ROOM: &str = "!room:example.org";

/// A fake IRC server: registers every client (offering `caps`), echoes JOINs, answers PINGs, and records every
/// line by the nick that sent it.
struct FakeIrcd {
    port: u16,
    lines: Arc<Mutex<Vec<(String, String)>>>,
}

impl FakeIrcd {
    async fn start(caps: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&lines);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(client(socket, caps, Arc::clone(&log)));
            }
        });
        Self { port, lines }
    }

    /// The lines `nick` sent, without the registration's.
    fn said_by(&self, nick: &str) -> Vec<String> {
        let lines = self.lines.lock().unwrap();
        let registration = ["CAP ", "NICK ", "USER ", "PING ", "PONG "];
        lines
            .iter()
            .filter(|(from, line)| from == nick && !registration.iter().any(|prefix| line.starts_with(prefix)))
            .map(|(_, line)| line.clone())
            .collect()
    }

    /// Waits until `nick` said a line starting with `prefix`.
    async fn wait_for(&self, nick: &str, prefix: &str) -> String {
        for _ in 0..200 {
            if let Some(line) = self.said_by(nick).into_iter().find(|line| line.starts_with(prefix)) {
                return line;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{nick} never said {prefix}…; said {:?}", self.said_by(nick));
    }
}

async fn client(socket: tokio::net::TcpStream, caps: &'static str, log: Arc<Mutex<Vec<(String, String)>>>) {
    let (reader, mut writer) = socket.into_split();
    let mut reader = BufReader::new(reader).lines();
    let (mut nick, mut user_seen, mut cap_pending) = (String::from("*"), false, false);
    while let Ok(Some(line)) = reader.next_line().await {
        log.lock().unwrap().push((nick.clone(), line.clone()));
        let words: Vec<&str> = line.split(' ').collect();
        let mut reply = Vec::new();
        match words.as_slice() {
            ["NICK", new, ..] => nick = (*new).to_owned(),
            ["USER", ..] => user_seen = true,
            ["CAP", "LS", ..] if !caps.is_empty() => {
                cap_pending = true;
                reply.push(format!(":irc.test CAP * LS :{caps}"));
            }
            ["CAP", "REQ", requested @ ..] => {
                reply.push(format!(":irc.test CAP * ACK {}", requested.join(" ")));
            }
            ["CAP", "END"] => cap_pending = false,
            ["JOIN", channels, ..] => {
                reply.extend(channels.split(',').map(|channel| format!(":{nick}!u@127.0.0.1 JOIN {channel}")));
            }
            ["PING", token] => reply.push(format!(":irc.test PONG irc.test {token}")),
            _ => {}
        }
        if user_seen && !cap_pending && !nick.is_empty() && nick != "*" {
            reply.push(format!(":irc.test 001 {nick} :Welcome"));
            user_seen = false;
        }
        for line in reply {
            if writer.write_all(format!("{line}\r\n").as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

/// A network `test` on the fake server, with a portal for `#chan`.
struct Setup {
    ircd: FakeIrcd,
    homeserver: FakeHomeserver,
    network: Arc<Network>,
    portal: Portal,
}

async fn setup(caps: &'static str, configure: impl FnOnce(&mut NetworkConfig)) -> Setup {
    let ircd = FakeIrcd::start(caps).await;
    let homeserver = FakeHomeserver::start().await;
    let bridge = homeserver.bridge(IrcConnector::info_static()).await;
    let server = ServerConfig { host: "127.0.0.1".into(), port: ircd.port, tls: false, password: None };
    let mut config = NetworkConfig::new("Test", vec![server]);
    config.flood.burst = 100;
    configure(&mut config);
    let section = IrcSection::default();
    let network = Network::start("test", &config, &section, bridge, IdentRegistry::default(), None).await.unwrap();
    let portal = Portal {
        remote_key: "test/#chan".into(),
        room_id: ROOM.into(),
        alias: None,
        name: None,
        topic: None,
        metadata: json!({"network": "test", "channel": "#chan"}),
    };
    network.bridge().portals().upsert(&portal).await.unwrap();
    network.add_channel(&portal, "#chan");
    Setup { ircd, homeserver, network, portal }
}

fn event(kind: &str, content: serde_json::Value) -> MatrixEvent {
    matrix_event(json!({
        "type": kind, "event_id": "$e1", "room_id": ROOM, "sender": ALICE, "origin_server_ts": 1, "content": content,
    }))
}

fn at<'a>(setup: &'a Setup, event: &'a MatrixEvent) -> InPortal<'a> {
    InPortal { portal: &setup.portal, event, sender: ALICE }
}

fn relation(remote_ids: &[&str]) -> Relation {
    Relation { event_id: "$earlier".into(), remote_ids: remote_ids.iter().map(|id| (*id).to_owned()).collect() }
}

#[tokio::test]
async fn a_message_is_said_by_the_senders_puppet_and_settles_as_delivered_under_its_event() {
    let setup = setup("", |_| {}).await;
    let message = event(
        "m.room.message",
        json!({
            "msgtype": "m.text", "body": "hello IRC", "format": "org.matrix.custom.html",
            "formatted_body": "hello <b>IRC</b>",
        }),
    );
    let MatrixEventKind::Message(content) = &message.kind else { panic!() };
    let sent = setup.network.matrix_message(at(&setup, &message), content).await.unwrap();
    assert_eq!(settled(sent).await, Some(Some(RemoteId::new("alice/$e1"))), "confirmed by the PONG after it");
    assert_eq!(setup.ircd.wait_for("alice", "PRIVMSG").await, "PRIVMSG #chan :hello \x02IRC\x02");
    assert_eq!(setup.ircd.wait_for("alice", "JOIN").await, "JOIN #chan", "the puppet joined first");
}

#[tokio::test]
async fn an_emote_is_a_ctcp_action_and_an_unbridged_sender_in_a_dm_says_nothing() {
    let setup = setup("", |_| {}).await;
    let emote = event("m.room.message", json!({"msgtype": "m.emote", "body": "waves"}));
    let MatrixEventKind::Message(content) = &emote.kind else { panic!() };
    let sent = setup.network.matrix_message(at(&setup, &emote), content).await.unwrap();
    assert!(settled(sent).await.is_some());
    assert_eq!(setup.ircd.wait_for("alice", "PRIVMSG").await, "PRIVMSG #chan :\x01ACTION waves\x01");
    // A DM portal of someone else: not this sender's to speak in.
    let dm = Portal { remote_key: "test/dm/@bob:example.org/carol".into(), ..setup.portal.clone() };
    let in_dm = InPortal { portal: &dm, event: &emote, sender: ALICE };
    assert!(matches!(setup.network.matrix_message(in_dm, content).await.unwrap(), Sent::Nothing));
}

#[tokio::test]
async fn an_edit_is_one_correction_line_and_records_nothing() {
    let setup = setup("", |_| {}).await;
    let content = json!({
        "msgtype": "m.text", "body": "* fixed",
        "m.new_content": {"msgtype": "m.text", "body": "fixed\nsecond line"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": "$earlier"},
    });
    let edit = event("m.room.message", content);
    let MatrixEventKind::Edit { new_content, .. } = &edit.kind else { panic!("{:?}", edit.kind) };
    let sent = setup.network.matrix_edit(at(&setup, &edit), &relation(&["alice/$earlier"]), new_content).await;
    assert_eq!(settled(sent.unwrap()).await, Some(None));
    assert_eq!(setup.ircd.wait_for("alice", "PRIVMSG").await, "PRIVMSG #chan :* fixed");
    assert_eq!(setup.ircd.said_by("alice").iter().filter(|line| line.starts_with("PRIVMSG")).count(), 1);
}

#[tokio::test]
async fn a_reaction_is_a_react_tagmsg_where_message_tags_are_offered_and_nothing_elsewhere() {
    let tagged = setup("message-tags", |_| {}).await;
    let reaction = event("m.reaction", json!({}));
    let sent = tagged.network.matrix_reaction(at(&tagged, &reaction), &relation(&["bob/abc"]), "👍").await;
    assert_eq!(settled(sent.unwrap()).await, Some(None));
    let line = tagged.ircd.wait_for("alice", "@").await;
    assert!(line.contains("+draft/react=👍") && line.contains("+draft/reply=abc"), "{line}");
    assert!(line.ends_with(" TAGMSG #chan"), "{line}");

    let plain = setup("", |_| {}).await;
    let sent = plain.network.matrix_reaction(at(&plain, &reaction), &relation(&["bob/abc"]), "👍").await;
    assert!(matches!(sent.unwrap(), Sent::Nothing));
    // A message never bridged (no msgid) cannot be reacted to.
    let sent = plain.network.matrix_reaction(at(&plain, &reaction), &relation(&["bob/$event"]), "👍").await;
    assert!(matches!(sent.unwrap(), Sent::Nothing));
}

#[tokio::test]
async fn a_redaction_is_a_notice_only_when_configured_and_the_message_reached_irc() {
    let setup = setup("", |config| config.messages.redactions = RedactionStyle::Notice).await;
    let redaction = event("m.room.redaction", json!({}));
    // No puppet yet: nothing to say it with.
    let sent = setup.network.matrix_redaction(at(&setup, &redaction), &relation(&["alice/x"]), None).await;
    assert!(matches!(sent.unwrap(), Sent::Nothing));
    let message = event("m.room.message", json!({"msgtype": "m.text", "body": "oops"}));
    let MatrixEventKind::Message(content) = &message.kind else { panic!() };
    let sent = setup.network.matrix_message(at(&setup, &message), content).await.unwrap();
    settled(sent).await;
    let sent = setup.network.matrix_redaction(at(&setup, &redaction), &relation(&[]), None).await;
    assert!(matches!(sent.unwrap(), Sent::Nothing), "never bridged: nothing to take back");
    let sent = setup.network.matrix_redaction(at(&setup, &redaction), &relation(&["alice/x"]), None).await;
    assert_eq!(settled(sent.unwrap()).await, Some(None));
    assert_eq!(setup.ircd.wait_for("alice", "NOTICE").await, "NOTICE #chan :deleted a message");
}

#[tokio::test]
async fn joining_the_portal_connects_a_puppet_into_the_channel_and_leaving_parts_it() {
    let setup = setup("", |_| {}).await;
    let join = event("m.room.member", json!({"membership": "join", "displayname": "Alice Liddell"}));
    let change = MembershipChange {
        user_id: ALICE,
        membership: "join",
        displayname: Some("Alice"),
        is_direct: false,
        reason: None,
    };
    let sent = setup.network.matrix_membership(at(&setup, &join), change).await.unwrap();
    assert!(matches!(sent, Sent::Nothing));
    assert_eq!(setup.ircd.wait_for("Alice", "JOIN").await, "JOIN #chan");
    let leave = MembershipChange { membership: "leave", ..change };
    let sent = setup.network.matrix_membership(at(&setup, &join), leave).await.unwrap();
    assert!(matches!(sent, Sent::Nothing));
    assert!(setup.ircd.wait_for("Alice", "PART").await.starts_with("PART #chan"));
}

#[tokio::test]
async fn a_new_topic_is_set_on_irc_and_kept_with_the_portal() {
    let setup = setup("", |_| {}).await;
    let topic = event("m.room.topic", json!({"topic": "Rust and more"}));
    let sent = setup.network.matrix_topic(at(&setup, &topic), "Rust and more").await.unwrap();
    assert_eq!(settled(sent).await, Some(None));
    assert_eq!(setup.ircd.wait_for("alice", "TOPIC").await, "TOPIC #chan :Rust and more");
    let stored = setup.network.bridge().portals().by_key("test/#chan").await.unwrap().unwrap();
    assert_eq!(stored.topic.as_deref(), Some("Rust and more"));
    // The topic the portal has already (it came from IRC) is not set again.
    let known = Portal { topic: Some("Rust and more".into()), ..setup.portal.clone() };
    let again = InPortal { portal: &known, event: &topic, sender: ALICE };
    assert!(matches!(setup.network.matrix_topic(again, "Rust and more").await.unwrap(), Sent::Nothing));
}

#[tokio::test]
async fn typing_goes_out_only_from_puppets_already_in_the_channel_with_message_tags() {
    let setup = setup("message-tags", |_| {}).await;
    // No puppet: typing alone connects nobody.
    setup.network.matrix_typing(&setup.portal, ROOM, &[ALICE.to_owned()]).await;
    assert!(setup.ircd.said_by("alice").is_empty());
    let message = event("m.room.message", json!({"msgtype": "m.text", "body": "hi"}));
    let MatrixEventKind::Message(content) = &message.kind else { panic!() };
    settled(setup.network.matrix_message(at(&setup, &message), content).await.unwrap()).await;
    setup.network.matrix_typing(&setup.portal, ROOM, &[ALICE.to_owned()]).await;
    assert_eq!(setup.ircd.wait_for("alice", "@+typing=active").await, "@+typing=active TAGMSG #chan");
    setup.network.matrix_typing(&setup.portal, ROOM, &[]).await;
    assert_eq!(setup.ircd.wait_for("alice", "@+typing=done").await, "@+typing=done TAGMSG #chan");
}

#[tokio::test]
async fn a_direct_invite_to_a_ghost_makes_the_room_a_dm_portal_and_others_are_ignored() {
    let setup = setup("", |_| {}).await;
    let invite = matrix_event(json!({
        "type": "m.room.member", "event_id": "$i", "room_id": "!dm:example.org", "sender": ALICE,
        "state_key": "@irc_test_bob:example.org", "content": {"membership": "invite", "is_direct": true},
    }));
    setup.network.matrix_direct_invite(&invite, ALICE, "@someone:example.org").await.unwrap();
    let bridge = setup.network.bridge();
    assert!(bridge.portals().by_room("!dm:example.org").await.unwrap().is_none(), "not a ghost: no portal");
    setup.network.matrix_direct_invite(&invite, ALICE, "@irc_test_bob:example.org").await.unwrap();
    let portal = bridge.portals().by_room("!dm:example.org").await.unwrap().expect("the DM portal");
    assert_eq!(portal.remote_key, "test/dm/@alice:example.org/bob");
    let joins: HashMap<_, _> = setup
        .homeserver
        .received()
        .into_iter()
        .filter(|request| request.path.contains("/join"))
        .map(|request| (request.path, request.method))
        .collect();
    assert!(joins.keys().any(|path| path.contains("user_id=%40irc_test_bob")), "the ghost joined: {joins:?}");
}
